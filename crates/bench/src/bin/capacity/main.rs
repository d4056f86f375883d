//! `just bench`: the capacity of the release server, side by side with what Argon2 alone allows,
//! in one run on one machine.
//!
//! It measures the Argon2 bound on each CPU, starts a private PostgreSQL cluster on CPU 1, runs
//! the release `registrar` on CPU 0 (the driver beside PostgreSQL on CPU 1), and measures
//! registrations and activations at 1, 4, 16, 64 and 256 clients, bursts of 64 and 256, and 64
//! clients that never back off; then activations on the in-memory store, and registrations with
//! the whole machine shared. The rows held to a rate target run five rounds, judged on the
//! median. It prints a table and rewrites its section of `docs/benchmarks.md`
//! and `docs/benchmarks.svg`. `METHOD` in `report.rs` says how each figure is taken.
//!
//! Knobs: `REGISTRAR_BENCH_SECONDS` (5, per closed-loop row); `REGISTRAR_BENCH_DOCS` (the
//! `docs/` directory to write, default the workspace's). The exit status is 1 when the run could
//! not be made or a contract check failed (a malformed 503, an unexpected status, a lost email);
//! missed speed or memory targets are reported, not fatal. The servers' logs stay in the
//! temporary directory (`registrar-capacity-{postgres,memory,whole}.log`) until the next run.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark reports its figures and its warnings on the terminal"
)]

mod bound;
mod chart;
mod report;
mod versions;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use registrar_bench::{client, machine, postgres, server, utc_now};

use client::{Account, OnRefusal, Outcome, count};
use machine::Machine;
use postgres::Database;
use report::{Context, CpuSplit, MachineCpu, Placement, Row, Verdict, Work};
use server::{Server, Setup};

/// The client counts of the closed-loop rows.
const CLIENTS: [usize; 5] = [1, 4, 16, 64, 256];
/// How many times each row held to a rate target is measured (the first in its place among the
/// other rows, the others after them, each against its own bound); the target is judged on the
/// median.
const ROUNDS: usize = 5;
/// Sequential `/healthz` requests on the idle server.
const HEALTH_IDLE_REQUESTS: usize = 300;
/// How long the log mailer may take to write the last email of a row.
const MAIL_PATIENCE: Duration = Duration::from_secs(15);
/// Registrations that top up the accounts for the activation rows: at most this many rounds...
const TOP_UP_ROUNDS: usize = 10;
/// ...of this long each.
const TOP_UP_ROUND: Duration = Duration::from_secs(3);

fn main() -> ExitCode {
    // The measurements this program re-runs itself for, pinned to one CPU (see `machine.rs`).
    let child = match std::env::args().nth(1).as_deref() {
        Some(bound::SUBCOMMAND) => {
            Some(bound::seconds_per_hash().map(|seconds| seconds.to_string()))
        }
        Some(versions::SUBCOMMAND) => Some(versions::compare(
            &std::env::args().nth(2).unwrap_or_default(),
        )),
        _ => None,
    };
    if let Some(result) = child {
        return match result {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("{message}");
                ExitCode::FAILURE
            }
        };
    }
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("capacity: a contract check failed (see above)");
            ExitCode::FAILURE
        }
        Err(message) => {
            eprintln!("capacity: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The whole run; `Ok(false)` when it completed but a contract check failed.
fn run() -> Result<bool, String> {
    let binary = server::release_binary()?;
    let docs = std::env::var_os("REGISTRAR_BENCH_DOCS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs"),
        PathBuf::from,
    );
    let seconds = std::env::var("REGISTRAR_BENCH_SECONDS")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .unwrap_or(5)
        .max(1);
    let duration = Duration::from_secs(seconds);
    let started = utc_now();
    let machine = Machine::read();
    let mut warnings = Vec::new();
    let machine_line = machine.describe();
    println!("capacity: {machine_line}; {} s per row", duration.as_secs());
    let pinning = machine.can_pin();
    if !pinning {
        warnings.push(
            "fewer than two CPUs (or no taskset): nothing was pinned, the 1-core rows share \
             the machine"
                .to_owned(),
        );
        eprintln!("capacity: warning: {}", warnings[warnings.len() - 1]);
    }
    let (server_cpu, driver_cpu) = (machine.cpus[0], *machine.cpus.last().unwrap_or(&0));

    let before = bound::measure(&machine)?;
    let before_together = bound::measure_together(&machine)?;
    println!(
        "Argon2id m=19456 t=2 p=1, the server's hasher with one thread: each CPU alone: {}; every CPU at once: {}",
        bound::describe(&before),
        bound::describe(&before_together)
    );

    let versions = versions::measure(&machine)?;
    println!("{versions}");

    let mut database_warning = None;
    let database = Database::start(pinning.then_some(driver_cpu), &mut database_warning)?;
    warnings.extend(database_warning.inspect(|warning| eprintln!("capacity: warning: {warning}")));
    println!("PostgreSQL: {}", database.description);

    let mut run = Run {
        binary: &binary,
        duration,
        rows: Vec::new(),
        lost: 0,
        setup_odd: 0,
        pinned: pinning.then(|| (server_cpu.to_string(), driver_cpu.to_string())),
        all_cpus: machine.all_cpus(),
        machine: &machine,
        last_bound: None,
        round: 1,
        cpu_before: CpuSplit::default(),
        postgres: database.cpu_meter(),
        machine_before: MachineCpu::default(),
    };
    let result = run.everything(
        &database,
        before[0].per_second(),
        bound::whole_machine(&before_together),
    );
    let database_line = database.description.clone();
    database.remove();
    let (memory, health) = result?;

    let after = bound::measure(&machine)?;
    let after_together = bound::measure_together(&machine)?;
    println!(
        "Argon2 bound measured again after the load: each CPU alone: {}; every CPU at once: {}",
        bound::describe(&after),
        bound::describe(&after_together)
    );
    let (one_core, bounds_line) = bounds_line(
        &run.rows,
        [&before, &before_together],
        [&after, &after_together],
    );

    println!("\n{}", report::table(&run.rows));
    println!(
        "\nwhere the server's CPU went:\n{}",
        report::cpu_table(&run.rows)
    );
    println!(
        "\nwhere the whole machine's CPU went:\n{}",
        report::machine_table(&run.rows)
    );
    let verdicts = verdicts(&run.rows, &memory, &health, run.lost);
    print_verdicts(&verdicts);
    let context = Context {
        machine: machine_line,
        versions,
        bounds: bounds_line,
        database: database_line,
        warnings,
        memory: memory.line(),
        health: health.line(),
        started,
    };
    publish(&docs, &run.rows, &verdicts, &context, one_core)?;
    let odd: usize = run.rows.iter().map(|row| row.outcome.odd()).sum();
    Ok(odd == 0 && run.setup_odd == 0 && run.lost == 0)
}

/// The run's one-core bound (the faster measurement of the first CPU) and the line that states
/// every bound: beside the rows, and for the run, `before` and `after` the load, each as (each
/// CPU alone, every CPU at once).
fn bounds_line(
    rows: &[Row],
    [before, before_together]: [&[bound::CpuBound]; 2],
    [after, after_together]: [&[bound::CpuBound]; 2],
) -> (f64, String) {
    let bounds = bound::faster(before, after);
    let together = bound::faster(before_together, after_together);
    let line = format!(
        "each row against the bound measured beside it (the table's bound/s: {}); for the run: \
         each CPU alone: {}; every CPU at once: {}, so the whole machine's bound is {:.1}/s \
         (before the load: {} / {}; after it: {} / {})",
        beside(rows),
        bound::describe(&bounds),
        bound::describe(&together),
        bound::whole_machine(&together),
        bound::describe(before),
        bound::describe(before_together),
        bound::describe(after),
        bound::describe(after_together),
    );
    (bounds[0].per_second(), line)
}

/// The range of the bounds measured beside the rows, per set-up: `1 core 85.2–93.7/s; …`.
fn beside(rows: &[Row]) -> String {
    let mut ranges: Vec<(Placement, f64, f64)> = Vec::new();
    for row in rows {
        match ranges
            .iter_mut()
            .find(|(placement, ..)| *placement == row.placement)
        {
            Some((_, low, high)) => {
                *low = low.min(row.bound);
                *high = high.max(row.bound);
            }
            None => ranges.push((row.placement, row.bound, row.bound)),
        }
    }
    ranges
        .iter()
        .map(|(placement, low, high)| format!("{} {low:.1}–{high:.1}/s", placement.label()))
        .collect::<Vec<_>>()
        .join("; ")
}

fn print_verdicts(verdicts: &[Verdict]) {
    println!("\ntargets:");
    for verdict in verdicts {
        println!(
            "  [{}] {}: {}",
            if verdict.met { "met" } else { "NOT met" },
            verdict.target,
            verdict.measured
        );
    }
}

/// Writes the document and the chart under `docs`.
fn publish(
    docs: &Path,
    rows: &[Row],
    verdicts: &[Verdict],
    context: &Context,
    one_core: f64,
) -> Result<(), String> {
    let document = docs.join("benchmarks.md");
    let svg = docs.join("benchmarks.svg");
    report::write_document(&document, &report::markdown(rows, verdicts, context))?;
    chart::draw(&svg, rows, one_core)?;
    println!("\nwrote {} and {}", document.display(), svg.display());
    Ok(())
}

/// The server's memory, KiB.
#[derive(Debug, Default)]
struct Memory {
    idle_kib: u64,
    /// `VmHWM` after the 256-client row.
    peak_kib: u64,
}

impl Memory {
    fn line(&self) -> String {
        format!(
            "idle {:.1} MiB, peak {:.1} MiB (through the 256-client row)",
            mib(self.idle_kib),
            mib(self.peak_kib)
        )
    }
}

/// `/healthz` latency, idle and under the 256-client row.
#[derive(Debug, Default)]
struct Health {
    idle_p99: Duration,
    loaded_p99: Duration,
    loaded_count: usize,
    loaded_failures: usize,
}

impl Health {
    fn line(&self) -> String {
        format!(
            "p99 idle {:.2} ms; p99 under 256 clients {:.2} ms over {} requests ({} not 200)",
            self.idle_p99.as_secs_f64() * 1000.0,
            self.loaded_p99.as_secs_f64() * 1000.0,
            self.loaded_count,
            self.loaded_failures
        )
    }
}

/// What the rows share.
struct Run<'a> {
    binary: &'a Path,
    duration: Duration,
    rows: Vec<Row>,
    /// Addresses that got a 201 but whose email never reached the log.
    lost: usize,
    /// Odd answers (neither success nor well-formed refusal) outside the rows.
    setup_odd: usize,
    /// (server CPU, driver CPU) when pinning works.
    pinned: Option<(String, String)>,
    all_cpus: String,
    machine: &'a Machine,
    /// The bound measured at the end of the last row, for its set-up: the next row's of the
    /// same set-up starts from it rather than measuring again.
    last_bound: Option<(Placement, f64)>,
    /// The round the rows measured now belong to (see [`ROUNDS`]).
    round: usize,
    /// The server's CPU time when the row being measured began.
    cpu_before: CpuSplit,
    /// Reads PostgreSQL's CPU time (`None` on the local server, whose processes are not ours).
    postgres: Option<postgres::CpuMeter>,
    /// The machine's CPU time when the row being measured began.
    machine_before: MachineCpu,
}

impl Run<'_> {
    fn everything(
        &mut self,
        database: &Database,
        one_core: f64,
        whole: f64,
    ) -> Result<(Memory, Health), String> {
        let log_dir = std::env::temp_dir();
        let log = |name: &str| log_dir.join(format!("registrar-capacity-{name}.log"));

        // 1 core, PostgreSQL.
        if let Some((_, driver)) = &self.pinned {
            machine::pin(std::process::id(), driver)?;
        }
        let server = Server::start(&Setup {
            binary: self.binary,
            cpus: self.pinned.as_ref().map(|(server, _)| server.clone()),
            database_url: Some(&database.url),
            log: log("postgres"),
        })?;
        let (memory, health) = self.pinned_postgres(&server, one_core);
        if !server.stop() {
            eprintln!("capacity: warning: the PostgreSQL server did not stop cleanly on SIGTERM");
        }

        // 1 core, in-memory store.
        let server = Server::start(&Setup {
            binary: self.binary,
            cpus: self.pinned.as_ref().map(|(server, _)| server.clone()),
            database_url: None,
            log: log("memory"),
        })?;
        self.pinned_memory(&server, one_core);
        server.stop();

        // The whole machine.
        if self.pinned.is_some() {
            machine::pin(std::process::id(), &self.all_cpus)?;
            database.repin(&self.all_cpus)?;
        }
        let server = Server::start(&Setup {
            binary: self.binary,
            cpus: None,
            database_url: Some(&database.url),
            log: log("whole"),
        })?;
        self.whole_machine(&server, whole);
        server.stop();
        Ok((memory, health))
    }

    fn pinned_postgres(&mut self, server: &Server, bound: f64) -> (Memory, Health) {
        let placement = Placement::PinnedPostgres;
        thread::sleep(Duration::from_secs(1));
        let idle_kib = server.memory_kib().map_or(0, |(rss, _)| rss);
        let idle = client::health_idle(server.port, HEALTH_IDLE_REQUESTS);
        let mut health = Health {
            idle_p99: report::percentile(&idle.ok, 99),
            ..Health::default()
        };
        let mut created = Vec::new();
        let mut peak_kib = 0;
        for clients in CLIENTS {
            let prefix = format!("reg{clients}");
            let before = self.bound_before(server, placement, bound);
            let outcome = if clients == 256 {
                let stop = AtomicBool::new(false);
                // The port alone crosses to the poller's thread (the server's process handle
                // is not `Sync`).
                let port = server.port;
                let (outcome, polled) = thread::scope(|scope| {
                    let poller = scope.spawn(|| client::poll_health(port, &stop));
                    let outcome = client::register_for(
                        server.port,
                        clients,
                        self.duration,
                        &prefix,
                        OnRefusal::BackOff,
                    );
                    stop.store(true, Ordering::Relaxed);
                    (outcome, poller.join().unwrap_or_default())
                });
                health.loaded_p99 = report::percentile(&polled.ok, 99);
                health.loaded_count = polled.ok.len() + polled.odd() + polled.refused;
                health.loaded_failures = polled.odd() + polled.refused;
                peak_kib = server.memory_kib().map_or(0, |(_, hwm)| hwm);
                outcome
            } else {
                client::register_for(
                    server.port,
                    clients,
                    self.duration,
                    &prefix,
                    OnRefusal::BackOff,
                )
            };
            self.push(
                server,
                (placement, Work::Register, clients),
                before,
                outcome,
                &mut created,
            );
        }
        for clients in [64, 256] {
            let before = self.bound_before(server, placement, bound);
            let outcome = client::burst(server.port, clients, &format!("burst{clients}"));
            self.push(
                server,
                (placement, Work::Burst, clients),
                before,
                outcome,
                &mut created,
            );
        }
        // 64 fit in the queue timeout, so they see no 503; 256 do not, and show what a storm
        // of refusals costs the core.
        for clients in [64, 256] {
            let row = (placement, Work::Hammer, clients);
            let prefix = format!("hammer{clients}");
            self.register_row(server, row, &prefix, OnRefusal::Hammer, bound, &mut created);
        }

        let accounts = Mutex::new(self.enough_accounts(server, &created, bound));
        for clients in CLIENTS {
            let before = self.bound_before(server, placement, bound);
            let outcome = client::activate_for(server.port, clients, self.duration, &accounts);
            self.push(
                server,
                (placement, Work::Activate, clients),
                before,
                outcome,
                &mut Vec::new(),
            );
        }
        self.later_rounds(server, &accounts, bound);
        (Memory { idle_kib, peak_kib }, health)
    }

    /// The PostgreSQL rows held to a target, again: 16 clients registering, 64 that never back
    /// off, 16 activating (the accounts registered in the round, and any left over).
    fn later_rounds(&mut self, server: &Server, accounts: &Mutex<Vec<Account>>, bound: f64) {
        let placement = Placement::PinnedPostgres;
        for round in 2..=ROUNDS {
            self.round = round;
            let mut created = Vec::new();
            for (work, clients, on_refusal) in [
                (Work::Register, 16, OnRefusal::BackOff),
                (Work::Hammer, 64, OnRefusal::Hammer),
            ] {
                let prefix = format!("round{round}-{clients}");
                let row = (placement, work, clients);
                self.register_row(server, row, &prefix, on_refusal, bound, &mut created);
            }
            let fresh = self.accounts(server, &created);
            accounts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend(fresh);
            self.activate_row(server, placement, accounts, bound);
        }
        self.round = 1;
    }

    /// One registration row: `clients` registering for the row's duration, `on_refusal` as
    /// given, against the bound measured beside it; the addresses that got a 201 go to
    /// `created`.
    fn register_row(
        &mut self,
        server: &Server,
        (placement, work, clients): (Placement, Work, usize),
        prefix: &str,
        on_refusal: OnRefusal,
        bound: f64,
        created: &mut Vec<String>,
    ) {
        let before = self.bound_before(server, placement, bound);
        let outcome = client::register_for(server.port, clients, self.duration, prefix, on_refusal);
        self.push(server, (placement, work, clients), before, outcome, created);
    }

    /// A registration row of 16 clients that back off.
    fn register_16(
        &mut self,
        server: &Server,
        placement: Placement,
        prefix: &str,
        bound: f64,
        created: &mut Vec<String>,
    ) {
        let row = (placement, Work::Register, 16);
        self.register_row(server, row, prefix, OnRefusal::BackOff, bound, created);
    }

    /// One activation row of 16 clients, taking accounts from `accounts`.
    fn activate_row(
        &mut self,
        server: &Server,
        placement: Placement,
        accounts: &Mutex<Vec<Account>>,
        bound: f64,
    ) {
        let before = self.bound_before(server, placement, bound);
        let outcome = client::activate_for(server.port, 16, self.duration, accounts);
        self.push(
            server,
            (placement, Work::Activate, 16),
            before,
            outcome,
            &mut Vec::new(),
        );
    }

    /// Registrations, then activations of those accounts, every round.
    fn pinned_memory(&mut self, server: &Server, bound: f64) {
        let placement = Placement::PinnedMemory;
        for round in 1..=ROUNDS {
            self.round = round;
            let mut created = Vec::new();
            self.register_16(
                server,
                placement,
                &format!("mem{round}"),
                bound,
                &mut created,
            );
            let accounts = Mutex::new(self.accounts(server, &created));
            self.activate_row(server, placement, &accounts, bound);
        }
        self.round = 1;
    }

    fn whole_machine(&mut self, server: &Server, bound: f64) {
        let placement = Placement::WholeMachine;
        let mut created = Vec::new();
        let before = self.bound_before(server, placement, bound);
        let outcome = client::burst(server.port, 64, "whole-burst");
        self.push(
            server,
            (placement, Work::Burst, 64),
            before,
            outcome,
            &mut created,
        );
        for round in 1..=ROUNDS {
            self.round = round;
            self.register_16(
                server,
                placement,
                &format!("whole{round}"),
                bound,
                &mut created,
            );
        }
        self.round = 1;
        self.accounts(server, &created);
    }

    /// The bound of the CPUs `placement` gives the server, measured now, between rows, with the
    /// server idle; `fallback` (the run's first measurement) if it cannot be measured.
    fn bound_now(&self, placement: Placement, fallback: f64) -> f64 {
        let measured = if placement == Placement::WholeMachine {
            bound::measure_together(self.machine).map(|bounds| bound::whole_machine(&bounds))
        } else {
            bound::measure_first(self.machine).map(|bound| bound.per_second())
        };
        measured.unwrap_or_else(|error| {
            eprintln!("capacity: warning: the bound beside a row: {error}; the run's is used");
            fallback
        })
    }

    /// The bound just before a row of `placement`: the one measured at the end of the row before
    /// it if that was of the same set-up, else measured now. The row's CPU time on `server` is
    /// counted from here.
    fn bound_before(&mut self, server: &Server, placement: Placement, fallback: f64) -> f64 {
        let bound = match self.last_bound.take() {
            Some((last, bound)) if last == placement => bound,
            _ => self.bound_now(placement, fallback),
        };
        self.cpu_before = CpuSplit::of(&server.thread_cpu_seconds());
        self.machine_before = self.machine_cpu();
        bound
    }

    /// The machine's CPU time so far: PostgreSQL's, this program's, every CPU's.
    fn machine_cpu(&self) -> MachineCpu {
        let seconds = |ticks: Option<u64>| ticks.map_or(0.0, machine::ticks_to_seconds);
        MachineCpu {
            database: self.postgres.map_or(0.0, postgres::CpuMeter::seconds),
            driver: seconds(machine::cpu_ticks(std::process::id())),
            busy: seconds(machine::busy_ticks()),
        }
    }

    /// Records a row and prints it at once (a long run shows progress). The row's bound is the
    /// mean of the bound measured just before it (`before`) and the one measured now, just
    /// after it, on the CPUs the server had; its CPU time is `server`'s since `bound_before`.
    fn push(
        &mut self,
        server: &Server,
        (placement, work, clients): (Placement, Work, usize),
        before: f64,
        mut outcome: Outcome,
        created: &mut Vec<String>,
    ) {
        let cpu = CpuSplit::of(&server.thread_cpu_seconds()).since(self.cpu_before);
        let machine_cpu = self.machine_cpu().since(self.machine_before);
        created.append(&mut outcome.created);
        let after = self.bound_now(placement, before);
        self.last_bound = Some((placement, after));
        let row = Row {
            placement,
            work,
            clients,
            bound: f64::midpoint(before, after),
            outcome,
            round: self.round,
            cpu,
            machine: machine_cpu,
            cpus: if placement == Placement::WholeMachine {
                self.machine.cpus.len()
            } else {
                1
            },
        };
        println!(
            "{}",
            report::table(std::slice::from_ref(&row))
                .lines()
                .nth(1)
                .unwrap_or("")
        );
        for (what, times) in &row.outcome.other {
            eprintln!("capacity:   {times} × {what}");
        }
        if row.outcome.malformed_refusals > 0 {
            eprintln!(
                "capacity:   {} × 503 without a well-formed overloaded problem and Retry-After",
                row.outcome.malformed_refusals
            );
        }
        self.rows.push(row);
    }

    /// The accounts of `created` with their codes from the server's log, waiting for the mail
    /// dispatcher; counts the addresses whose email never came as lost.
    fn accounts(&mut self, server: &Server, created: &[String]) -> Vec<Account> {
        let deadline = std::time::Instant::now() + MAIL_PATIENCE;
        let mut codes: HashMap<String, String> = server.codes();
        while created.iter().any(|email| !codes.contains_key(email))
            && std::time::Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(200));
            codes = server.codes();
        }
        let mut accounts = Vec::with_capacity(created.len());
        for email in created {
            match codes.remove(email) {
                Some(code) => accounts.push((email.clone(), code)),
                None => self.lost += 1,
            }
        }
        if self.lost > 0 {
            eprintln!("capacity: {} addresses got a 201 but no email", self.lost);
        }
        accounts
    }

    /// The accounts of `created`, topped up with more registrations (16 clients, not a row) until
    /// the activation rows cannot run out at 1.2 × the bound (or the fastest row so far, if
    /// faster): they would end early and, at 256 clients, leave clients without work.
    fn enough_accounts(&mut self, server: &Server, created: &[String], bound: f64) -> Vec<Account> {
        let mut accounts = self.accounts(server, created);
        let fastest = self
            .rows
            .iter()
            .map(|row| row.outcome.rate())
            .fold(bound, f64::max);
        let needed = activations_needed(fastest, self.duration);
        let mut round = 0;
        while accounts.len() < needed && round < TOP_UP_ROUNDS {
            let outcome = client::register_for(
                server.port,
                16,
                TOP_UP_ROUND,
                &format!("extra{round}"),
                OnRefusal::BackOff,
            );
            self.setup_odd += outcome.odd();
            accounts.extend(self.accounts(server, &outcome.created));
            round += 1;
        }
        if accounts.len() < needed {
            eprintln!(
                "capacity: warning: {} accounts for the activation rows, {needed} wanted",
                accounts.len()
            );
        }
        accounts
    }
}

/// Accounts the activation rows use up at most at `rate`: 1.2 × `rate` for every row, plus one
/// per client of the largest row.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a positive count of a few thousand at most"
)]
fn activations_needed(rate: f64, duration: Duration) -> usize {
    (1.2 * rate * duration.as_secs_f64() * count(CLIENTS.len())).ceil() as usize
        + CLIENTS[CLIENTS.len() - 1]
}

/// Each target of the issue against this run's rows.
fn verdicts(rows: &[Row], memory: &Memory, health: &Health, lost: usize) -> Vec<Verdict> {
    // Every round of a row (the rows not held to a rate target have one).
    let rounds = |placement: Placement, work: Work, clients: usize| -> Vec<&Row> {
        rows.iter()
            .filter(|row| row.placement == placement && row.work == work && row.clients == clients)
            .collect()
    };
    let mut verdicts = Vec::new();
    let mut burst = |placement: Placement, target: &str| {
        if let Some(row) = rounds(placement, Work::Burst, 64).first() {
            verdicts.push(Verdict {
                target: target.to_owned(),
                measured: format!(
                    "{} × 201, {} refused, {} other",
                    row.outcome.ok.len(),
                    row.outcome.refused,
                    row.outcome.odd()
                ),
                met: row.outcome.ok.len() == 64,
            });
        }
    };
    burst(
        Placement::WholeMachine,
        "64 registrations at the same instant, whole machine, default settings: 64 × 201",
    );
    burst(
        Placement::PinnedPostgres,
        "the same burst with the server pinned to one core: 64 × 201",
    );
    // Every round of a row, each against the bound measured beside it.
    let mut rate = |rounds: Vec<&Row>, target: &str, at_least: f64| {
        verdicts.extend(Verdict::rate(target, &rounds, at_least));
    };
    rate(
        rounds(Placement::PinnedPostgres, Work::Register, 16),
        "registrations/s, 1 core, PostgreSQL, 16 clients: ≥ 0.9 × one core's Argon2 rate",
        0.9,
    );
    rate(
        rounds(Placement::PinnedPostgres, Work::Activate, 16),
        "activations/s, 1 core, PostgreSQL, 16 clients: ≥ 0.9 × one core's Argon2 rate",
        0.9,
    );
    rate(
        rounds(Placement::PinnedMemory, Work::Activate, 16),
        "activations/s, 1 core, memory store, 16 clients: ≥ 0.9 × one core's Argon2 rate",
        0.9,
    );
    rate(
        rounds(Placement::PinnedPostgres, Work::Hammer, 64),
        "201s/s, 64 clients resending at once on every 503, 1 core: ≥ 0.85 × one core's Argon2 rate",
        0.85,
    );
    rate(
        rounds(Placement::WholeMachine, Work::Register, 16),
        "registrations/s, whole machine, 16 clients: ≥ 0.8 × both cores' Argon2 rate",
        0.8,
    );
    verdicts.extend(health_verdicts(rows, memory, health, lost));
    verdicts
}

/// The targets that hold today: memory, `/healthz`, refusals, nothing lost.
fn health_verdicts(rows: &[Row], memory: &Memory, health: &Health, lost: usize) -> Vec<Verdict> {
    let refused: usize = rows.iter().map(|row| row.outcome.refused).sum();
    let malformed: usize = rows.iter().map(|row| row.outcome.malformed_refusals).sum();
    let created: usize = rows
        .iter()
        .filter(|row| row.work != Work::Activate)
        .map(|row| row.outcome.ok.len())
        .sum();
    vec![
        Verdict {
            target: "peak RSS ≤ 80 MiB at 256 clients".to_owned(),
            measured: format!("{:.1} MiB", mib(memory.peak_kib)),
            met: memory.peak_kib > 0 && memory.peak_kib <= 80 * 1024,
        },
        Verdict {
            target: "idle RSS ≤ 15 MiB".to_owned(),
            measured: format!("{:.1} MiB", mib(memory.idle_kib)),
            met: memory.idle_kib > 0 && memory.idle_kib <= 15 * 1024,
        },
        Verdict {
            target: "`/healthz` p99 under full load within 2 ms of its idle p99".to_owned(),
            measured: format!(
                "{:.2} ms vs {:.2} ms idle, {} of {} not 200",
                health.loaded_p99.as_secs_f64() * 1000.0,
                health.idle_p99.as_secs_f64() * 1000.0,
                health.loaded_failures,
                health.loaded_count
            ),
            met: health.loaded_count > 0
                && health.loaded_failures == 0
                && health.loaded_p99 <= health.idle_p99 + Duration::from_millis(2),
        },
        Verdict {
            target: "every refusal a well-formed `overloaded` with `Retry-After`".to_owned(),
            measured: format!("{refused} well-formed, {malformed} not"),
            met: malformed == 0,
        },
        Verdict {
            target: "nothing lost: every 201 has its email".to_owned(),
            measured: format!(
                "{} of {created} emails written by the log mailer",
                created.saturating_sub(lost)
            ),
            met: lost == 0,
        },
    ]
}

#[allow(clippy::cast_precision_loss, reason = "kibibytes far below 2^52")]
fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

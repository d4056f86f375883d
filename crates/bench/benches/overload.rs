//! Benchmark: ten times more concurrent registrations than the password-hashing pool can hold.
//!
//! Run it with `just bench-overload` (`cargo bench -p registrar-bench --bench overload`, after
//! `cargo build --release -p registrar`; cargo bench builds in release). It drives the real release binary with the in-memory store, the log
//! mailer, per-address rate limits off, JSON logs, the default Argon2id cost (m = 19456 KiB,
//! t = 2, p = 1) and an explicit pool: `REGISTRAR_HASH_THREADS=2`, `REGISTRAR_HASH_QUEUE=32`,
//! `REGISTRAR_HASH_QUEUE_TIMEOUT=2s`, so at most 2 + 32 = 34 registrations are in the pool.
//!
//! 1. Capacity: 10 sequential registrations to warm up, then 20 measured; the median latency of
//!    one is the cost of one hash, and `threads / median` the most hashes per second the pool
//!    can serve.
//! 2. Load: `10 × 34 = 340` client threads, each with its own blocking HTTP/1.1 connection per
//!    request (`Connection: close`, loopback only), register distinct addresses back to back,
//!    without backing off, for 20 s. Every response's status and latency is recorded; a 503 must
//!    be the problem type `/problems/overloaded` with a `Retry-After` of whole seconds.
//! 3. Optionally, the same at ten times that concurrency again (3,400 client threads), to show
//!    that the server's memory does not follow the offered load.
//!
//! During each phase the server's `VmRSS` (and thread count) is sampled from
//! `/proc/<pid>/status` every 100 ms; its `VmHWM` is reset before the phase (`clear_refs`) and
//! read after it. The server's log goes to a file (so a slow reader never throttles it) and is
//! read after each phase for the server-side latency of every registration; `/metrics` gives the
//! pool's own view (hashes run, refusals by reason, queue waits); `/proc/<pid>/task/*/stat` the
//! CPU time of the hashing threads, the HTTP workers and the rest, next to this client's own.
//!
//! It prints, per phase: offered concurrency, duration, totals by status, 201 throughput, 201 and
//! 503 latency (p50/p90/p99/max) as the clients saw it and as the server logged it, the share of
//! 201s slower than the queue timeout + one hash, RSS at start / peak / end, CPU time of the
//! server, of the clients and of anything else on the machine, and one machine-readable line
//! starting with `OVERLOAD_SUMMARY`.
//! The run fails when a 503 is not a well-formed `overloaded` problem, when any other status than
//! 201 or 503 comes back, or when the server does not stop cleanly on SIGTERM; timing and memory
//! verdicts are printed, not enforced (they depend on the machine).
//!
//! Knobs: `REGISTRAR_BENCH_SECONDS` (20), `REGISTRAR_BENCH_CONCURRENCY` (340),
//! `REGISTRAR_BENCH_SECOND_CONCURRENCY` (3400; 0 skips the second phase),
//! `REGISTRAR_BENCH_WARMUP` (20), `REGISTRAR_BENCH_KEEP_LOG` (set: keep the server's log file).
//! Run without `--bench` (as `cargo test --benches` does), it only says how to run it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark harness: it prints its figures, and a panic is a failed run"
)]
#![allow(
    clippy::cast_precision_loss,
    reason = "counts, kibibytes and clock ticks far below 2^52 are shown as f64"
)]

use std::{
    collections::BTreeMap,
    fs::OpenOptions,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    sync::{
        Arc, OnceLock, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use registrar_bench::{self as support, Stats, http, ms, number};
use registrar_testing::process::{Process, serve_command};
use serde_json::{Value, json};

/// Dedicated hashing threads given to the server.
const HASH_THREADS: usize = 2;
/// Hashing jobs that may wait for a thread.
const HASH_QUEUE: usize = 32;
/// The longest a hashing job may wait for a thread, as the server is configured.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(2);
/// The same, in the server's configuration syntax.
const QUEUE_TIMEOUT_SETTING: &str = "2s";
/// Registrations the pool holds at once: the overload factor is counted against this.
const IN_THE_POOL: usize = HASH_THREADS + HASH_QUEUE;
/// How long the server may take to say it is listening.
const START_PATIENCE: Duration = Duration::from_secs(30);
/// Sequential registrations before the measured ones: the first hashes also fault in the
/// allocator's memory.
const UNMEASURED: usize = 10;
/// How often the server's memory is sampled.
const RSS_PERIOD: Duration = Duration::from_millis(100);
/// Stack of each client thread: they only format a request and read a short response.
const CLIENT_STACK: usize = 256 * 1024;
/// Idle time after a phase before its "end" figures are taken.
const SETTLE: Duration = Duration::from_secs(2);
/// A client's pause after a socket-level failure, so a refused connect does not spin.
const SOCKET_ERROR_PAUSE: Duration = Duration::from_millis(10);

fn main() -> ExitCode {
    support::main("overload", "bench-overload", run)
}

/// What the run is asked to do.
struct Plan {
    binary: PathBuf,
    duration: Duration,
    warmup: usize,
    /// Client threads of each load phase.
    phases: Vec<usize>,
}

impl Plan {
    fn from_env() -> Result<Self, String> {
        let binary = support::release_binary("bench-overload")?;
        let seconds = number("REGISTRAR_BENCH_SECONDS", 20)?.max(1);
        let first = number("REGISTRAR_BENCH_CONCURRENCY", 10 * IN_THE_POOL)?.max(1);
        let second = number("REGISTRAR_BENCH_SECOND_CONCURRENCY", 100 * IN_THE_POOL)?;
        let mut phases = vec![first];
        if second > 0 {
            phases.push(second);
        }
        Ok(Self {
            binary,
            duration: Duration::from_secs(u64::try_from(seconds).unwrap_or(u64::MAX)),
            warmup: number("REGISTRAR_BENCH_WARMUP", 20)?.max(1),
            phases,
        })
    }
}

fn run() -> Result<(), String> {
    let plan = Plan::from_env()?;
    let clock_ticks = clock_ticks();
    let mut server = Server::start(&plan.binary)?;
    let baseline = proc_status(server.pid).ok_or("cannot read the server's /proc status")?;
    println!(
        "overload: server {} (pid {}, port {}), in-memory store, log mailer, \
         REGISTRAR_RATE_LIMITS=off, REGISTRAR_LOG_FORMAT=json, RUST_LOG=info",
        plan.binary.display(),
        server.pid,
        server.port
    );
    println!(
        "hashing pool: REGISTRAR_HASH_THREADS={HASH_THREADS} REGISTRAR_HASH_QUEUE={HASH_QUEUE} \
         REGISTRAR_HASH_QUEUE_TIMEOUT={QUEUE_TIMEOUT_SETTING} ({IN_THE_POOL} registrations in \
         the pool at most); Argon2id defaults m = 19456 KiB, t = 2, p = 1; HTTP workers: \
         default (one per core: {})",
        thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get)
    );
    println!(
        "machine: {} cores, {} MiB memory, load average {}; server RSS after start-up {:.1} \
         MiB, {} threads",
        thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get),
        mem_total_kib() / 1024,
        std::fs::read_to_string("/proc/loadavg").map_or_else(
            |_| "?".to_owned(),
            |text| text
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        ),
        mib(baseline.rss_kib),
        baseline.threads
    );

    let capacity = warm_up(&mut server, plan.warmup)?;
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for (index, &clients) in plan.phases.iter().enumerate() {
        let phase = index + 1;
        match load_phase(
            &mut server,
            phase,
            clients,
            plan.duration,
            &capacity,
            clock_ticks,
        ) {
            Ok(report) => {
                report.print(&capacity);
                failures.extend(report.contract_failures());
                reports.push(report);
            }
            Err(message) if phase > 1 => {
                println!("\nphase {phase} ({clients} clients) could not run: {message}");
            }
            Err(message) => return Err(message),
        }
    }
    if let [first, .., last] = reports.as_slice() {
        println!(
            "\nmemory against offered load: {} clients → peak RSS {:.1} MiB; {} clients → peak \
             RSS {:.1} MiB ({:+.1} MiB for {:.0}× the clients)",
            first.clients,
            mib(first.memory.peak_kib),
            last.clients,
            mib(last.memory.peak_kib),
            mib(last.memory.peak_kib) - mib(first.memory.peak_kib),
            last.clients as f64 / first.clients as f64
        );
    }

    let shutdown = server.terminate();
    println!(
        "\nSIGTERM: the server exited {} in {:.2} s; its last log lines:",
        if shutdown.success {
            "with success"
        } else {
            "WITHOUT success"
        },
        shutdown.took.as_secs_f64()
    );
    for line in &shutdown.last_lines {
        println!("  {line}");
    }
    if !shutdown.success {
        failures.push("the server did not exit cleanly on SIGTERM".to_owned());
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

// ---------------------------------------------------------------------------------------------
// Capacity

/// What one hash costs when nothing else runs.
struct Capacity {
    /// Median latency of one registration, alone.
    one: Duration,
    /// The pool's throughput implied by it: `threads / one`.
    per_second: f64,
    /// The server's own mean hash time over the warm-up, from `/metrics`.
    hash_mean: Option<Duration>,
}

impl Capacity {
    /// The slowest an admitted registration should be: the queue timeout plus one hash.
    fn admitted_bound(&self) -> Duration {
        QUEUE_TIMEOUT + self.one
    }
}

fn warm_up(server: &mut Server, count: usize) -> Result<Capacity, String> {
    let mut latencies = Vec::with_capacity(count);
    let mut metrics_before = BTreeMap::new();
    for i in 0..UNMEASURED + count {
        if i == UNMEASURED {
            metrics_before = server.metrics()?;
        }
        let started = Instant::now();
        let response = register(server.port, &format!("warmup-{i}@example.com"))
            .map_err(|(stage, error)| format!("warm-up registration {i}: {stage}: {error}"))?;
        let latency = started.elapsed();
        if response.status != 201 {
            return Err(format!(
                "warm-up registration {i} answered {} ({:?})",
                response.status, response.problem_type
            ));
        }
        if i >= UNMEASURED {
            latencies.push(latency);
        }
    }
    let stats = Stats::of(latencies);
    let metrics = server.metrics()?;
    let hash_mean = mean_seconds(
        &metrics,
        &MetricsDelta::new(&metrics_before, &metrics),
        "registrar_hash_seconds",
        "op=\"hash\"",
    );
    server.drain_log(|_| {});
    let capacity = Capacity {
        one: stats.p50,
        per_second: HASH_THREADS as f64 / stats.p50.as_secs_f64(),
        hash_mean,
    };
    println!(
        "\ncapacity: {count} sequential registrations (after {UNMEASURED} not measured): {}; \
         the server's mean hash time over them {}",
        stats.line(),
        capacity.hash_mean.map_or_else(|| "unknown".to_owned(), ms)
    );
    println!(
        "  → one hash ≈ {}, {HASH_THREADS} threads ≈ {:.1} hashes/s at most; an admitted \
         registration should take ≤ queue timeout + one hash = {}",
        ms(capacity.one),
        capacity.per_second,
        ms(capacity.admitted_bound())
    );
    if let Some(status) = proc_status(server.pid) {
        println!(
            "  server RSS after the warm-up: {:.1} MiB (VmHWM {:.1} MiB)",
            mib(status.rss_kib),
            mib(status.hwm_kib)
        );
    }
    Ok(capacity)
}

// ---------------------------------------------------------------------------------------------
// A load phase

/// Everything measured in one phase.
struct Report {
    phase: usize,
    clients: usize,
    duration: Duration,
    /// First request sent → last response read.
    wall: Duration,
    outcomes: Vec<Outcome>,
    /// `Retry-After` values seen on 503s, and how often.
    retry_after: BTreeMap<u64, usize>,
    /// Not-201, not-overloaded outcomes by description.
    odd: BTreeMap<String, usize>,
    created: Stats,
    overloaded: Stats,
    /// 201s whose response was read within the offered duration.
    created_in_window: usize,
    /// Responses read in each second of the phase: 201s, 503 overloaded, others.
    per_second: Vec<[usize; 3]>,
    /// 201s whose client-observed latency exceeded the admitted bound.
    created_slow: usize,
    /// The server's own latency (from its log) for 201s and 503s.
    server_created: Stats,
    server_overloaded: Stats,
    server_created_slow: usize,
    /// Warnings and errors in the server's log other than the expected one per 503.
    log_problems: BTreeMap<String, usize>,
    log_lines: usize,
    log_bytes: u64,
    pool: PoolFigures,
    cpu: CpuFigures,
    memory: MemoryFigures,
}

/// The pool's own figures for the phase, from `/metrics` deltas.
struct PoolFigures {
    hashes: f64,
    hash_mean: Option<Duration>,
    rejected_full: f64,
    rejected_timeout: f64,
    /// Jobs that started, by the upper bound of their queue wait (cumulative buckets).
    waits: Vec<(String, f64)>,
    waits_count: f64,
    wait_mean: Option<Duration>,
}

/// CPU seconds spent in the phase.
struct CpuFigures {
    /// Server threads grouped by name.
    server: BTreeMap<String, f64>,
    /// This process (the clients).
    client: f64,
    /// The whole machine: busy and total core-seconds (`/proc/stat`).
    machine_busy: f64,
    machine_total: f64,
}

impl CpuFigures {
    fn server_total(&self) -> f64 {
        self.server.values().sum()
    }

    /// Busy time that was neither the server nor this process: other work on the machine.
    fn others(&self) -> f64 {
        (self.machine_busy - self.server_total() - self.client).max(0.0)
    }
}

struct MemoryFigures {
    start_kib: u64,
    peak_kib: u64,
    end_kib: u64,
    /// `VmHWM` after the phase, reset before it when the kernel allows.
    hwm_kib: u64,
    hwm_was_reset: bool,
    peak_threads: u64,
    /// The largest sample of each second of the phase.
    per_second_kib: Vec<u64>,
}

impl MemoryFigures {
    fn new(samples: &[RssSample], start_kib: u64, end: ProcStatus, hwm_was_reset: bool) -> Self {
        let mut per_second_kib = Vec::new();
        for sample in samples {
            let second = usize::try_from(sample.at.as_secs()).unwrap_or(usize::MAX);
            if per_second_kib.len() <= second {
                per_second_kib.resize(second + 1, 0);
            }
            per_second_kib[second] = per_second_kib[second].max(sample.rss_kib);
        }
        Self {
            start_kib,
            peak_kib: samples
                .iter()
                .map(|sample| sample.rss_kib)
                .max()
                .unwrap_or(0)
                .max(start_kib),
            end_kib: end.rss_kib,
            hwm_kib: end.hwm_kib,
            hwm_was_reset,
            peak_threads: samples
                .iter()
                .map(|sample| sample.threads)
                .max()
                .unwrap_or(0),
            per_second_kib,
        }
    }
}

fn load_phase(
    server: &mut Server,
    phase: usize,
    clients: usize,
    duration: Duration,
    capacity: &Capacity,
    clock_ticks: f64,
) -> Result<Report, String> {
    println!(
        "\nphase {phase}: {clients} client threads ({:.1}× the {IN_THE_POOL} registrations the \
         pool holds) for {} s, no back-off on 503 …",
        clients as f64 / IN_THE_POOL as f64,
        duration.as_secs()
    );
    server.drain_log(|_| {});
    let metrics_before = server.metrics()?;
    let hwm_was_reset = reset_hwm(server.pid);
    let start_kib = proc_status(server.pid).map_or(0, |status| status.rss_kib);
    let cpu_before = thread_cpu(server.pid, clock_ticks);
    let client_cpu_before = self_cpu(clock_ticks);
    let machine_before = machine_cpu(clock_ticks);
    let rss_sampler = Sampler::start(server.pid);

    let (outcomes, wall) = offer_load(server.port, phase, clients, duration)?;

    let samples = rss_sampler.stop();
    let cpu_after = thread_cpu(server.pid, clock_ticks);
    let client_cpu = self_cpu(clock_ticks) - client_cpu_before;
    let machine_after = machine_cpu(clock_ticks);
    thread::sleep(SETTLE);
    let end = proc_status(server.pid).ok_or("the server is gone")?;
    let log = LogDigest::read(server);
    let metrics_after = server.metrics()?;
    let delta = MetricsDelta::new(&metrics_before, &metrics_after);

    let mut retry_after = BTreeMap::new();
    let mut odd = BTreeMap::new();
    let (mut created, mut overloaded) = (Vec::new(), Vec::new());
    for outcome in &outcomes {
        match &outcome.kind {
            Kind::Created => created.push(outcome.latency),
            Kind::Overloaded { retry_after: value } => {
                overloaded.push(outcome.latency);
                *retry_after.entry(*value).or_insert(0) += 1;
            }
            Kind::Odd(description) => *odd.entry(description.clone()).or_insert(0) += 1,
        }
    }
    let mut per_second = Vec::new();
    let mut created_in_window = 0;
    for outcome in &outcomes {
        let second = usize::try_from(outcome.finished.as_secs()).unwrap_or(usize::MAX);
        if per_second.len() <= second {
            per_second.resize(second + 1, [0; 3]);
        }
        let column = match outcome.kind {
            Kind::Created => {
                if outcome.finished <= duration {
                    created_in_window += 1;
                }
                0
            }
            Kind::Overloaded { .. } => 1,
            Kind::Odd(_) => 2,
        };
        per_second[second][column] += 1;
    }
    let bound = capacity.admitted_bound();
    let created_slow = created.iter().filter(|latency| **latency > bound).count();
    let server_created_slow = log
        .created
        .iter()
        .filter(|latency| **latency > bound)
        .count();

    let memory = MemoryFigures::new(&samples, start_kib, end, hwm_was_reset);
    let mut cpu = BTreeMap::new();
    for (group, seconds) in &cpu_after {
        let before = cpu_before.get(group).copied().unwrap_or(0.0);
        cpu.insert(group.clone(), seconds - before);
    }
    let pool = PoolFigures::from(&metrics_after, &delta);

    Ok(Report {
        phase,
        clients,
        duration,
        wall,
        retry_after,
        odd,
        created_in_window,
        per_second,
        created_slow,
        created: Stats::of(created),
        overloaded: Stats::of(overloaded),
        server_created_slow,
        server_created: Stats::of(log.created),
        server_overloaded: Stats::of(log.overloaded),
        log_problems: log.problems,
        log_lines: log.lines,
        log_bytes: log.bytes,
        outcomes,
        pool,
        cpu: CpuFigures {
            server: cpu,
            client: client_cpu,
            machine_busy: machine_after.0 - machine_before.0,
            machine_total: machine_after.1 - machine_before.1,
        },
        memory,
    })
}

impl PoolFigures {
    fn from(after: &BTreeMap<String, f64>, delta: &MetricsDelta) -> Self {
        let wait_name = "registrar_hash_queue_wait_seconds";
        let mut waits: Vec<(f64, String, f64)> = after
            .keys()
            .filter_map(|key| {
                let rest = key.strip_prefix(&format!("{wait_name}_bucket{{le=\""))?;
                let bound = rest.strip_suffix("\"}")?;
                let order = if bound == "+Inf" {
                    f64::INFINITY
                } else {
                    bound.parse().ok()?
                };
                Some((order, bound.to_owned(), delta.get(key)))
            })
            .collect();
        waits.sort_by(|a, b| a.0.total_cmp(&b.0));
        Self {
            hashes: delta.get("registrar_hash_seconds_count{op=\"hash\"}"),
            hash_mean: mean_seconds(after, delta, "registrar_hash_seconds", "op=\"hash\""),
            rejected_full: delta.get("registrar_hash_rejected_total{reason=\"queue_full\"}"),
            rejected_timeout: delta.get("registrar_hash_rejected_total{reason=\"queue_timeout\"}"),
            waits: waits
                .into_iter()
                .map(|(_, bound, count)| (bound, count))
                .collect(),
            waits_count: delta.get(&format!("{wait_name}_count")),
            wait_mean: mean_seconds(after, delta, wait_name, ""),
        }
    }

    /// The smallest bucket bound every started job's wait fits under.
    fn max_wait_bucket(&self) -> Option<&str> {
        self.waits
            .iter()
            .find(|(_, count)| *count >= self.waits_count && self.waits_count > 0.0)
            .map(|(bound, _)| bound.as_str())
    }
}

impl Report {
    /// 201s per second over the offered duration.
    fn throughput(&self) -> f64 {
        self.created_in_window as f64 / self.duration.as_secs_f64()
    }

    fn retry_after_text(&self) -> String {
        let values: Vec<String> = self
            .retry_after
            .iter()
            .map(|(seconds, count)| format!("{seconds} s × {count}"))
            .collect();
        values.join(", ")
    }

    /// The client gets its 503 quickly: 99 % of them come back before one hash would be done.
    fn overloaded_quick(&self, capacity: &Capacity) -> bool {
        self.overloaded.count > 0 && self.overloaded.p99 < capacity.one
    }

    /// The server refuses quickly once it handles the request: 90 % of its 503s take less than
    /// one hash (the rest include the refusals after waiting out the queue timeout).
    fn server_overloaded_quick(&self, capacity: &Capacity) -> bool {
        self.server_overloaded.count > 0 && self.server_overloaded.p90 < capacity.one
    }

    fn admitted_within_bound(&self) -> bool {
        self.created_slow == 0 && self.server_created_slow == 0
    }

    fn contract_failures(&self) -> Vec<String> {
        self.odd
            .iter()
            .filter(|(description, _)| !description.starts_with("socket"))
            .map(|(description, count)| {
                format!(
                    "phase {}: {count} × {description} (only 201 and 503 overloaded are \
                     expected)",
                    self.phase
                )
            })
            .collect()
    }

    #[allow(
        clippy::too_many_lines,
        reason = "one flat list of figures reads better than several fragments"
    )]
    fn print(&self, capacity: &Capacity) {
        let total = self.outcomes.len();
        let overloaded = self.overloaded.count;
        let odd: usize = self.odd.values().sum();
        let share = |part: usize| {
            if total == 0 {
                0.0
            } else {
                100.0 * part as f64 / total as f64
            }
        };
        println!(
            "  responses: {total} in {:.2} s (offered for {} s; the last requests in flight \
             finish after that)",
            self.wall.as_secs_f64(),
            self.duration.as_secs()
        );
        println!(
            "    201 created: {} ({:.2} %) | 503 overloaded: {overloaded} ({:.2} %), all with \
             type /problems/overloaded and Retry-After ({}) | other: {odd} ({:.2} %)",
            self.created.count,
            share(self.created.count),
            share(overloaded),
            self.retry_after_text(),
            share(odd)
        );
        for (description, count) in &self.odd {
            println!("      {count} × {description}");
        }
        println!(
            "  201 throughput: {:.1}/s over the offered {} s ({:.0} % of the {:.1} hashes/s \
             measured alone); 503s: {:.0}/s",
            self.throughput(),
            self.duration.as_secs(),
            100.0 * self.throughput() / capacity.per_second,
            capacity.per_second,
            overloaded as f64 / self.wall.as_secs_f64().max(f64::MIN_POSITIVE)
        );
        let timeline: Vec<String> = self
            .per_second
            .iter()
            .map(|[created, overloaded, odd]| {
                if *odd == 0 {
                    format!("{created}/{overloaded}")
                } else {
                    format!("{created}/{overloaded}/{odd}")
                }
            })
            .collect();
        println!(
            "    responses per second (201/503[/other]): {}",
            timeline.join(" ")
        );
        println!("  201 latency, client: {}", self.created.line());
        println!("  503 latency, client: {}", self.overloaded.line());
        println!("  201 latency, server: {}", self.server_created.line());
        println!("  503 latency, server: {}", self.server_overloaded.line());
        println!(
            "  201s slower than queue timeout + one hash ({}): client {} ({:.3} %), server {}",
            ms(capacity.admitted_bound()),
            self.created_slow,
            if self.created.count == 0 {
                0.0
            } else {
                100.0 * self.created_slow as f64 / self.created.count as f64
            },
            self.server_created_slow
        );
        println!(
            "  pool (server /metrics): {:.0} hashes, mean hash {}; refused: {:.0} queue full, \
             {:.0} queue timeout; queue wait of started jobs: mean {}, all ≤ {} s",
            self.pool.hashes,
            self.pool.hash_mean.map_or_else(|| "?".to_owned(), ms),
            self.pool.rejected_full,
            self.pool.rejected_timeout,
            self.pool.wait_mean.map_or_else(|| "?".to_owned(), ms),
            self.pool.max_wait_bucket().unwrap_or("?")
        );
        let waits: Vec<String> = self
            .pool
            .waits
            .iter()
            .map(|(bound, count)| format!("≤{bound}: {count:.0}"))
            .collect();
        println!("    queue wait buckets (cumulative): {}", waits.join(", "));
        let cpu: Vec<String> = self
            .cpu
            .server
            .iter()
            .map(|(group, seconds)| format!("{group} {seconds:.1} s"))
            .collect();
        println!(
            "  CPU during the load: server {:.1} s ({}) | client (this process) {:.1} s | \
             anything else on the machine {:.1} s | machine busy {:.1} of {:.1} core-seconds",
            self.cpu.server_total(),
            cpu.join(", "),
            self.cpu.client,
            self.cpu.others(),
            self.cpu.machine_busy,
            self.cpu.machine_total
        );
        println!(
            "  server RSS: start {:.1} MiB, peak {:.1} MiB, end {:.1} MiB ({} after the load); \
             VmHWM {:.1} MiB ({}); at most {} threads",
            mib(self.memory.start_kib),
            mib(self.memory.peak_kib),
            mib(self.memory.end_kib),
            humanize(SETTLE),
            mib(self.memory.hwm_kib),
            if self.memory.hwm_was_reset {
                "reset before the phase"
            } else {
                "since start-up: clear_refs refused"
            },
            self.memory.peak_threads
        );
        let timeline: Vec<String> = self
            .memory
            .per_second_kib
            .iter()
            .map(|kib| format!("{:.0}", mib(*kib)))
            .collect();
        println!("    RSS per second (MiB, max): {}", timeline.join(" "));
        println!(
            "  server log: {} lines, {:.1} MiB in the phase",
            self.log_lines,
            self.log_bytes as f64 / 1_048_576.0
        );
        for (line, count) in &self.log_problems {
            println!("    {count} × {line}");
        }
        println!(
            "  verdicts: 503 quick at the server (p90 {} < one hash {}): {} | at the client \
             (p99 {}): {} | admitted ≤ queue timeout + one hash: {} | every 503 well-formed: {}",
            ms(self.server_overloaded.p90),
            ms(capacity.one),
            yes(self.server_overloaded_quick(capacity)),
            ms(self.overloaded.p99),
            yes(self.overloaded_quick(capacity)),
            yes(self.admitted_within_bound()),
            yes(self.contract_failures().is_empty())
        );
        let cpu_server: BTreeMap<&str, f64> = self
            .cpu
            .server
            .iter()
            .map(|(group, seconds)| (group.as_str(), round(*seconds, 1)))
            .collect();
        let summary = json!({
            "phase": self.phase,
            "clients": self.clients,
            "in_the_pool": IN_THE_POOL,
            "hash_threads": HASH_THREADS,
            "hash_queue": HASH_QUEUE,
            "queue_timeout_ms": millis(QUEUE_TIMEOUT),
            "duration_s": self.duration.as_secs(),
            "wall_s": round(self.wall.as_secs_f64(), 2),
            "responses": total,
            "created": self.created.count,
            "created_in_window": self.created_in_window,
            "overloaded": overloaded,
            "other": self.odd,
            "retry_after_s": self.retry_after,
            "capacity_hashes_per_s": round(capacity.per_second, 1),
            "one_hash_ms": millis(capacity.one),
            "created_per_s": round(self.throughput(), 1),
            "created_latency": json_of(&self.created),
            "overloaded_latency": json_of(&self.overloaded),
            "server_created_latency": json_of(&self.server_created),
            "server_overloaded_latency": json_of(&self.server_overloaded),
            "admitted_bound_ms": millis(capacity.admitted_bound()),
            "created_slower_than_bound": self.created_slow,
            "server_created_slower_than_bound": self.server_created_slow,
            "pool_hashes": self.pool.hashes,
            "pool_refused_queue_full": self.pool.rejected_full,
            "pool_refused_queue_timeout": self.pool.rejected_timeout,
            "pool_wait_mean_ms": self.pool.wait_mean.map(millis),
            "cpu_server_s": cpu_server,
            "cpu_client_s": round(self.cpu.client, 1),
            "cpu_others_s": round(self.cpu.others(), 1),
            "cpu_machine_busy_s": round(self.cpu.machine_busy, 1),
            "cpu_machine_total_s": round(self.cpu.machine_total, 1),
            "rss_start_mib": round(mib(self.memory.start_kib), 1),
            "rss_peak_mib": round(mib(self.memory.peak_kib), 1),
            "rss_end_mib": round(mib(self.memory.end_kib), 1),
            "vm_hwm_mib": round(mib(self.memory.hwm_kib), 1),
            "peak_threads": self.memory.peak_threads,
            "overloaded_quick_client": self.overloaded_quick(capacity),
            "overloaded_quick_server": self.server_overloaded_quick(capacity),
            "admitted_within_bound": self.admitted_within_bound(),
        });
        println!("OVERLOAD_SUMMARY {summary}");
    }
}

fn yes(holds: bool) -> &'static str {
    if holds { "yes" } else { "NO" }
}

// ---------------------------------------------------------------------------------------------
// The clients

/// One registration attempt as a client saw it.
struct Outcome {
    /// Before connecting, to the response read whole (or the failure).
    latency: Duration,
    /// When the response had been read, from the start of the phase.
    finished: Duration,
    kind: Kind,
}

enum Kind {
    Created,
    /// 503 `/problems/overloaded` with a `Retry-After` of this many seconds.
    Overloaded {
        retry_after: u64,
    },
    /// Anything else, described.
    Odd(String),
}

/// `clients` threads register distinct addresses back to back for `duration`; returns every
/// outcome and the time from the start to the last response.
fn offer_load(
    port: u16,
    phase: usize,
    clients: usize,
    duration: Duration,
) -> Result<(Vec<Outcome>, Duration), String> {
    // Every client waits behind the write lock, so that all of them start at once.
    let gate = RwLock::new(());
    let start = OnceLock::new();
    let abort = AtomicBool::new(false);
    thread::scope(|scope| {
        let closed = gate.write().map_err(|_| "the start gate is poisoned")?;
        let mut workers = Vec::with_capacity(clients);
        let mut refused = None;
        for client in 0..clients {
            let (gate, start, abort) = (&gate, &start, &abort);
            let spawned = thread::Builder::new()
                .stack_size(CLIENT_STACK)
                .spawn_scoped(scope, move || {
                    drop(gate.read());
                    let started: Instant =
                        *start.get().expect("the start is set before the gate opens");
                    client_loop(port, phase, client, started, duration, abort)
                });
            match spawned {
                Ok(worker) => workers.push(worker),
                Err(error) => {
                    refused = Some(format!("could not start client thread {client}: {error}"));
                    break;
                }
            }
        }
        // When a thread could not start, those that did stop before their first request.
        abort.store(refused.is_some(), Ordering::SeqCst);
        let started = Instant::now();
        start.set(started).map_err(|_| "the start was set twice")?;
        drop(closed);
        let mut outcomes = Vec::new();
        for worker in workers {
            outcomes.extend(worker.join().map_err(|_| "a client thread panicked")?);
        }
        match refused {
            Some(message) => Err(message),
            None => Ok((outcomes, started.elapsed())),
        }
    })
}

fn client_loop(
    port: u16,
    phase: usize,
    client: usize,
    start: Instant,
    duration: Duration,
    abort: &AtomicBool,
) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    let mut i = 0_usize;
    while !abort.load(Ordering::SeqCst) && start.elapsed() < duration {
        let email = format!("p{phase}-c{client}-{i}@example.com");
        i += 1;
        let started = Instant::now();
        let result = register(port, &email);
        let latency = started.elapsed();
        let finished = start.elapsed();
        let kind = match result {
            Ok(response) => response.kind(),
            Err((stage, error)) => {
                thread::sleep(SOCKET_ERROR_PAUSE);
                Kind::Odd(format!("socket error at {stage}: {error}"))
            }
        };
        outcomes.push(Outcome {
            latency,
            finished,
            kind,
        });
    }
    outcomes
}

/// The parts of a response the benchmark checks.
struct Response {
    status: u16,
    retry_after: Option<String>,
    problem_type: Option<String>,
}

impl Response {
    fn kind(&self) -> Kind {
        match self.status {
            201 => Kind::Created,
            503 => {
                let retry_after = self
                    .retry_after
                    .as_deref()
                    .and_then(|value| value.trim().parse::<u64>().ok())
                    .filter(|seconds| *seconds > 0);
                match (self.problem_type.as_deref(), retry_after) {
                    (Some("/problems/overloaded"), Some(retry_after)) => {
                        Kind::Overloaded { retry_after }
                    }
                    (problem_type, _) => Kind::Odd(format!(
                        "503 {} with Retry-After {:?}",
                        problem_type.unwrap_or("(no problem type)"),
                        self.retry_after
                    )),
                }
            }
            status => Kind::Odd(format!(
                "{status} {}",
                self.problem_type.as_deref().unwrap_or("(no problem type)")
            )),
        }
    }
}

/// One registration on a fresh connection (`Connection: close`), read to the end.
fn register(port: u16, email: &str) -> Result<Response, (&'static str, std::io::Error)> {
    let body = support::registration_body(email);
    let (status, head, body) = http(port, "POST /v1/users", Some(&body))?;
    let retry_after = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("retry-after")
            .then(|| value.trim().to_owned())
    });
    let problem_type = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|problem| problem["type"].as_str().map(str::to_owned));
    Ok(Response {
        status,
        retry_after,
        problem_type,
    })
}

// ---------------------------------------------------------------------------------------------
// The server

struct Server {
    process: Process,
    pid: u32,
    port: u16,
    log_path: PathBuf,
}

impl Server {
    fn start(binary: &Path) -> Result<Self, String> {
        let log_path =
            std::env::temp_dir().join(format!("registrar-overload-{}.log", std::process::id()));
        let mut process = Process::spawn_logging_to(
            serve_command(binary)
                .env("REGISTRAR_RATE_LIMITS", "off")
                .env("REGISTRAR_HASH_THREADS", HASH_THREADS.to_string())
                .env("REGISTRAR_HASH_QUEUE", HASH_QUEUE.to_string())
                .env("REGISTRAR_HASH_QUEUE_TIMEOUT", QUEUE_TIMEOUT_SETTING),
            &log_path,
        )
        .map_err(|error| format!("could not start {}: {error}", binary.display()))?;
        let port = process
            .wait_for_listening(START_PATIENCE)
            .map_err(|log| format!("the server did not say it was listening: {log}"))?;
        Ok(Self {
            pid: process.id(),
            process,
            port,
            log_path,
        })
    }

    /// Calls `each` with every complete line written since the last call; returns their size.
    fn drain_log(&mut self, each: impl FnMut(&str)) -> u64 {
        let (lines, bytes) = self.process.drain();
        lines.iter().map(String::as_str).for_each(each);
        bytes
    }

    /// `/metrics` as `name{labels}` → value.
    fn metrics(&self) -> Result<BTreeMap<String, f64>, String> {
        let (status, _, body) = http(self.port, "GET /metrics", None)
            .map_err(|(stage, error)| format!("GET /metrics: {stage}: {error}"))?;
        if status != 200 {
            return Err(format!("GET /metrics answered {status}"));
        }
        Ok(body
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (key, value) = line.rsplit_once(' ')?;
                Some((key.to_owned(), value.parse().ok()?))
            })
            .collect())
    }

    /// SIGTERM, then waits for the exit (SIGKILL after 30 s).
    fn terminate(mut self) -> Shutdown {
        self.drain_log(|_| {});
        let asked = Instant::now();
        let success = self.process.terminate(support::STOP_PATIENCE);
        let took = asked.elapsed();
        let mut last_lines = Vec::new();
        self.drain_log(|line| last_lines.push(brief(line)));
        Shutdown {
            success,
            took,
            last_lines,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.process.kill();
        if std::env::var_os("REGISTRAR_BENCH_KEEP_LOG").is_some() {
            println!("server log kept: {}", self.log_path.display());
        } else {
            let _ = std::fs::remove_file(&self.log_path);
        }
    }
}

struct Shutdown {
    success: bool,
    took: Duration,
    last_lines: Vec<String>,
}

/// A log line as `LEVEL message (error)`, or as it is when it is not JSON.
fn brief(line: &str) -> String {
    support::brief(line, &["level", "message"])
}

/// What the server logged during a phase.
struct LogDigest {
    lines: usize,
    bytes: u64,
    /// Server-side latency of registrations, from `request completed`.
    created: Vec<Duration>,
    overloaded: Vec<Duration>,
    /// Warnings and errors, except the `request failed` error each 503 is logged with.
    problems: BTreeMap<String, usize>,
}

impl LogDigest {
    fn read(server: &mut Server) -> Self {
        let mut digest = Self {
            lines: 0,
            bytes: 0,
            created: Vec::new(),
            overloaded: Vec::new(),
            problems: BTreeMap::new(),
        };
        digest.bytes = server.drain_log(|line| {
            digest.lines += 1;
            let Ok(event) = serde_json::from_str::<Value>(line) else {
                *digest
                    .problems
                    .entry(format!("not JSON: {line}"))
                    .or_insert(0) += 1;
                return;
            };
            let level = event["level"].as_str().unwrap_or_default();
            let message = event["message"].as_str().unwrap_or_default();
            let status = event["status"].as_u64();
            if message == "request completed" && event["span"]["path"] == "/v1/users" {
                let latency = event["latency_ms"]
                    .as_f64()
                    .map(|latency| Duration::from_secs_f64(latency / 1000.0));
                match (status, latency) {
                    (Some(201), Some(latency)) => digest.created.push(latency),
                    (Some(503), Some(latency)) => digest.overloaded.push(latency),
                    _ => {}
                }
            } else {
                let expected = message == "request failed"
                    && status == Some(503)
                    && event["error"] == "the service is overloaded";
                if matches!(level, "INFO" | "DEBUG" | "TRACE") || expected {
                    return;
                }
                *digest.problems.entry(brief(line)).or_insert(0) += 1;
            }
        });
        digest
    }
}

// ---------------------------------------------------------------------------------------------
// /proc

#[derive(Clone, Copy)]
struct ProcStatus {
    rss_kib: u64,
    hwm_kib: u64,
    threads: u64,
}

fn proc_status(pid: u32) -> Option<ProcStatus> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines().find_map(|line| {
            line.strip_prefix(name)?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
    };
    Some(ProcStatus {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
        threads: field("Threads:")?,
    })
}

/// Resets the process's peak RSS (`VmHWM`) to its current RSS.
fn reset_hwm(pid: u32) -> bool {
    OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/clear_refs"))
        .and_then(|mut file| file.write_all(b"5"))
        .is_ok()
}

fn mem_total_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                line.strip_prefix("MemTotal:")?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 when unknown, as on every Linux seen).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse::<u32>().ok())
        .map_or(100.0, f64::from)
}

/// User + system seconds of a `/proc/.../stat` line.
fn stat_seconds(stat: &str, clock_ticks: f64) -> Option<(String, f64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // After the name: state is field 3 of the line, utime 14, stime 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((name, (utime + stime) / clock_ticks))
}

/// CPU seconds of the server's threads, grouped: the hashing threads, the HTTP workers, the
/// rest by thread name.
fn thread_cpu(pid: u32, clock_ticks: f64) -> BTreeMap<String, f64> {
    let mut groups = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return groups;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let Some((name, seconds)) = stat_seconds(&stat, clock_ticks) else {
            continue;
        };
        let group = if name.starts_with("argon2-") {
            "hashing (argon2-*)".to_owned()
        } else if name.starts_with("actix-rt") {
            "HTTP workers".to_owned()
        } else {
            name
        };
        *groups.entry(group).or_insert(0.0) += seconds;
    }
    groups
}

/// Busy and total core-seconds of the whole machine since boot (`/proc/stat`; idle and iowait
/// count as not busy).
fn machine_cpu(clock_ticks: f64) -> (f64, f64) {
    let Some(line) = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|text| text.lines().next().map(str::to_owned))
    else {
        return (0.0, 0.0);
    };
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|field| field.parse().ok())
        .collect();
    let total: f64 = ticks.iter().sum();
    let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
    ((total - idle) / clock_ticks, total / clock_ticks)
}

/// CPU seconds of this whole process (exited threads included).
fn self_cpu(clock_ticks: f64) -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| stat_seconds(&stat, clock_ticks))
        .map_or(0.0, |(_, seconds)| seconds)
}

/// One reading of the server's memory.
struct RssSample {
    at: Duration,
    rss_kib: u64,
    threads: u64,
}

/// Reads the server's `VmRSS` every [`RSS_PERIOD`] until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<RssSample>>,
}

impl Sampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = thread::spawn({
            let stop = Arc::clone(&stop);
            move || {
                let started = Instant::now();
                let mut samples = Vec::new();
                let mut next = started;
                while !stop.load(Ordering::SeqCst) {
                    if let Some(status) = proc_status(pid) {
                        samples.push(RssSample {
                            at: started.elapsed(),
                            rss_kib: status.rss_kib,
                            threads: status.threads,
                        });
                    }
                    next += RSS_PERIOD;
                    thread::sleep(next.saturating_duration_since(Instant::now()));
                }
                samples
            }
        });
        Self { stop, handle }
    }

    fn stop(self) -> Vec<RssSample> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap()
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics

/// Differences between two `/metrics` readings.
#[derive(Default)]
struct MetricsDelta {
    values: BTreeMap<String, f64>,
}

impl MetricsDelta {
    fn new(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> Self {
        Self {
            values: after
                .iter()
                .map(|(key, value)| (key.clone(), value - before.get(key).copied().unwrap_or(0.0)))
                .collect(),
        }
    }

    fn get(&self, key: &str) -> f64 {
        self.values.get(key).copied().unwrap_or(0.0)
    }
}

/// The mean of a histogram `name{labels}` over a delta, or over the whole reading when the
/// delta is empty.
fn mean_seconds(
    reading: &BTreeMap<String, f64>,
    delta: &MetricsDelta,
    name: &str,
    labels: &str,
) -> Option<Duration> {
    let key = |suffix: &str| {
        if labels.is_empty() {
            format!("{name}_{suffix}")
        } else {
            format!("{name}_{suffix}{{{labels}}}")
        }
    };
    let pick = |key: String| {
        if delta.values.is_empty() {
            reading.get(&key).copied().unwrap_or(0.0)
        } else {
            delta.get(&key)
        }
    };
    let (sum, count) = (pick(key("sum")), pick(key("count")));
    (count > 0.0).then(|| Duration::from_secs_f64(sum / count))
}

// ---------------------------------------------------------------------------------------------
// Figures

/// The figures as JSON: [`Stats::json_with`] this benchmark's [`millis`].
fn json_of(stats: &Stats) -> Value {
    stats.json_with(millis)
}

/// Milliseconds to one decimal, for the summary line.
fn millis(duration: Duration) -> f64 {
    round(duration.as_secs_f64() * 1000.0, 1)
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10_f64.powi(decimals);
    (value * scale).round() / scale
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn humanize(duration: Duration) -> String {
    format!("{} s", duration.as_secs())
}

//! The figures of a run: one row per measurement with its ratio to the Argon2 bound, the
//! targets each row is held to, the table printed on the terminal and `docs/benchmarks.md`.

use std::{fmt::Write as _, path::Path, time::Duration};

use crate::client::{Outcome, count};

/// Where the server, PostgreSQL and the driver ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Server on CPU 0, PostgreSQL and the driver on CPU 1, PostgreSQL store.
    PinnedPostgres,
    /// Server on CPU 0, the driver on CPU 1, in-memory store.
    PinnedMemory,
    /// Everything shares every CPU, PostgreSQL store.
    WholeMachine,
}

impl Placement {
    /// The short label of the table.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::PinnedPostgres => "1 core, PostgreSQL",
            Self::PinnedMemory => "1 core, memory",
            Self::WholeMachine => "whole machine",
        }
    }
}

/// What a row measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Work {
    /// Closed-loop registrations, clients back off on 503.
    Register,
    /// Closed-loop activations (Basic auth: one verify, one store write).
    Activate,
    /// Registrations sent at one instant, once each.
    Burst,
    /// Closed-loop registrations, clients retry every 503 at once.
    Hammer,
}

impl Work {
    fn label(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::Activate => "activate",
            Self::Burst => "burst",
            Self::Hammer => "never back off",
        }
    }
}

/// One measurement.
pub(crate) struct Row {
    pub(crate) placement: Placement,
    pub(crate) work: Work,
    pub(crate) clients: usize,
    /// Argon2 operations per second the row's CPUs allow.
    pub(crate) bound: f64,
    pub(crate) outcome: Outcome,
    /// 1 for the first measurement of a row; the rows held to a target are measured again, in
    /// later rounds, each against its own bound.
    pub(crate) round: usize,
    /// The server's CPU time over the row.
    pub(crate) cpu: CpuSplit,
    /// The machine's CPU time over the row: PostgreSQL, the driver, every CPU.
    pub(crate) machine: MachineCpu,
    /// The CPUs the row's bound covers (and the server had).
    pub(crate) cpus: usize,
}

/// The server's CPU time over a row, seconds: its hashing threads (Argon2, and for
/// registrations the password strength estimate, which runs there too) and all its others
/// (HTTP, the database connections, the mail dispatcher).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct CpuSplit {
    pub(crate) hashing: f64,
    pub(crate) other: f64,
}

impl CpuSplit {
    /// The split of a reading of the server's threads (name, seconds): the hashing pool names its
    /// threads `argon2-N`.
    pub(crate) fn of(threads: &[(String, f64)]) -> Self {
        threads
            .iter()
            .fold(Self::default(), |split, (name, seconds)| {
                if name.starts_with("argon2-") {
                    Self {
                        hashing: split.hashing + seconds,
                        ..split
                    }
                } else {
                    Self {
                        other: split.other + seconds,
                        ..split
                    }
                }
            })
    }

    /// What was used between the reading `earlier` and this one.
    pub(crate) fn since(self, earlier: Self) -> Self {
        Self {
            hashing: (self.hashing - earlier.hashing).max(0.0),
            other: (self.other - earlier.other).max(0.0),
        }
    }
}

/// The machine's CPU time over a row, seconds: PostgreSQL's processes, the driver (this program,
/// whose only work during a row is its clients) and every CPU's busy time (`/proc/stat`: every
/// process, the server's included, and the kernel's work that no process is charged for).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct MachineCpu {
    pub(crate) database: f64,
    pub(crate) driver: f64,
    pub(crate) busy: f64,
}

impl MachineCpu {
    /// What was used between the reading `earlier` and this one.
    pub(crate) fn since(self, earlier: Self) -> Self {
        Self {
            database: (self.database - earlier.database).max(0.0),
            driver: (self.driver - earlier.driver).max(0.0),
            busy: (self.busy - earlier.busy).max(0.0),
        }
    }
}

impl Row {
    /// Successes per second, over the bound.
    pub(crate) fn ratio(&self) -> f64 {
        self.outcome.rate() / self.bound
    }

    fn percentiles(&self) -> [Duration; 4] {
        [50, 90, 99, 100].map(|percent| percentile(&self.outcome.ok, percent))
    }

    fn work_label(&self) -> String {
        match self.round {
            1 => self.work.label().to_owned(),
            round => format!("{}, round {round}", self.work.label()),
        }
    }

    fn cells(&self) -> Vec<String> {
        let [p50, p90, p99, max] = self.percentiles();
        let other = self.outcome.odd();
        vec![
            self.placement.label().to_owned(),
            self.work_label(),
            self.clients.to_string(),
            self.outcome.ok.len().to_string(),
            self.outcome.refused.to_string(),
            other.to_string(),
            format!("{:.2}", self.outcome.elapsed.as_secs_f64()),
            format!("{:.1}", self.outcome.rate()),
            format!("{:.1}", self.bound),
            format!("{:.2}", self.ratio()),
            ms(p50),
            ms(p90),
            ms(p99),
            ms(max),
        ]
    }

    /// The cells of the CPU table, or `None` for a row with no success or a server that shares
    /// its CPUs (the whole machine).
    fn cpu_cells(&self) -> Option<Vec<String>> {
        let ok = count(self.outcome.ok.len());
        if ok == 0.0 || self.placement == Placement::WholeMachine {
            return None;
        }
        let busy = (self.cpu.hashing + self.cpu.other)
            / self.outcome.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        let hashing = self.cpu.hashing * 1000.0 / ok;
        let alone = 1000.0 / self.bound;
        Some(vec![
            self.placement.label().to_owned(),
            self.work_label(),
            self.clients.to_string(),
            self.outcome.ok.len().to_string(),
            format!("{:.0} %", busy * 100.0),
            format!("{hashing:.2}"),
            format!("{alone:.2}"),
            format!("{:.3}", hashing / alone),
            format!("{:.2}", self.cpu.other * 1000.0 / ok),
            format!("{:.2}", self.ratio()),
        ])
    }

    /// The cells of the whole machine's CPU table, or `None` for a row with no success or a
    /// server pinned to its own CPU (the table above covers those).
    fn machine_cells(&self) -> Option<Vec<String>> {
        let ok = count(self.outcome.ok.len());
        if ok == 0.0 || self.placement != Placement::WholeMachine {
            return None;
        }
        let per_ok = |seconds: f64| seconds * 1000.0 / ok;
        let server = self.cpu.hashing + self.cpu.other;
        let rest = self.machine.busy - server - self.machine.database - self.machine.driver;
        let busy = self.machine.busy
            / (count(self.cpus) * self.outcome.elapsed.as_secs_f64()).max(f64::MIN_POSITIVE);
        Some(vec![
            self.placement.label().to_owned(),
            self.work_label(),
            self.clients.to_string(),
            self.outcome.ok.len().to_string(),
            format!("{:.0} %", busy * 100.0),
            format!("{:.2}", per_ok(self.cpu.hashing)),
            format!("{:.2}", per_ok(self.cpu.other)),
            format!("{:.2}", per_ok(self.machine.database)),
            format!("{:.2}", per_ok(self.machine.driver)),
            format!("{:.2}", per_ok(rest)),
            format!("{:.2}", per_ok(self.machine.busy)),
            format!("{:.2}", count(self.cpus) * 1000.0 / self.bound),
            format!("{:.2}", self.ratio()),
        ])
    }
}

/// The nearest-rank `percent`-th percentile of `samples` (zero when there are none).
pub(crate) fn percentile(samples: &[Duration], percent: usize) -> Duration {
    let mut samples = samples.to_vec();
    samples.sort_unstable();
    samples
        .get((percent * samples.len()).div_ceil(100).max(1) - 1)
        .copied()
        .unwrap_or_default()
}

const HEADERS: [&str; 14] = [
    "set-up", "work", "clients", "ok", "503", "other", "s", "ok/s", "bound/s", "ratio", "p50 ms",
    "p90 ms", "p99 ms", "max ms",
];

/// The CPU table: per success, the server's CPU time on its hashing threads and on the others,
/// beside the time one hash takes alone (1000 / bound); a row's ratio is
/// busy × alone ÷ (hashing + others).
const CPU_HEADERS: [&str; 10] = [
    "set-up",
    "work",
    "clients",
    "ok",
    "busy",
    "hashing ms/ok",
    "alone ms",
    "hashing ÷ alone",
    "others ms/ok",
    "ratio",
];

/// The whole machine's CPU table: per success, the CPU time of the server's hashing threads and
/// its others, of PostgreSQL, of the driver and of the rest of the machine, their total, and the
/// CPU time a hash takes when every CPU hashes (CPUs × 1000 / bound); a row's ratio is
/// busy × at the bound ÷ total.
const MACHINE_HEADERS: [&str; 13] = [
    "set-up",
    "work",
    "clients",
    "ok",
    "busy",
    "hashing ms/ok",
    "server others ms/ok",
    "PostgreSQL ms/ok",
    "driver ms/ok",
    "rest ms/ok",
    "total ms/ok",
    "at the bound ms",
    "ratio",
];

fn ms(duration: Duration) -> String {
    format!("{:.1}", duration.as_secs_f64() * 1000.0)
}

/// A target and whether the run met it.
pub(crate) struct Verdict {
    pub(crate) target: String,
    pub(crate) measured: String,
    pub(crate) met: bool,
}

impl Verdict {
    /// A rate target over every round of one row: met when the median of the rounds' ratios
    /// (each against the bound beside it) reaches `at_least`. The median, not the best round:
    /// on a shared machine any one round may be lucky, or unlucky, by more than the margin.
    /// Ratios are given to three places, cut rather than rounded (see [`thousandths`]), so that a
    /// median just under a target does not print as the target.
    pub(crate) fn rate(target: &str, rounds: &[&Row], at_least: f64) -> Option<Self> {
        let mut ratios: Vec<f64> = rounds.iter().map(|row| row.ratio()).collect();
        ratios.sort_by(f64::total_cmp);
        let median = *ratios.get(ratios.len() / 2)?;
        let each = rounds
            .iter()
            .map(|row| {
                format!(
                    "{:.1}/s = {} × {:.1}/s",
                    row.outcome.rate(),
                    thousandths(row.ratio()),
                    row.bound
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        Some(Self {
            target: target.to_owned(),
            measured: match rounds.len() {
                1 => each,
                n => format!("median {} over {n} rounds ({each})", thousandths(median)),
            },
            met: median >= at_least,
        })
    }
}

/// `ratio` to three places, cut: 0.7996 reads 0.799, as a ratio under 0.8 must. (The nudge
/// keeps a ratio that is the target, up to floating-point error, from reading one under it.)
fn thousandths(ratio: f64) -> String {
    format!("{:.3}", (ratio * 1000.0 + 1e-9).floor() / 1000.0)
}

/// Everything the document says besides the rows.
pub(crate) struct Context {
    pub(crate) machine: String,
    /// argon2 0.5 against 0.6 (`versions.rs`).
    pub(crate) versions: String,
    pub(crate) bounds: String,
    pub(crate) database: String,
    pub(crate) warnings: Vec<String>,
    pub(crate) memory: String,
    pub(crate) health: String,
    pub(crate) started: String,
}

/// The rows as a fixed-width table for the terminal.
pub(crate) fn table(rows: &[Row]) -> String {
    fixed_width(&HEADERS, &rows.iter().map(Row::cells).collect::<Vec<_>>())
}

/// Where the server's CPU went in the 1-core rows, as a fixed-width table for the terminal.
pub(crate) fn cpu_table(rows: &[Row]) -> String {
    fixed_width(&CPU_HEADERS, &cpu_cells(rows))
}

fn cpu_cells(rows: &[Row]) -> Vec<Vec<String>> {
    rows.iter().filter_map(Row::cpu_cells).collect()
}

/// Where the whole machine's CPU went in its rows, as a fixed-width table for the terminal.
pub(crate) fn machine_table(rows: &[Row]) -> String {
    fixed_width(&MACHINE_HEADERS, &machine_cells(rows))
}

fn machine_cells(rows: &[Row]) -> Vec<Vec<String>> {
    rows.iter().filter_map(Row::machine_cells).collect()
}

/// `cells` under `headers`, each column as wide as its widest cell; the first two columns to
/// the left, the figures to the right.
fn fixed_width(headers: &[&str], cells: &[Vec<String>]) -> String {
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(column, header)| {
            cells
                .iter()
                .map(|row| row[column].chars().count())
                .chain([header.chars().count()])
                .max()
                .unwrap_or_default()
        })
        .collect();
    let line = |row: &[String]| {
        row.iter()
            .zip(&widths)
            .enumerate()
            .map(|(column, (cell, width))| {
                if column < 2 {
                    format!("{cell:<width$}")
                } else {
                    format!("{cell:>width$}")
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let headers: Vec<String> = headers.iter().map(|header| (*header).to_owned()).collect();
    let mut text = line(&headers);
    for row in cells {
        text.push('\n');
        text.push_str(&line(row));
    }
    text
}

/// `cells` under `headers` as a Markdown table, the figures aligned right.
fn markdown_table(headers: &[&str], cells: &[Vec<String>]) -> String {
    let mut text = format!("| {} |\n", headers.join(" | "));
    let _ = writeln!(
        text,
        "|{}",
        (0..headers.len())
            .map(|column| if column < 2 { "---|" } else { "---:|" })
            .collect::<String>()
    );
    for row in cells {
        let _ = writeln!(text, "| {} |", row.join(" | "));
    }
    text
}

/// The capacity section of `docs/benchmarks.md`, between its markers.
pub(crate) fn markdown(rows: &[Row], verdicts: &[Verdict], context: &Context) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "{BEGIN}");
    text.push_str(METHOD);
    let _ = writeln!(text, "\n### This run ({})\n", context.started);
    let _ = writeln!(text, "- Machine: {}", context.machine);
    let _ = writeln!(text, "- {}", context.versions);
    let _ = writeln!(text, "- Argon2 bound: {}", context.bounds);
    let _ = writeln!(text, "- PostgreSQL: {}", context.database);
    let _ = writeln!(text, "- Server memory: {}", context.memory);
    let _ = writeln!(text, "- `/healthz`: {}", context.health);
    for warning in &context.warnings {
        let _ = writeln!(text, "- **Warning:** {warning}");
    }
    let _ = writeln!(
        text,
        "\n![Throughput and p99 latency against clients, with the Argon2 bound]\
         (benchmarks.svg)\n"
    );
    text.push_str(&markdown_table(
        &HEADERS,
        &rows.iter().map(Row::cells).collect::<Vec<_>>(),
    ));
    let _ = writeln!(text, "\n### Where the server's CPU went\n");
    text.push_str(CPU_METHOD);
    text.push_str(&markdown_table(&CPU_HEADERS, &cpu_cells(rows)));
    let _ = writeln!(text, "\n### Where the whole machine's CPU went\n");
    text.push_str(MACHINE_METHOD);
    text.push_str(&markdown_table(&MACHINE_HEADERS, &machine_cells(rows)));
    let _ = writeln!(text, "\n### Targets\n");
    let _ = writeln!(text, "| target | measured | met |\n|---|---|---|");
    for verdict in verdicts {
        let _ = writeln!(
            text,
            "| {} | {} | {} |",
            verdict.target,
            verdict.measured,
            if verdict.met { "yes" } else { "**no**" }
        );
    }
    let _ = writeln!(text, "{END}");
    text
}

const CPU_METHOD: &str = "For each 1-core row, the CPU time of every server thread, read from \
`/proc/<pid>/task/<tid>/schedstat` (nanoseconds the scheduler counted) just before and just \
after the row, split into the hashing threads (`argon2-N`: Argon2, and for registrations the \
password strength estimate, which runs there too) and all the others (HTTP, the database \
connections, the mail dispatcher), per success. *busy* is the server's CPU time over the \
row's wall time; *alone* is the time of one hash with the CPU to itself (1000 / the row's \
bound). A row's ratio is busy × alone ÷ (hashing + others): what stands between a row and \
its bound is an idle core, a hash slower than alone (the CPU beside it shares the caches \
and the memory bus), or the work besides hashing.

";

const MACHINE_METHOD: &str = "For each whole-machine row, where the CPU time of both CPUs \
went, per success: the server's threads read as above, PostgreSQL's processes (the postmaster, \
its live processes and those it reaped, `/proc/<pid>/stat`; on the local server, which is not \
the run's own, it counts in *rest*), the driver (this program, whose only work during a row is \
its clients) and *rest*: the busy time of every CPU (`/proc/stat`) less those, which is the \
kernel's work that no process is charged for and the machine's other processes (the figures \
are in clock ticks, 10 ms, so *rest* may come out a little below zero). \
*busy* is every CPU's busy time over the CPUs × the row's wall time; *at the bound* is the CPU \
time of one hash when every CPU hashes (CPUs × 1000 / the row's bound). A row's ratio is \
busy × at the bound ÷ total: besides an idle CPU, what stands between the whole machine and \
its bound is the whole of the total beyond one hash, the database's and the driver's work \
included.

";

const BEGIN: &str =
    "<!-- capacity: written by `just bench`; edits between these markers are lost -->";
const END: &str = "<!-- capacity: end -->";

const METHOD: &str = "## Capacity: throughput and latency against the Argon2 bound

```sh
just bench
# = cargo build --release -p registrar && cargo run --release -p registrar-bench --bin capacity
```

### Method

One run of one program (`crates/bench`, binary `capacity`) measures everything below on the same
machine, so every figure can be compared with a bound taken seconds before and after it:

1. **The bound.** On each CPU in turn, the program re-runs itself under `taskset -c N` and hashes
   with the server's own hasher (`registrar-adapters-argon2`, one thread, the default Argon2id
   costs m = 19456 KiB, t = 2, p = 1) for 2 s after two warm-up hashes, and takes the median
   time of one hash. It does so before the load and again after it, and keeps the faster of the
   two per CPU (other processes only ever slow hashing down): the bound for the run, drawn in
   the chart. **Beside each row**, the same measurement is taken again, on the server's CPU
   (every CPU at once for the whole-machine rows) just before the row and just after it, with
   the server idle, and the row's bound is the mean of the two (a row's after is the next row's
   before). The reason: on this shared machine the time of one hash drifts with what the
   neighbours do, by as much as a fifth within one run (10.7 ms before the load, 13.0 ms after
   it, in one run of 30 November), so a row compared with a bound taken minutes away says as
   much about the neighbours as about the server. One CPU's bound is
   1 / (seconds per hash). The whole machine's is measured the same way with every CPU hashing
   at once (one pinned child per CPU, started together), and is the sum of those rates: the
   cores share caches and memory bandwidth (on a virtual machine they may be two threads of one
   physical core), so two hashes at once each take longer than one alone, and the sum of the
   CPUs measured alone would be a bound no server could reach. Both are printed. A
   registration costs one hash and an activation one verify (HTTP Basic), which costs the
   same, so one bound serves both.
   **argon2 0.5 against 0.6.** Before the load, the program also re-runs itself under
   `taskset -c` on the first CPU and times the raw Argon2id hash (same costs, each version in
   one block array reused from hash to hash, as the server's threads do) with the argon2 crate
   0.5 and with 0.6, the version the server uses: 100 rounds of one hash with each, the order
   alternating from round to round, so a neighbour that takes the CPU slows both alike. The
   line *Argon2 per hash* gives the median wall time of each, their middle 80 %, the median
   thread CPU time of each (which leaves out the time the CPU ran something else), and the
   median over the rounds of the ratio 0.6 / 0.5. The two versions must give the same hash.
2. **The set-ups.** PostgreSQL is the test toolkit's private throw-away cluster (initdb in a
   temporary directory, a free port), with PostgreSQL's default durability restored (`fsync`,
   `synchronous_commit` and `full_page_writes` on, which the tests turn off), moved to CPU 1
   once started (the postmaster
   and its processes; connections inherit it) and deleted at the end. The
   release server runs with its defaults (pool sizes follow the CPUs it is given), the log
   mailer, JSON logs to a file, per-address rate limits off and codes valid for 30 minutes.
   *1 core*: the server under `taskset -c 0`, the driver moved to CPU 1 beside PostgreSQL; on
   PostgreSQL and again on the in-memory store. *Whole machine*: server, PostgreSQL and driver
   all on every CPU. With one CPU nothing is pinned and the run says so.
3. **The rows.** *register*: N clients register distinct addresses back to back for 5 s, one
   `Connection: close` HTTP/1.1 request per connection; a client that gets a 503 waits its
   `Retry-After` and sends the same registration again. *never back off*: the same with 64
   and with 256 clients that resend at once on every 503 (64 fit within the queue timeout
   while a hash takes under 31 ms, 256 do not; past a burst, refusals are paced, as
   `docs/api.md` says). *burst*: N registrations released at the same instant from
   connections opened beforehand, each sent once. *activate*: N clients activate
   accounts registered by the earlier rows (codes read from the server's log) with Basic auth,
   back to back for 5 s or until none is left (more are registered first, outside any row, when
   the earlier rows left fewer than 1.2 × the bound, or the fastest row if faster, × 5 rows ×
   5 s + 256). Latencies are the clients' (connect to last byte) of the successes; ok/s is
   successes over the row's wall time; ratio is ok/s over the bound measured beside the row
   (bound/s), on the CPUs the server had.
   **Rounds.** The rows held to a rate target (16 clients registering and activating on
   PostgreSQL, 64 that never back off, 16 activating on the in-memory store, 16 registering on
   the whole machine) are measured five times, each round against its own bound: on
   PostgreSQL, rounds 2 to 5 follow the other rows, and register, never back off and activate
   again (the round's registrations are its activations); on the in-memory store and the whole
   machine, the rounds follow one another. The table marks rounds 2 to 5, the chart draws
   round 1, and a target is judged on the median of the five ratios, all five given: the
   speed of these shared machines drifts by up to a fifth between two bounds taken a few
   seconds apart, so any one round, or two, can be lucky or unlucky by more than the margin a
   target leaves.
4. **Memory and `/healthz`.** VmRSS after start-up (idle) and VmHWM (peak) from
   `/proc/<pid>/status` of the PostgreSQL 1-core server. `/healthz` p99 idle: 300 sequential
   requests before any load; under load: a separate client polling it every 10 ms during the
   256-client registration row. The probe's thread runs at nice −10 in both: it shares its CPU
   with the driver's client threads and PostgreSQL, and the time it would wait for that CPU
   is not the server's (a warning says so where the priority cannot be raised).
5. **Checks.** Every 503 must be an `application/problem+json` `overloaded` problem with a
   whole-seconds `Retry-After`; every address that got a 201 must have its activation email in
   the log (nothing lost); anything else is counted under *other*.

The figures are one run on a shared machine: read them with that noise in mind. Nothing is
tuned to them.
";

/// Replaces the capacity section of `path` (or puts it after the title when there is none yet),
/// keeping everything else the document says.
pub(crate) fn write_document(path: &Path, section: &str) -> Result<(), String> {
    registrar_bench::write_section(path, (BEGIN, END), "# Benchmarks\n", section)
}

#[cfg(test)]
mod tests {
    use std::{fs, time::Duration};

    use super::{
        BEGIN, CpuSplit, END, MachineCpu, Placement, Row, Verdict, Work, percentile, write_document,
    };
    use crate::client::Outcome;

    /// A row of `ok` successes in one second against `bound`.
    fn row(ok: usize, bound: f64, round: usize) -> Row {
        Row {
            placement: Placement::PinnedPostgres,
            work: Work::Register,
            clients: 16,
            bound,
            outcome: Outcome {
                elapsed: Duration::from_secs(1),
                ok: vec![Duration::from_millis(10); ok],
                ..Outcome::default()
            },
            round,
            cpu: CpuSplit::default(),
            machine: MachineCpu::default(),
            cpus: 1,
        }
    }

    #[test]
    fn a_rate_target_is_judged_on_the_median_round_not_the_best_or_the_worst() {
        let rounds = [row(27, 30.0, 1), row(40, 40.0, 2), row(28, 30.0, 3)];
        let rounds: Vec<&Row> = rounds.iter().collect();
        // Ratios 0.90, 1.00 and 0.933: the median is 0.933.
        let verdict = Verdict::rate("t", &rounds, 0.93).expect("three rounds make a verdict");
        assert!(verdict.met);
        assert!(verdict.measured.starts_with("median 0.933 over 3 rounds"));
        let verdict = Verdict::rate("t", &rounds, 0.94).expect("three rounds make a verdict");
        assert!(!verdict.met, "one round at 1.00 does not carry the target");
        assert!(Verdict::rate("t", &[], 0.5).is_none());
    }

    #[test]
    fn a_median_just_under_the_target_does_not_read_as_the_target() {
        // (successes per round at one bound, target, how the median reads): ratios 0.895, 0.91
        // and 0.89 would print as 0.90 to two places; 0.7996, 0.84 and 0.796 as 0.800 to three,
        // rounded.
        let cases = [
            (
                [179, 182, 178],
                200.0,
                0.9,
                "median 0.895 over 3 rounds (179.0/s = 0.895 × 200.0/s;",
            ),
            (
                [1999, 2100, 1990],
                2500.0,
                0.8,
                "median 0.799 over 3 rounds (1999.0/s = 0.799 × 2500.0/s;",
            ),
        ];
        for (successes, bound, target, reads) in cases {
            let rounds: Vec<Row> = (1..)
                .zip(successes)
                .map(|(round, ok)| row(ok, bound, round))
                .collect();
            let rounds: Vec<&Row> = rounds.iter().collect();
            let verdict = Verdict::rate("t", &rounds, target).expect("three rounds make a verdict");
            assert!(!verdict.met);
            assert!(verdict.measured.starts_with(reads), "{}", verdict.measured);
        }
    }

    #[test]
    fn the_section_replaces_its_previous_version_and_keeps_the_rest_of_the_document() {
        let path = std::env::temp_dir().join(format!("capacity-doc-{}.md", std::process::id()));
        fs::write(&path, "# Benchmarks\n\n## Mail latency\n\nkept\n").ok();
        write_document(&path, &format!("{BEGIN}\nfirst\n{END}\n")).ok();
        write_document(&path, &format!("{BEGIN}\nsecond\n{END}\n")).ok();
        let document = fs::read_to_string(&path).unwrap_or_default();
        fs::remove_file(&path).ok();
        assert_eq!(
            document,
            format!("# Benchmarks\n\n{BEGIN}\nsecond\n{END}\n\n## Mail latency\n\nkept\n")
        );
    }

    #[test]
    fn percentiles_are_nearest_rank_and_zero_without_samples() {
        let samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 50), Duration::from_millis(50));
        assert_eq!(percentile(&samples, 99), Duration::from_millis(99));
        assert_eq!(percentile(&samples, 100), Duration::from_millis(100));
        assert_eq!(percentile(&[], 99), Duration::ZERO);
    }

    #[test]
    fn the_hashing_threads_are_told_from_the_others_by_name_and_counted_from_a_reading() {
        let reading = |hashing: f64, worker: f64| {
            vec![
                ("argon2-0".to_owned(), hashing),
                ("actix-rt|system".to_owned(), worker),
                ("argon2-1".to_owned(), hashing),
                ("registrar".to_owned(), 0.5),
            ]
        };
        let before = CpuSplit::of(&reading(1.0, 0.25));
        assert_eq!(
            before,
            CpuSplit {
                hashing: 2.0,
                other: 0.75
            }
        );
        let row = CpuSplit::of(&reading(3.0, 0.5)).since(before);
        assert_eq!(
            row,
            CpuSplit {
                hashing: 4.0,
                other: 0.25
            }
        );
    }

    #[test]
    fn the_cpu_table_accounts_for_a_rows_ratio() {
        // 80 successes in 1 s against 100/s (10 ms a hash alone): ratio 0.8. The core was busy
        // 0.9 s: 0.81 s hashing (10.125 ms a success) and 0.09 s on the rest (1.125 ms).
        let mut row = row(80, 100.0, 1);
        row.cpu = CpuSplit {
            hashing: 0.81,
            other: 0.09,
        };
        let cells = row
            .cpu_cells()
            .expect("a 1-core row with successes has CPU cells");
        assert_eq!(
            cells[3..],
            ["80", "90 %", "10.12", "10.00", "1.012", "1.12", "0.80"].map(str::to_owned)
        );
        // busy × alone ÷ (hashing + others) is the ratio.
        let recomposed = 0.9 * 10.0 / (10.125 + 1.125);
        assert!((recomposed - row.ratio()).abs() < 1e-9);
        row.placement = Placement::WholeMachine;
        assert!(
            row.cpu_cells().is_none(),
            "the whole machine's server shares its CPUs"
        );
    }

    #[test]
    fn the_machine_table_accounts_for_a_whole_machine_rows_ratio() {
        // 150 successes in 1 s on 2 CPUs against 200/s (10 ms of CPU a hash when both hash):
        // ratio 0.75. The CPUs were busy 1.8 s of 2: 1.5 s hashing, 0.09 s in the server's
        // other threads, 0.15 s in PostgreSQL, 0.03 s in the driver, 0.03 s elsewhere.
        let mut row = row(150, 200.0, 1);
        row.placement = Placement::WholeMachine;
        row.cpus = 2;
        row.cpu = CpuSplit {
            hashing: 1.5,
            other: 0.09,
        };
        row.machine = MachineCpu {
            database: 0.15,
            driver: 0.03,
            busy: 1.8,
        };
        let cells = row
            .machine_cells()
            .expect("a whole-machine row with successes has machine cells");
        assert_eq!(
            cells[3..],
            [
                "150", "90 %", "10.00", "0.60", "1.00", "0.20", "0.20", "12.00", "10.00", "0.75"
            ]
            .map(str::to_owned)
        );
        // busy × at the bound ÷ total is the ratio.
        let recomposed = 0.9 * 10.0 / 12.0;
        assert!((recomposed - row.ratio()).abs() < 1e-9);
        row.placement = Placement::PinnedPostgres;
        assert!(
            row.machine_cells().is_none(),
            "a pinned server's CPU is the table above's"
        );
    }

    #[test]
    fn the_machine_reading_counts_what_was_used_since_the_earlier_one() {
        let before = MachineCpu {
            database: 1.0,
            driver: 2.0,
            busy: 10.0,
        };
        let after = MachineCpu {
            database: 1.5,
            driver: 2.25,
            busy: 14.0,
        };
        assert_eq!(
            after.since(before),
            MachineCpu {
                database: 0.5,
                driver: 0.25,
                busy: 4.0,
            }
        );
    }
}

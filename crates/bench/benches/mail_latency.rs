//! Benchmark: how long an activation email takes to reach the mail server after the client has
//! read the registration's 201.
//!
//! Run it with `just bench-mail` (`cargo bench -p registrar-bench --bench mail_latency`, after
//! `cargo build --release -p registrar`; cargo bench builds in release). It drives the real
//! release binary, as a deployment would run it:
//! - a fresh PostgreSQL database on `REGISTRAR_BENCH_DATABASE_URL`, or else on the server the
//!   tests find (`127.0.0.1:5432` first; see `registrar_testing::postgres`), dropped at the end;
//! - the test toolkit's SMTP server in this process (plain TCP, just enough ESMTP for lettre),
//!   which records, per message, the instant right before it writes the `250` reply to the
//!   message data: the moment the contract calls acceptance;
//! - the server with `SMTP_URL` pointing at the sink, per-address rate limits off and the default
//!   Argon2id cost (m = 19456 KiB, t = 2, p = 1);
//! - a warm-up (32 registrations, not counted), then 1,000 registrations with distinct addresses
//!   from 16 client threads, one `Connection: close` HTTP/1.1 request each, recording the
//!   instant the 201 has been read whole.
//!
//! Per address, latency = acceptance − 201 (clamped at zero and counted when the email was
//! accepted before the client had read the 201). It prints p50/p90/p99/max/mean, the split of
//! that latency into "201 → the SMTP connection is opened" and "connection → 250", the
//! registrations' throughput and client-observed latency, and one machine-readable line that
//! starts with `MAIL_LATENCY_SUMMARY`. Not-201 answers (503 `overloaded` can happen) are counted
//! and left out of the latency figures. The run fails when an address that got a 201 has not
//! been accepted within 60 s.
//!
//! Knobs: `REGISTRAR_BENCH_REGISTRATIONS` (1000), `REGISTRAR_BENCH_CONCURRENCY` (16),
//! `REGISTRAR_BENCH_WARMUP` (32). Run without `--bench` (as `cargo test --benches` does), it
//! only says how to run it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark harness: a panic is a failed run"
)]
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark reports its figures on its output"
)]

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::PathBuf,
    process::ExitCode,
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

use registrar_bench::{self as support, Stats, http, ms, number};
use registrar_testing::{
    postgres::{self, TestDatabase},
    process::{Process, serve_command},
    smtp::{FakeSmtp, Received, Script},
};
use serde_json::{Value, json};
/// The target for the p99 of 201 → SMTP acceptance.
const TARGET_P99: Duration = Duration::from_millis(100);
/// How long every email that got a 201 may take to be accepted.
const DELIVERY_PATIENCE: Duration = Duration::from_mins(1);
/// How long the server may take to start (migrations on a fresh database included).
const START_PATIENCE: Duration = Duration::from_mins(1);

fn main() -> ExitCode {
    support::main("mail_latency", "bench-mail", run)
}

/// What the run is asked to do.
struct Plan {
    registrations: usize,
    concurrency: usize,
    warmup: usize,
    admin_url: String,
    binary: PathBuf,
}

impl Plan {
    fn from_env() -> Result<Self, String> {
        let binary = support::release_binary("bench-mail")?;
        Ok(Self {
            registrations: number("REGISTRAR_BENCH_REGISTRATIONS", 1_000)?,
            concurrency: number("REGISTRAR_BENCH_CONCURRENCY", 16)?.max(1),
            warmup: number("REGISTRAR_BENCH_WARMUP", 32)?,
            admin_url: std::env::var("REGISTRAR_BENCH_DATABASE_URL")
                .unwrap_or_else(|_| postgres::server_url().to_owned()),
            binary,
        })
    }
}

fn run() -> Result<(), String> {
    let plan = Plan::from_env()?;
    let database = TestDatabase::create_on(&plan.admin_url, "registrar_bench_");
    let sink = Sink::start();
    let mut server = Server::start(&plan.binary, database.url(), sink.port())?;
    println!(
        "mail_latency: {} registrations ({} warm-up not counted), {} client threads, \
         server {}, database {}, SMTP sink on 127.0.0.1:{}",
        plan.registrations,
        plan.warmup,
        plan.concurrency,
        plan.binary.display(),
        database.name(),
        sink.port()
    );

    // Warm-up: database connections, caches, the first SMTP sessions.
    let warmup = register_all(server.port, "warmup", plan.warmup, plan.concurrency);
    let warmup_emails: Vec<&str> = warmup
        .iter()
        .filter(|outcome| outcome.status == Some(201))
        .map(|outcome| outcome.email.as_str())
        .collect();
    sink.wait_for(&warmup_emails, DELIVERY_PATIENCE);

    let outcomes = register_all(server.port, "bench", plan.registrations, plan.concurrency);
    let created: Vec<&Outcome> = outcomes
        .iter()
        .filter(|outcome| outcome.status == Some(201))
        .collect();
    let created_emails: Vec<&str> = created
        .iter()
        .map(|outcome| outcome.email.as_str())
        .collect();
    let all_accepted = sink.wait_for(&created_emails, DELIVERY_PATIENCE);
    // The sink records acceptance before the server has read the 250 and recorded the outcome.
    thread::sleep(Duration::from_millis(250));
    let metrics = server.metrics();
    let sink = sink.accepted();
    let report = Report::new(&outcomes, &created, &sink, all_accepted);
    report.print(&plan, &sink, &metrics);

    let shutdown = server.terminate();
    if !shutdown.problems_before.is_empty() {
        println!(
            "server warnings/errors during the run ({}):",
            shutdown.problems_before.len()
        );
        for line in shutdown.problems_before.iter().take(10) {
            println!("  {line}");
        }
    }
    println!(
        "server log after SIGTERM (exit {}):",
        if shutdown.success {
            "success"
        } else {
            "NOT success"
        }
    );
    for line in &shutdown.after {
        println!("  {line}");
    }
    drop(database);
    if report.missing > 0 {
        return Err(format!(
            "{} of {} emails whose registration got a 201 were not accepted within {:?}",
            report.missing,
            created.len(),
            DELIVERY_PATIENCE
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// SMTP sink

/// The toolkit's SMTP server, accepting every message.
struct Sink {
    server: FakeSmtp,
}

/// What the sink accepted, by recipient.
struct Accepted {
    /// The first email accepted for each recipient.
    first: HashMap<String, Received>,
    /// Emails accepted again for a recipient that already had one (delivery is at-least-once).
    duplicates: usize,
    /// The most SMTP sessions open at once.
    most_open: usize,
}

impl Sink {
    fn start() -> Self {
        Self {
            server: FakeSmtp::start(Script::default()),
        }
    }

    fn port(&self) -> u16 {
        self.server.port()
    }

    /// Waits until every address in `emails` has been accepted or `patience` is over; says
    /// whether they all were. Looks at each message once, so waiting costs little CPU.
    fn wait_for(&self, emails: &[&str], patience: Duration) -> bool {
        let mut missing: HashSet<&str> = emails.iter().copied().collect();
        let mut looked_at = 0;
        self.server.wait_until(patience, |messages| {
            for message in &messages[looked_at..] {
                missing.remove(message.to().as_str());
            }
            looked_at = messages.len();
            missing.is_empty()
        })
    }

    /// The figures of what was accepted so far.
    fn accepted(&self) -> Accepted {
        let messages = self.server.messages();
        let total = messages.len();
        let mut first = HashMap::new();
        for message in messages {
            first.entry(message.to()).or_insert(message);
        }
        Accepted {
            duplicates: total - first.len(),
            first,
            most_open: self.server.most_sessions_at_once(),
        }
    }
}

impl Accepted {
    fn acceptance(&self, email: &str) -> Option<&Received> {
        self.first.get(email)
    }
}

// ---------------------------------------------------------------------------------------------
// The server

struct Server {
    process: Process,
    port: u16,
}

impl Server {
    fn start(binary: &std::path::Path, database_url: &str, smtp_port: u16) -> Result<Self, String> {
        let mut process = Process::spawn(
            serve_command(binary)
                .env("REGISTRAR_RATE_LIMITS", "off")
                .env("DATABASE_URL", database_url)
                .env("SMTP_URL", format!("smtp://127.0.0.1:{smtp_port}"))
                .env(
                    "REGISTRAR_SECRET",
                    "mail-latency-benchmark-secret-0123456789",
                ),
        )
        .map_err(|error| format!("could not start {}: {error}", binary.display()))?;
        let port = process.wait_for_listening(START_PATIENCE).map_err(|log| {
            format!("the server did not say it was listening within {START_PATIENCE:?}: {log}")
        })?;
        Ok(Self { process, port })
    }

    /// The counters of `/metrics` that say how delivery and hashing went.
    fn metrics(&self) -> Vec<String> {
        let Ok((_, _, body)) = http(self.port, "GET /metrics", None) else {
            return vec!["(could not read /metrics)".to_owned()];
        };
        body.lines()
            .filter(|line| {
                [
                    "registrar_emails_sent_total",
                    "registrar_email_attempts_failed_total",
                    "registrar_emails_failed_total",
                    "registrar_emails_cancelled_total",
                    "registrar_hash_rejected_total",
                    "registrar_hash_seconds_sum",
                    "registrar_hash_seconds_count",
                    "registrar_outbox_depth",
                ]
                .iter()
                .any(|name| line.starts_with(name))
            })
            .map(ToOwned::to_owned)
            .collect()
    }

    /// SIGTERM, then waits for the exit (SIGKILL after 30 s).
    fn terminate(&mut self) -> Shutdown {
        let (before, _) = self.process.drain();
        let success = self.process.terminate(support::STOP_PATIENCE);
        let after = self.process.rest(Duration::from_millis(500));
        Shutdown {
            success,
            problems_before: problems(&before),
            after: after
                .iter()
                .map(|line| support::brief(line, &["timestamp", "level", "message"]))
                .collect(),
        }
    }
}

/// How the server stopped, and what it logged.
struct Shutdown {
    /// It exited with success.
    success: bool,
    /// Its warning and error lines before SIGTERM.
    problems_before: Vec<String>,
    /// Everything it logged after SIGTERM, in brief.
    after: Vec<String>,
}

/// The lines of `log` that are not INFO, DEBUG or TRACE events.
fn problems(log: &[String]) -> Vec<String> {
    log.iter()
        .filter(|line| {
            let level = serde_json::from_str::<Value>(line)
                .ok()
                .and_then(|event| event["level"].as_str().map(str::to_owned));
            !matches!(level.as_deref(), Some("INFO" | "DEBUG" | "TRACE"))
        })
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The client

/// One registration as the client saw it.
struct Outcome {
    email: String,
    /// Before connecting.
    started: Instant,
    /// The response has been read whole (the server closed the connection after it).
    finished: Instant,
    /// `None` when the request failed at the socket level.
    status: Option<u16>,
}

/// Registers `{prefix}-{i}@example.com` for `i` in `0..count` from `concurrency` threads.
fn register_all(port: u16, prefix: &str, count: usize, concurrency: usize) -> Vec<Outcome> {
    let next = AtomicUsize::new(0);
    thread::scope(|scope| {
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                scope.spawn(|| {
                    let mut outcomes = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= count {
                            return outcomes;
                        }
                        let email = format!("{prefix}-{i}@example.com");
                        let body = support::registration_body(&email);
                        let started = Instant::now();
                        let status = http(port, "POST /v1/users", Some(&body))
                            .ok()
                            .map(|(status, _, _)| status);
                        let finished = Instant::now();
                        outcomes.push(Outcome {
                            email,
                            started,
                            finished,
                            status,
                        });
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().unwrap())
            .collect()
    })
}

// ---------------------------------------------------------------------------------------------
// Figures

/// The figures as JSON: [`Stats::json_with`] this benchmark's [`millis`], and `mean_ms`.
fn json_of(stats: &Stats) -> Value {
    let mut value = stats.json_with(millis);
    value["mean_ms"] = json!(millis(stats.mean));
    value
}

/// Milliseconds to one decimal, for the summary line.
fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 10_000.0).round() / 10.0
}

struct Report {
    attempted: usize,
    statuses: BTreeMap<String, usize>,
    created: usize,
    wall: Duration,
    client: Stats,
    latency: Stats,
    /// 201 read → the SMTP session's connection accepted by the sink (clamped at zero).
    to_connect: Stats,
    /// Connection accepted → 250 to the message data.
    session: Stats,
    /// Connection accepted → first line of the message data read.
    to_data: Stats,
    /// First line of the message data read → end-of-data line read.
    data: Stats,
    /// Emails accepted before the client had read their 201, and by how much at most.
    early: usize,
    most_early: Duration,
    missing: usize,
    all_accepted: bool,
    /// From the last 201 read to the last acceptance.
    drain: Duration,
}

impl Report {
    fn new(
        outcomes: &[Outcome],
        created: &[&Outcome],
        sink: &Accepted,
        all_accepted: bool,
    ) -> Self {
        let mut statuses = BTreeMap::new();
        for outcome in outcomes {
            let key = outcome
                .status
                .map_or_else(|| "socket error".to_owned(), |status| status.to_string());
            *statuses.entry(key).or_insert(0) += 1;
        }
        let first_start = outcomes.iter().map(|outcome| outcome.started).min();
        let last_finish = outcomes.iter().map(|outcome| outcome.finished).max();
        let wall = match (first_start, last_finish) {
            (Some(start), Some(finish)) => finish - start,
            _ => Duration::ZERO,
        };
        let (mut latency, mut to_connect, mut session) = (Vec::new(), Vec::new(), Vec::new());
        let (mut to_data, mut data) = (Vec::new(), Vec::new());
        let (mut early, mut most_early, mut missing) = (0, Duration::ZERO, 0);
        let mut last_acceptance = None;
        for outcome in created {
            let Some(acceptance) = sink.acceptance(&outcome.email) else {
                missing += 1;
                continue;
            };
            last_acceptance = last_acceptance.max(Some(acceptance.accepted));
            if acceptance.accepted < outcome.finished {
                early += 1;
                most_early = most_early.max(outcome.finished - acceptance.accepted);
            }
            latency.push(
                acceptance
                    .accepted
                    .saturating_duration_since(outcome.finished),
            );
            to_connect.push(
                acceptance
                    .connected
                    .saturating_duration_since(outcome.finished),
            );
            session.push(acceptance.accepted - acceptance.connected);
            to_data.push(acceptance.data_started - acceptance.connected);
            data.push(acceptance.data_ended - acceptance.data_started);
        }
        let last_created = created.iter().map(|outcome| outcome.finished).max();
        let drain = match (last_created, last_acceptance) {
            (Some(created), Some(accepted)) => accepted.saturating_duration_since(created),
            _ => Duration::ZERO,
        };
        Self {
            attempted: outcomes.len(),
            statuses,
            created: created.len(),
            wall,
            client: Stats::of(
                created
                    .iter()
                    .map(|outcome| outcome.finished - outcome.started)
                    .collect(),
            ),
            latency: Stats::of(latency),
            to_connect: Stats::of(to_connect),
            session: Stats::of(session),
            to_data: Stats::of(to_data),
            data: Stats::of(data),
            early,
            most_early,
            missing,
            all_accepted,
            drain,
        }
    }

    fn throughput(&self) -> f64 {
        let created = u32::try_from(self.created).map_or(f64::MAX, f64::from);
        if self.wall.is_zero() {
            0.0
        } else {
            created / self.wall.as_secs_f64()
        }
    }

    fn print(&self, plan: &Plan, sink: &Accepted, metrics: &[String]) {
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(status, count)| format!("{count} × {status}"))
            .collect();
        println!();
        println!(
            "registrations: {} sent, {} in {:.2} s = {:.1} registrations/s (201s only)",
            self.attempted,
            statuses.join(", "),
            self.wall.as_secs_f64(),
            self.throughput()
        );
        println!(
            "client-observed registration latency: {}",
            self.client.line_with_mean()
        );
        println!();
        println!(
            "201 read → SMTP acceptance: {}",
            self.latency.line_with_mean()
        );
        println!(
            "  accepted before the client had read its 201 (counted as 0): {} (by at most {})",
            self.early,
            ms(self.most_early)
        );
        println!(
            "  of which 201 → SMTP connection opened: {}",
            self.to_connect.line_with_mean()
        );
        println!(
            "  and connection opened → 250 after DATA: {}",
            self.session.line_with_mean()
        );
        println!(
            "    connection opened → first line of the message data read: {}",
            self.to_data.line_with_mean()
        );
        println!(
            "    first line of the message data → end-of-data line read: {}",
            self.data.line_with_mean()
        );
        println!(
            "  last 201 → last acceptance: {}; not accepted within {:?}: {}",
            ms(self.drain),
            DELIVERY_PATIENCE,
            self.missing
        );
        let met = self.all_accepted && self.latency.p99 <= TARGET_P99;
        println!(
            "target p99 ≤ {}: {}",
            ms(TARGET_P99),
            if met { "met" } else { "NOT met" }
        );
        println!(
            "sink: {} duplicate emails, at most {} SMTP sessions open at once",
            sink.duplicates, sink.most_open
        );
        println!("server metrics after the run:");
        for line in metrics {
            println!("  {line}");
        }
        let summary = json!({
            "registrations": self.attempted,
            "concurrency": plan.concurrency,
            "warmup": plan.warmup,
            "created": self.created,
            "statuses": self.statuses,
            "wall_s": (self.wall.as_secs_f64() * 100.0).round() / 100.0,
            "registrations_per_s": (self.throughput() * 10.0).round() / 10.0,
            "registration_latency": json_of(&self.client),
            "mail_latency": json_of(&self.latency),
            "mail_latency_to_connect": json_of(&self.to_connect),
            "mail_latency_session": json_of(&self.session),
            "mail_latency_session_to_data": json_of(&self.to_data),
            "mail_latency_session_data": json_of(&self.data),
            "accepted_before_201": self.early,
            "missing": self.missing,
            "duplicates": sink.duplicates,
            "target_p99_ms": millis(TARGET_P99),
            "target_met": met,
        });
        println!();
        println!("MAIL_LATENCY_SUMMARY {summary}");
    }
}

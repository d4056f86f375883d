//! Benchmark: how long an activation email takes to reach the mail server after the client has
//! read the registration's 201.
//!
//! Run it with `just bench-mail` (`cargo bench -p registrar --bench mail_latency`; cargo bench
//! builds in release). It drives the real release binary, as a deployment would run it:
//! - a fresh PostgreSQL database (created with `psql` on `REGISTRAR_BENCH_DATABASE_URL`, default
//!   `postgres://postgres@127.0.0.1:5432/postgres`, and dropped at the end);
//! - an SMTP sink in this process (plain TCP, just enough ESMTP for lettre) that records, per
//!   recipient, the instant right before it writes the `250` reply to the message data: the
//!   moment the contract calls acceptance;
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

mod support;

use std::{
    collections::{BTreeMap, HashMap},
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    process::{Child, Command, ExitCode, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc::{self, Receiver},
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::{Value, json};
use support::{Stats, http, ms, number};

/// Where databases are created when `REGISTRAR_BENCH_DATABASE_URL` is not set.
const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
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
    binary: &'static str,
}

impl Plan {
    fn from_env() -> Result<Self, String> {
        let binary = support::release_binary("bench-mail")?;
        Ok(Self {
            registrations: number("REGISTRAR_BENCH_REGISTRATIONS", 1_000)?,
            concurrency: number("REGISTRAR_BENCH_CONCURRENCY", 16)?.max(1),
            warmup: number("REGISTRAR_BENCH_WARMUP", 32)?,
            admin_url: std::env::var("REGISTRAR_BENCH_DATABASE_URL")
                .unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned()),
            binary,
        })
    }
}

fn run() -> Result<(), String> {
    let plan = Plan::from_env()?;
    let database = Database::create(&plan.admin_url)?;
    let sink = Sink::start();
    let mut server = Server::start(plan.binary, &database.url, sink.port)?;
    println!(
        "mail_latency: {} registrations ({} warm-up not counted), {} client threads, \
         server {}, database {}, SMTP sink on 127.0.0.1:{}",
        plan.registrations, plan.warmup, plan.concurrency, plan.binary, database.name, sink.port
    );

    // Warm-up: database connections, the LISTEN connection, caches, the first SMTP sessions.
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
// PostgreSQL

/// A database made for this run, dropped when this value is.
struct Database {
    admin_url: String,
    name: String,
    url: String,
}

impl Database {
    fn create(admin_url: &str) -> Result<Self, String> {
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis());
        let name = format!("registrar_bench_{}_{stamp}", std::process::id());
        let url = database_url(admin_url, &name)?;
        psql(admin_url, &format!("CREATE DATABASE {name}"))?;
        Ok(Self {
            admin_url: admin_url.to_owned(),
            name,
            url,
        })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(message) = psql(&self.admin_url, &sql) {
            eprintln!("mail_latency: could not drop {}: {message}", self.name);
        }
    }
}

/// `admin_url` with its database name replaced by `name` (its query string kept).
fn database_url(admin_url: &str, name: &str) -> Result<String, String> {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin_url, None),
    };
    let authority_start = base.find("://").ok_or_else(|| {
        format!("REGISTRAR_BENCH_DATABASE_URL {admin_url:?} is not a postgres:// URL")
    })? + 3;
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    Ok(match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    })
}

fn psql(url: &str, sql: &str) -> Result<(), String> {
    let output = Command::new("psql")
        .arg(url)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .map_err(|error| {
            format!("could not run psql ({error}); the benchmark needs the PostgreSQL client")
        })?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "`{sql}` failed on {url}: {}\nIs PostgreSQL running there, and may that user connect \
         without a password and create databases? Start it (the default is \
         {DEFAULT_ADMIN_URL}), or set REGISTRAR_BENCH_DATABASE_URL to such a server.",
        String::from_utf8_lossy(&output.stderr).trim()
    ))
}

// ---------------------------------------------------------------------------------------------
// SMTP sink

/// When one email was handed over.
#[derive(Debug, Clone, Copy)]
struct Acceptance {
    /// The sink accepted the TCP connection of its SMTP session.
    connected: Instant,
    /// The first line of the message data was read.
    data_started: Instant,
    /// The end-of-data line (`.`) was read.
    data_ended: Instant,
    /// Right before the sink wrote `250` to the end of the message data.
    accepted: Instant,
}

#[derive(Default)]
struct SinkState {
    /// First acceptance per recipient (the `To:` address).
    accepted: Mutex<HashMap<String, Acceptance>>,
    /// Emails accepted again for a recipient that already had one (delivery is at-least-once).
    duplicates: AtomicUsize,
    /// SMTP sessions open now, and the most at once.
    open: AtomicUsize,
    most_open: AtomicUsize,
}

/// An SMTP server on 127.0.0.1 that accepts every message.
struct Sink {
    port: u16,
    state: Arc<SinkState>,
}

impl Sink {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(SinkState::default());
        let shared = Arc::clone(&state);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let connected = Instant::now();
                let state = Arc::clone(&shared);
                let open = state.open.fetch_add(1, Ordering::SeqCst) + 1;
                state.most_open.fetch_max(open, Ordering::SeqCst);
                thread::spawn(move || {
                    serve(stream, connected, &state);
                    state.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self { port, state }
    }

    /// Waits until every address in `emails` has been accepted or `patience` is over; says
    /// whether they all were.
    fn wait_for(&self, emails: &[&str], patience: Duration) -> bool {
        let deadline = Instant::now() + patience;
        loop {
            let done = {
                let accepted = self.state.accepted.lock().unwrap();
                emails.iter().all(|email| accepted.contains_key(*email))
            };
            if done {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn acceptance(&self, email: &str) -> Option<Acceptance> {
        self.state.accepted.lock().unwrap().get(email).copied()
    }
}

/// One SMTP session: 220, EHLO, MAIL, RCPT, DATA, QUIT (protocol as in `tests/common/smtp.rs`).
fn serve(stream: TcpStream, connected: Instant, state: &SinkState) {
    // The sink's own replies are never held back by Nagle's algorithm.
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut reply = |text: &str| writer.write_all(format!("{text}\r\n").as_bytes()).is_ok();
    if !reply("220 sink.bench ESMTP") {
        return;
    }
    let mut envelope_to = None;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let command = line.trim_end().to_ascii_uppercase();
        let ok = if command.starts_with("EHLO") {
            reply("250-sink.bench\r\n250 8BITMIME")
        } else if command.starts_with("RCPT TO:") {
            envelope_to = Some(address_in(&line["RCPT TO:".len()..]));
            reply("250 ok")
        } else if command == "DATA" {
            if !reply("354 go ahead") {
                return;
            }
            let mut header_to = None;
            let mut in_headers = true;
            let mut data_started = None;
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                data_started.get_or_insert_with(Instant::now);
                if line == ".\r\n" {
                    break;
                }
                if in_headers {
                    if line == "\r\n" {
                        in_headers = false;
                    } else if line.len() > 3 && line[..3].eq_ignore_ascii_case("to:") {
                        header_to = Some(address_in(&line[3..]));
                    }
                }
            }
            let data_ended = Instant::now();
            let data_started = data_started.unwrap_or(data_ended);
            let to = header_to.or_else(|| envelope_to.take()).unwrap_or_default();
            let accepted = Instant::now();
            match state.accepted.lock().unwrap().entry(to) {
                std::collections::hash_map::Entry::Occupied(_) => {
                    state.duplicates.fetch_add(1, Ordering::SeqCst);
                }
                std::collections::hash_map::Entry::Vacant(entry) => {
                    entry.insert(Acceptance {
                        connected,
                        data_started,
                        data_ended,
                        accepted,
                    });
                }
            }
            reply("250 2.0.0 queued")
        } else if command == "QUIT" {
            reply("221 bye");
            return;
        } else {
            reply("250 ok")
        };
        if !ok {
            return;
        }
    }
}

/// The bare address in `<ada@example.com>`, `Ada <ada@example.com>` or `ada@example.com`,
/// lower-cased (the registrations use lower-case addresses).
fn address_in(text: &str) -> String {
    let text = text.trim();
    let inner = match (text.rfind('<'), text.rfind('>')) {
        (Some(open), Some(close)) if open < close => &text[open + 1..close],
        _ => text,
    };
    inner.trim().to_ascii_lowercase()
}

// ---------------------------------------------------------------------------------------------
// The server

struct Server {
    child: Child,
    lines: Receiver<String>,
    port: u16,
}

impl Server {
    fn start(binary: &str, database_url: &str, smtp_port: u16) -> Result<Self, String> {
        let mut child = support::serve_command(binary)
            .env("DATABASE_URL", database_url)
            .env("SMTP_URL", format!("smtp://127.0.0.1:{smtp_port}"))
            .env(
                "REGISTRAR_SECRET",
                "mail-latency-benchmark-secret-0123456789",
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| format!("could not start {binary}: {error}"))?;
        let (tx, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let mut server = Self {
            child,
            lines,
            port: 0,
        };
        let deadline = Instant::now() + START_PATIENCE;
        let mut seen = Vec::new();
        while server.port == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = server.lines.recv_timeout(left) else {
                return Err(format!(
                    "the server did not say it was listening within {START_PATIENCE:?}; its \
                     output:\n{}",
                    seen.join("\n")
                ));
            };
            if let Some(port) = support::listening_port(&line) {
                server.port = port?;
            }
            seen.push(line);
        }
        Ok(server)
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
        let before: Vec<String> = self.lines.try_iter().collect();
        let success = support::terminate(&mut self.child);
        let mut after = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
            after.push(line);
        }
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

impl Drop for Server {
    fn drop(&mut self) {
        support::kill_if_running(&mut self.child);
    }
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

impl Stats {
    /// The figures as JSON: [`Stats::json_with`] this benchmark's [`millis`], and `mean_ms`.
    fn json(&self) -> Value {
        let mut value = self.json_with(millis);
        value["mean_ms"] = json!(millis(self.mean));
        value
    }
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
    fn new(outcomes: &[Outcome], created: &[&Outcome], sink: &Sink, all_accepted: bool) -> Self {
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

    fn print(&self, plan: &Plan, sink: &Sink, metrics: &[String]) {
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
            sink.state.duplicates.load(Ordering::SeqCst),
            sink.state.most_open.load(Ordering::SeqCst)
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
            "registration_latency": self.client.json(),
            "mail_latency": self.latency.json(),
            "mail_latency_to_connect": self.to_connect.json(),
            "mail_latency_session": self.session.json(),
            "mail_latency_session_to_data": self.to_data.json(),
            "mail_latency_session_data": self.data.json(),
            "accepted_before_201": self.early,
            "missing": self.missing,
            "duplicates": sink.state.duplicates.load(Ordering::SeqCst),
            "target_p99_ms": millis(TARGET_P99),
            "target_met": met,
        });
        println!();
        println!("MAIL_LATENCY_SUMMARY {summary}");
    }
}

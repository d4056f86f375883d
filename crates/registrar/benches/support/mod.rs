//! What the `mail_latency` and `overload` benchmarks share: the entry point that only explains
//! itself outside `cargo bench`, their knobs, starting the release `registrar` binary and stopping
//! it with SIGTERM, reading its JSON log lines, the plain HTTP/1.1 client and the order statistics
//! they print.
//!
//! Each benchmark is its own binary and includes this file with `mod support;`; neither uses all
//! of it.
#![allow(
    dead_code,
    reason = "shared by two benchmark binaries, each of which uses only part of it"
)]

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    process::{Child, Command, ExitCode},
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

/// A password the strength rules accept (zxcvbn score 4, no local part).
pub(crate) const PASSWORD: &str = "correct horse battery staple";
/// The longest one HTTP request may take before the client gives up on it.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server that got SIGTERM may take to exit before it is killed.
const STOP_PATIENCE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// The run

/// The benchmark `name`'s `main`: without `--bench` (as `cargo test --benches` runs it) it only
/// says to run it with `just {recipe}`; with it, it runs `run` and reports its error.
pub(crate) fn main(name: &str, recipe: &str, run: impl FnOnce() -> Result<(), String>) -> ExitCode {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("{name} is a benchmark: run it with `just {recipe}` (cargo bench)");
        return ExitCode::SUCCESS;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{name}: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The `registrar` binary cargo built next to this benchmark, when it is a release build (the
/// error says to run `just {recipe}` instead).
pub(crate) fn release_binary(recipe: &str) -> Result<&'static str, String> {
    let binary = env!("CARGO_BIN_EXE_registrar");
    let profile_dir = Path::new(binary)
        .parent()
        .and_then(Path::file_name)
        .and_then(|name| name.to_str());
    if profile_dir != Some("release") {
        return Err(format!(
            "{binary} is not a release build; run `just {recipe}` (cargo bench builds in release)"
        ));
    }
    Ok(binary)
}

/// The whole number in the environment variable `variable`, or `default` when it is not set.
pub(crate) fn number(variable: &str, default: usize) -> Result<usize, String> {
    match std::env::var(variable) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| format!("{variable}={text:?} is not a whole number")),
        Err(_) => Ok(default),
    }
}

// ---------------------------------------------------------------------------------------------
// The server

/// `binary serve` with an empty environment but for what both benchmarks run it with: a free
/// loopback port, JSON logs at `info`, per-address rate limits off.
pub(crate) fn serve_command(binary: &str) -> Command {
    let mut command = Command::new(binary);
    command
        .arg("serve")
        .env_clear()
        .env("REGISTRAR_LISTEN", "127.0.0.1:0")
        .env("REGISTRAR_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env("REGISTRAR_RATE_LIMITS", "off");
    command
}

/// `None` when the log line `line` is not the server's `listening` event; otherwise the port it
/// names, or an error when it names none.
pub(crate) fn listening_port(line: &str) -> Option<Result<u16, String>> {
    let event = serde_json::from_str::<Value>(line).ok()?;
    (event["message"] == "listening").then(|| {
        event["port"]
            .as_u64()
            .and_then(|port| u16::try_from(port).ok())
            .ok_or_else(|| format!("no port in the listening line: {line}"))
    })
}

/// SIGTERM to `child`, then waits for it to exit (SIGKILL after 30 s); says whether it exited
/// with success.
pub(crate) fn terminate(child: &mut Child) -> bool {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + STOP_PATIENCE;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => break status.success(),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break false;
            }
        }
    }
}

/// Kills `child` and waits for it, unless it has already exited.
pub(crate) fn kill_if_running(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A log line as the values of `fields` (`level`, `message`, …) joined by spaces, followed by
/// ` (error)` when it has an `error`; or as it is when it is not JSON.
pub(crate) fn brief(line: &str, fields: &[&str]) -> String {
    let Ok(event) = serde_json::from_str::<Value>(line) else {
        return line.to_owned();
    };
    let text = |key: &str| event[key].as_str().unwrap_or_default().to_owned();
    let shown: Vec<String> = fields.iter().map(|field| text(field)).collect();
    let shown = shown.join(" ");
    let error = text("error");
    if error.is_empty() {
        shown
    } else {
        format!("{shown} ({error})")
    }
}

// ---------------------------------------------------------------------------------------------
// The client

/// The JSON body of a registration of `email` with [`PASSWORD`].
pub(crate) fn registration_body(email: &str) -> String {
    json!({ "email": email, "password": PASSWORD }).to_string()
}

/// One HTTP/1.1 request to `127.0.0.1:port` on a fresh connection (`Connection: close`), read to
/// the end: status, head and body; or the stage that failed (`connect`, `write`, `read`) and why.
pub(crate) fn http(
    port: u16,
    request_line: &str,
    json_body: Option<&str>,
) -> Result<(u16, String, String), (&'static str, std::io::Error)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|error| ("connect", error))?;
    stream
        .set_read_timeout(Some(REQUEST_TIMEOUT))
        .map_err(|error| ("connect", error))?;
    stream
        .set_nodelay(true)
        .map_err(|error| ("connect", error))?;
    let body = json_body.unwrap_or("");
    let content_type = if json_body.is_some() {
        "Content-Type: application/json\r\n"
    } else {
        ""
    };
    let request = format!(
        "{request_line} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{content_type}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|error| ("write", error))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|error| ("read", error))?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            (
                "read",
                std::io::Error::other(format!("not an HTTP response: {head:?}")),
            )
        })?;
    Ok((status, head.to_owned(), body.to_owned()))
}

// ---------------------------------------------------------------------------------------------
// Figures

/// Order statistics of a set of durations.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Stats {
    pub(crate) count: usize,
    pub(crate) p50: Duration,
    pub(crate) p90: Duration,
    pub(crate) p99: Duration,
    pub(crate) max: Duration,
    pub(crate) mean: Duration,
}

impl Stats {
    /// Nearest-rank percentiles.
    pub(crate) fn of(mut samples: Vec<Duration>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let count = samples.len();
        let rank = |percent: usize| samples[(percent * count).div_ceil(100).max(1) - 1];
        let total: Duration = samples.iter().sum();
        Self {
            count,
            p50: rank(50),
            p90: rank(90),
            p99: rank(99),
            max: samples[count - 1],
            mean: total / u32::try_from(count).unwrap_or(u32::MAX),
        }
    }

    /// `p50 … | p90 … | p99 … | max … (n = …)`.
    pub(crate) fn line(&self) -> String {
        format!(
            "p50 {} | p90 {} | p99 {} | max {} (n = {})",
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.max),
            self.count
        )
    }

    /// [`Stats::line`] with the mean: `p50 … | p90 … | p99 … | max … | mean … (n = …)`.
    pub(crate) fn line_with_mean(&self) -> String {
        format!(
            "p50 {} | p90 {} | p99 {} | max {} | mean {} (n = {})",
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.max),
            ms(self.mean),
            self.count
        )
    }

    /// `{"n", "p50_ms", "p90_ms", "p99_ms", "max_ms"}`, the durations as `millis` gives them (each
    /// benchmark keeps its own rounding to a tenth of a millisecond).
    pub(crate) fn json_with(&self, millis: fn(Duration) -> f64) -> Value {
        json!({
            "n": self.count,
            "p50_ms": millis(self.p50),
            "p90_ms": millis(self.p90),
            "p99_ms": millis(self.p99),
            "max_ms": millis(self.max),
        })
    }
}

/// `12.3 ms`.
pub(crate) fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

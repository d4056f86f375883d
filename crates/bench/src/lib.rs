//! Registrar's load drivers (dev-only): what the `mail_latency` and `overload` benchmarks and the
//! `capacity` and `replicas` programs share. The entry point that only explains itself outside
//! `cargo bench`, their knobs, finding the release `registrar` binary, the plain HTTP/1.1
//! client, brief log lines, the order statistics they print and the generated section of a
//! document; in modules, the programs' server, database, machine and load clients. Starting and
//! stopping the server, the SMTP sink and the database come from the test toolkit
//! (`registrar-testing`), as in the tests.
//!
//! The benchmarks drive the built binary rather than depend on the `registrar` crate: they
//! measure what ships, and the bin crate stays the thin composer.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark reports on its output"
)]

pub mod client;
pub mod machine;
pub mod postgres;
pub mod server;

use std::{
    fs,
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use serde_json::{Value, json};

/// A password the strength rules accept (zxcvbn score 4, no local part).
pub const PASSWORD: &str = "correct horse battery staple";
/// The longest one HTTP request may take before the client gives up on it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server that got SIGTERM may take to exit before it is killed.
pub const STOP_PATIENCE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// The run

/// The benchmark `name`'s `main`: without `--bench` (as `cargo test --benches` runs it) it only
/// says to run it with `just {recipe}`; with it, it runs `run` and reports its error.
pub fn main(name: &str, recipe: &str, run: impl FnOnce() -> Result<(), String>) -> ExitCode {
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

/// The release `registrar` binary in the target folder this benchmark was built into (cargo
/// bench builds in release: `target/release/deps/<bench>` → `target/release/registrar`); the
/// error says to run `just {recipe}`, which builds it first.
pub fn release_binary(recipe: &str) -> Result<PathBuf, String> {
    let bench = std::env::current_exe().map_err(|error| format!("where am I? {error}"))?;
    let profile_dir = bench
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("{} is not in a target folder", bench.display()))?;
    let binary = profile_dir.join("registrar");
    if profile_dir.file_name().and_then(|name| name.to_str()) != Some("release") {
        return Err(format!(
            "{} is not a release build; run `just {recipe}` (cargo bench builds in release)",
            bench.display()
        ));
    }
    if !binary.is_file() {
        return Err(format!(
            "{} is not built; run `just {recipe}` (it builds it first)",
            binary.display()
        ));
    }
    Ok(binary)
}

/// The whole number in the environment variable `variable`, or `default` when it is not set.
pub fn number(variable: &str, default: usize) -> Result<usize, String> {
    match std::env::var(variable) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| format!("{variable}={text:?} is not a whole number")),
        Err(_) => Ok(default),
    }
}

// ---------------------------------------------------------------------------------------------
// The server's log

/// A log line as the values of `fields` (`level`, `message`, …) joined by spaces, followed by
/// ` (error)` when it has an `error`; or as it is when it is not JSON.
#[must_use]
pub fn brief(line: &str, fields: &[&str]) -> String {
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
#[must_use]
pub fn registration_body(email: &str) -> String {
    json!({ "email": email, "password": PASSWORD }).to_string()
}

/// What failed in an HTTP exchange: the stage (`connect`, `write`, `read`) and why.
pub type HttpError = (&'static str, std::io::Error);

/// One HTTP/1.1 request to `127.0.0.1:port` on a fresh connection (`Connection: close`), read to
/// the end: status, head and body; or the stage that failed (`connect`, `write`, `read`) and why.
pub fn http(
    port: u16,
    request_line: &str,
    json_body: Option<&str>,
) -> Result<(u16, String, String), HttpError> {
    exchange(connect(port)?, request_line, "", json_body)
}

/// A connection to `127.0.0.1:port` for one request, with [`REQUEST_TIMEOUT`] on reads. Made
/// apart from [`exchange`] so that a burst can connect first and send all at one instant.
pub fn connect(port: u16) -> Result<TcpStream, HttpError> {
    let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|error| ("connect", error))?;
    stream
        .set_read_timeout(Some(REQUEST_TIMEOUT))
        .map_err(|error| ("connect", error))?;
    stream
        .set_nodelay(true)
        .map_err(|error| ("connect", error))?;
    Ok(stream)
}

/// One request on `stream` (`Connection: close`), with `headers` (whole `Name: value\r\n`
/// lines, or nothing), read to the end: status, head and body.
pub fn exchange(
    mut stream: TcpStream,
    request_line: &str,
    headers: &str,
    json_body: Option<&str>,
) -> Result<(u16, String, String), HttpError> {
    let body = json_body.unwrap_or("");
    let content_type = if json_body.is_some() {
        "Content-Type: application/json\r\n"
    } else {
        ""
    };
    let request = format!(
        "{request_line} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{headers}{content_type}\
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
pub struct Stats {
    /// How many samples.
    pub count: usize,
    /// The median.
    pub p50: Duration,
    /// The 90th percentile.
    pub p90: Duration,
    /// The 99th percentile.
    pub p99: Duration,
    /// The largest sample.
    pub max: Duration,
    /// The mean.
    pub mean: Duration,
}

impl Stats {
    /// Nearest-rank percentiles.
    #[must_use]
    pub fn of(mut samples: Vec<Duration>) -> Self {
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
    #[must_use]
    pub fn line(&self) -> String {
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
    #[must_use]
    pub fn line_with_mean(&self) -> String {
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
    #[must_use]
    pub fn json_with(&self, millis: fn(Duration) -> f64) -> Value {
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
#[must_use]
pub fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

// ---------------------------------------------------------------------------------------------
// Documents

/// `2026-11-30 06:10 UTC`, from `date`.
#[must_use]
pub fn utc_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Replaces the generated section of `path` between the marker lines `begin` and `end` with
/// `section` (which carries both markers), keeping everything else the document says; with no
/// section yet, puts it after the title line; with no document yet, starts one from `new`.
pub fn write_section(
    path: &Path,
    (begin, end): (&str, &str),
    new: &str,
    section: &str,
) -> Result<(), String> {
    let existing = fs::read_to_string(path).unwrap_or_else(|_| new.to_owned());
    let document = match (existing.find(begin), existing.find(end)) {
        (Some(first), Some(last)) if first < last => format!(
            "{}{section}\n{}",
            &existing[..first],
            &existing[last + end.len()..].trim_start_matches('\n')
        ),
        _ => {
            let (title, rest) = existing.split_once('\n').unwrap_or((existing.as_str(), ""));
            format!("{title}\n\n{section}\n{}", rest.trim_start_matches('\n'))
        }
    };
    fs::write(path, document).map_err(|error| format!("cannot write {}: {error}", path.display()))
}

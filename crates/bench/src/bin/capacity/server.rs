//! The release `registrar` binary under test: where it is, how it is started (pinned or not, on
//! PostgreSQL or the in-memory store, the log mailer, JSON logs to a file), what its log says
//! (its port, the activation codes), its memory, and its SIGTERM.

use std::{
    collections::HashMap,
    fs::{self, File},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::machine;

/// How long the server may take to listen (migrations on a fresh database included).
const START_PATIENCE: Duration = Duration::from_mins(1);
/// How long a server that got SIGTERM may take to exit before it is killed.
const STOP_PATIENCE: Duration = Duration::from_secs(30);
/// Codes stay valid for the whole run, so accounts registered early can be activated later.
const CODE_TTL: &str = "30m";

/// The release `registrar` beside this program (`cargo run --release` puts both in the same
/// profile folder of the target directory).
pub(crate) fn release_binary() -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|error| format!("where am I? {error}"))?;
    let binary = me
        .parent()
        .ok_or_else(|| format!("{} has no folder", me.display()))?
        .join("registrar");
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!(
            "{} not found: run `cargo build --release -p registrar` first (or `just bench`)",
            binary.display()
        ))
    }
}

/// How one server runs.
pub(crate) struct Setup<'a> {
    /// The release binary.
    pub(crate) binary: &'a Path,
    /// `taskset -c` list, or `None` to leave it unpinned.
    pub(crate) cpus: Option<String>,
    /// `DATABASE_URL`, or `None` for the in-memory store.
    pub(crate) database_url: Option<&'a str>,
    /// Where its log goes.
    pub(crate) log: PathBuf,
}

/// A running server.
pub(crate) struct Server {
    child: Child,
    /// Its process id (`taskset` execs the binary, so it is the server's).
    pub(crate) pid: u32,
    /// The loopback port it listens on.
    pub(crate) port: u16,
    log: PathBuf,
}

impl Server {
    /// Starts the server as `setup` says and waits until it listens.
    pub(crate) fn start(setup: &Setup<'_>) -> Result<Self, String> {
        let mut command = match &setup.cpus {
            Some(cpus) => {
                let mut command = Command::new("taskset");
                command.arg("-c").arg(cpus).arg(setup.binary);
                command
            }
            None => Command::new(setup.binary),
        };
        command
            .arg("serve")
            .env_clear()
            .env("REGISTRAR_LISTEN", "127.0.0.1:0")
            .env("REGISTRAR_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env("REGISTRAR_RATE_LIMITS", "off")
            .env("ACTIVATION_CODE_TTL", CODE_TTL);
        if let Some(url) = setup.database_url {
            command.env("DATABASE_URL", url);
        }
        let log = File::create(&setup.log)
            .map_err(|error| format!("cannot create {}: {error}", setup.log.display()))?;
        let log_too = log
            .try_clone()
            .map_err(|error| format!("cannot share the log file: {error}"))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_too)
            .spawn()
            .map_err(|error| format!("cannot start {}: {error}", setup.binary.display()))?;
        let mut server = Self {
            pid: child.id(),
            child,
            port: 0,
            log: setup.log.clone(),
        };
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            if let Some(port) = server.lines().iter().find_map(|line| listening_port(line)) {
                server.port = port;
                return Ok(server);
            }
            if !matches!(server.child.try_wait(), Ok(None)) || Instant::now() > deadline {
                let tail = server.lines().into_iter().rev().take(5).collect::<Vec<_>>();
                server.kill();
                return Err(format!(
                    "the server did not start listening; its last log lines: {tail:?}"
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Resident memory now and at its highest, KiB.
    pub(crate) fn memory_kib(&self) -> Option<(u64, u64)> {
        machine::memory_kib(self.pid)
    }

    /// The activation codes the log mailer has written so far, by address.
    pub(crate) fn codes(&self) -> HashMap<String, String> {
        self.lines()
            .iter()
            .filter_map(|line| {
                let event: Value = serde_json::from_str(line).ok()?;
                Some((
                    event["to"].as_str()?.to_owned(),
                    event["code"].as_str()?.to_owned(),
                ))
            })
            .collect()
    }

    /// SIGTERM, then waits for the exit (SIGKILL after 30 s); says whether it exited cleanly.
    pub(crate) fn stop(mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let deadline = Instant::now() + STOP_PATIENCE;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status.success(),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => {
                    self.kill();
                    break false;
                }
            }
        }
    }

    fn kill(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn lines(&self) -> Vec<String> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// The port named by the server's `listening` log event, if `line` is that event.
fn listening_port(line: &str) -> Option<u16> {
    let event: Value = serde_json::from_str(line).ok()?;
    (event["message"] == "listening")
        .then(|| event["port"].as_u64())
        .flatten()
        .and_then(|port| u16::try_from(port).ok())
}

//! The release `registrar` binary under test: where it is, how it is started (pinned or not, on
//! PostgreSQL or the in-memory store, the log mailer unless told otherwise, JSON logs to a file), what its log says
//! (its port, the activation codes), its memory, and its SIGTERM. The process itself is the test
//! toolkit's, as in the tests and the other benchmarks.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::STOP_PATIENCE;
use registrar_testing::process::Process;
use serde_json::Value;

use crate::machine;

/// How long the server may take to listen (migrations on a fresh database included).
const START_PATIENCE: Duration = Duration::from_mins(1);
/// Codes stay valid for the whole run, so accounts registered early can be activated later.
const CODE_TTL: &str = "30m";

/// The release `registrar` beside this program (`cargo run --release` puts both in the same
/// profile folder of the target directory).
pub fn release_binary() -> Result<PathBuf, String> {
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
pub struct Setup<'a> {
    /// The release binary.
    pub binary: &'a Path,
    /// `taskset -c` list, or `None` to leave it unpinned.
    pub cpus: Option<String>,
    /// `DATABASE_URL`, or `None` for the in-memory store.
    pub database_url: Option<&'a str>,
    /// Where its log goes.
    pub log: PathBuf,
}

/// A running server.
pub struct Server {
    /// The server (`taskset` execs the binary, so its process id is the server's).
    process: Process,
    /// The loopback port it listens on.
    pub port: u16,
    log: PathBuf,
}

impl Server {
    /// Starts the server as `setup` says and waits until it listens.
    pub fn start(setup: &Setup<'_>) -> Result<Self, String> {
        Self::start_with(setup, &[])
    }

    /// [`Server::start`] with the environment variables `settings` added (a mail server,
    /// Argon2 costs, the shared secret of replicas).
    pub fn start_with(setup: &Setup<'_>, settings: &[(&str, &str)]) -> Result<Self, String> {
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
        command.envs(settings.iter().copied());
        // Killed when dropped, so a server that never listens does not outlive the error.
        let mut process = Process::spawn_logging_to(&mut command, &setup.log)
            .map_err(|error| format!("cannot start {}: {error}", setup.binary.display()))?;
        let port = process
            .wait_for_listening(START_PATIENCE)
            .map_err(|error| format!("the server did not start listening: {error}"))?;
        Ok(Self {
            process,
            port,
            log: setup.log.clone(),
        })
    }

    /// Resident memory now and at its highest, KiB.
    #[must_use]
    pub fn memory_kib(&self) -> Option<(u64, u64)> {
        machine::memory_kib(self.process.id())
    }

    /// CPU time the server has used so far, seconds (every thread), or `None` once it is gone.
    #[must_use]
    pub fn cpu_seconds(&self) -> Option<f64> {
        machine::cpu_ticks(self.process.id()).map(machine::ticks_to_seconds)
    }

    /// CPU time each of its threads has used so far, seconds, by thread name (see
    /// [`machine::thread_cpu_seconds`]); empty once it is gone.
    #[must_use]
    pub fn thread_cpu_seconds(&self) -> Vec<(String, f64)> {
        machine::thread_cpu_seconds(self.process.id())
    }

    /// The activation codes the log mailer has written so far, by address.
    #[must_use]
    pub fn codes(&self) -> HashMap<String, String> {
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
    #[allow(
        clippy::must_use_candidate,
        reason = "a caller may stop a server without caring how it went"
    )]
    pub fn stop(mut self) -> bool {
        self.process.terminate(STOP_PATIENCE)
    }

    fn lines(&self) -> Vec<String> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

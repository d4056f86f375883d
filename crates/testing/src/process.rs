//! The one child-process spawner: start a program (the `registrar` binary, mostly), read its
//! output line by line as it comes, wait for a line or a JSON log event, and stop it with
//! SIGTERM as an orchestrator would, or SIGKILL as a crash would. A process still running when
//! its [`Process`] is dropped is killed.
//!
//! Its output (stdout and stderr, merged) goes either through pipes read by two threads, or,
//! for a load test where a slow reader must never throttle the program, to a log file read
//! afterwards ([`Process::spawn_logging_to`]).

use std::{
    fs::File,
    io::{BufRead, BufReader, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// How often a log file is looked at while waiting for a line.
const FILE_POLL: Duration = Duration::from_millis(10);

/// `binary serve` with an empty environment but for what every test and benchmark runs it
/// with: a free loopback port, JSON logs at `info`.
#[must_use]
pub fn serve_command(binary: impl AsRef<Path>) -> Command {
    let mut command = Command::new(binary.as_ref());
    command
        .arg("serve")
        .env_clear()
        .env("REGISTRAR_LISTEN", "127.0.0.1:0")
        .env("REGISTRAR_LOG_FORMAT", "json")
        .env("RUST_LOG", "info");
    command
}

/// The port of the server's `listening` event; `None` for any other line.
#[must_use]
pub fn listening_port(line: &str) -> Option<u16> {
    let event = serde_json::from_str::<Value>(line).ok()?;
    if event["message"] != "listening" {
        return None;
    }
    event["port"]
        .as_u64()
        .and_then(|port| u16::try_from(port).ok())
}

/// Where the output lines come from.
enum Lines {
    Pipes(Receiver<String>),
    File { path: PathBuf, offset: u64 },
}

/// A running child process and the output lines read so far.
pub struct Process {
    child: Child,
    lines: Lines,
    seen: Vec<String>,
}

impl Process {
    /// Starts `command` with its stdout and stderr piped and read as lines.
    pub fn spawn(command: &mut Command) -> std::io::Result<Self> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let (tx, lines) = mpsc::channel();
        let outputs: [Option<Box<dyn Read + Send>>; 2] = [
            child
                .stdout
                .take()
                .map(|out| Box::new(out) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|err| Box::new(err) as Box<dyn Read + Send>),
        ];
        for output in outputs.into_iter().flatten() {
            let tx = tx.clone();
            thread::spawn(move || {
                for line in BufReader::new(output).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Self {
            child,
            lines: Lines::Pipes(lines),
            seen: Vec::new(),
        })
    }

    /// Starts `command` with its stdout and stderr appended to the file `log` (created empty),
    /// which is read only when asked.
    pub fn spawn_logging_to(command: &mut Command, log: &Path) -> std::io::Result<Self> {
        let file = File::create(log)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .spawn()?;
        Ok(Self {
            child,
            lines: Lines::File {
                path: log.to_owned(),
                offset: 0,
            },
            seen: Vec::new(),
        })
    }

    /// Its process id.
    #[must_use]
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Every line read so far but those [`Self::drain`] handed over.
    #[must_use]
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    /// The lines written since the last read, without waiting; with their size in bytes
    /// (line endings included). They are handed over, not kept in [`Self::seen`]: a load test
    /// drains a large log in pieces.
    pub fn drain(&mut self) -> (Vec<String>, u64) {
        let lines: Vec<String> = match &mut self.lines {
            Lines::Pipes(receiver) => receiver.try_iter().collect(),
            Lines::File { path, offset } => read_complete_lines(path, offset),
        };
        let bytes = lines.iter().map(|line| line.len() as u64 + 1).sum();
        (lines, bytes)
    }

    /// The next line, waiting for it at most `patience`; `None` when none came (or the output
    /// ended).
    pub fn next_line(&mut self, patience: Duration) -> Option<String> {
        let deadline = Instant::now() + patience;
        let line = match &mut self.lines {
            Lines::Pipes(receiver) => receiver.recv_timeout(patience).ok(),
            Lines::File { .. } => loop {
                if let Some(line) = self.pending_file_line() {
                    break Some(line);
                }
                if Instant::now() >= deadline {
                    break None;
                }
                thread::sleep(FILE_POLL);
            },
        };
        if let Some(line) = &line {
            self.seen.push(line.clone());
        }
        line
    }

    /// Reads one complete line from the log file, if there is one.
    fn pending_file_line(&mut self) -> Option<String> {
        let Lines::File { path, offset } = &mut self.lines else {
            return None;
        };
        let mut file = File::open(&*path).ok()?;
        file.seek(SeekFrom::Start(*offset)).ok()?;
        let mut line = String::new();
        let read = BufReader::new(file).read_line(&mut line).ok()?;
        if read == 0 || !line.ends_with('\n') {
            return None;
        }
        *offset += read as u64;
        Some(line.trim_end().to_owned())
    }

    /// Waits for a line for which `wanted` holds, at most `patience` in all; the error holds
    /// every line seen so far.
    pub fn wait_for_line(
        &mut self,
        patience: Duration,
        mut wanted: impl FnMut(&str) -> bool,
    ) -> Result<String, String> {
        let deadline = Instant::now() + patience;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(line) = self.next_line(left) else {
                return Err(format!(
                    "no such line within {patience:?}{}; the output so far:\n{}",
                    if self.has_exited() {
                        " (it exited)"
                    } else {
                        ""
                    },
                    self.seen.join("\n")
                ));
            };
            if wanted(&line) {
                return Ok(line);
            }
        }
    }

    /// Waits for a JSON log event for which `wanted` holds; fails the test when a line is not
    /// JSON or no such event comes within `patience`.
    pub fn wait_for_event(&mut self, patience: Duration, wanted: impl Fn(&Value) -> bool) -> Value {
        let line = self
            .wait_for_line(patience, |line| {
                let event: Value = serde_json::from_str(line)
                    .unwrap_or_else(|_| panic!("a log line is not JSON: {line}"));
                wanted(&event)
            })
            .unwrap_or_else(|log| panic!("no such log event: {log}"));
        serde_json::from_str(&line).unwrap()
    }

    /// Waits for the server's `listening` event and returns its port.
    pub fn wait_for_listening(&mut self, patience: Duration) -> Result<u16, String> {
        let line = self.wait_for_line(patience, |line| listening_port(line).is_some())?;
        listening_port(&line).ok_or_else(|| format!("no port in {line}"))
    }

    fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Asks it to stop with SIGTERM, without waiting.
    pub fn sigterm(&self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.id().to_string())
            .status();
    }

    /// SIGTERM, then waits for it to exit, with SIGKILL after `patience`; says whether it
    /// exited with success.
    pub fn terminate(&mut self, patience: Duration) -> bool {
        self.sigterm();
        let deadline = Instant::now() + patience;
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

    /// Waits for it to exit.
    pub fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait()
    }

    /// Kills it with SIGKILL, as a crash would, and waits for it (unless it has exited).
    pub fn kill(&mut self) {
        if !self.has_exited() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// After it has exited: every line it wrote that was not read yet (waiting at most
    /// `patience` for the readers to reach the end).
    pub fn rest(&mut self, patience: Duration) -> Vec<String> {
        let mut rest = Vec::new();
        match &self.lines {
            Lines::Pipes(receiver) => {
                let deadline = Instant::now() + patience;
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match receiver.recv_timeout(left) {
                        Ok(line) => rest.push(line),
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
                self.seen.extend(rest.iter().cloned());
            }
            Lines::File { .. } => {
                rest = self.drain().0;
                self.seen.extend(rest.iter().cloned());
            }
        }
        rest
    }

    /// Every line it wrote (but those [`Self::drain`] handed over), once it has exited.
    #[must_use]
    pub fn into_log(mut self, patience: Duration) -> Vec<String> {
        self.rest(patience);
        std::mem::take(&mut self.seen)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The complete lines of the file at `path` from `offset` on; `offset` moves past them.
fn read_complete_lines(path: &Path, offset: &mut u64) -> Vec<String> {
    let Ok(mut file) = File::open(path) else {
        return Vec::new();
    };
    let Ok(end) = file.seek(SeekFrom::End(0)) else {
        return Vec::new();
    };
    if file.seek(SeekFrom::Start(*offset)).is_err() {
        return Vec::new();
    }
    let mut reader = BufReader::new(file.take(end.saturating_sub(*offset)));
    let mut lines = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(read) if line.ends_with('\n') => {
                *offset += read as u64;
                lines.push(line.trim_end().to_owned());
            }
            // A line still being written: read it next time.
            Ok(_) => break,
        }
    }
    lines
}

//! The harness for driving the real `registrar` binary: start it with an environment, read
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]
//! its JSON log, talk HTTP/1.1 to it over a plain socket, stop it with SIGTERM or SIGKILL.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::{
    fmt::Write as _,
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    process::{Child, Command, Stdio},
    sync::mpsc::{self, Receiver},
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::Value;

pub(crate) mod database;
pub(crate) mod smtp;

/// How long to wait for the server to say something; generous for a loaded CI machine.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

pub(crate) struct Server {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    pub(crate) port: u16,
}

impl Server {
    pub(crate) fn start(extra_env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_registrar"));
        command
            .arg("serve")
            .env_clear()
            .env("REGISTRAR_LISTEN", "127.0.0.1:0")
            .env("REGISTRAR_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            // Light Argon2 parameters keep the test quick; the parameters are tested elsewhere.
            .env("REGISTRAR_ARGON2_MEMORY_KIB", "1024")
            .env("REGISTRAR_ARGON2_ITERATIONS", "1")
            .envs(extra_env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let (tx, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
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
            seen: Vec::new(),
            port: 0,
        };
        let listening = server.wait_for(|event| event["message"] == "listening");
        server.port = u16::try_from(listening["port"].as_u64().unwrap()).unwrap();
        server
    }

    /// Waits for a log event matching `wanted`, failing after [`PATIENCE`].
    pub(crate) fn wait_for(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no such log event; saw:\n{}", self.seen.join("\n")));
            self.seen.push(line.clone());
            let event: Value = serde_json::from_str(&line)
                .unwrap_or_else(|_| panic!("a log line is not JSON: {line}"));
            if wanted(&event) {
                return event;
            }
        }
    }

    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        auth: Option<(&str, &str)>,
        body: Option<&str>,
    ) -> (u16, String, Value) {
        self.request_with(method, path, auth, body, &[])
    }

    /// [`Self::request`] with extra header lines (`"Name: value"`).
    /// The body of a GET of `path`, as text.
    pub(crate) fn get_text(&self, path: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap()
    }

    pub(crate) fn request_with(
        &self,
        method: &str,
        path: &str,
        auth: Option<(&str, &str)>,
        body: Option<&str>,
        headers: &[&str],
    ) -> (u16, String, Value) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut request =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        if let Some((user, password)) = auth {
            let token = STANDARD.encode(format!("{user}:{password}"));
            let _ = write!(request, "Authorization: Basic {token}\r\n");
        }
        for header in headers {
            let _ = write!(request, "{header}\r\n");
        }
        let body = body.unwrap_or("");
        if !body.is_empty() {
            request.push_str("Content-Type: application/json\r\n");
        }
        let _ = write!(request, "Content-Length: {}\r\n\r\n{body}", body.len());
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let json = serde_json::from_str(body).unwrap_or(Value::Null);
        (status, head.to_ascii_lowercase(), json)
    }

    pub(crate) fn terminate(self) -> (bool, Vec<String>) {
        self.send_sigterm();
        self.exit()
    }

    /// Waits for the process to exit; returns whether it exited cleanly, and its whole log.
    pub(crate) fn exit(mut self) -> (bool, Vec<String>) {
        let status = self.child.wait().unwrap();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        (status.success(), std::mem::take(&mut self.seen))
    }
}

impl Server {
    /// The process id of the server.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks the process to stop, as an orchestrator would, without waiting for it.
    pub(crate) fn send_sigterm(&self) {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
    }

    /// Kills the process with SIGKILL, as a crash would, and waits for it.
    pub(crate) fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

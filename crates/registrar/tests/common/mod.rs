//! The harness for driving the real `registrar` binary: start it with an environment (the test
//! toolkit's spawner), read its JSON log, talk HTTP/1.1 to it over a plain socket, stop it with
//! SIGTERM or SIGKILL. The database and the SMTP server come from the toolkit too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::{
    fmt::Write as _,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    time::Duration,
};

use base64::{Engine, engine::general_purpose::STANDARD};
use registrar_testing::process::{Process, serve_command};
use serde_json::Value;

/// How long to wait for the server to say something; generous for a loaded CI machine.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

/// The real `registrar` binary, started by the toolkit's spawner.
pub(crate) struct Server {
    process: Process,
    pub(crate) port: u16,
}

impl Server {
    pub(crate) fn start(extra_env: &[(&str, &str)]) -> Self {
        let mut process = Process::spawn(
            serve_command(env!("CARGO_BIN_EXE_registrar"))
                // Light Argon2 parameters keep the test quick; the parameters are tested elsewhere.
                .env("REGISTRAR_ARGON2_MEMORY_KIB", "1024")
                .env("REGISTRAR_ARGON2_ITERATIONS", "1")
                .envs(extra_env.iter().copied()),
        )
        .unwrap();
        let listening = process.wait_for_event(PATIENCE, |event| event["message"] == "listening");
        let port = u16::try_from(listening["port"].as_u64().unwrap()).unwrap();
        Self { process, port }
    }

    /// Waits for a log event matching `wanted`, failing after [`PATIENCE`].
    pub(crate) fn wait_for(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
        self.process.wait_for_event(PATIENCE, wanted)
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
        let status = self.process.wait().unwrap();
        (
            status.success(),
            self.process.into_log(Duration::from_secs(2)),
        )
    }

    /// The process id of the server.
    pub(crate) fn pid(&self) -> u32 {
        self.process.id()
    }

    /// Asks the process to stop, as an orchestrator would, without waiting for it.
    pub(crate) fn send_sigterm(&self) {
        self.process.sigterm();
    }

    /// Kills the process with SIGKILL, as a crash would, and waits for it.
    pub(crate) fn kill_9(mut self) {
        self.process.kill();
    }
}

/// A port nothing listens on yet (bound, read, released).
pub(crate) fn reserve_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The 4-digit code in a message: the first line of the plain-text part that is only 4 digits.
pub(crate) fn code_in(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .find(|line| line.len() == 4 && line.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or_else(|| panic!("no code in the email:\n{message}"))
        .to_owned()
}

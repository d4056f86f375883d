//! A minimal SMTP server for end-to-end tests: it speaks enough ESMTP for lettre (EHLO, MAIL,
//! RCPT, DATA, QUIT), accepts every message and keeps its raw text.

use std::{
    io::{BufRead, BufReader, Write},
    net::{TcpListener, TcpStream},
    sync::{Arc, Condvar, Mutex},
    thread,
    time::{Duration, Instant},
};

/// A running SMTP sink on 127.0.0.1.
pub(crate) struct SmtpSink {
    pub(crate) port: u16,
    messages: Arc<Mutex<Vec<String>>>,
    gate: Arc<Gate>,
}

/// Holds the reply to each message's data while closed.
#[derive(Default)]
struct Gate {
    closed: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn pass(&self) {
        let mut closed = self.closed.lock().unwrap();
        while *closed {
            closed = self.opened.wait(closed).unwrap();
        }
    }
}

impl SmtpSink {
    /// Starts on a free port.
    pub(crate) fn start() -> Self {
        Self::on(TcpListener::bind("127.0.0.1:0").unwrap())
    }

    /// Starts on `port` (reserved earlier with [`reserve_port`]).
    pub(crate) fn start_on(port: u16) -> Self {
        Self::on(TcpListener::bind(("127.0.0.1", port)).unwrap())
    }

    /// Starts on a free port, holding the reply to every message's data until [`Self::release`]:
    /// the sender is then mid-send, the message received but not yet accepted.
    pub(crate) fn start_holding() -> Self {
        let sink = Self::start();
        *sink.gate.closed.lock().unwrap() = true;
        sink
    }

    /// Lets held and later replies go.
    pub(crate) fn release(&self) {
        *self.gate.closed.lock().unwrap() = false;
        self.gate.opened.notify_all();
    }

    fn on(listener: TcpListener) -> Self {
        let port = listener.local_addr().unwrap().port();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(Gate::default());
        let (store, held) = (Arc::clone(&messages), Arc::clone(&gate));
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (store, held) = (Arc::clone(&store), Arc::clone(&held));
                thread::spawn(move || serve(stream, &store, &held));
            }
        });
        Self {
            port,
            messages,
            gate,
        }
    }

    /// Waits for the `n`-th message (1-based) to be received, failing after `patience`.
    pub(crate) fn wait_for_message(&self, n: usize, patience: Duration) -> String {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(message) = self.messages.lock().unwrap().get(n - 1) {
                return message.clone();
            }
            assert!(Instant::now() < deadline, "no email number {n} arrived");
            thread::sleep(Duration::from_millis(20));
        }
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

fn serve(stream: TcpStream, messages: &Mutex<Vec<String>>, gate: &Gate) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut reply = |text: &str| writer.write_all(format!("{text}\r\n").as_bytes()).is_ok();
    if !reply("220 sink.test ESMTP") {
        return;
    }
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let command = line.trim_end().to_ascii_uppercase();
        let ok = if command.starts_with("EHLO") {
            reply("250-sink.test\r\n250 8BITMIME")
        } else if command == "DATA" {
            reply("354 go ahead");
            let mut message = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                if line == ".\r\n" {
                    break;
                }
                message.push_str(line.strip_prefix('.').unwrap_or(&line));
            }
            messages.lock().unwrap().push(message);
            gate.pass();
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

/// The 4-digit code in a message: the first line of the plain-text part that is only 4 digits.
pub(crate) fn code_in(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .find(|line| line.len() == 4 && line.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or_else(|| panic!("no code in the email:\n{message}"))
        .to_owned()
}

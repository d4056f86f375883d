//! The fake SMTP server of every test and benchmark: a real TCP listener on 127.0.0.1 speaking
//! enough ESMTP (RFC 5321) for lettre: greeting, EHLO/HELO, MAIL, RCPT, DATA with
//! dot-unstuffing, RSET, NOOP, QUIT. Each reply can be scripted; the reply to the message data
//! can be held until [`FakeSmtp::release`]; every command and every message is recorded, with
//! the instants a benchmark needs (connection, first and last line of the data, acceptance).
//!
//! Each session runs on a blocking thread of its own, like a mail server's thread waiting in
//! `read`: the server works under any runtime or none, and its sockets behave as a real
//! server's do (`TCP_NODELAY`, so its own replies are never held back by Nagle's algorithm).

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Condvar, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use tokio::sync::watch;

/// The replies the server gives. `None` as the greeting: accept connections and never say a word.
#[derive(Debug, Clone)]
pub struct Script {
    /// The greeting; a non-2xx greeting ends the session after it is sent.
    pub greeting: Option<&'static str>,
    /// The reply to EHLO.
    pub ehlo: &'static str,
    /// The reply to MAIL.
    pub mail: &'static str,
    /// The reply to RCPT.
    pub rcpt: &'static str,
    /// The reply to DATA; anything but 3xx and no data follows.
    pub data: &'static str,
    /// The reply to the end of the message data.
    pub end_of_data: &'static str,
    /// Hold the reply to the message data until [`FakeSmtp::release`] is called.
    pub hold_end_of_data: bool,
    /// With `hold_end_of_data`, hold only the messages to this address (an RCPT argument
    /// that contains it); the others are answered at once.
    pub hold_only_for: Option<&'static str>,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            greeting: Some("220 fake.smtp.test ESMTP ready"),
            ehlo: "250-fake.smtp.test greets you\r\n250 HELP",
            mail: "250 2.1.0 sender ok",
            rcpt: "250 2.1.5 recipient ok",
            data: "354 end data with <CR><LF>.<CR><LF>",
            end_of_data: "250 2.0.0 queued as FAKE1",
            hold_end_of_data: false,
            hold_only_for: None,
        }
    }
}

impl Script {
    /// A server that accepts connections and never answers.
    #[must_use]
    pub fn silent() -> Self {
        Self {
            greeting: None,
            ..Self::default()
        }
    }

    /// A server that holds the reply to every message's data until [`FakeSmtp::release`]: the
    /// sender is then mid-send, the message received but not yet accepted.
    #[must_use]
    pub fn holding() -> Self {
        Self {
            hold_end_of_data: true,
            ..Self::default()
        }
    }
}

/// One message as the server received it; recorded before any hold of the reply.
#[derive(Debug, Clone)]
pub struct Received {
    /// The MAIL command, as sent.
    pub mail_from: String,
    /// The accepted RCPT commands, as sent.
    pub rcpt_to: Vec<String>,
    /// The message data, dot-unstuffed, CRLF line endings, without the final `.` line.
    pub data: String,
    /// The server accepted the TCP connection of the message's session.
    pub connected: Instant,
    /// The first line of the message data was read.
    pub data_started: Instant,
    /// The end-of-data line (`.`) was read.
    pub data_ended: Instant,
    /// The server had the whole message and was about to accept it: right before its reply to
    /// the end of the data, or before the hold when the reply is held.
    pub accepted: Instant,
}

impl Received {
    /// The bare, lower-cased address of the `To:` header, or of the first recipient when there
    /// is no such header.
    #[must_use]
    pub fn to(&self) -> String {
        let header = self
            .data
            .split("\r\n")
            .take_while(|line| !line.is_empty())
            .find(|line| line.len() > 3 && line[..3].eq_ignore_ascii_case("to:"))
            .map(|line| &line[3..]);
        let envelope = self
            .rcpt_to
            .first()
            .and_then(|command| command.get("RCPT TO:".len()..));
        address_in(header.or(envelope).unwrap_or_default())
    }
}

/// The bare address in `<ada@example.com>`, `Ada <ada@example.com>` or `ada@example.com`,
/// lower-cased.
fn address_in(text: &str) -> String {
    let text = text.trim();
    let inner = match (text.rfind('<'), text.rfind('>')) {
        (Some(open), Some(close)) if open < close => &text[open + 1..close],
        _ => text,
    };
    inner.trim().to_ascii_lowercase()
}

struct Shared {
    script: Script,
    commands: Mutex<Vec<String>>,
    messages: Mutex<Vec<Received>>,
    /// Signalled whenever a message is recorded.
    arrived: Condvar,
    /// The number of messages recorded, for async waiters.
    count: watch::Sender<usize>,
    held: Mutex<bool>,
    released: Condvar,
    /// SMTP sessions open now, and the most at once.
    open: AtomicUsize,
    most_open: AtomicUsize,
    stopped: AtomicBool,
}

/// The running server; it stops accepting when dropped.
pub struct FakeSmtp {
    address: SocketAddr,
    shared: Arc<Shared>,
}

impl FakeSmtp {
    /// Starts on a free port.
    #[must_use]
    pub fn start(script: Script) -> Self {
        Self::on(TcpListener::bind("127.0.0.1:0").unwrap(), script)
    }

    /// Starts on `port` of 127.0.0.1 (one a client was told about before the server existed).
    #[must_use]
    pub fn start_on(port: u16, script: Script) -> Self {
        Self::on(TcpListener::bind(("127.0.0.1", port)).unwrap(), script)
    }

    fn on(listener: TcpListener, script: Script) -> Self {
        let address = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            held: Mutex::new(script.hold_end_of_data),
            script,
            commands: Mutex::default(),
            messages: Mutex::default(),
            arrived: Condvar::new(),
            count: watch::Sender::new(0),
            released: Condvar::new(),
            open: AtomicUsize::new(0),
            most_open: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
        });
        let server = Arc::clone(&shared);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if server.stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let connected = Instant::now();
                let shared = Arc::clone(&server);
                let open = shared.open.fetch_add(1, Ordering::SeqCst) + 1;
                shared.most_open.fetch_max(open, Ordering::SeqCst);
                thread::spawn(move || {
                    serve(stream, connected, &shared);
                    shared.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self { address, shared }
    }

    /// `smtp://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("smtp://{}", self.address)
    }

    /// Its port on 127.0.0.1.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Every command received so far, in order, without the line ending.
    #[must_use]
    pub fn commands(&self) -> Vec<String> {
        lock(&self.shared.commands).clone()
    }

    /// Every message received so far, in order.
    #[must_use]
    pub fn messages(&self) -> Vec<Received> {
        lock(&self.shared.messages).clone()
    }

    /// The most SMTP sessions that were open at once.
    #[must_use]
    pub fn most_sessions_at_once(&self) -> usize {
        self.shared.most_open.load(Ordering::SeqCst)
    }

    /// Blocks until the `n`-th message (1-based) has been received, failing after `patience`.
    #[must_use]
    pub fn wait_for_message(&self, n: usize, patience: Duration) -> Received {
        let mut result = None;
        let arrived = self.wait_until(patience, |messages| {
            result = messages.get(n - 1).cloned();
            result.is_some()
        });
        assert!(arrived, "no email number {n} arrived within {patience:?}");
        result.unwrap()
    }

    /// Blocks until `done` holds for the messages received, or `patience` is over; says whether
    /// it held.
    pub fn wait_until(
        &self,
        patience: Duration,
        mut done: impl FnMut(&[Received]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + patience;
        let mut messages = lock(&self.shared.messages);
        loop {
            if done(&messages) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            messages = self.shared.arrived.wait_timeout(messages, left).unwrap().0;
        }
    }

    /// Waits, without blocking the runtime, until the `n`-th message (1-based) has been
    /// received.
    pub async fn received(&self, n: usize) {
        let mut count = self.shared.count.subscribe();
        count.wait_for(|&count| count >= n).await.unwrap();
    }

    /// Lets held and later replies to the message data go.
    pub fn release(&self) {
        *lock(&self.shared.held) = false;
        self.shared.released.notify_all();
    }
}

impl Drop for FakeSmtp {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag and closes the listener.
        let _ = TcpStream::connect(self.address);
        self.release();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn serve(stream: TcpStream, connected: Instant, shared: &Shared) {
    let script = &shared.script;
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut reply = |text: &str| writer.write_all(format!("{text}\r\n").as_bytes()).is_ok();
    let Some(greeting) = script.greeting else {
        // Say nothing; hold the connection until the client gives up and closes it.
        let _ = reader.read_to_end(&mut Vec::new());
        return;
    };
    if !reply(greeting) || !greeting.starts_with('2') {
        return;
    }
    let mut mail_from = String::new();
    let mut rcpt_to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let command = line.trim_end().to_owned();
        lock(&shared.commands).push(command.clone());
        let verb = command
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let answer = match verb.as_str() {
            "EHLO" => script.ehlo,
            "HELO" => "250 fake.smtp.test",
            "MAIL" => {
                mail_from.clone_from(&command);
                rcpt_to.clear();
                script.mail
            }
            "RCPT" => {
                if script.rcpt.starts_with('2') {
                    rcpt_to.push(command);
                }
                script.rcpt
            }
            "DATA" => {
                if !reply(script.data) {
                    return;
                }
                if !script.data.starts_with('3') {
                    continue;
                }
                let Some((data, data_started)) = read_data(&mut reader) else {
                    return;
                };
                let data_ended = Instant::now();
                let mut messages = lock(&shared.messages);
                messages.push(Received {
                    mail_from: mail_from.clone(),
                    rcpt_to: rcpt_to.clone(),
                    data,
                    connected,
                    data_started: data_started.unwrap_or(data_ended),
                    data_ended,
                    accepted: Instant::now(),
                });
                shared.count.send_replace(messages.len());
                drop(messages);
                shared.arrived.notify_all();
                let holds_this = script
                    .hold_only_for
                    .is_none_or(|to| rcpt_to.iter().any(|rcpt| rcpt.contains(to)));
                let mut held = lock(&shared.held);
                while *held && holds_this {
                    held = shared.released.wait(held).unwrap();
                }
                drop(held);
                script.end_of_data
            }
            "RSET" => {
                rcpt_to.clear();
                "250 2.0.0 ok"
            }
            "NOOP" => "250 2.0.0 ok",
            "QUIT" => {
                reply("221 2.0.0 bye");
                return;
            }
            _ => "502 5.5.2 command not implemented",
        };
        if !reply(answer) {
            return;
        }
    }
}

/// Reads message data up to the `.` line, undoing dot-stuffing, and when its first line came
/// in. `None` if the client went away.
fn read_data(reader: &mut impl BufRead) -> Option<(String, Option<Instant>)> {
    let mut data = String::new();
    let mut started = None;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        started.get_or_insert_with(Instant::now);
        if line == ".\r\n" {
            return Some((data, started));
        }
        data.push_str(line.strip_prefix('.').unwrap_or(&line));
    }
}

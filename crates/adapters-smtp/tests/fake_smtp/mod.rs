//! A small scriptable SMTP server for the tests: a real TCP listener on 127.0.0.1 speaking enough
//! ESMTP (RFC 5321) for lettre: greeting, EHLO/HELO, MAIL, RCPT, DATA with dot-unstuffing, RSET,
//! NOOP, QUIT. Each reply can be scripted, and the server records every command and every
//! message it received.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::{Notify, mpsc},
    task::JoinHandle,
};

/// The replies the server gives. `None` as the greeting: accept connections and never say a word.
#[derive(Debug, Clone)]
pub(crate) struct Script {
    pub(crate) greeting: Option<&'static str>,
    pub(crate) ehlo: &'static str,
    pub(crate) mail: &'static str,
    pub(crate) rcpt: &'static str,
    pub(crate) data: &'static str,
    pub(crate) end_of_data: &'static str,
    /// Hold the reply to the message data until [`FakeSmtp::release`] is called.
    pub(crate) hold_end_of_data: bool,
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
        }
    }
}

impl Script {
    /// A server that accepts connections and never answers.
    pub(crate) fn silent() -> Self {
        Self {
            greeting: None,
            ..Self::default()
        }
    }
}

/// One message as the server received it.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) mail_from: String,
    pub(crate) rcpt_to: Vec<String>,
    /// The message data, dot-unstuffed, CRLF line endings, without the final `.` line.
    pub(crate) data: String,
}

#[derive(Default)]
struct Shared {
    commands: Mutex<Vec<String>>,
    messages: Mutex<Vec<Received>>,
    release: Notify,
}

/// The running server; it stops accepting when dropped.
pub(crate) struct FakeSmtp {
    addr: SocketAddr,
    shared: Arc<Shared>,
    data_received: mpsc::UnboundedReceiver<()>,
    accept_loop: JoinHandle<()>,
}

impl FakeSmtp {
    pub(crate) async fn start(script: Script) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let (tx, data_received) = mpsc::unbounded_channel();
        let accept_loop = tokio::spawn({
            let shared = Arc::clone(&shared);
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(serve(
                        stream,
                        script.clone(),
                        Arc::clone(&shared),
                        tx.clone(),
                    ));
                }
            }
        });
        Self {
            addr,
            shared,
            data_received,
            accept_loop,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    pub(crate) fn commands(&self) -> Vec<String> {
        self.shared.commands.lock().unwrap().clone()
    }

    pub(crate) fn messages(&self) -> Vec<Received> {
        self.shared.messages.lock().unwrap().clone()
    }

    /// Waits until the server has read a whole message's data.
    pub(crate) async fn data_received(&mut self) {
        self.data_received.recv().await.unwrap();
    }

    /// Lets a held reply to the message data go out.
    pub(crate) fn release(&self) {
        self.shared.release.notify_one();
    }
}

impl Drop for FakeSmtp {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn serve(
    stream: TcpStream,
    script: Script,
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<()>,
) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let Some(greeting) = script.greeting else {
        // Say nothing; hold the connection until the client gives up and closes it.
        let mut sink = Vec::new();
        let _ = read.read_to_end(&mut sink).await;
        return;
    };
    if reply(&mut write, greeting).await.is_err() || !greeting.starts_with('2') {
        return;
    }
    let mut mail_from = String::new();
    let mut rcpt_to = Vec::new();
    loop {
        let mut line = String::new();
        match read.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let command = line.trim_end().to_owned();
        shared.commands.lock().unwrap().push(command.clone());
        let verb = command
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let answer = match verb.as_str() {
            "EHLO" => script.ehlo,
            "HELO" => "250 fake.smtp.test",
            "MAIL" => {
                mail_from = command.clone();
                rcpt_to.clear();
                script.mail
            }
            "RCPT" => {
                if script.rcpt.starts_with('2') {
                    rcpt_to.push(command.clone());
                }
                script.rcpt
            }
            "DATA" => {
                if reply(&mut write, script.data).await.is_err() {
                    return;
                }
                if !script.data.starts_with('3') {
                    continue;
                }
                let Some(data) = read_data(&mut read).await else {
                    return;
                };
                shared.messages.lock().unwrap().push(Received {
                    mail_from: mail_from.clone(),
                    rcpt_to: rcpt_to.clone(),
                    data,
                });
                let _ = tx.send(());
                if script.hold_end_of_data {
                    shared.release.notified().await;
                }
                script.end_of_data
            }
            "RSET" => {
                rcpt_to.clear();
                "250 2.0.0 ok"
            }
            "NOOP" => "250 2.0.0 ok",
            "QUIT" => {
                let _ = reply(&mut write, "221 2.0.0 bye").await;
                return;
            }
            _ => "502 5.5.2 command not implemented",
        };
        if reply(&mut write, answer).await.is_err() {
            return;
        }
    }
}

/// Reads message data up to the `.` line, undoing dot-stuffing. `None` if the client went away.
async fn read_data(read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> Option<String> {
    let mut data = String::new();
    loop {
        let mut line = String::new();
        match read.read_line(&mut line).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        if line == ".\r\n" {
            return Some(data);
        }
        data.push_str(line.strip_prefix('.').unwrap_or(&line));
    }
}

async fn reply(write: &mut tokio::net::tcp::OwnedWriteHalf, text: &str) -> std::io::Result<()> {
    write.write_all(format!("{text}\r\n").as_bytes()).await
}

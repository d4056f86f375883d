//! Graceful shutdown as an orchestrator sees it: after SIGTERM the process stops accepting,
//! lets requests and email sends in flight finish side by side, and exits within
//! `REGISTRAR_SHUTDOWN_TIMEOUT` of the signal in total, abandoning what is still running then.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::{
    io::Write,
    net::TcpStream,
    time::{Duration, Instant},
};

use common::Server;
use registrar_testing::smtp::{FakeSmtp, Script};

/// The bound under test. The old behaviour, one timeout for the HTTP drain and then another
/// for the email sends, took twice as long with both stuck.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

#[test]
fn a_sigterm_with_a_stuck_request_and_a_stuck_email_send_ends_within_the_shutdown_timeout() {
    let sink = FakeSmtp::start(Script::holding());
    let smtp = sink.url();
    let server = Server::start(&[
        ("SMTP_URL", smtp.as_str()),
        ("REGISTRAR_SHUTDOWN_TIMEOUT", "3s"),
    ]);
    let body = r#"{"email":"ada@example.com","password":"correct horse battery staple"}"#;
    let (status, _, _) = server.request("POST", "/v1/users", None, Some(body));
    assert_eq!(status, 201);
    // The mail server holds the message unanswered: the send is in flight and stays so.
    let _held = sink.wait_for_message(1, common::PATIENCE);
    // A request whose body never finishes arriving is in flight too.
    let mut stuck = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stuck
        .write_all(
            b"POST /v1/users HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"email\":",
        )
        .unwrap();
    // Once another connection has had its answer, the server has taken the stuck one too.
    assert_eq!(server.request("GET", "/healthz", None, None).0, 200);

    let signalled = Instant::now();
    server.send_sigterm();
    let (_, log) = server.exit();
    let took = signalled.elapsed();

    // Half a timeout of slack for a loaded machine, well short of the old two timeouts.
    assert!(
        took < SHUTDOWN_TIMEOUT + SHUTDOWN_TIMEOUT / 2,
        "the shutdown took {took:?}:\n{}",
        log.join("\n")
    );
    assert!(
        log.iter()
            .any(|line| line.contains("the shutdown timeout ran out")),
        "{}",
        log.join("\n")
    );
    drop(stuck);
    sink.release();
}

//! `registrar healthcheck` against the real server and against stand-ins for the ways a
//! server can be unready: nothing listening, a 503, no answer at all. It is what the container
//! `HEALTHCHECK` runs, so its exit code is the whole contract.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Command, Output, Stdio},
    sync::mpsc,
    thread,
};

use common::{PATIENCE, Server};

/// Runs `registrar healthcheck` with `REGISTRAR_LISTEN=listen` and returns its output, failing
/// the test if it has not exited after [`PATIENCE`] (its own deadline is 3 s).
fn healthcheck(listen: &str) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_registrar"))
        .arg("healthcheck")
        .env_clear()
        .env("REGISTRAR_LISTEN", listen)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (done, exited) = mpsc::channel();
    thread::spawn(move || done.send(child.wait_with_output().unwrap()));
    exited
        .recv_timeout(PATIENCE)
        .expect("the healthcheck did not exit")
}

/// Asserts that the check failed with exit code 1 and one line on stderr, and returns it.
fn failed(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "stderr: {stderr}");
    assert!(output.stdout.is_empty());
    stderr
}

/// A server stand-in: accepts one connection, sends the request line it got back through the
/// channel, then calls `answer` with the connection.
fn stand_in(
    answer: impl FnOnce(TcpStream) + Send + 'static,
) -> (SocketAddr, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let (tx, requests) = mpsc::channel();
    thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut request_line = String::new();
        BufReader::new(stream.try_clone().unwrap())
            .read_line(&mut request_line)
            .unwrap();
        tx.send(request_line).unwrap();
        answer(stream);
    });
    (address, requests)
}

#[test]
fn a_ready_server_passes() {
    let server = Server::start(&[]);
    let output = healthcheck(&format!("127.0.0.1:{}", server.port));
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.stderr.is_empty());
    // The image binds all interfaces and runs the check with the same setting.
    assert_eq!(
        healthcheck(&format!("0.0.0.0:{}", server.port))
            .status
            .code(),
        Some(0)
    );
}

#[test]
fn nothing_listening_fails() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let stderr = failed(&healthcheck(&format!("127.0.0.1:{port}")));
    assert!(stderr.contains("could not connect"), "{stderr}");
}

#[test]
fn a_server_that_is_not_ready_fails() {
    let (address, requests) = stand_in(|mut stream| {
        stream
            .write_all(
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n\
                  content-length: 2\r\n\r\n{}",
            )
            .unwrap();
    });
    let stderr = failed(&healthcheck(&address.to_string()));
    assert!(stderr.contains("503"), "{stderr}");
    assert_eq!(requests.recv().unwrap(), "GET /readyz HTTP/1.1\r\n");
}

#[test]
fn a_server_that_never_answers_fails() {
    let (hold, release) = mpsc::channel::<()>();
    let (address, requests) = stand_in(move |stream| {
        // Keep the connection open, unanswered, until the test is over.
        let _ = release.recv();
        drop(stream);
    });
    let stderr = failed(&healthcheck(&address.to_string()));
    assert!(stderr.contains("no valid answer"), "{stderr}");
    assert_eq!(requests.recv().unwrap(), "GET /readyz HTTP/1.1\r\n");
    drop(hold);
}

#[test]
fn an_answer_that_is_not_http_fails() {
    let (address, _requests) = stand_in(|mut stream| {
        stream.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap();
    });
    let stderr = failed(&healthcheck(&address.to_string()));
    assert!(stderr.contains("malformed status line"), "{stderr}");
}

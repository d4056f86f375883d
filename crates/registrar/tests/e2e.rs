//! End to end: the real `registrar` binary, started as a user would start it, driven over
//! HTTP, with the activation code read from its log (the log mailer).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::Command,
};

use common::{PATIENCE, Server};
use serde_json::Value;

#[test]
fn a_user_registers_reads_the_code_from_the_log_and_activates() {
    let mut server = Server::start(&[]);
    let password = "correct horse battery staple";

    let (status, head, user) = server.request(
        "POST",
        "/v1/users",
        None,
        Some(&format!(
            r#"{{"email":" Ada@Example.COM ","password":"{password}"}}"#
        )),
    );
    assert_eq!(status, 201, "{user}");
    assert!(head.contains("location: /v1/users/me"), "{head}");
    assert!(head.contains("x-request-id: "), "{head}");
    assert_eq!(user["email"], "Ada@example.com");
    assert_eq!(user["status"], "pending");

    let mail =
        server.wait_for(|event| event["to"] == "Ada@example.com" && event["code"].is_string());
    let code = mail["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 4);

    let (status, _, activated) = server.request(
        "POST",
        "/v1/users/me/activation",
        Some(("ada@example.com", password)),
        Some(&format!(r#"{{"code":"{code}"}}"#)),
    );
    assert_eq!(status, 200, "{activated}");
    assert_eq!(activated["status"], "active");

    let (status, _, me) = server.request(
        "GET",
        "/v1/users/me",
        Some(("ADA@example.com", password)),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(me["status"], "active");
    assert_eq!(me["id"], user["id"]);

    let (graceful, lines) = server.terminate();
    assert!(
        graceful,
        "the server did not exit cleanly:\n{}",
        lines.join("\n")
    );
    assert!(
        lines.iter().any(|l| l.contains(r#""message":"stopped""#)),
        "{}",
        lines.join("\n")
    );
}

#[test]
fn start_up_says_data_is_in_memory_and_codes_go_to_the_log() {
    let server = Server::start(&[]);
    let (_, lines) = server.terminate();
    let warnings: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(r#""level":"WARN""#))
        .collect();
    assert!(
        warnings
            .iter()
            .any(|l| l.contains("data lives in memory only")),
        "{lines:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|l| l.contains("activation codes are written to this log")),
        "{lines:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|l| l.contains("replicas need a shared one")),
        "{lines:?}"
    );
}

#[test]
fn every_line_of_json_output_is_one_json_object() {
    let mut server = Server::start(&[("REGISTRAR_SECRET", "a shared secret of some length")]);
    server.request(
        "POST",
        "/v1/users",
        None,
        Some(r#"{"email":"bob@example.com","password":"tangerine-Quokka-47-orbit"}"#),
    );
    server.wait_for(|event| event["to"] == "bob@example.com");
    let (_, lines) = server.terminate();
    assert!(lines.len() > 5);
    for line in &lines {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(value.is_object(), "{line}");
    }
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("replicas need a shared one"))
    );
}

#[test]
fn an_unreachable_database_stops_start_up_with_a_clear_message() {
    // Nothing listens on port 9 of the loopback (the discard port is not served here).
    let output = Command::new(env!("CARGO_BIN_EXE_registrar"))
        .arg("serve")
        .env_clear()
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:9/registrar")
        .env("REGISTRAR_DATABASE_STARTUP_TIMEOUT", "1s")
        .env("REGISTRAR_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stdout) + String::from_utf8_lossy(&output.stderr);
    assert!(
        text.contains("could not apply the database migrations"),
        "{text}"
    );
    assert!(text.contains("cannot connect to the database"), "{text}");
}

#[test]
fn serve_help_names_every_knob() {
    let output = Command::new(env!("CARGO_BIN_EXE_registrar"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for variable in [
        "REGISTRAR_LISTEN",
        "DATABASE_URL",
        "SMTP_URL",
        "MAIL_FROM",
        "ACTIVATION_CODE_TTL",
        "REGISTRAR_SECRET",
        "REGISTRAR_CODE_COOLDOWN",
        "REGISTRAR_CODE_ATTEMPTS",
        "REGISTRAR_RATE_LIMITS",
        "REGISTRAR_LOG_FORMAT",
        "REGISTRAR_ARGON2_MEMORY_KIB",
        "REGISTRAR_HASH_THREADS",
        "REGISTRAR_HASH_QUEUE",
    ] {
        assert!(
            help.contains(variable),
            "{variable} missing from --help:\n{help}"
        );
    }
    assert!(help.contains("[default: 127.0.0.1:8080]"), "{help}");
}

#[test]
fn head_requests_get_the_headers_of_get_without_a_body() {
    let server = Server::start(&[]);
    let (get_status, get_head, _) = server.request("GET", "/healthz", None, None);
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
        .write_all(b"HEAD /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();

    assert_eq!(get_status, 200);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.is_empty(), "HEAD answered with a body: {body:?}");
    let length = |head: &str| {
        head.to_ascii_lowercase()
            .lines()
            .find(|line| line.starts_with("content-length:"))
            .map(str::to_owned)
    };
    assert_eq!(length(head), length(&get_head));
    assert!(length(head).is_some());
}

#[test]
fn a_wrong_smtp_url_stops_start_up_with_a_clear_message() {
    let output = Command::new(env!("CARGO_BIN_EXE_registrar"))
        .arg("serve")
        .env_clear()
        .env("SMTP_URL", "smtp://127.0.0.1:1025?tls=sometimes")
        .env("REGISTRAR_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stdout) + String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("invalid SMTP settings"), "{text}");
    assert!(text.contains("invalid SMTP URL"), "{text}");
}

fn register_from(server: &Server, n: usize, forwarded_for: &str) -> u16 {
    let body =
        format!(r#"{{"email":"user{n}@example.com","password":"tangerine-Quokka-47-orbit"}}"#);
    let header = format!("X-Forwarded-For: {forwarded_for}");
    server
        .request_with("POST", "/v1/users", None, Some(&body), &[&header])
        .0
}

#[test]
fn behind_a_trusted_proxy_registrations_are_counted_per_forwarded_client() {
    let server = Server::start(&[("REGISTRAR_TRUSTED_PROXIES", "127.0.0.1")]);
    for n in 0..20 {
        assert_eq!(
            register_from(&server, n, "1.2.3.4, 198.51.100.1"),
            201,
            "registration {n}"
        );
    }
    assert_eq!(
        register_from(&server, 20, "9.9.9.9, 198.51.100.1"),
        429,
        "forging the left part does not help"
    );
    assert_eq!(
        register_from(&server, 21, "198.51.100.2"),
        201,
        "another client is not limited"
    );
}

#[test]
fn without_trusted_proxies_a_forged_forwarded_for_changes_nothing() {
    let server = Server::start(&[]);
    for n in 0..20 {
        assert_eq!(
            register_from(&server, n, &format!("198.51.100.{n}")),
            201,
            "registration {n}"
        );
    }
    assert_eq!(register_from(&server, 20, "198.51.100.99"), 429);
}

#[test]
fn requests_with_invented_methods_share_one_metrics_label() {
    let server = Server::start(&[]);

    let (status, _, problem) = server.request("FROBNICATE", "/nope", None, None);
    let metrics = server.get_text("/metrics");

    assert_eq!(status, 404, "{problem}");
    assert!(!metrics.contains("FROBNICATE"), "{metrics}");
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("registrar_http_requests_total{")
                && line.contains(r#"method="OTHER""#)),
        "{metrics}"
    );
}

//! Traces and operational output of the real binary: W3C `traceparent` joins the caller's
//! trace, every JSON log line of a request carries its `trace_id`, spans reach an OTLP/HTTP
//! receiver when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (and no exporter exists when it is not),
//! the activation email's delivery span links back to the registration's trace,
//! `/metrics` lists the process metrics and every counter from the first scrape, and a client's
//! malformed request is not logged as an error.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::{
    fmt::Write as _,
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    sync::mpsc::{self, Receiver},
    thread,
    time::Instant,
};

use common::{PATIENCE, Server};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest, common::v1::any_value, trace::v1::Span,
};
use prost::Message as _;
use serde_json::Value;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("traceparent: 00-{TRACE_ID}-{PARENT_ID}-01")
}

fn register(server: &Server, email: &str, headers: &[&str]) -> String {
    let body = format!(r#"{{"email":"{email}","password":"correct horse battery staple"}}"#);
    let (status, head, user) = server.request_with("POST", "/v1/users", None, Some(&body), headers);
    assert_eq!(status, 201, "{user}");
    head.lines()
        .find_map(|line| line.strip_prefix("x-request-id: "))
        .unwrap()
        .trim()
        .to_owned()
}

/// The log lines written in the request with this id (its own span's lines).
fn lines_of(log: &[String], request_id: &str) -> Vec<Value> {
    log.iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["span"]["request_id"] == request_id)
        .collect()
}

#[test]
fn every_log_line_of_a_request_carries_the_trace_id_of_its_traceparent() {
    let server = Server::start(&[]);
    let joined = register(
        &server,
        "ada@example.com",
        &[&traceparent(), "X-Request-Id: joined-trace"],
    );
    let fresh = register(&server, "grace@example.com", &["X-Request-Id: fresh-trace"]);
    let (_, log) = server.terminate();

    let joined = lines_of(&log, &joined);
    assert!(!joined.is_empty(), "no line for the request: {log:#?}");
    for event in &joined {
        assert_eq!(event["trace_id"], TRACE_ID, "{event}");
    }
    let fresh = lines_of(&log, &fresh);
    assert!(!fresh.is_empty(), "no line for the request: {log:#?}");
    let fresh_id = fresh[0]["trace_id"].as_str().unwrap().to_owned();
    assert_eq!(fresh_id.len(), 32, "{fresh_id}");
    assert!(
        fresh_id
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "{fresh_id}"
    );
    assert_ne!(fresh_id, TRACE_ID);
    for event in &fresh {
        assert_eq!(event["trace_id"], fresh_id.as_str(), "{event}");
    }
    // Lines written outside any request carry no trace id.
    let listening = log
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|event| event["message"] == "listening")
        .unwrap();
    assert_eq!(listening.get("trace_id"), None, "{listening}");
}

/// One OTLP/HTTP export request as the receiver saw it.
struct Export {
    request_line: String,
    content_type: String,
    body: Vec<u8>,
}

/// A minimal OTLP/HTTP receiver: answers every POST with 200 and hands over what it got.
fn otlp_receiver() -> (u16, Receiver<Export>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (sender, exports) = mpsc::channel();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let sender = sender.clone();
            thread::spawn(move || serve_exports(stream, &sender));
        }
    });
    (port, exports)
}

fn serve_exports(stream: TcpStream, exports: &mpsc::Sender<Export>) {
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let (mut length, mut content_type) = (0, String::new());
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).unwrap();
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap(),
                "content-type" => value.trim().clone_into(&mut content_type),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        writer
            .write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n",
            )
            .unwrap();
        let export = Export {
            request_line: request_line.trim_end().to_owned(),
            content_type,
            body,
        };
        if exports.send(export).is_err() {
            return;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut hex, b| {
        write!(hex, "{b:02x}").unwrap();
        hex
    })
}

/// The names of the process's threads, from `/proc`.
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

fn exports_thread(names: &[String]) -> bool {
    names.iter().any(|name| name.starts_with("OpenTelemetry"))
}

/// Whether the exporter's thread shows up within [`PATIENCE`]. A thread takes its name when it
/// first runs, which on a loaded machine may be after the server says it is listening.
fn exporter_thread_appears(pid: u32) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while !exports_thread(&thread_names(pid)) {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(std::time::Duration::from_millis(10));
    }
    true
}

#[test]
fn spans_of_a_registration_reach_an_otlp_receiver_in_the_callers_trace_and_the_email_links_to_it() {
    let (port, exports) = otlp_receiver();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut server = Server::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_SERVICE_NAME", "registrar-under-test"),
    ]);
    assert!(exporter_thread_appears(server.pid()));
    register(&server, "ada@example.com", &[&traceparent()]);
    // The log mailer's line is written inside the delivery span.
    server.wait_for(|event| event["to"] == "ada@example.com");
    // A graceful stop flushes the spans still batched.
    let (clean, log) = server.terminate();
    assert!(clean, "{log:#?}");

    let mut spans: Vec<Span> = Vec::new();
    let mut service_names = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while let Ok(export) = exports.recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        assert_eq!(export.request_line, "POST /v1/traces HTTP/1.1");
        assert_eq!(export.content_type, "application/x-protobuf");
        let request = ExportTraceServiceRequest::decode(export.body.as_slice()).unwrap();
        for resource_spans in request.resource_spans {
            for attribute in resource_spans
                .resource
                .into_iter()
                .flat_map(|r| r.attributes)
            {
                if let ("service.name", Some(any_value::Value::StringValue(name))) = (
                    attribute.key.as_str(),
                    attribute.value.and_then(|value| value.value),
                ) {
                    service_names.push(name);
                }
            }
            spans.extend(
                resource_spans
                    .scope_spans
                    .into_iter()
                    .flat_map(|scope| scope.spans),
            );
        }
        if ["register user", DELIVERY]
            .iter()
            .all(|name| spans.iter().any(|span| span.name == *name))
        {
            break;
        }
    }
    let request = spans
        .iter()
        .find(|span| span.name == "http request")
        .unwrap_or_else(|| panic!("no request span among {:?}", names(&spans)));
    assert_eq!(hex(&request.trace_id), TRACE_ID);
    assert_eq!(hex(&request.parent_span_id), PARENT_ID);
    let use_case = spans
        .iter()
        .find(|span| span.name == "register user")
        .unwrap_or_else(|| panic!("no use-case span among {:?}", names(&spans)));
    assert_eq!(hex(&use_case.trace_id), TRACE_ID);
    assert_eq!(use_case.parent_span_id, request.span_id);
    // The email goes out in a trace of its own, linked to the use case that queued it.
    let delivery = spans
        .iter()
        .find(|span| span.name == DELIVERY)
        .unwrap_or_else(|| panic!("no delivery span among {:?}", names(&spans)));
    assert_ne!(hex(&delivery.trace_id), TRACE_ID);
    assert!(delivery.parent_span_id.is_empty(), "{delivery:?}");
    let links: Vec<(String, String)> = delivery
        .links
        .iter()
        .map(|link| (hex(&link.trace_id), hex(&link.span_id)))
        .collect();
    assert_eq!(
        links,
        [(TRACE_ID.to_owned(), hex(&use_case.span_id))],
        "{delivery:?}"
    );
    assert!(
        service_names
            .iter()
            .all(|name| name == "registrar-under-test")
            && !service_names.is_empty(),
        "{service_names:?}"
    );
}

/// The span the dispatcher delivers an activation email in.
const DELIVERY: &str = "deliver activation email";

fn names(spans: &[Span]) -> Vec<&str> {
    spans.iter().map(|span| span.name.as_str()).collect()
}

#[test]
fn without_an_endpoint_no_exporter_is_built() {
    let server = Server::start(&[]);
    register(&server, "ada@example.com", &[&traceparent()]);
    let names = thread_names(server.pid());
    assert!(!names.is_empty());
    assert!(!exports_thread(&names), "{names:?}");
    let (_, log) = server.terminate();
    assert!(!log.iter().any(|line| line.contains("OTLP")), "{log:#?}");
}

#[test]
fn an_https_collector_is_refused_at_start_up() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_registrar"))
        .env_clear()
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "https://collector.invalid:4318",
        )
        .env("REGISTRAR_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("only http:// collector endpoints"),
        "{stderr}"
    );
}

#[test]
fn metrics_list_the_process_the_build_and_every_counter_from_the_first_scrape() {
    let server = Server::start(&[]);
    let metrics = server.get_text("/metrics");
    for series in [
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_open_fds ",
        "process_start_time_seconds ",
        "registrar_build_info{version=\"",
        "registrar_emails_sent_total 0",
        "registrar_emails_failed_total 0",
        "registrar_email_attempts_failed_total 0",
        "registrar_emails_cancelled_total 0",
        "registrar_http_malformed_requests_total 0",
        "registrar_http_refusals_held_total 0",
        "registrar_pruned_total{what=\"mail\"} 0",
        "registrar_pruned_total{what=\"throttles\"} 0",
        "registrar_outbox_depth 0",
        "registrar_hash_queue_depth 0",
    ] {
        assert!(
            metrics.lines().any(|line| line.starts_with(series)),
            "{series} missing from:\n{metrics}"
        );
    }
    let resident: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("process_resident_memory_bytes "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(resident > 1e6, "{resident}");
}

#[test]
fn a_malformed_request_line_is_counted_not_logged_as_an_error() {
    let server = Server::start(&[]);
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let metrics = server.get_text("/metrics");
    assert!(
        metrics
            .lines()
            .any(|line| line == "registrar_http_malformed_requests_total 1"),
        "{metrics}"
    );
    let (_, log) = server.terminate();
    let errors: Vec<&String> = log
        .iter()
        .filter(|line| line.contains(r#""level":"ERROR""#))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn pretty_logs_have_no_colour_codes_when_stdout_is_not_a_terminal() {
    // `Server::start` reads JSON lines: run the binary directly.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_registrar"))
        .env_clear()
        .env("REGISTRAR_LOG_FORMAT", "pretty")
        .env("REGISTRAR_LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("listening") {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "{seen}");
        seen.push_str(&line);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(seen.contains("WARN"), "{seen}");
    assert!(!seen.contains('\u{1b}'), "{seen:?}");
}

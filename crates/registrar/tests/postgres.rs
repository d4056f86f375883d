//! End to end with PostgreSQL: the real binary on a fresh database, killed with SIGKILL and
//! restarted, and cut off from the database through a proxy the test controls.
//!
//! The database comes from the test toolkit: `REGISTRAR_TEST_DATABASE_URL`, else
//! `127.0.0.1:5432`, else a private cluster of the installed PostgreSQL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use common::{PATIENCE, Server, code_in, reserve_port};
use registrar_testing::{
    postgres::TestDatabase,
    smtp::{FakeSmtp, Script},
};

/// A TCP proxy to PostgreSQL that the test can cut (every connection dropped, new ones refused),
/// black-hole (connections stay open and new ones are accepted, but nothing gets through either
/// way, as in a network partition) and restore.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    black_hole: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let black_hole = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (cut_flag, open_list) = (Arc::clone(&cut), Arc::clone(&open));
        let swallow = Arc::clone(&black_hole);
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if cut_flag.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                if swallow.load(Ordering::SeqCst) {
                    // Accepted, and then never answered.
                    open_list.lock().unwrap().push(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let mut list = open_list.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(server.try_clone().unwrap());
                drop(list);
                pipe(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    Arc::clone(&swallow),
                );
                pipe(server, client, Arc::clone(&swallow));
            }
        });
        Self {
            port,
            cut,
            black_hole,
            open,
        }
    }

    /// From now on nothing gets through, and nothing is refused either.
    fn black_hole(&self) {
        self.black_hole.store(true, Ordering::SeqCst);
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Lets connections through again. Connections from a black-holed spell are dropped: what
    /// they lost cannot be replayed, as when a partition outlasts TCP.
    fn restore(&self) {
        if self.black_hole.swap(false, Ordering::SeqCst) {
            for stream in self.open.lock().unwrap().drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either closes; while `swallow` is set, bytes are dropped.
fn pipe(mut from: TcpStream, mut to: TcpStream, swallow: Arc<AtomicBool>) {
    thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(_) if swallow.load(Ordering::SeqCst) => {}
                Ok(n) => {
                    if to.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}

const PASSWORD: &str = "correct horse battery staple";

/// The rows of `sql` once they read `expected`, or as they read after [`PATIENCE`]. The mail
/// server has a message before it replies, and the server records the send after the reply.
fn settled(database: &TestDatabase, sql: &str, expected: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let rows = database.query(sql);
        if rows == expected || Instant::now() > deadline {
            return rows;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn register(server: &Server, email: &str) -> (u16, serde_json::Value) {
    let (status, _, body) = server.request(
        "POST",
        "/v1/users",
        None,
        Some(&format!(r#"{{"email":"{email}","password":"{PASSWORD}"}}"#)),
    );
    (status, body)
}

#[test]
fn a_registration_that_answered_201_survives_kill_9() {
    let database = TestDatabase::create();
    let env = [
        ("DATABASE_URL", database.url().to_owned()),
        ("REGISTRAR_SECRET", "a shared secret for both runs".into()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let first = Server::start(&env);
    let (status, user) = register(&first, "ada@example.com");
    assert_eq!(status, 201, "{user}");
    first.kill_9();

    let second = Server::start(&env);
    let (status, _, me) = second.request(
        "GET",
        "/v1/users/me",
        Some(("ada@example.com", PASSWORD)),
        None,
    );
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["id"], user["id"]);
    assert_eq!(database.query("SELECT count(*) FROM users"), "1");
}

#[test]
fn registration_activation_and_me_work_on_postgres() {
    let database = TestDatabase::create();
    let url = database.url().to_owned();
    // Debug logging on: secrets must stay out of the log even then.
    let mut server = Server::start(&[("DATABASE_URL", url.as_str()), ("RUST_LOG", "debug")]);
    let (status, _) = register(&server, "Grace@Example.COM");
    assert_eq!(status, 201);
    let mail =
        server.wait_for(|event| event["to"] == "Grace@example.com" && event["code"].is_string());
    let code = mail["code"].as_str().unwrap().to_owned();

    let (status, _, user) = server.request(
        "POST",
        "/v1/users/me/activation",
        Some(("grace@example.com", PASSWORD)),
        Some(&format!(r#"{{"code":"{code}"}}"#)),
    );
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["status"], "active");
    // The clear code left the outbox once it was sent; only its HMAC stays.
    assert_eq!(
        database.query("SELECT status, code IS NULL FROM email_outbox"),
        "sent|t"
    );
    assert_eq!(database.query("SELECT state FROM activation_codes"), "used");
    let hash = database.query("SELECT password_hash FROM users");
    let hash_output = hash.rsplit('$').next().unwrap().to_owned();
    let digest_hex = database.query("SELECT encode(digest, 'hex') FROM activation_codes");
    let digest_base64 = database.query("SELECT encode(digest, 'base64') FROM activation_codes");
    let digest_bytes = database.query(
        "SELECT array_to_string(array_agg(get_byte(digest, i) ORDER BY i), ', ') \
         FROM activation_codes, generate_series(0, 31) AS i",
    );
    // Every form a stored secret could take in a log line: the value, its text encodings, and
    // the `Debug` of a byte array.
    let secrets = [
        ("the password", PASSWORD.to_owned()),
        ("the password hash", hash),
        ("the password hash's output", hash_output),
        ("the code HMAC (hex)", digest_hex),
        ("the code HMAC (base64)", digest_base64),
        ("the code HMAC (bytes)", digest_bytes),
    ];

    let (_, lines) = server.terminate();
    for (what, secret) in &secrets {
        assert!(secret.len() > 8, "{what} was not read: {secret:?}");
        assert!(
            !lines.iter().any(|line| line.contains(secret.as_str())),
            "{what} reached the log"
        );
    }
    assert!(
        lines.len() > 20,
        "debug logging produced {} lines",
        lines.len()
    );
    assert!(
        !lines.iter().any(|l| l.contains("$argon2")),
        "a password hash reached the log"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains(r#""target":"tokio_postgres"#)),
        "the database driver's debug log (statements with their parameters) reached the log"
    );
}

/// A registration, a login and a readiness probe (what needs the store) each answer 503
/// `unavailable` with `Retry-After` within 5 s.
fn assert_unavailable_within_5_s(server: &Server) {
    for (method, path, auth, body) in [
        ("GET", "/readyz", None, None),
        (
            "POST",
            "/v1/users",
            None,
            Some(r#"{"email":"during@example.com","password":"correct horse battery staple"}"#),
        ),
        (
            "GET",
            "/v1/users/me",
            Some(("before@example.com", PASSWORD)),
            None,
        ),
    ] {
        let started = Instant::now();
        let (status, head, problem) = server.request(method, path, auth, body);
        let took = started.elapsed();
        assert_eq!(status, 503, "{method} {path}: {problem}");
        assert_eq!(problem["type"], "/problems/unavailable");
        assert!(head.contains("retry-after: "), "{head}");
        assert!(
            took < Duration::from_secs(5),
            "{method} {path} took {took:?}"
        );
    }
}

/// Waits until `/readyz` answers 200 again, then registers.
fn assert_recovers(server: &Server) {
    let deadline = Instant::now() + PATIENCE;
    while server.request("GET", "/readyz", None, None).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "not ready again after the database came back"
        );
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(register(server, "after@example.com").0, 201);
}

#[test]
fn the_database_going_away_gives_503_quickly_and_the_service_recovers_by_itself() {
    let database = TestDatabase::create();
    let proxy = Proxy::start(database.port());
    let url = database.url_via(proxy.port);
    let server = Server::start(&[
        ("DATABASE_URL", url.as_str()),
        ("REGISTRAR_DATABASE_CONNECT_TIMEOUT", "1s"),
        ("REGISTRAR_DATABASE_POOL_TIMEOUT", "1s"),
        ("REGISTRAR_DATABASE_STATEMENT_TIMEOUT", "2s"),
    ]);
    assert_eq!(register(&server, "before@example.com").0, 201);

    proxy.cut();
    assert_unavailable_within_5_s(&server);
    let (status, _, _) = server.request("GET", "/healthz", None, None);
    assert_eq!(status, 200, "liveness does not depend on the database");

    proxy.restore();
    assert_recovers(&server);
}

#[test]
fn a_database_that_stops_answering_gives_503_within_5_s_with_the_default_timeouts() {
    let database = TestDatabase::create();
    let proxy = Proxy::start(database.port());
    let url = database.url_via(proxy.port);
    let server = Server::start(&[("DATABASE_URL", url.as_str())]);
    assert_eq!(register(&server, "before@example.com").0, 201);

    // Pooled connections stay open but go silent; new ones connect and are never answered.
    proxy.black_hole();
    assert_unavailable_within_5_s(&server);

    proxy.restore();
    assert_recovers(&server);
}

#[test]
fn the_server_prunes_throttle_windows_that_are_over_at_start_up() {
    let database = TestDatabase::create();
    let url = database.url().to_owned();
    let migrate = Command::new(env!("CARGO_BIN_EXE_registrar"))
        .arg("migrate")
        .env_clear()
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(migrate.status.success(), "{migrate:?}");
    database.execute(
        "INSERT INTO throttles (key, window_end, hits) VALUES \
         ('ended', now() - interval '1 minute', 5), ('open', now() + interval '1 hour', 1)",
    );

    let mut server = Server::start(&[("DATABASE_URL", url.as_str())]);

    let event = server.wait_for(|event| event["message"] == PRUNED);
    assert_eq!(event["throttles"], 1, "{event}");
    assert_eq!(database.query("SELECT key FROM throttles"), "open");
}

/// What the server logs when a prune deleted something.
const PRUNED: &str = "pruned settled mail, throttle windows that are over and abandoned accounts";

#[test]
fn accounts_left_pending_past_the_retention_are_erased_at_start_up_and_their_address_is_free() {
    let database = TestDatabase::create();
    let env = [
        ("DATABASE_URL", database.url().to_owned()),
        ("REGISTRAR_SECRET", "a shared secret for both runs".into()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let first = Server::start(&env);
    assert_eq!(register(&first, "ada@example.com").0, 201);
    assert_eq!(register(&first, "bob@example.com").0, 201);
    let (clean, log) = first.terminate();
    assert!(clean, "{log:#?}");
    // Ada registered eight days ago (past the default retention of seven); Bob six.
    database.execute(
        "UPDATE users SET created_at = now() - CASE email \
         WHEN 'ada@example.com' THEN interval '8 days' ELSE interval '6 days' END",
    );

    let mut second = Server::start(&env);

    let event = second.wait_for(|event| event["message"] == PRUNED);
    assert_eq!(event["pending_accounts"], 1, "{event}");
    assert_eq!(
        database.query("SELECT email FROM users ORDER BY email"),
        "bob@example.com"
    );
    assert_eq!(
        database.query("SELECT count(*) FROM email_outbox o JOIN users u ON u.id = o.user_id"),
        database.query("SELECT count(*) FROM email_outbox")
    );
    let (status, _, _) = second.request(
        "GET",
        "/v1/users/me",
        Some(("ada@example.com", PASSWORD)),
        None,
    );
    assert_eq!(status, 401);
    assert_eq!(register(&second, "ada@example.com").0, 201);
    let metrics = second.get_text("/metrics");
    assert!(
        metrics
            .lines()
            .any(|line| line == r#"registrar_pruned_total{what="pending_accounts"} 1"#),
        "{metrics}"
    );
}

#[test]
fn the_activation_email_goes_out_over_smtp_and_its_code_activates() {
    let database = TestDatabase::create();
    let sink = FakeSmtp::start(Script::default());
    let (url, smtp) = (database.url().to_owned(), sink.url());
    let server = Server::start(&[
        ("DATABASE_URL", url.as_str()),
        ("SMTP_URL", smtp.as_str()),
        ("MAIL_FROM", "Registrar Tests <registrar@tests.example>"),
    ]);
    assert_eq!(register(&server, "lin@example.com").0, 201);

    let message = sink.wait_for_message(1, PATIENCE).data;
    assert!(message.contains("To: lin@example.com"), "{message}");
    assert!(
        message.contains(r#"From: "Registrar Tests" <registrar@tests.example>"#),
        "{message}"
    );
    assert!(message.contains("multipart/alternative"), "{message}");
    let code = code_in(&message);
    let (status, _, user) = server.request(
        "POST",
        "/v1/users/me/activation",
        Some(("lin@example.com", PASSWORD)),
        Some(&format!(r#"{{"code":"{code}"}}"#)),
    );
    assert_eq!(status, 200, "{user}");
    let (_, lines) = server.terminate();
    assert!(
        !lines
            .iter()
            .any(|l| l.contains(&format!(r#""code":"{code}""#))),
        "with SMTP configured the code must not reach the log"
    );
}

#[test]
fn with_the_mail_server_down_registration_answers_201_and_the_email_goes_out_when_it_is_back() {
    let database = TestDatabase::create();
    let port = reserve_port();
    let (url, smtp) = (
        database.url().to_owned(),
        format!("smtp://127.0.0.1:{port}"),
    );
    let mut server = Server::start(&[("DATABASE_URL", url.as_str()), ("SMTP_URL", smtp.as_str())]);

    assert_eq!(register(&server, "mo@example.com").0, 201);
    // The first try fails (nothing listens): the dispatcher logs it and schedules a retry.
    server.wait_for(|event| event["message"] == "activation email not accepted; will retry");
    let sink = FakeSmtp::start_on(port, Script::default());

    let message = sink.wait_for_message(1, PATIENCE).data;
    assert!(message.contains("To: mo@example.com"), "{message}");
    assert_eq!(
        settled(
            &database,
            "SELECT status, attempts > 1 FROM email_outbox",
            "sent|t"
        ),
        "sent|t"
    );
}

#[test]
fn a_graceful_shutdown_finishes_the_email_send_in_flight() {
    let database = TestDatabase::create();
    let sink = FakeSmtp::start(Script::holding());
    let (url, smtp) = (database.url().to_owned(), sink.url());
    let mut server = Server::start(&[("DATABASE_URL", url.as_str()), ("SMTP_URL", smtp.as_str())]);
    assert_eq!(register(&server, "nia@example.com").0, 201);
    // The mail server has the message but has not accepted it yet: the send is in flight.
    let _ = sink.wait_for_message(1, PATIENCE);

    server.send_sigterm();
    // Only once the shutdown has begun does the mail server answer.
    server.wait_for(|event| {
        event["message"] == "shutting down: finishing requests and email sends in flight"
    });
    sink.release();

    let (graceful, lines) = server.exit();
    assert!(graceful, "{}", lines.join("\n"));
    assert_eq!(
        database.query("SELECT status, code IS NULL FROM email_outbox"),
        "sent|t",
        "the send in flight was not finished and recorded before the process exited"
    );
    assert_eq!(
        database.query("SELECT delivered_at IS NOT NULL FROM activation_codes"),
        "t"
    );
}

#[test]
fn a_mail_server_slow_over_one_email_does_not_hold_up_the_next() {
    let database = TestDatabase::create();
    let sink = FakeSmtp::start(Script {
        hold_only_for: Some("slow@example.com"),
        ..Script::holding()
    });
    let (url, smtp) = (database.url().to_owned(), sink.url());
    // The slow send would give up only after the test's patience.
    let server = Server::start(&[
        ("DATABASE_URL", url.as_str()),
        ("SMTP_URL", smtp.as_str()),
        ("SMTP_TIMEOUT", "120s"),
        ("REGISTRAR_MAIL_LEASE", "180s"),
    ]);
    assert_eq!(register(&server, "slow@example.com").0, 201);
    // The mail server has the first message and sits on its reply.
    let _ = sink.wait_for_message(1, PATIENCE);

    assert_eq!(register(&server, "quick@example.com").0, 201);

    let message = sink.wait_for_message(2, PATIENCE).data;
    assert!(message.contains("To: quick@example.com"), "{message}");
    assert_eq!(
        settled(
            &database,
            "SELECT string_agg(recipient || ' ' || status, ', ' ORDER BY recipient) \
             FROM email_outbox",
            "quick@example.com sent, slow@example.com pending"
        ),
        "quick@example.com sent, slow@example.com pending"
    );
    sink.release();
    assert_eq!(
        settled(
            &database,
            "SELECT string_agg(status, ', ') FROM email_outbox",
            "sent, sent"
        ),
        "sent, sent"
    );
}

#[test]
fn deleting_an_account_leaves_no_row_of_it_in_the_database() {
    let database = TestDatabase::create();
    let url = database.url().to_owned();
    let server = Server::start(&[("DATABASE_URL", url.as_str())]);
    assert_eq!(register(&server, "ada@example.com").0, 201);
    assert_eq!(register(&server, "bob@example.com").0, 201);

    let (status, head, body) = server.request(
        "DELETE",
        "/v1/users/me",
        Some(("ada@example.com", PASSWORD)),
        None,
    );

    assert_eq!(status, 204, "{head}{body}");
    let rows = "SELECT (SELECT count(*) FROM users WHERE email = 'ada@example.com') \
                || ' ' || (SELECT count(*) FROM activation_codes) \
                || ' ' || (SELECT count(*) FROM email_outbox WHERE recipient = 'ada@example.com')";
    assert_eq!(database.query(rows), "0 1 0");
    let (status, _, _) = server.request(
        "GET",
        "/v1/users/me",
        Some(("ada@example.com", PASSWORD)),
        None,
    );
    assert_eq!(status, 401);
}

//! The SMTP mailer against a real SMTP conversation over TCP (the test toolkit's fake server):
//! what the server receives, when `Ok` comes back, how failures are sorted into transient and
//! permanent, the time-out, and the settings refused at construction.
#![forbid(unsafe_code)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on anything unexpected"
)]

use std::time::{Duration, Instant};

use registrar_adapters_smtp::{SmtpConfigError, SmtpMailer, SmtpSettings};
use registrar_application::{
    ErrorChain,
    ports::{ActivationEmail, MailError, Mailer},
};
use registrar_domain::{CodeDigits, Email};
use registrar_testing::smtp::{FakeSmtp, Received, Script};

const CODE: &str = "0421";

fn activation_email() -> ActivationEmail {
    ActivationEmail {
        to: Email::parse("ada@example.com").unwrap(),
        code: CodeDigits::parse(CODE).unwrap(),
        valid_for: Duration::from_mins(1),
    }
}

fn mailer_for(url: &str) -> SmtpMailer {
    SmtpMailer::new(&SmtpSettings {
        timeout: Duration::from_secs(5),
        ..SmtpSettings::new(url)
    })
    .unwrap()
}

async fn send_one(script: Script) -> (Result<(), MailError>, FakeSmtp) {
    let server = FakeSmtp::start(script);
    let result = mailer_for(&server.url())
        .send_activation(&activation_email())
        .await;
    (result, server)
}

fn assert_transient(result: &Result<(), MailError>) {
    match result {
        Err(error @ MailError::Transient(_)) => {
            let text = ErrorChain(error).to_string();
            assert!(!text.contains(CODE), "the code leaked into {text:?}");
        }
        other => panic!("expected a transient failure, got {other:?}"),
    }
}

fn assert_permanent(result: &Result<(), MailError>) {
    match result {
        Err(error @ MailError::Permanent(_)) => {
            let text = ErrorChain(error).to_string();
            assert!(!text.contains(CODE), "the code leaked into {text:?}");
        }
        other => panic!("expected a permanent failure, got {other:?}"),
    }
}

// --- Reading what the server received -------------------------------------------------------

/// Splits a MIME entity into its (unfolded) header lines and its body.
fn split_entity(entity: &str) -> (Vec<String>, &str) {
    let (head, body) = entity.split_once("\r\n\r\n").unwrap_or((entity, ""));
    let mut headers: Vec<String> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            headers.last_mut().unwrap().push_str(line);
        } else {
            headers.push(line.to_owned());
        }
    }
    (headers, body)
}

fn header<'a>(headers: &'a [String], name: &str) -> Option<&'a str> {
    headers.iter().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

fn decode_quoted_printable(body: &str) -> String {
    let joined = body.replace("=\r\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// The parts of a multipart message: (content type, decoded body).
fn parts(message: &Received) -> Vec<(String, String)> {
    let (headers, body) = split_entity(&message.data);
    let content_type = header(&headers, "Content-Type").unwrap();
    let boundary = content_type
        .split(';')
        .find_map(|parameter| parameter.trim().strip_prefix("boundary="))
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let delimiter = format!("--{boundary}");
    body.split(&delimiter)
        .skip(1)
        .take_while(|part| !part.starts_with("--"))
        .map(|part| {
            let (headers, body) = split_entity(part.trim_start_matches("\r\n"));
            let content_type = header(&headers, "Content-Type").unwrap().to_owned();
            let body = match header(&headers, "Content-Transfer-Encoding") {
                Some("quoted-printable") => decode_quoted_printable(body),
                Some("7bit") | None => body.to_owned(),
                Some(other) => panic!("unexpected transfer encoding {other}"),
            };
            (content_type, body)
        })
        .collect()
}

// --- What the server receives ---------------------------------------------------------------

#[tokio::test]
async fn the_email_goes_from_mail_from_to_the_user_with_a_subject_naming_the_product() {
    let (result, server) = send_one(Script::default()).await;
    result.unwrap();

    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message.mail_from, "MAIL FROM:<no-reply@localhost>");
    assert_eq!(message.rcpt_to, ["RCPT TO:<ada@example.com>"]);

    let (headers, _) = split_entity(&message.data);
    assert_eq!(
        header(&headers, "From"),
        Some("Registrar <no-reply@localhost>")
    );
    assert_eq!(header(&headers, "To"), Some("ada@example.com"));
    assert_eq!(
        header(&headers, "Subject"),
        Some("Your Registrar activation code: 0421")
    );
    assert_eq!(header(&headers, "MIME-Version"), Some("1.0"));
    assert!(header(&headers, "Date").is_some(), "{headers:?}");
    let message_id = header(&headers, "Message-ID").unwrap();
    assert!(
        message_id.starts_with('<') && message_id.ends_with("@localhost>"),
        "{message_id}"
    );
}

#[tokio::test]
async fn the_email_is_multipart_alternative_with_text_and_html_both_carrying_code_and_validity() {
    let (result, server) = send_one(Script::default()).await;
    result.unwrap();
    let message = &server.messages()[0];

    let (headers, _) = split_entity(&message.data);
    assert!(
        header(&headers, "Content-Type")
            .unwrap()
            .starts_with("multipart/alternative;"),
        "{headers:?}"
    );
    let parts = parts(message);
    let types: Vec<&str> = parts.iter().map(|(ty, _)| ty.as_str()).collect();
    assert_eq!(
        types,
        ["text/plain; charset=utf-8", "text/html; charset=utf-8"]
    );
    for (content_type, body) in &parts {
        assert!(body.contains(CODE), "{content_type}: {body}");
        assert!(body.contains("valid for"), "{content_type}: {body}");
        assert!(body.contains("60 seconds"), "{content_type}: {body}");
    }
    assert!(parts[1].1.contains("<html"), "{}", parts[1].1);
}

#[tokio::test]
async fn the_sender_and_product_come_from_the_settings() {
    let server = FakeSmtp::start(Script::default());
    let mailer = SmtpMailer::new(&SmtpSettings {
        from: "Acme Accounts <accounts@acme.example>".to_owned(),
        product_name: "Acme".to_owned(),
        ..SmtpSettings::new(server.url())
    })
    .unwrap();

    mailer.send_activation(&activation_email()).await.unwrap();

    let message = &server.messages()[0];
    assert_eq!(message.mail_from, "MAIL FROM:<accounts@acme.example>");
    let (headers, _) = split_entity(&message.data);
    assert_eq!(
        header(&headers, "From"),
        Some("\"Acme Accounts\" <accounts@acme.example>")
    );
    assert_eq!(
        header(&headers, "Subject"),
        Some("Your Acme activation code: 0421")
    );
    assert!(
        header(&headers, "Message-ID")
            .unwrap()
            .ends_with("@acme.example>")
    );
}

#[tokio::test]
async fn ok_comes_only_after_the_server_accepts_the_message_data() {
    let server = FakeSmtp::start(Script::holding());
    let mailer = mailer_for(&server.url());
    let sending = tokio::spawn(async move { mailer.send_activation(&activation_email()).await });

    server.received(1).await;
    // The whole message is at the server, which has not replied yet: no result may exist.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !sending.is_finished(),
        "send returned before the server's reply to the data"
    );

    server.release();
    sending.await.unwrap().unwrap();
    assert!(server.commands().iter().any(|command| command == "QUIT"));
}

#[tokio::test]
async fn the_end_of_data_follows_the_message_without_waiting_for_the_servers_ack() {
    // lettre writes the message data and the final "." line as two writes. With Nagle's
    // algorithm on, the kernel holds the second back until the server's ACK of the first, which
    // the server's kernel delays (Linux: 40 ms at least); with TCP_NODELAY both go out at once.
    // The fake server reads on a blocking thread, as a mail server's thread waits in `read`.
    let server = FakeSmtp::start(Script::default());
    let mailer = mailer_for(&server.url());
    for _ in 0..3 {
        mailer.send_activation(&activation_email()).await.unwrap();
    }
    // How long after the first line of each message's data the final "." line came in.
    let lags: Vec<Duration> = server
        .messages()
        .iter()
        .map(|message| message.data_ended - message.data_started)
        .collect();
    assert_eq!(lags.len(), 3);
    // Without TCP_NODELAY every lag is 40 ms or more; the best of three keeps a busy machine's
    // scheduling hiccup from failing the test.
    let best = lags.iter().min().unwrap();
    assert!(*best < Duration::from_millis(20), "{lags:?}");
}

// --- Failures -----------------------------------------------------------------------------------

#[tokio::test]
async fn a_4xx_reply_to_rcpt_is_transient() {
    let (result, server) = send_one(Script {
        rcpt: "450 4.2.0 mailbox busy, try later",
        ..Script::default()
    })
    .await;
    assert_transient(&result);
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn a_4xx_reply_to_the_message_data_is_transient() {
    let (result, server) = send_one(Script {
        end_of_data: "451 4.3.0 local error in processing",
        ..Script::default()
    })
    .await;
    assert_transient(&result);
    assert_eq!(server.messages().len(), 1);
}

#[tokio::test]
async fn a_421_greeting_is_transient() {
    let (result, _server) = send_one(Script {
        greeting: Some("421 4.3.2 service not available, closing channel"),
        ..Script::default()
    })
    .await;
    assert_transient(&result);
}

#[tokio::test]
async fn a_5xx_reply_to_rcpt_is_permanent() {
    let (result, server) = send_one(Script {
        rcpt: "550 5.1.1 no such user",
        ..Script::default()
    })
    .await;
    assert_permanent(&result);
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn an_authentication_refusal_is_transient_so_mail_survives_a_credentials_fix() {
    let (result, server) = send_one(Script {
        mail: "530 5.7.0 Authentication required",
        ..Script::default()
    })
    .await;
    assert_transient(&result);
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn a_5xx_reply_to_the_message_data_is_permanent() {
    let (result, _server) = send_one(Script {
        end_of_data: "554 5.7.1 message rejected as spam",
        ..Script::default()
    })
    .await;
    assert_permanent(&result);
}

#[tokio::test]
async fn the_failure_text_carries_the_servers_reply() {
    let (result, _server) = send_one(Script {
        rcpt: "550 5.1.1 no such user",
        ..Script::default()
    })
    .await;
    let Err(error @ MailError::Permanent(_)) = result else {
        panic!("{result:?}")
    };
    let text = ErrorChain(&error).to_string();
    assert!(text.contains("550"), "{text}");
    assert!(text.contains("no such user"), "{text}");
}

#[tokio::test]
async fn nothing_listening_is_transient_and_quick() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mailer = mailer_for(&format!("smtp://127.0.0.1:{port}"));

    let started = Instant::now();
    let result = mailer.send_activation(&activation_email()).await;

    assert_transient(&result);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_server_that_never_answers_is_transient_after_the_timeout() {
    let server = FakeSmtp::start(Script::silent());
    let mailer = SmtpMailer::new(&SmtpSettings {
        timeout: Duration::from_millis(200),
        ..SmtpSettings::new(server.url())
    })
    .unwrap();

    let started = Instant::now();
    let result = mailer.send_activation(&activation_email()).await;
    let elapsed = started.elapsed();

    assert_transient(&result);
    // The mailer's own deadline fired: lettre's time-out covers the TCP connect only.
    let Err(error @ MailError::Transient(_)) = &result else {
        unreachable!()
    };
    let text = ErrorChain(error).to_string();
    assert!(text.contains("within 200ms"), "{text}");
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[tokio::test]
async fn tls_required_is_not_silently_dropped_when_the_server_offers_no_starttls() {
    let server = FakeSmtp::start(Script::default());
    let mailer = mailer_for(&format!("{}?tls=required", server.url()));

    let result = mailer.send_activation(&activation_email()).await;

    assert_transient(&result);
    assert!(server.messages().is_empty());
    assert!(
        !server
            .commands()
            .iter()
            .any(|command| command.starts_with("MAIL")),
        "{:?}",
        server.commands()
    );
}

// --- Settings -------------------------------------------------------------------------------------

#[test]
fn the_default_settings_with_a_localhost_sender_are_accepted() {
    let settings = SmtpSettings::new("smtp://127.0.0.1:1025");
    assert_eq!(settings.from, "Registrar <no-reply@localhost>");
    assert_eq!(settings.timeout, Duration::from_secs(10));
    assert_eq!(settings.product_name, "Registrar");

    let mailer = SmtpMailer::new(&settings).unwrap();
    assert_eq!(mailer.sender(), "Registrar <no-reply@localhost>");
    assert_eq!(mailer.timeout(), Duration::from_secs(10));
}

#[test]
fn tls_and_login_urls_are_accepted() {
    for url in [
        "smtp://mail.example.com",
        "smtp://mail.example.com:587?tls=required",
        "smtp://mail.example.com:587?tls=opportunistic",
        "smtps://mail.example.com",
        "smtps://ada:s3cret@mail.example.com:465",
        "smtp://ada%40example.com:p%40ss%3Aw%2Frd@mail.example.com:587?tls=required",
        "smtp://127.0.0.1:1025/registrar.example.com",
    ] {
        SmtpMailer::new(&SmtpSettings::new(url)).unwrap_or_else(|error| panic!("{url}: {error}"));
    }
}

#[test]
fn an_invalid_smtp_url_is_refused_at_construction() {
    for url in [
        "",
        "not a url",
        "127.0.0.1:1025",
        "http://127.0.0.1:1025",
        "smtp://",
        "smtp://127.0.0.1:1025?tls=requried",
        "smtp://127.0.0.1:99999",
    ] {
        match SmtpMailer::new(&SmtpSettings::new(url)) {
            Err(SmtpConfigError::InvalidUrl { .. }) => {}
            other => panic!("{url:?}: expected InvalidUrl, got {other:?}"),
        }
    }
}

#[test]
fn an_invalid_mail_from_is_refused_at_construction() {
    for from in [
        "",
        "no-reply",
        "Registrar <no-reply@>",
        "Registrar <@localhost>",
        "Registrar no-reply@localhost>",
        "a@b@c",
    ] {
        let settings = SmtpSettings {
            from: from.to_owned(),
            ..SmtpSettings::new("smtp://127.0.0.1:1025")
        };
        match SmtpMailer::new(&settings) {
            Err(error @ SmtpConfigError::InvalidFrom { .. }) => {
                assert!(error.to_string().contains("sender"), "{error}");
            }
            other => panic!("{from:?}: expected InvalidFrom, got {other:?}"),
        }
    }
}

#[test]
fn a_zero_timeout_is_refused_at_construction() {
    let settings = SmtpSettings {
        timeout: Duration::ZERO,
        ..SmtpSettings::new("smtp://127.0.0.1:1025")
    };
    assert_eq!(
        SmtpMailer::new(&settings).unwrap_err(),
        SmtpConfigError::ZeroTimeout
    );
}

#[test]
fn the_password_never_shows_in_debug_output_or_errors() {
    let settings = SmtpSettings::new("smtp://ada:s3cret@mail.example.com:587?tls=required");
    let mailer = SmtpMailer::new(&settings).unwrap();
    assert_eq!(
        mailer.server(),
        "smtp://ada:***@mail.example.com:587?tls=required"
    );
    for shown in [format!("{settings:?}"), format!("{mailer:?}")] {
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("ada:***@mail.example.com"), "{shown}");
    }

    let bad = SmtpSettings::new("smtp://ada:s3cret@mail.example.com:587?tls=bogus");
    let error = SmtpMailer::new(&bad).unwrap_err();
    for shown in [error.to_string(), format!("{error:?}")] {
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    let unparsable = SmtpSettings::new("smtp//ada:s3cret@mail.example.com");
    let error = SmtpMailer::new(&unparsable).unwrap_err();
    for shown in [
        error.to_string(),
        format!("{error:?}"),
        format!("{unparsable:?}"),
    ] {
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}

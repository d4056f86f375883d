//! The contract's conventions: problem+json on every error, `X-Request-Id` on every response,
//! 404, 405 with `Allow`, 413 before the body is buffered whole, 415, 400 for unreadable or
//! mistyped JSON, `null` treated like a missing member, and opaque 500s.

use std::{cell::Cell, collections::HashSet, pin::Pin, rc::Rc};

use actix_web::{
    dev::Payload,
    error::PayloadError,
    http::{
        Method, StatusCode,
        header::{self, HeaderValue},
    },
    test::TestRequest,
    web::Bytes,
};
use futures_util::{Stream, StreamExt as _};
use registrar_api::REQUEST_ID;
use registrar_application::{
    Accounts, Authenticated, ClientAddr, Credentials, Error, Registration,
};
use registrar_domain::{CodeDigits, CodeIssued, PasswordPolicy, User};
use serde_json::{Value, json};

use crate::helpers::{
    EMAIL, PASSWORD, Reply, TestApp, assert_no_internals, basic, json_post, serve,
};

const LIMIT: usize = 16 * 1024;

/// Every route of the contract with the one method it takes.
const ROUTES: &[(&str, &[&str])] = &[
    ("/v1/users", &["POST"]),
    ("/v1/users/me", &["GET", "DELETE"]),
    ("/v1/users/me/activation", &["POST"]),
    ("/v1/users/me/activation-code", &["POST"]),
    ("/healthz", &["GET"]),
    ("/readyz", &["GET"]),
    ("/metrics", &["GET"]),
    ("/openapi.json", &["GET"]),
    ("/docs", &["GET"]),
];

fn valid_registration() -> Value {
    json!({ "email": EMAIL, "password": PASSWORD })
}

/// A registration body padded with white space to exactly `size` bytes.
fn registration_of_size(size: usize) -> String {
    let body = valid_registration().to_string();
    format!("{body}{}", " ".repeat(size - body.len()))
}

fn is_valid_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

// --- 404 and 405 ---------------------------------------------------------------------------

#[actix_web::test]
async fn unknown_routes_return_404_not_found_as_problem_json() {
    // Arrange
    let app = TestApp::spawn().await;
    let requests = [
        TestRequest::get().uri("/"),
        TestRequest::get().uri("/nope"),
        TestRequest::get().uri("/v1/users/123"),
        TestRequest::get().uri("/v1/users/me/activation/extra"),
        TestRequest::post().uri("/v2/users"),
        TestRequest::delete().uri("/v1"),
    ];

    for request in requests {
        // Act
        let reply = app.send(request).await;

        // Assert
        reply.problem(404, "not-found");
    }
}

#[actix_web::test]
async fn wrong_methods_return_405_method_not_allowed_with_an_allow_header_on_every_route() {
    // Arrange
    let app = TestApp::spawn().await;
    for (path, allowed) in ROUTES {
        for method in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ] {
            if allowed.contains(&method.as_str()) {
                continue;
            }

            // Act
            let reply = app
                .send(TestRequest::default().method(method.clone()).uri(path))
                .await;

            // Assert
            reply.problem(405, "method-not-allowed");
            let allow = reply
                .header("allow")
                .unwrap_or_else(|| panic!("no Allow on {method} {path}"));
            let listed: Vec<&str> = allow.split(',').map(str::trim).collect();
            assert!(
                allowed.iter().all(|m| listed.contains(m)),
                "{method} {path}: Allow is {allow:?}, expected it to list {allowed:?}"
            );
        }
    }
}

// --- X-Request-Id --------------------------------------------------------------------------

#[actix_web::test]
async fn a_valid_request_id_is_echoed() {
    // Arrange
    let app = TestApp::spawn().await;
    let ids = [
        "1",
        "abc",
        "A.b_c-9",
        "0193a7e2-1c2b-7d4e-9f00-123456789abc",
        &"x".repeat(128),
    ];

    for id in ids {
        // Act
        let reply = app
            .send(
                TestRequest::get()
                    .uri("/healthz")
                    .insert_header((REQUEST_ID, id)),
            )
            .await;

        // Assert
        assert_eq!(reply.request_id(), id);
    }
}

#[actix_web::test]
async fn an_invalid_request_id_is_replaced_by_a_generated_one() {
    // Arrange
    let app = TestApp::spawn().await;
    let ids: Vec<HeaderValue> = vec![
        HeaderValue::from_static(""),
        HeaderValue::from_str(&"x".repeat(129)).unwrap(),
        HeaderValue::from_static("has space"),
        HeaderValue::from_static("a/b"),
        HeaderValue::from_static("a:b"),
        HeaderValue::from_bytes("caf\u{e9}".as_bytes()).unwrap(),
        HeaderValue::from_bytes(&[0xff, 0xfe]).unwrap(),
    ];
    let mut generated = HashSet::new();

    for id in ids {
        // Act
        let reply = app
            .send(
                TestRequest::get()
                    .uri("/healthz")
                    .insert_header((REQUEST_ID, id.clone())),
            )
            .await;

        // Assert
        let echoed = reply.request_id();
        assert_ne!(echoed.as_bytes(), id.as_bytes());
        assert!(
            is_valid_request_id(echoed),
            "generated id {echoed:?} is not itself valid"
        );
        generated.insert(echoed.to_string());
    }
    assert_eq!(
        generated.len(),
        7,
        "generated ids should differ: {generated:?}"
    );
}

#[actix_web::test]
async fn a_request_without_a_request_id_gets_a_generated_one() {
    // Arrange
    let app = TestApp::spawn().await;

    // Act
    let first = app.send(TestRequest::get().uri("/healthz")).await;
    let second = app.send(TestRequest::get().uri("/healthz")).await;

    // Assert
    assert!(is_valid_request_id(first.request_id()));
    assert!(is_valid_request_id(second.request_id()));
    assert_ne!(first.request_id(), second.request_id());
}

#[actix_web::test]
async fn every_response_carries_the_callers_request_id_errors_included() {
    // Arrange
    let app = TestApp::spawn().await;
    let oversize = registration_of_size(LIMIT + 1);
    let requests = vec![
        (StatusCode::OK, TestRequest::get().uri("/healthz")),
        (StatusCode::OK, TestRequest::get().uri("/readyz")),
        (StatusCode::OK, TestRequest::get().uri("/metrics")),
        (StatusCode::OK, TestRequest::get().uri("/openapi.json")),
        (StatusCode::OK, TestRequest::get().uri("/docs")),
        (
            StatusCode::OK,
            TestRequest::get().uri("/docs/swagger-ui-bundle.js"),
        ),
        (
            StatusCode::CREATED,
            json_post("/v1/users", &valid_registration()),
        ),
        (
            StatusCode::CONFLICT,
            json_post("/v1/users", &valid_registration()),
        ),
        (
            StatusCode::BAD_REQUEST,
            json_post("/v1/users", &json!(["not", "an", "object"])),
        ),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            json_post("/v1/users", &json!({})),
        ),
        (
            StatusCode::UNAUTHORIZED,
            TestRequest::get().uri("/v1/users/me"),
        ),
        (StatusCode::NOT_FOUND, TestRequest::get().uri("/nope")),
        (
            StatusCode::METHOD_NOT_ALLOWED,
            TestRequest::delete().uri("/v1/users"),
        ),
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            TestRequest::post()
                .uri("/v1/users")
                .insert_header((header::CONTENT_TYPE, "application/json"))
                .set_payload(oversize),
        ),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            TestRequest::post().uri("/v1/users").set_payload("x"),
        ),
    ];

    for (i, (status, request)) in requests.into_iter().enumerate() {
        // Act
        let id = format!("req-{i}");
        let reply = app
            .send(request.insert_header((REQUEST_ID, id.as_str())))
            .await;

        // Assert
        assert_eq!(reply.status, status, "{reply}");
        assert_eq!(reply.request_id(), id, "{reply}");
    }
}

// --- 413 -----------------------------------------------------------------------------------

#[actix_web::test]
async fn a_body_over_16_kib_is_refused_with_413_payload_too_large() {
    // Arrange
    let app = TestApp::spawn().await;
    let request = TestRequest::post()
        .uri("/v1/users")
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .set_payload(registration_of_size(LIMIT + 1));

    // Act
    let reply = app.send(request).await;

    // Assert
    reply.problem(413, "payload-too-large");
    assert_eq!(app.mailer.sent().len(), 0);
    assert_eq!(
        app.me(EMAIL, PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[actix_web::test]
async fn a_body_of_exactly_16_kib_is_accepted() {
    // Arrange
    let app = TestApp::spawn().await;
    let request = TestRequest::post()
        .uri("/v1/users")
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .set_payload(registration_of_size(LIMIT));

    // Act
    let reply = app.send(request).await;

    // Assert
    reply.json_with(StatusCode::CREATED);
}

#[actix_web::test]
async fn a_body_over_16_kib_is_refused_with_413_on_activation_too() {
    // Arrange
    let app = TestApp::spawn().await;
    app.register(EMAIL, PASSWORD).await;
    let padding = " ".repeat(LIMIT);
    let request = TestRequest::post()
        .uri("/v1/users/me/activation")
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .insert_header(basic(EMAIL, PASSWORD))
        .set_payload(format!(r#"{{"code":"0421"}}{padding}"#));

    // Act
    let reply = app.send(request).await;

    // Assert
    reply.problem(413, "payload-too-large");
}

/// A streamed body of `chunks` KiB of white space that counts how many chunks were read.
fn counting_stream(chunks: usize, read: &Rc<Cell<usize>>) -> Payload {
    let read = Rc::clone(read);
    let stream = futures_util::stream::iter(0..chunks).map(move |_| {
        read.set(read.get() + 1);
        Ok::<_, PayloadError>(Bytes::from(vec![b' '; 1024]))
    });
    let stream: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> = Box::pin(stream);
    Payload::from(stream)
}

#[actix_web::test]
async fn a_streamed_body_over_16_kib_without_content_length_is_refused_before_it_is_read_whole() {
    // Arrange
    let app = TestApp::spawn().await;
    let read = Rc::new(Cell::new(0));
    let request = TestRequest::post()
        .uri("/v1/users")
        .insert_header((header::CONTENT_TYPE, "application/json"));

    // Act
    let reply = app
        .send_streamed(request, counting_stream(1024, &read))
        .await;

    // Assert
    reply.problem(413, "payload-too-large");
    assert!(
        read.get() <= 17,
        "{} KiB were read of a 1 MiB body",
        read.get()
    );
}

#[actix_web::test]
async fn a_streamed_body_within_16_kib_without_content_length_is_read() {
    // Arrange
    let app = TestApp::spawn().await;
    let read = Rc::new(Cell::new(0));
    let request = TestRequest::post()
        .uri("/v1/users")
        .insert_header((header::CONTENT_TYPE, "application/json"));

    // Act: 16 KiB of white space is no JSON value
    let reply = app.send_streamed(request, counting_stream(16, &read)).await;

    // Assert
    reply.problem(400, "malformed-request");
    assert_eq!(read.get(), 16);
}

#[actix_web::test]
async fn a_streamed_body_over_16_kib_is_refused_on_activation_too() {
    // Arrange
    let app = TestApp::spawn().await;
    app.register(EMAIL, PASSWORD).await;
    let read = Rc::new(Cell::new(0));
    let request = TestRequest::post()
        .uri("/v1/users/me/activation")
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .insert_header(basic(EMAIL, PASSWORD));

    // Act
    let reply = app
        .send_streamed(request, counting_stream(1024, &read))
        .await;

    // Assert
    reply.problem(413, "payload-too-large");
    assert!(
        read.get() <= 17,
        "{} KiB were read of a 1 MiB body",
        read.get()
    );
}

// --- 415 -----------------------------------------------------------------------------------

fn with_content_type(uri: &str, content_type: Option<&str>) -> TestRequest {
    let request = TestRequest::post()
        .uri(uri)
        .set_payload(valid_registration().to_string());
    match content_type {
        Some(value) => request.insert_header((header::CONTENT_TYPE, value)),
        None => request,
    }
}

const NOT_JSON: &[Option<&str>] = &[
    None,
    Some("text/plain"),
    Some("application/x-www-form-urlencoded"),
    Some("multipart/form-data; boundary=x"),
    Some("application/xml"),
    Some("json"),
];

#[actix_web::test]
async fn registration_without_a_json_content_type_returns_415() {
    // Arrange
    let app = TestApp::spawn().await;

    for content_type in NOT_JSON {
        // Act
        let reply = app
            .send(with_content_type("/v1/users", *content_type))
            .await;

        // Assert
        reply.problem(415, "unsupported-media-type");
    }
    assert_eq!(
        app.me(EMAIL, PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[actix_web::test]
async fn registration_accepts_json_with_a_charset_parameter() {
    // Arrange
    let app = TestApp::spawn().await;

    // Act
    let reply = app
        .send(with_content_type(
            "/v1/users",
            Some("application/json; charset=utf-8"),
        ))
        .await;

    // Assert
    reply.json_with(StatusCode::CREATED);
}

#[actix_web::test]
async fn activation_without_a_json_content_type_returns_415_after_valid_credentials() {
    // Arrange
    let app = TestApp::spawn().await;
    app.register_and_deliver(EMAIL, PASSWORD).await;

    for content_type in NOT_JSON {
        let request = || {
            let request = TestRequest::post()
                .uri("/v1/users/me/activation")
                .set_payload(r#"{"code":"0421"}"#);
            match content_type {
                Some(value) => request.insert_header((header::CONTENT_TYPE, *value)),
                None => request,
            }
        };

        // Act
        let good = app
            .send(request().insert_header(basic(EMAIL, PASSWORD)))
            .await;
        let bad = app
            .send(request().insert_header(basic(EMAIL, "wrong-password-here")))
            .await;

        // Assert
        good.problem(415, "unsupported-media-type");
        bad.assert_unauthorized();
    }
}

// --- 400 and null --------------------------------------------------------------------------

#[actix_web::test]
async fn unparsable_json_returns_400_malformed_request() {
    // Arrange
    let app = TestApp::spawn().await;
    let bodies = [
        "",
        "{",
        "not json",
        r#"{"email": }"#,
        r#"{"email":"a@b.co","password":"x"} trailing"#,
        "{'email':'a@b.co'}",
    ];

    for body in bodies {
        let request = TestRequest::post()
            .uri("/v1/users")
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .set_payload(body);

        // Act
        let reply = app.send(request).await;

        // Assert
        reply.problem(400, "malformed-request");
    }
}

#[actix_web::test]
async fn a_body_that_is_not_utf8_is_a_malformed_request() {
    // Arrange
    let app = TestApp::spawn().await;
    let request = TestRequest::post()
        .uri("/v1/users")
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .set_payload(
            &b"{\"email\":\"ada@example.com\",\"password\":\"tangerine-\xff\xfe-47-orbit\"}"[..],
        );

    // Act
    let reply = app.send(request).await;

    // Assert
    reply.problem(400, "malformed-request");
}

#[actix_web::test]
async fn wrong_json_types_return_400_malformed_request() {
    // Arrange
    let app = TestApp::spawn().await;
    let bodies = [
        json!({ "email": 1, "password": PASSWORD }),
        json!({ "email": EMAIL, "password": true }),
        json!({ "email": [EMAIL], "password": PASSWORD }),
        json!({ "email": { "address": EMAIL }, "password": PASSWORD }),
        json!("ada@example.com"),
        json!(42),
    ];

    for body in bodies {
        // Act
        let reply = app.post_register(&body).await;

        // Assert
        reply.problem(400, "malformed-request");
    }
}

#[actix_web::test]
async fn a_member_given_twice_is_a_malformed_request_that_says_so() {
    // Arrange: which of the two values would count is anybody's guess, so neither does
    let app = TestApp::spawn().await;
    let body =
        format!(r#"{{"email":"{EMAIL}","password":"{PASSWORD}","email":"other@example.com"}}"#);
    let request = TestRequest::post()
        .uri("/v1/users")
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .set_payload(body);

    // Act
    let reply = app.send(request).await;

    // Assert
    let problem = reply.problem(400, "malformed-request");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("duplicate field `email`"), "{detail}");
    assert!(!detail.contains("wrong type"), "{detail}");
}

#[actix_web::test]
async fn a_json_array_instead_of_an_object_is_a_malformed_request() {
    // Arrange: serde would read a struct from a sequence of its fields, in order
    let app = TestApp::spawn().await;

    // Act
    let registration = app.post_register(&json!([EMAIL, PASSWORD])).await;
    app.register(EMAIL, PASSWORD).await;
    let activation = app.activate_with(EMAIL, PASSWORD, &json!(["0421"])).await;

    // Assert
    registration.problem(400, "malformed-request");
    activation.problem(400, "malformed-request");
}

#[actix_web::test]
async fn json_null_is_treated_like_a_missing_member() {
    // Arrange
    let app = TestApp::spawn().await;
    let required = vec![
        ("email".to_string(), "required".to_string()),
        ("password".to_string(), "required".to_string()),
    ];

    // Act
    let missing = app.post_register(&json!({})).await;
    let null = app
        .post_register(&json!({ "email": null, "password": null }))
        .await;
    let one_null = app
        .post_register(&json!({ "email": EMAIL, "password": null }))
        .await;

    // Assert
    assert_eq!(missing.validation_errors(), required);
    assert_eq!(null.validation_errors(), required);
    assert_eq!(
        one_null.validation_errors(),
        vec![("password".to_string(), "required".to_string())]
    );
}

// --- 500 -----------------------------------------------------------------------------------

/// Use cases that fail the way a broken database would, with SQL in the error text.
struct Sabotaged(PasswordPolicy);

const LEAK: &str =
    "db error: ERROR: relation \"users\" does not exist at src/pg.rs:42 SELECT * FROM users";

impl Accounts for Sabotaged {
    async fn register(&self, _: Registration, _: ClientAddr) -> Result<User, Error> {
        Err(Error::Internal(LEAK.into()))
    }

    async fn authenticate(&self, _: Credentials, _: ClientAddr) -> Result<Authenticated, Error> {
        Err(Error::Internal(LEAK.into()))
    }

    async fn activate(&self, _: &Authenticated, _: CodeDigits) -> Result<User, Error> {
        Err(Error::Internal(LEAK.into()))
    }

    async fn issue_code(&self, _: &Authenticated) -> Result<CodeIssued, Error> {
        Err(Error::Internal(LEAK.into()))
    }

    async fn delete(&self, _: &Authenticated) -> Result<(), Error> {
        Err(Error::Internal(LEAK.into()))
    }

    async fn ready(&self) -> Result<(), Error> {
        Err(Error::Internal(LEAK.into()))
    }

    fn password_policy(&self) -> &PasswordPolicy {
        &self.0
    }

    fn check_capacity(&self) -> Result<(), Error> {
        Ok(())
    }

    async fn parse_off_loop<T: Send + 'static>(
        &self,
        parse: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Error> {
        Ok(parse())
    }
}

#[actix_web::test]
async fn an_internal_failure_is_an_opaque_500_internal_problem() {
    // Arrange
    let send = serve(Sabotaged(PasswordPolicy::default())).await;
    let requests = [
        json_post("/v1/users", &valid_registration()),
        TestRequest::get()
            .uri("/v1/users/me")
            .insert_header(basic(EMAIL, PASSWORD)),
        json_post("/v1/users/me/activation", &json!({ "code": "0421" }))
            .insert_header(basic(EMAIL, PASSWORD)),
        TestRequest::post()
            .uri("/v1/users/me/activation-code")
            .insert_header(basic(EMAIL, PASSWORD)),
        TestRequest::delete()
            .uri("/v1/users/me")
            .insert_header(basic(EMAIL, PASSWORD)),
    ];

    for request in requests {
        // Act
        let reply: Reply = send(request).await;

        // Assert
        reply.problem(500, "internal");
        assert_no_internals(reply.text());
        assert!(!reply.text().contains("users"), "{reply}");
    }
}

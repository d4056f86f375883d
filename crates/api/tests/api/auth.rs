//! Basic auth (RFC 7617) on `GET /v1/users/me`: one 401 for every kind of bad credentials,
//! the scheme name in any case, passwords with colons, email matched like uniqueness, NFKC
//! passwords, throttling per account and per address, and re-hashing of stale hashes.

use actix_web::{
    http::{
        StatusCode,
        header::{self, HeaderValue},
    },
    test::TestRequest,
};
use base64::{Engine, engine::general_purpose::STANDARD};
use registrar_application::RateLimits;

use crate::helpers::{
    EMAIL, MINUTE, PASSWORD, Reply, SECOND, TestApp, WRONG_PASSWORD, basic, basic_raw, peer,
};

async fn me_with(app: &TestApp, authorization: Option<HeaderValue>) -> Reply {
    let request = TestRequest::get().uri("/v1/users/me");
    let request = match authorization {
        Some(value) => request.insert_header((header::AUTHORIZATION, value)),
        None => request,
    };
    app.send(request).await
}

fn value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap()
}

#[actix_web::test]
async fn me_returns_the_pending_user_for_valid_credentials() {
    // Arrange
    let app = TestApp::spawn().await;
    let registered = app.register(EMAIL, PASSWORD).await;

    // Act
    let reply = app.me(EMAIL, PASSWORD).await;

    // Assert
    let user = reply.json_with(StatusCode::OK);
    assert_eq!(user, registered);
    assert_eq!(user["status"], "pending");
}

#[actix_web::test]
async fn every_kind_of_bad_credentials_gets_the_same_401_with_the_basic_challenge() {
    // Arrange
    let app = TestApp::spawn().await;
    app.register(EMAIL, PASSWORD).await;
    let cases: Vec<(&str, Option<HeaderValue>)> = vec![
        ("missing header", None),
        ("empty header", Some(value(""))),
        ("scheme only", Some(value("Basic"))),
        (
            "other scheme",
            Some(value(&format!(
                "Bearer {}",
                STANDARD.encode(format!("{EMAIL}:{PASSWORD}"))
            ))),
        ),
        ("digest scheme", Some(value("Digest username=\"ada\""))),
        ("bad base64", Some(value("Basic !!!not-base64!!!"))),
        (
            "non-UTF-8 credentials",
            Some(value(&basic_raw(b"ada@example.com:\xff\xfe-password").1)),
        ),
        (
            "non-UTF-8 header",
            Some(HeaderValue::from_bytes(b"Basic \xff\xfe\xfd").unwrap()),
        ),
        ("no colon", Some(value(&basic_raw(b"ada@example.com").1))),
        (
            "unknown email",
            Some(value(&basic("nobody@example.com", PASSWORD).1)),
        ),
        (
            "not an email",
            Some(value(&basic("not-an-email", PASSWORD).1)),
        ),
        ("empty user", Some(value(&basic("", PASSWORD).1))),
        (
            "wrong password",
            Some(value(&basic(EMAIL, WRONG_PASSWORD).1)),
        ),
        ("empty password", Some(value(&basic(EMAIL, "").1))),
    ];
    let mut bodies = Vec::new();

    for (case, authorization) in cases {
        // Act
        let reply = me_with(&app, authorization).await;

        // Assert
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{case}: {reply}");
        reply.assert_unauthorized();
        bodies.push((case, reply.body));
    }
    for (case, body) in &bodies {
        assert_eq!(
            body, &bodies[0].1,
            "{case} answered differently from {}",
            bodies[0].0
        );
    }
}

#[actix_web::test]
async fn the_scheme_name_is_case_insensitive() {
    // Arrange
    let app = TestApp::spawn().await;
    app.register(EMAIL, PASSWORD).await;
    let token = STANDARD.encode(format!("{EMAIL}:{PASSWORD}"));

    for scheme in ["Basic", "basic", "BASIC", "bAsIc"] {
        // Act
        let reply = me_with(&app, Some(value(&format!("{scheme} {token}")))).await;

        // Assert
        reply.json_with(StatusCode::OK);
    }
}

#[actix_web::test]
async fn a_password_may_contain_colons() {
    // Arrange
    let app = TestApp::spawn().await;
    let password = "tangerine:Quokka:47:orbit";
    app.register(EMAIL, password).await;

    // Act
    let reply = app.me(EMAIL, password).await;

    // Assert
    reply.json_with(StatusCode::OK);
    app.me(EMAIL, "tangerine").await.assert_unauthorized();
}

#[actix_web::test]
async fn the_email_is_trimmed_and_matched_case_insensitively() {
    // Arrange
    let app = TestApp::spawn().await;
    app.register("Ada@Example.com", PASSWORD).await;

    for email in [
        "ada@example.com",
        "ADA@EXAMPLE.COM",
        "  Ada@Example.com  ",
        "\tada@EXAMPLE.com",
    ] {
        // Act
        let reply = app.me(email, PASSWORD).await;

        // Assert
        let user = reply.json_with(StatusCode::OK);
        assert_eq!(user["email"], "Ada@example.com", "{email:?}");
    }
}

#[actix_web::test]
async fn the_password_is_nfkc_normalised_at_login_as_at_registration() {
    // Arrange: registered with the "fi" ligature and fullwidth digits
    let app = TestApp::spawn().await;
    app.register(EMAIL, "\u{fb01}nch-Harbor-\u{ff19}\u{ff13}-lantern")
        .await;

    // Act
    let decomposed = app.me(EMAIL, "finch-Harbor-93-lantern").await;
    let as_registered = app
        .me(EMAIL, "\u{fb01}nch-Harbor-\u{ff19}\u{ff13}-lantern")
        .await;

    // Assert
    decomposed.json_with(StatusCode::OK);
    as_registered.json_with(StatusCode::OK);
}

#[actix_web::test]
async fn a_password_registered_in_plain_form_accepts_its_compatibility_form() {
    // Arrange
    let app = TestApp::spawn().await;
    app.register(EMAIL, "finch-Harbor-93-lantern").await;

    // Act
    let reply = app.me(EMAIL, "\u{fb01}nch-Harbor-93-lantern").await;

    // Assert
    reply.json_with(StatusCode::OK);
}

#[actix_web::test]
async fn an_unknown_email_costs_the_same_password_hashing_as_a_wrong_password() {
    // Arrange
    let app = TestApp::spawn().await;
    app.register(EMAIL, PASSWORD).await;
    app.me("warm-up@example.com", PASSWORD).await;

    // Act
    let before = app.hasher.calls();
    app.me(EMAIL, WRONG_PASSWORD).await.assert_unauthorized();
    let wrong_password = app.hasher.calls() - before;
    let before = app.hasher.calls();
    app.me("nobody@example.com", PASSWORD)
        .await
        .assert_unauthorized();
    let unknown_email = app.hasher.calls() - before;
    let before = app.hasher.calls();
    app.me("not-an-email", PASSWORD).await.assert_unauthorized();
    let unparsable_email = app.hasher.calls() - before;

    // Assert
    assert_eq!(wrong_password, 1);
    assert_eq!(unknown_email, wrong_password);
    assert_eq!(unparsable_email, wrong_password);
}

#[actix_web::test]
async fn a_stale_password_hash_is_rehashed_on_the_next_successful_login() {
    // Arrange
    let app = TestApp::spawn().await;
    app.register(EMAIL, PASSWORD).await;
    app.hasher.strengthen();

    // Act
    let before = app.hasher.calls();
    app.me(EMAIL, PASSWORD).await.json_with(StatusCode::OK);
    let first_login = app.hasher.calls() - before;
    let before = app.hasher.calls();
    app.me(EMAIL, PASSWORD).await.json_with(StatusCode::OK);
    let second_login = app.hasher.calls() - before;

    // Assert: verify + re-hash, then verify only
    assert_eq!(first_login, 2);
    assert_eq!(second_login, 1);
}

// --- Throttling -----------------------------------------------------------------------------

#[actix_web::test]
async fn ten_failures_lock_the_account_even_for_the_right_password_until_the_window_ends() {
    // Arrange
    let app = TestApp::spawn().await;
    app.register(EMAIL, PASSWORD).await;
    for _ in 0..10 {
        app.me(EMAIL, WRONG_PASSWORD).await.assert_unauthorized();
        app.advance(SECOND);
    }

    // Act
    let locked = app.me(EMAIL, PASSWORD).await;

    // Assert: the window opened with the first failure, 10 s ago
    locked.problem(429, "too-many-requests");
    assert_eq!(locked.retry_after(), 15 * 60 - 10);
    app.me(" ADA@example.COM", PASSWORD)
        .await
        .problem(429, "too-many-requests");
    app.me_from(peer(9), EMAIL, PASSWORD)
        .await
        .problem(429, "too-many-requests");
    app.advance(14 * MINUTE + 50 * SECOND);
    app.me(EMAIL, PASSWORD).await.json_with(StatusCode::OK);
}

#[actix_web::test]
async fn nine_failures_do_not_lock_the_account() {
    // Arrange
    let app = TestApp::spawn().await;
    app.register(EMAIL, PASSWORD).await;
    for _ in 0..9 {
        app.me(EMAIL, WRONG_PASSWORD).await.assert_unauthorized();
    }

    // Act
    let reply = app.me(EMAIL, PASSWORD).await;

    // Assert
    reply.json_with(StatusCode::OK);
}

#[actix_web::test]
async fn the_account_lock_applies_to_every_route_that_takes_credentials() {
    // Arrange
    let app = TestApp::spawn().await;
    let code = app.register_and_deliver(EMAIL, PASSWORD).await;
    for _ in 0..10 {
        app.me(EMAIL, WRONG_PASSWORD).await;
    }

    // Act
    let activation = app.activate(EMAIL, PASSWORD, &code).await;
    app.advance(MINUTE);
    let new_code = app.new_code(EMAIL, PASSWORD).await;

    // Assert
    activation.problem(429, "too-many-requests");
    new_code.problem(429, "too-many-requests");
}

#[actix_web::test]
async fn fifty_failures_from_one_address_lock_that_address_but_not_others() {
    // Arrange
    let app = TestApp::spawn().await;
    app.register(EMAIL, PASSWORD).await;
    for i in 0..50 {
        app.me_from(peer(1), &format!("guess{i}@example.com"), PASSWORD)
            .await
            .assert_unauthorized();
    }

    // Act
    let locked = app.me_from(peer(1), EMAIL, PASSWORD).await;
    let elsewhere = app.me_from(peer(2), EMAIL, PASSWORD).await;

    // Assert
    locked.problem(429, "too-many-requests");
    assert_eq!(locked.retry_after(), 15 * 60);
    elsewhere.json_with(StatusCode::OK);
    app.advance(15 * MINUTE);
    app.me_from(peer(1), EMAIL, PASSWORD)
        .await
        .json_with(StatusCode::OK);
}

#[actix_web::test]
async fn the_address_lock_does_not_count_against_the_account() {
    // Arrange: the address is locked, with none of its failures on this account
    let app = TestApp::spawn().await;
    app.register(EMAIL, PASSWORD).await;
    for i in 0..50 {
        app.me_from(peer(1), &format!("guess{i}@example.com"), PASSWORD)
            .await;
    }

    // Act
    let reply = app.me_from(peer(1), EMAIL, WRONG_PASSWORD).await;

    // Assert
    reply.problem(429, "too-many-requests");
    app.me_from(peer(2), EMAIL, PASSWORD)
        .await
        .json_with(StatusCode::OK);
}

#[actix_web::test]
async fn with_per_address_limits_off_only_the_account_limit_applies() {
    // Arrange
    let app = TestApp::spawn_with(RateLimits {
        per_address: false,
        ..RateLimits::default()
    })
    .await;
    app.register(EMAIL, PASSWORD).await;
    app.register("grace@example.com", PASSWORD).await;
    for i in 0..50 {
        app.me_from(peer(1), &format!("guess{i}@example.com"), PASSWORD)
            .await;
    }
    for _ in 0..10 {
        app.me_from(peer(1), "grace@example.com", WRONG_PASSWORD)
            .await;
    }

    // Act
    let unlocked_address = app.me_from(peer(1), EMAIL, PASSWORD).await;
    let locked_account = app.me_from(peer(2), "grace@example.com", PASSWORD).await;

    // Assert
    unlocked_address.json_with(StatusCode::OK);
    locked_account.problem(429, "too-many-requests");
}

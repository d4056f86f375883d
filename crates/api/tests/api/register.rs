//! `POST /v1/users`: the user resource, the email and password rules, `email-taken`, takeover
//! of an address whose code died, and the per-address registration limit.

use actix_web::http::StatusCode;
use registrar_application::{RateLimits, ports::MailError};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{
    EMAIL, MINUTE, OTHER_PASSWORD, PASSWORD, SECOND, TestApp, now, parse_rfc3339_utc, peer,
};

fn registration(email: &str, password: &str) -> Value {
    json!({ "email": email, "password": password })
}

/// The `(field, code)` pairs of a refused registration.
async fn problems(app: &TestApp, email: &str, password: &str) -> Vec<(String, String)> {
    app.post_register(&registration(email, password))
        .await
        .validation_errors()
}

fn pair(field: &str, code: &str) -> (String, String) {
    (field.to_string(), code.to_string())
}

/// A host name of exactly `len` characters: labels of at most 63 characters under `com`.
fn domain_of_length(len: usize) -> String {
    let mut domain = String::from("com");
    while domain.len() < len {
        let label = (len - domain.len() - 1).min(63);
        domain = format!("{}.{domain}", "x".repeat(label));
    }
    domain
}

/// A valid address of exactly `len` characters (a 64-character local part).
fn email_of_length(len: usize) -> String {
    let email = format!("{}@{}", "a".repeat(64), domain_of_length(len - 65));
    assert_eq!(email.len(), len);
    email
}

// --- Success and the user resource ----------------------------------------------------------

#[actix_web::test]
async fn register_returns_201_with_the_pending_user_and_a_location_header() {
    // Arrange
    let app = TestApp::spawn().await;

    // Act
    let reply = app.post_register(&registration(EMAIL, PASSWORD)).await;

    // Assert
    let user = reply.json_with(StatusCode::CREATED);
    assert_eq!(reply.header("location"), Some("/v1/users/me"));
    assert_eq!(user["email"], EMAIL);
    assert_eq!(user["status"], "pending");
    let members: Vec<&String> = user.as_object().unwrap().keys().collect();
    assert_eq!(members.len(), 5, "{user}");
    assert!(
        user.as_object().unwrap().contains_key("activated_at"),
        "activated_at must be present, as null"
    );
    assert_eq!(user["activated_at"], Value::Null);
    assert!(
        !reply.text().contains(PASSWORD),
        "the body must not echo the password"
    );
}

#[actix_web::test]
async fn the_user_id_is_a_version_7_uuid() {
    // Arrange
    let app = TestApp::spawn().await;

    // Act
    let user = app.register(EMAIL, PASSWORD).await;

    // Assert
    let id = Uuid::parse_str(user["id"].as_str().unwrap()).unwrap();
    assert_eq!(id.get_version_num(), 7, "{id}");
}

#[actix_web::test]
async fn created_at_is_the_registration_time_in_rfc3339_utc() {
    // Arrange
    let app = TestApp::spawn().await;
    app.advance(1234 * SECOND);
    let registered_at = now(&app);

    // Act
    let user = app.register(EMAIL, PASSWORD).await;

    // Assert
    assert_eq!(parse_rfc3339_utc(&user["created_at"]), registered_at);
}

#[actix_web::test]
async fn the_email_is_stored_trimmed_with_its_domain_lower_cased() {
    // Arrange
    let app = TestApp::spawn().await;

    // Act
    let user = app.register("  Ada.Lovelace@Example.COM\t", PASSWORD).await;

    // Assert
    assert_eq!(user["email"], "Ada.Lovelace@example.com");
    let me = app
        .me("Ada.Lovelace@example.com", PASSWORD)
        .await
        .json_with(StatusCode::OK);
    assert_eq!(me["email"], "Ada.Lovelace@example.com");
}

#[actix_web::test]
async fn registration_queues_an_activation_email_with_a_four_digit_code() {
    // Arrange
    let app = TestApp::spawn().await;
    app.register(EMAIL, PASSWORD).await;

    // Act
    let report = app.deliver().await;

    // Assert
    assert_eq!(report.sent, 1);
    let code = app.code_for(EMAIL);
    assert!(
        code.len() == 4 && code.bytes().all(|b| b.is_ascii_digit()),
        "{code}"
    );
}

// --- Email rules ----------------------------------------------------------------------------

#[actix_web::test]
async fn register_refuses_invalid_email_addresses_with_422() {
    // Arrange
    let app = TestApp::spawn().await;
    let invalid = [
        "",
        "   ",
        "ada",
        "ada.example.com",
        "ada@",
        "@example.com",
        "ada@@example.com",
        "ada@b@example.com",
        "ada lovelace@example.com",
        "ada@exa mple.com",
        "ada@localhost",
        "ada..lovelace@example.com",
        ".ada@example.com",
        "ada@-example.com",
        "ada@example..com",
        "<ada@example.com>",
        "Ada Lovelace <ada@example.com>",
    ];

    for email in invalid {
        // Act
        let found = problems(&app, email, PASSWORD).await;

        // Assert
        assert!(
            found
                .iter()
                .any(|(field, code)| field == "email" && code != "required"),
            "{email:?}: {found:?}"
        );
        assert!(
            found.iter().all(|(field, _)| field == "email"),
            "{email:?}: {found:?}"
        );
    }
}

#[actix_web::test]
async fn register_refuses_an_email_longer_than_254_characters() {
    // Arrange
    let app = TestApp::spawn().await;

    // Act
    let found = problems(&app, &email_of_length(255), PASSWORD).await;

    // Assert
    assert_eq!(found, vec![pair("email", "too_long")]);
}

#[actix_web::test]
async fn register_accepts_an_email_of_exactly_254_characters() {
    // Arrange
    let app = TestApp::spawn().await;
    let email = email_of_length(254);

    // Act
    let user = app.register(&email, PASSWORD).await;

    // Assert
    assert_eq!(user["email"], email);
}

#[actix_web::test]
async fn register_refuses_a_local_part_longer_than_64_characters() {
    // Arrange
    let app = TestApp::spawn().await;
    let email = format!("{}@example.com", "a".repeat(65));

    // Act
    let found = problems(&app, &email, PASSWORD).await;

    // Assert
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "email");
}

#[actix_web::test]
async fn missing_email_and_password_are_each_reported_as_required() {
    // Arrange
    let app = TestApp::spawn().await;

    // Act
    let no_email = app.post_register(&json!({ "password": PASSWORD })).await;
    let no_password = app.post_register(&json!({ "email": EMAIL })).await;

    // Assert
    assert_eq!(
        no_email.validation_errors(),
        vec![pair("email", "required")]
    );
    assert_eq!(
        no_password.validation_errors(),
        vec![pair("password", "required")]
    );
}

// --- Password rules -------------------------------------------------------------------------

#[actix_web::test]
async fn register_refuses_a_password_shorter_than_8_characters() {
    // Arrange
    let app = TestApp::spawn().await;

    // Act
    let found = problems(&app, EMAIL, "Qx7!mZ2").await;

    // Assert
    assert!(found.contains(&pair("password", "too_short")), "{found:?}");
    assert!(
        found.iter().all(|(field, _)| field == "password"),
        "{found:?}"
    );
}

#[actix_web::test]
async fn password_length_counts_unicode_scalar_values_not_bytes() {
    // Arrange
    let app = TestApp::spawn().await;

    // Act: 7 characters in 14 bytes; 8 characters in 16 bytes
    let seven = problems(&app, EMAIL, &"\u{f1}".repeat(7)).await;
    let eight = problems(&app, EMAIL, &"\u{f1}".repeat(8)).await;

    // Assert
    assert!(seven.contains(&pair("password", "too_short")), "{seven:?}");
    assert!(!eight.contains(&pair("password", "too_short")), "{eight:?}");
}

#[actix_web::test]
async fn password_length_is_counted_after_nfkc_normalisation() {
    // Arrange
    let app = TestApp::spawn().await;
    // "e" + combining acute: 10 scalars as sent, 5 ("é") after NFKC.
    let composes_to_five = "e\u{301}".repeat(5);
    // The "ffi" ligature: 3 scalars as sent, 9 after NFKC.
    let expands_to_nine = "\u{fb03}".repeat(3);
    // 43 ligatures: 43 scalars as sent, 129 after NFKC.
    let expands_to_129 = "\u{fb03}".repeat(43);

    // Act
    let five = problems(&app, EMAIL, &composes_to_five).await;
    let nine = problems(&app, EMAIL, &expands_to_nine).await;
    let long = problems(&app, EMAIL, &expands_to_129).await;

    // Assert
    assert!(five.contains(&pair("password", "too_short")), "{five:?}");
    assert!(!nine.contains(&pair("password", "too_short")), "{nine:?}");
    assert!(long.contains(&pair("password", "too_long")), "{long:?}");
}

#[actix_web::test]
async fn register_refuses_a_password_longer_than_128_characters() {
    // Arrange
    let app = TestApp::spawn().await;
    let long = format!("{PASSWORD}/{OTHER_PASSWORD}/Lumen-Harbor-83-violet/").repeat(3);

    // Act
    let found = problems(&app, EMAIL, &long[..129]).await;

    // Assert
    assert!(found.contains(&pair("password", "too_long")), "{found:?}");
}

#[actix_web::test]
async fn register_accepts_a_strong_password_of_exactly_128_characters() {
    // Arrange
    let app = TestApp::spawn().await;
    let long = format!("{PASSWORD}/{OTHER_PASSWORD}/Lumen-Harbor-83-violet/").repeat(3);

    // Act
    let reply = app.post_register(&registration(EMAIL, &long[..128])).await;

    // Assert
    reply.json_with(StatusCode::CREATED);
    app.me(EMAIL, &long[..128]).await.json_with(StatusCode::OK);
}

#[actix_web::test]
async fn register_refuses_common_passwords_as_too_weak() {
    // Arrange
    let app = TestApp::spawn().await;

    for password in [
        "password123",
        "Password1!",
        "qwertyuiop",
        "iloveyou2024",
        "11111111",
    ] {
        // Act
        let found = problems(&app, EMAIL, password).await;

        // Assert
        assert_eq!(found, vec![pair("password", "too_weak")], "{password}");
    }
}

#[actix_web::test]
async fn register_refuses_a_password_containing_the_email_local_part_in_any_case() {
    // Arrange
    let app = TestApp::spawn().await;

    for password in [
        "xx-zephyrine-Quokka-47-orbit",
        "ZEPHYRINE-tangerine-47-orbit",
        "tangerine-47-ZePhYrInE",
        // fullwidth letters, which NFKC turns into "zephyrine"
        "\u{ff5a}\u{ff45}\u{ff50}\u{ff48}\u{ff59}\u{ff52}\u{ff49}\u{ff4e}\u{ff45}-tangerine-47",
    ] {
        // Act
        let found = problems(&app, "Zephyrine@example.com", password).await;

        // Assert
        assert!(
            found.contains(&pair("password", "contains_email")),
            "{password}: {found:?}"
        );
    }
}

#[actix_web::test]
async fn a_local_part_shorter_than_4_characters_may_appear_in_the_password() {
    // Arrange
    let app = TestApp::spawn().await;

    // Act
    let reply = app
        .post_register(&registration(
            "ada@example.com",
            "ada-tangerine-Quokka-47-orbit",
        ))
        .await;

    // Assert
    reply.json_with(StatusCode::CREATED);
}

#[actix_web::test]
async fn register_reports_every_problem_with_one_error_each() {
    // Arrange
    let app = TestApp::spawn().await;

    // Act
    let reply = app.post_register(&registration("nope", "short")).await;

    // Assert
    let found = reply.validation_errors();
    assert_eq!(found[0].0, "email", "{found:?}");
    assert!(found.contains(&pair("password", "too_short")), "{found:?}");
    assert!(found.contains(&pair("password", "too_weak")), "{found:?}");
    let unique: std::collections::HashSet<_> = found.iter().collect();
    assert_eq!(
        unique.len(),
        found.len(),
        "one error per problem: {found:?}"
    );
}

#[actix_web::test]
async fn a_too_weak_password_comes_with_a_useful_message() {
    // Arrange
    let app = TestApp::spawn().await;

    // Act
    let body = app
        .post_register(&registration(EMAIL, "password123"))
        .await
        .problem(422, "validation-failed");

    // Assert
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.len() > 20, "{message}");
    assert!(!body["detail"].as_str().unwrap().is_empty());
}

// --- email-taken and takeover ---------------------------------------------------------------

#[actix_web::test]
async fn register_returns_409_for_the_same_email_in_another_case_while_its_code_awaits_delivery() {
    // Arrange
    let app = TestApp::spawn().await;
    app.register(EMAIL, PASSWORD).await;
    app.advance(10 * MINUTE);

    // Act
    let reply = app
        .post_register(&registration("  ADA@Example.COM ", OTHER_PASSWORD))
        .await;

    // Assert
    reply.problem(409, "email-taken");
    app.me(EMAIL, PASSWORD).await.json_with(StatusCode::OK);
    app.me(EMAIL, OTHER_PASSWORD).await.assert_unauthorized();
}

#[actix_web::test]
async fn register_returns_409_for_the_same_email_while_its_code_is_usable() {
    // Arrange
    let app = TestApp::spawn().await;
    app.register_and_deliver(EMAIL, PASSWORD).await;
    app.advance(59 * SECOND);

    // Act
    let reply = app
        .post_register(&registration("Ada@EXAMPLE.com", OTHER_PASSWORD))
        .await;

    // Assert
    reply.problem(409, "email-taken");
}

#[actix_web::test]
async fn register_returns_409_for_the_email_of_an_active_account() {
    // Arrange
    let app = TestApp::spawn().await;
    app.active_account(EMAIL, PASSWORD).await;
    app.advance(24 * 60 * MINUTE);

    // Act
    let reply = app
        .post_register(&registration(EMAIL, OTHER_PASSWORD))
        .await;

    // Assert
    reply.problem(409, "email-taken");
}

#[actix_web::test]
async fn register_takes_over_a_pending_account_whose_code_expired() {
    // Arrange
    let app = TestApp::spawn().await;
    let first = app.register(EMAIL, PASSWORD).await;
    app.deliver().await;
    app.advance(61 * SECOND);

    // Act
    let reply = app
        .post_register(&registration("ADA@example.com", OTHER_PASSWORD))
        .await;

    // Assert
    let user = reply.json_with(StatusCode::CREATED);
    assert_eq!(reply.header("location"), Some("/v1/users/me"));
    assert_eq!(user["status"], "pending");
    assert_eq!(user["id"], first["id"], "a takeover keeps the account");
    app.me(EMAIL, OTHER_PASSWORD)
        .await
        .json_with(StatusCode::OK);
    app.me(EMAIL, PASSWORD).await.assert_unauthorized();
}

#[actix_web::test]
async fn a_takeover_issues_a_new_code_that_activates_the_account() {
    // Arrange
    let app = TestApp::spawn().await;
    let old_code = app.register_and_deliver(EMAIL, PASSWORD).await;
    app.advance(61 * SECOND);
    app.entropy
        .will_draw(&[if old_code == "7777" { "8888" } else { "7777" }]);
    app.register(EMAIL, OTHER_PASSWORD).await;
    app.deliver().await;
    let new_code = app.code_for(EMAIL);

    // Act
    let reply = app.activate(EMAIL, OTHER_PASSWORD, &new_code).await;

    // Assert
    let user = reply.json_with(StatusCode::OK);
    assert_eq!(user["status"], "active");
}

#[actix_web::test]
async fn register_takes_over_a_pending_account_whose_email_could_not_be_delivered() {
    // Arrange
    let app = TestApp::spawn().await;
    app.register(EMAIL, PASSWORD).await;
    app.mailer
        .will_fail([MailError::Permanent("550 no such mailbox".into())]);
    assert_eq!(app.deliver().await.failed, 1);
    app.advance(31 * SECOND);

    // Act
    let reply = app
        .post_register(&registration(EMAIL, OTHER_PASSWORD))
        .await;

    // Assert
    reply.json_with(StatusCode::CREATED);
    app.me(EMAIL, OTHER_PASSWORD)
        .await
        .json_with(StatusCode::OK);
}

#[actix_web::test]
async fn a_takeover_within_the_code_cooldown_returns_429_with_retry_after() {
    // Arrange: the code dies of wrong guesses 10 s after it was issued
    let app = TestApp::spawn().await;
    let code = app.register_and_deliver(EMAIL, PASSWORD).await;
    let wrong = if code == "0000" { "1111" } else { "0000" };
    app.advance(10 * SECOND);
    for _ in 0..5 {
        app.activate(EMAIL, PASSWORD, wrong)
            .await
            .problem(400, "wrong-activation-code");
    }

    // Act
    let reply = app
        .post_register(&registration(EMAIL, OTHER_PASSWORD))
        .await;

    // Assert
    reply.problem(429, "too-many-requests");
    assert_eq!(reply.retry_after(), 20);
    app.me(EMAIL, PASSWORD).await.json_with(StatusCode::OK);
    app.advance(20 * SECOND);
    app.post_register(&registration(EMAIL, OTHER_PASSWORD))
        .await
        .json_with(StatusCode::CREATED);
}

#[actix_web::test]
async fn takeovers_count_against_the_daily_code_cap() {
    // Arrange: the registration and nine takeovers make ten codes in the same day
    let app = TestApp::spawn().await;
    app.register(EMAIL, PASSWORD).await;
    for _ in 0..9 {
        app.deliver().await;
        app.advance(61 * SECOND);
        app.register(EMAIL, PASSWORD).await;
    }
    app.deliver().await;
    app.advance(61 * SECOND);

    // Act
    let reply = app
        .post_register(&registration(EMAIL, OTHER_PASSWORD))
        .await;

    // Assert: the first code leaves the 24-hour window 10 × 61 s after it was issued
    reply.problem(429, "too-many-requests");
    assert_eq!(reply.retry_after(), 24 * 60 * 60 - 10 * 61);
}

// --- Registrations per address --------------------------------------------------------------

#[actix_web::test]
async fn the_21st_registration_from_one_address_within_10_minutes_returns_429() {
    // Arrange
    let app = TestApp::spawn().await;
    for i in 0..20 {
        let reply = app
            .post_register_from(
                peer(1),
                &registration(&format!("user{i}@example.com"), PASSWORD),
            )
            .await;
        reply.json_with(StatusCode::CREATED);
        app.advance(10 * SECOND);
    }

    // Act
    let reply = app
        .post_register_from(peer(1), &registration("user20@example.com", PASSWORD))
        .await;

    // Assert: the window opened with the first registration, 200 s ago
    reply.problem(429, "too-many-requests");
    assert_eq!(reply.retry_after(), 10 * 60 - 200);
    app.me("user20@example.com", PASSWORD)
        .await
        .assert_unauthorized();
}

#[actix_web::test]
async fn the_registration_limit_of_one_address_does_not_affect_another() {
    // Arrange
    let app = TestApp::spawn().await;
    for i in 0..21 {
        app.post_register_from(
            peer(1),
            &registration(&format!("user{i}@example.com"), PASSWORD),
        )
        .await;
    }

    // Act
    let reply = app
        .post_register_from(peer(2), &registration("other@example.com", PASSWORD))
        .await;

    // Assert
    reply.json_with(StatusCode::CREATED);
}

#[actix_web::test]
async fn registrations_from_an_address_are_allowed_again_after_10_minutes() {
    // Arrange
    let app = TestApp::spawn().await;
    for i in 0..21 {
        app.post_register_from(
            peer(1),
            &registration(&format!("user{i}@example.com"), PASSWORD),
        )
        .await;
    }
    app.advance(10 * MINUTE);

    // Act
    let reply = app
        .post_register_from(peer(1), &registration("late@example.com", PASSWORD))
        .await;

    // Assert
    reply.json_with(StatusCode::CREATED);
}

#[actix_web::test]
async fn registrations_per_address_are_not_limited_when_per_address_limits_are_off() {
    // Arrange
    let app = TestApp::spawn_with(RateLimits {
        per_address: false,
        ..RateLimits::default()
    })
    .await;
    for i in 0..20 {
        app.post_register_from(
            peer(1),
            &registration(&format!("user{i}@example.com"), PASSWORD),
        )
        .await;
    }

    // Act
    let reply = app
        .post_register_from(peer(1), &registration("user20@example.com", PASSWORD))
        .await;

    // Assert
    reply.json_with(StatusCode::CREATED);
}

//! `POST /v1/users/me/activation`: the order of the checks (401, 422, 409, 410, 400), the code
//! format, codes not usable before delivery nor after their lifetime, the attempt limit, and
//! success.

use actix_web::{http::StatusCode, test::TestRequest};
use futures_util::future::join;
use registrar_application::ports::MailError;
use serde_json::json;

use crate::helpers::{
    EMAIL, PASSWORD, SECOND, TestApp, WRONG_PASSWORD, basic, json_post, now, parse_rfc3339_utc,
};

/// A code that is not `code`.
fn other_than(code: &str) -> &'static str {
    if code == "0000" { "1111" } else { "0000" }
}

#[actix_web::test]
async fn the_right_code_activates_the_account() {
    // Arrange
    let app = TestApp::spawn().await;
    let code = app.register_and_deliver(EMAIL, PASSWORD).await;
    app.advance(30 * SECOND);
    let activated_at = now(&app);

    // Act
    let reply = app.activate(EMAIL, PASSWORD, &code).await;

    // Assert
    let user = reply.json_with(StatusCode::OK);
    assert_eq!(user["status"], "active");
    assert_eq!(user["email"], EMAIL);
    assert_eq!(parse_rfc3339_utc(&user["activated_at"]), activated_at);
    let me = app.me(EMAIL, PASSWORD).await.json_with(StatusCode::OK);
    assert_eq!(me, user);
}

#[actix_web::test]
async fn a_code_is_usable_until_just_before_its_lifetime_ends() {
    // Arrange
    let app = TestApp::spawn().await;
    let code = app.register_and_deliver(EMAIL, PASSWORD).await;
    app.advance(59 * SECOND);

    // Act
    let reply = app.activate(EMAIL, PASSWORD, &code).await;

    // Assert
    reply.json_with(StatusCode::OK);
}

#[actix_web::test]
async fn the_lifetime_starts_when_the_email_is_accepted_not_at_registration() {
    // Arrange: the email goes out 10 minutes after registration
    let app = TestApp::spawn().await;
    app.register(EMAIL, PASSWORD).await;
    app.advance(10 * 60 * SECOND);
    app.deliver().await;
    let code = app.code_for(EMAIL);
    app.advance(59 * SECOND);

    // Act
    let reply = app.activate(EMAIL, PASSWORD, &code).await;

    // Assert
    reply.json_with(StatusCode::OK);
}

#[actix_web::test]
async fn bad_credentials_are_checked_before_the_code_format() {
    // Arrange
    let app = TestApp::spawn().await;
    app.register_and_deliver(EMAIL, PASSWORD).await;

    // Act
    let wrong_password = app.activate(EMAIL, WRONG_PASSWORD, "abc").await;
    let no_credentials = app
        .send(json_post(
            "/v1/users/me/activation",
            &json!({ "code": "abc" }),
        ))
        .await;
    let no_body = app
        .send(TestRequest::post().uri("/v1/users/me/activation"))
        .await;

    // Assert
    wrong_password.assert_unauthorized();
    no_credentials.assert_unauthorized();
    no_body.assert_unauthorized();
}

#[actix_web::test]
async fn a_code_that_is_not_exactly_four_ascii_digits_returns_422() {
    // Arrange
    let app = TestApp::spawn().await;
    app.register_and_deliver(EMAIL, PASSWORD).await;
    let malformed = [
        " 0421",
        "0421 ",
        "421",
        "04210",
        "",
        "04a1",
        "-421",
        "+421",
        "4.21",
        "\u{660}\u{664}\u{662}\u{661}",     // Arabic-Indic digits
        "\u{ff10}\u{ff14}\u{ff12}\u{ff11}", // fullwidth digits
    ];

    for code in malformed {
        // Act
        let reply = app.activate(EMAIL, PASSWORD, code).await;

        // Assert
        let errors = reply.validation_errors();
        assert_eq!(errors.len(), 1, "{code:?}: {errors:?}");
        assert_eq!(errors[0].0, "code", "{code:?}");
    }
    let code = app.code_for(EMAIL);
    app.activate(EMAIL, PASSWORD, &code)
        .await
        .json_with(StatusCode::OK);
}

#[actix_web::test]
async fn a_missing_or_null_code_is_required() {
    // Arrange
    let app = TestApp::spawn().await;
    app.register_and_deliver(EMAIL, PASSWORD).await;

    // Act
    let missing = app.activate_with(EMAIL, PASSWORD, &json!({})).await;
    let null = app
        .activate_with(EMAIL, PASSWORD, &json!({ "code": null }))
        .await;

    // Assert
    let required = vec![("code".to_string(), "required".to_string())];
    assert_eq!(missing.validation_errors(), required);
    assert_eq!(null.validation_errors(), required);
}

#[actix_web::test]
async fn a_code_sent_as_a_json_number_is_a_malformed_request() {
    // Arrange
    let app = TestApp::spawn().await;
    app.register_and_deliver(EMAIL, PASSWORD).await;

    for body in [
        json!({ "code": 421 }),
        json!({ "code": 4210 }),
        json!({ "code": ["0421"] }),
        json!("0421"),
    ] {
        // Act
        let reply = app.activate_with(EMAIL, PASSWORD, &body).await;

        // Assert
        reply.problem(400, "malformed-request");
    }
}

#[actix_web::test]
async fn unparsable_json_on_activation_is_a_malformed_request() {
    // Arrange
    let app = TestApp::spawn().await;
    app.register_and_deliver(EMAIL, PASSWORD).await;
    let request = TestRequest::post()
        .uri("/v1/users/me/activation")
        .insert_header(("content-type", "application/json"))
        .insert_header(basic(EMAIL, PASSWORD))
        .set_payload(r#"{"code": "04"#);

    // Act
    let reply = app.send(request).await;

    // Assert
    reply.problem(400, "malformed-request");
}

#[actix_web::test]
async fn an_active_account_gets_409_already_active() {
    // Arrange
    let app = TestApp::spawn().await;
    let code = app.register_and_deliver(EMAIL, PASSWORD).await;
    app.activate(EMAIL, PASSWORD, &code)
        .await
        .json_with(StatusCode::OK);

    // Act
    let same_code = app.activate(EMAIL, PASSWORD, &code).await;
    let other_code = app.activate(EMAIL, PASSWORD, other_than(&code)).await;

    // Assert
    same_code.problem(409, "already-active");
    other_code.problem(409, "already-active");
}

#[actix_web::test]
async fn the_code_format_is_checked_before_already_active() {
    // Arrange
    let app = TestApp::spawn().await;
    let code = app.register_and_deliver(EMAIL, PASSWORD).await;
    app.activate(EMAIL, PASSWORD, &code)
        .await
        .json_with(StatusCode::OK);

    // Act
    let reply = app.activate(EMAIL, PASSWORD, "12345").await;

    // Assert
    reply.validation_errors();
}

#[actix_web::test]
async fn already_active_is_checked_before_the_code_is_gone() {
    // Arrange
    let app = TestApp::spawn().await;
    let code = app.register_and_deliver(EMAIL, PASSWORD).await;
    app.activate(EMAIL, PASSWORD, &code)
        .await
        .json_with(StatusCode::OK);
    app.advance(3600 * SECOND);

    // Act
    let reply = app.activate(EMAIL, PASSWORD, &code).await;

    // Assert
    reply.problem(409, "already-active");
}

#[actix_web::test]
async fn an_expired_code_returns_410_with_reason_expired() {
    // Arrange
    let app = TestApp::spawn().await;
    let code = app.register_and_deliver(EMAIL, PASSWORD).await;
    app.advance(60 * SECOND);

    // Act
    let right = app.activate(EMAIL, PASSWORD, &code).await;
    let wrong = app.activate(EMAIL, PASSWORD, other_than(&code)).await;

    // Assert
    assert_eq!(
        right.problem(410, "activation-code-expired")["reason"],
        "expired"
    );
    assert_eq!(
        wrong.problem(410, "activation-code-expired")["reason"],
        "expired"
    );
    assert_eq!(
        app.me(EMAIL, PASSWORD).await.json_with(StatusCode::OK)["status"],
        "pending"
    );
}

#[actix_web::test]
async fn wrong_codes_count_down_and_the_fifth_kills_the_code() {
    // Arrange
    let app = TestApp::spawn().await;
    let code = app.register_and_deliver(EMAIL, PASSWORD).await;
    let wrong = other_than(&code);

    for remaining in (0..5).rev() {
        // Act
        let reply = app.activate(EMAIL, PASSWORD, wrong).await;

        // Assert
        let body = reply.problem(400, "wrong-activation-code");
        assert_eq!(body["attempts_remaining"], json!(remaining));
    }
    let after = app.activate(EMAIL, PASSWORD, &code).await;
    assert_eq!(
        after.problem(410, "activation-code-expired")["reason"],
        "too_many_attempts"
    );
    assert_eq!(
        app.me(EMAIL, PASSWORD).await.json_with(StatusCode::OK)["status"],
        "pending"
    );
}

#[actix_web::test]
async fn a_code_whose_email_was_not_accepted_yet_counts_as_wrong_even_with_the_right_digits() {
    // Arrange
    let app = TestApp::spawn().await;
    app.entropy.will_draw(&["0421"]);
    app.register(EMAIL, PASSWORD).await;

    // Act
    let reply = app.activate(EMAIL, PASSWORD, "0421").await;

    // Assert
    let body = reply.problem(400, "wrong-activation-code");
    assert_eq!(body["attempts_remaining"], json!(4));
    app.deliver().await;
    assert_eq!(app.code_for(EMAIL), "0421");
    app.activate(EMAIL, PASSWORD, "0421")
        .await
        .json_with(StatusCode::OK);
}

#[actix_web::test]
async fn a_failed_activation_leaves_the_account_pending() {
    // Arrange
    let app = TestApp::spawn().await;
    let code = app.register_and_deliver(EMAIL, PASSWORD).await;

    // Act
    app.activate(EMAIL, PASSWORD, other_than(&code)).await;

    // Assert
    let me = app.me(EMAIL, PASSWORD).await.json_with(StatusCode::OK);
    assert_eq!(me["status"], "pending");
    assert_eq!(me["activated_at"], serde_json::Value::Null);
}

#[actix_web::test]
async fn two_concurrent_correct_submissions_give_one_200_and_one_409() {
    // Arrange
    let app = TestApp::spawn().await;
    let code = app.register_and_deliver(EMAIL, PASSWORD).await;

    // Act
    let (first, second) = join(
        app.activate(EMAIL, PASSWORD, &code),
        app.activate(EMAIL, PASSWORD, &code),
    )
    .await;

    // Assert
    let mut statuses = [first.status.as_u16(), second.status.as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409]);
}

#[actix_web::test]
async fn registration_answers_201_while_the_mail_server_is_down_and_the_code_works_once_it_is_back()
{
    // Arrange
    let app = TestApp::spawn().await;
    app.mailer
        .will_fail([MailError::Transient("421 try again later".into())]);
    app.register(EMAIL, PASSWORD).await;
    assert_eq!(app.deliver().await.retried, 1);
    app.advance(5 * 60 * SECOND);
    assert_eq!(app.deliver().await.sent, 1);
    let code = app.code_for(EMAIL);
    app.advance(59 * SECOND);

    // Act
    let reply = app.activate(EMAIL, PASSWORD, &code).await;

    // Assert
    reply.json_with(StatusCode::OK);
}

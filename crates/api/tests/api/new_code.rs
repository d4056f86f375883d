//! `POST /v1/users/me/activation-code`: 202 with the code's lifetime and cooldown, the previous
//! code dies, one code per 30 s and ten per 24 h per account, 409 once active, no body.

use actix_web::{http::StatusCode, test::TestRequest};
use serde_json::json;

use crate::helpers::{EMAIL, MINUTE, PASSWORD, SECOND, TestApp, WRONG_PASSWORD, basic};

const DAY_SECONDS: u64 = 24 * 60 * 60;

#[actix_web::test]
async fn a_new_code_returns_202_with_its_lifetime_and_when_to_ask_again() {
    // Arrange
    let app = TestApp::spawn().await;
    app.register(EMAIL, PASSWORD).await;
    app.advance(30 * SECOND);

    // Act
    let reply = app.new_code(EMAIL, PASSWORD).await;

    // Assert
    let body = reply.json_with(StatusCode::ACCEPTED);
    assert_eq!(
        body,
        json!({ "expires_in_seconds": 60, "resend_after_seconds": 30 })
    );
}

#[actix_web::test]
async fn a_new_code_takes_no_body_nor_content_type() {
    // Arrange
    let app = TestApp::spawn().await;
    app.register(EMAIL, PASSWORD).await;
    app.advance(MINUTE);
    let request = TestRequest::post()
        .uri("/v1/users/me/activation-code")
        .insert_header(basic(EMAIL, PASSWORD));

    // Act
    let reply = app.send(request).await;

    // Assert
    reply.json_with(StatusCode::ACCEPTED);
}

#[actix_web::test]
async fn a_new_code_within_30_seconds_of_registration_returns_429_with_retry_after() {
    // Arrange
    let app = TestApp::spawn().await;
    app.register(EMAIL, PASSWORD).await;
    app.advance(10 * SECOND);

    // Act
    let reply = app.new_code(EMAIL, PASSWORD).await;

    // Assert
    reply.problem(429, "too-many-requests");
    assert_eq!(reply.retry_after(), 20);
}

#[actix_web::test]
async fn a_new_code_within_30_seconds_of_the_previous_one_returns_429() {
    // Arrange
    let app = TestApp::spawn().await;
    app.register(EMAIL, PASSWORD).await;
    app.advance(30 * SECOND);
    app.new_code(EMAIL, PASSWORD)
        .await
        .json_with(StatusCode::ACCEPTED);
    app.advance(29 * SECOND);

    // Act
    let reply = app.new_code(EMAIL, PASSWORD).await;

    // Assert
    reply.problem(429, "too-many-requests");
    assert_eq!(reply.retry_after(), 1);
    app.advance(SECOND);
    app.new_code(EMAIL, PASSWORD)
        .await
        .json_with(StatusCode::ACCEPTED);
}

#[actix_web::test]
async fn the_previous_code_no_longer_works_after_a_new_one() {
    // Arrange
    let app = TestApp::spawn().await;
    app.entropy.will_draw(&["1111", "2222"]);
    let old = app.register_and_deliver(EMAIL, PASSWORD).await;
    app.advance(30 * SECOND);
    app.new_code(EMAIL, PASSWORD)
        .await
        .json_with(StatusCode::ACCEPTED);
    app.deliver().await;
    let new = app.code_for(EMAIL);
    assert_eq!((old.as_str(), new.as_str()), ("1111", "2222"));

    // Act
    let with_old = app.activate(EMAIL, PASSWORD, &old).await;
    let with_new = app.activate(EMAIL, PASSWORD, &new).await;

    // Assert
    with_old.problem(400, "wrong-activation-code");
    assert_eq!(with_new.json_with(StatusCode::OK)["status"], "active");
}

#[actix_web::test]
async fn the_previous_codes_email_is_not_sent_once_a_new_code_is_issued() {
    // Arrange: the registration's email has not gone out yet
    let app = TestApp::spawn().await;
    app.entropy.will_draw(&["1111", "2222"]);
    app.register(EMAIL, PASSWORD).await;
    app.advance(30 * SECOND);

    // Act
    app.new_code(EMAIL, PASSWORD)
        .await
        .json_with(StatusCode::ACCEPTED);
    let report = app.deliver().await;

    // Assert
    assert_eq!((report.sent, report.cancelled), (1, 0));
    let sent = app.mailer.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(app.code_for(EMAIL), "2222");
}

#[actix_web::test]
async fn a_new_code_gets_fresh_attempts() {
    // Arrange: the first code died of wrong guesses
    let app = TestApp::spawn().await;
    app.entropy.will_draw(&["1111", "2222"]);
    app.register_and_deliver(EMAIL, PASSWORD).await;
    for _ in 0..5 {
        app.activate(EMAIL, PASSWORD, "9999").await;
    }
    app.advance(30 * SECOND);
    app.new_code(EMAIL, PASSWORD)
        .await
        .json_with(StatusCode::ACCEPTED);
    app.deliver().await;

    // Act
    let wrong = app.activate(EMAIL, PASSWORD, "9999").await;

    // Assert
    assert_eq!(
        wrong.problem(400, "wrong-activation-code")["attempts_remaining"],
        json!(4)
    );
    app.activate(EMAIL, PASSWORD, "2222")
        .await
        .json_with(StatusCode::OK);
}

#[actix_web::test]
async fn the_eleventh_code_in_24_hours_returns_429_until_the_first_leaves_the_window() {
    // Arrange: the registration's code and nine new ones
    let app = TestApp::spawn().await;
    app.register(EMAIL, PASSWORD).await;
    for _ in 0..9 {
        app.advance(30 * SECOND);
        app.new_code(EMAIL, PASSWORD)
            .await
            .json_with(StatusCode::ACCEPTED);
    }
    app.advance(30 * SECOND);

    // Act
    let reply = app.new_code(EMAIL, PASSWORD).await;

    // Assert: the first code was issued 300 s ago
    reply.problem(429, "too-many-requests");
    assert_eq!(reply.retry_after(), DAY_SECONDS - 300);
    app.advance(std::time::Duration::from_secs(DAY_SECONDS - 300));
    app.new_code(EMAIL, PASSWORD)
        .await
        .json_with(StatusCode::ACCEPTED);
}

#[actix_web::test]
async fn the_tenth_code_reports_a_resend_wait_that_reaches_past_the_cooldown() {
    // Arrange
    let app = TestApp::spawn().await;
    app.register(EMAIL, PASSWORD).await;
    for _ in 0..8 {
        app.advance(30 * SECOND);
        app.new_code(EMAIL, PASSWORD)
            .await
            .json_with(StatusCode::ACCEPTED);
    }
    app.advance(30 * SECOND);

    // Act
    let reply = app.new_code(EMAIL, PASSWORD).await;

    // Assert: the next code may come once the first leaves the 24-hour window
    let body = reply.json_with(StatusCode::ACCEPTED);
    assert_eq!(body["resend_after_seconds"], json!(DAY_SECONDS - 270));
}

#[actix_web::test]
async fn an_active_account_gets_409_already_active() {
    // Arrange
    let app = TestApp::spawn().await;
    app.active_account(EMAIL, PASSWORD).await;
    app.advance(MINUTE);

    // Act
    let reply = app.new_code(EMAIL, PASSWORD).await;

    // Assert
    reply.problem(409, "already-active");
}

#[actix_web::test]
async fn a_new_code_needs_valid_credentials() {
    // Arrange
    let app = TestApp::spawn().await;
    app.register(EMAIL, PASSWORD).await;
    app.advance(MINUTE);

    // Act
    let wrong = app.new_code(EMAIL, WRONG_PASSWORD).await;
    let none = app
        .send(TestRequest::post().uri("/v1/users/me/activation-code"))
        .await;

    // Assert
    wrong.assert_unauthorized();
    none.assert_unauthorized();
    assert_eq!(app.deliver().await.sent, 1, "only the registration's email");
}

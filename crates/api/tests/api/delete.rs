//! `DELETE /v1/users/me`: 204 with no body; the account, its codes and its queued email are
//! gone at once, the old credentials answer 401 and the address can be registered again.

use actix_web::{http::StatusCode, test::TestRequest};

use crate::helpers::{EMAIL, PASSWORD, Reply, SECOND, TestApp, WRONG_PASSWORD, basic};

const OTHER_PASSWORD: &str = "an entirely different passphrase";

async fn delete(app: &TestApp, email: &str, password: &str) -> Reply {
    app.send(
        TestRequest::delete()
            .uri("/v1/users/me")
            .insert_header(basic(email, password)),
    )
    .await
}

#[actix_web::test]
async fn deleting_a_pending_account_returns_204_and_its_credentials_then_fail() {
    // Arrange
    let app = TestApp::spawn().await;
    app.register(EMAIL, PASSWORD).await;

    // Act
    let reply = delete(&app, EMAIL, PASSWORD).await;

    // Assert
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(reply.body.is_empty());
    assert_eq!(reply.header("content-type"), None);
    app.me(EMAIL, PASSWORD).await.assert_unauthorized();
    delete(&app, EMAIL, PASSWORD).await.assert_unauthorized();
}

#[actix_web::test]
async fn deleting_an_active_account_frees_the_address_at_once() {
    // Arrange
    let app = TestApp::spawn().await;
    app.active_account(EMAIL, PASSWORD).await;

    // Act
    let reply = delete(&app, EMAIL, PASSWORD).await;

    // Assert
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let again = app.register(EMAIL, OTHER_PASSWORD).await;
    assert_eq!(again["status"], "pending");
    app.me(EMAIL, PASSWORD).await.assert_unauthorized();
    app.me(EMAIL, OTHER_PASSWORD)
        .await
        .json_with(StatusCode::OK);
}

#[actix_web::test]
async fn the_queued_activation_email_of_a_deleted_account_is_never_sent() {
    // Arrange
    let app = TestApp::spawn().await;
    app.register(EMAIL, PASSWORD).await;

    // Act
    delete(&app, EMAIL, PASSWORD).await;
    let report = app.deliver().await;

    // Assert
    assert_eq!(report.handled(), 0, "{report:?}");
    assert!(app.mailer.sent().is_empty());
}

#[actix_web::test]
async fn deleting_with_a_wrong_password_returns_401_and_erases_nothing() {
    // Arrange
    let app = TestApp::spawn().await;
    app.register(EMAIL, PASSWORD).await;

    // Act
    let reply = delete(&app, EMAIL, WRONG_PASSWORD).await;

    // Assert
    reply.assert_unauthorized();
    app.me(EMAIL, PASSWORD).await.json_with(StatusCode::OK);
}

#[actix_web::test]
async fn deleting_is_throttled_like_every_authenticated_route() {
    // Arrange
    let app = TestApp::spawn().await;
    app.register(EMAIL, PASSWORD).await;
    for _ in 0..10 {
        delete(&app, EMAIL, WRONG_PASSWORD)
            .await
            .assert_unauthorized();
    }

    // Act
    let reply = delete(&app, EMAIL, PASSWORD).await;

    // Assert
    reply.problem(429, "too-many-requests");
    app.advance(15 * 60 * SECOND);
    assert_eq!(
        delete(&app, EMAIL, PASSWORD).await.status,
        StatusCode::NO_CONTENT
    );
}

#[actix_web::test]
async fn the_account_resource_allows_get_head_and_delete() {
    // Arrange
    let app = TestApp::spawn().await;

    // Act
    let reply = app.send(TestRequest::put().uri("/v1/users/me")).await;

    // Assert
    reply.problem(405, "method-not-allowed");
    assert_eq!(reply.header("allow"), Some("GET, HEAD, DELETE"));
}

//! Operations: liveness, readiness, metrics, and how the API answers while the store is
//! unreachable or password hashing is saturated.

use actix_web::{http::StatusCode, test::TestRequest};

use crate::helpers::{EMAIL, METRICS_TEXT, MINUTE, OTHER_PASSWORD, PASSWORD, TestApp, json_post};

#[actix_web::test]
async fn healthz_returns_200() {
    // Arrange
    let app = TestApp::spawn().await;

    // Act
    let reply = app.send(TestRequest::get().uri("/healthz")).await;

    // Assert
    reply.json_with(StatusCode::OK);
}

#[actix_web::test]
async fn healthz_returns_200_even_while_the_store_is_unreachable() {
    // Arrange
    let app = TestApp::spawn().await;
    app.store.simulate_outage(true);

    // Act
    let reply = app.send(TestRequest::get().uri("/healthz")).await;

    // Assert
    reply.json_with(StatusCode::OK);
}

#[actix_web::test]
async fn readyz_returns_200_when_the_store_answers() {
    // Arrange
    let app = TestApp::spawn().await;

    // Act
    let reply = app.send(TestRequest::get().uri("/readyz")).await;

    // Assert
    reply.json_with(StatusCode::OK);
}

#[actix_web::test]
async fn readyz_returns_503_unavailable_while_the_store_is_unreachable_and_200_once_it_is_back() {
    // Arrange
    let app = TestApp::spawn().await;
    app.store.simulate_outage(true);

    // Act
    let down = app.send(TestRequest::get().uri("/readyz")).await;
    app.store.simulate_outage(false);
    let back = app.send(TestRequest::get().uri("/readyz")).await;

    // Assert
    down.problem(503, "unavailable");
    down.retry_after();
    back.json_with(StatusCode::OK);
}

#[actix_web::test]
async fn requests_that_need_the_store_return_503_unavailable_during_an_outage() {
    // Arrange
    let app = TestApp::spawn().await;
    let code = app.register_and_deliver(EMAIL, PASSWORD).await;
    app.advance(MINUTE / 2);
    app.store.simulate_outage(true);

    // Act
    let register = app
        .post_register(&serde_json::json!({ "email": "grace@example.com", "password": PASSWORD }))
        .await;
    let me = app.me(EMAIL, PASSWORD).await;
    let activate = app.activate(EMAIL, PASSWORD, &code).await;
    let new_code = app.new_code(EMAIL, PASSWORD).await;

    // Assert
    for reply in [&register, &me, &activate, &new_code] {
        reply.problem(503, "unavailable");
        assert!(reply.retry_after() <= 60, "{reply}");
    }
}

#[actix_web::test]
async fn the_service_resumes_by_itself_when_the_store_is_back() {
    // Arrange
    let app = TestApp::spawn().await;
    let code = app.register_and_deliver(EMAIL, PASSWORD).await;
    app.store.simulate_outage(true);
    app.me(EMAIL, PASSWORD).await.problem(503, "unavailable");

    // Act
    app.store.simulate_outage(false);
    let reply = app.activate(EMAIL, PASSWORD, &code).await;

    // Assert
    reply.json_with(StatusCode::OK);
}

#[actix_web::test]
async fn failed_logins_during_an_outage_are_not_401() {
    // Arrange
    let app = TestApp::spawn().await;
    app.register(EMAIL, PASSWORD).await;
    app.store.simulate_outage(true);

    // Act
    let reply = app.me(EMAIL, OTHER_PASSWORD).await;

    // Assert
    reply.problem(503, "unavailable");
}

#[actix_web::test]
async fn metrics_returns_the_sources_text_as_prometheus_text() {
    // Arrange
    let app = TestApp::spawn().await;

    // Act
    let reply = app.send(TestRequest::get().uri("/metrics")).await;

    // Assert
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.media_type(), "text/plain");
    assert_eq!(reply.text(), METRICS_TEXT);
    reply.request_id();
}

#[actix_web::test]
async fn an_overloaded_hasher_makes_registration_answer_503_overloaded_at_once() {
    // Arrange
    let app = TestApp::spawn().await;
    app.hasher.set_overloaded(true);

    // Act
    let reply = app
        .send(json_post(
            "/v1/users",
            &serde_json::json!({ "email": EMAIL, "password": PASSWORD }),
        ))
        .await;

    // Assert
    reply.problem(503, "overloaded");
    reply.retry_after();
    app.hasher.set_overloaded(false);
    app.register(EMAIL, PASSWORD).await;
}

#[actix_web::test]
async fn an_overloaded_hasher_refuses_registration_before_the_body_is_validated() {
    // Arrange
    let app = TestApp::spawn().await;
    app.hasher.set_overloaded(true);

    // Act: a password that validation would refuse with 422
    let reply = app
        .send(json_post(
            "/v1/users",
            &serde_json::json!({ "email": EMAIL, "password": "password" }),
        ))
        .await;

    // Assert
    reply.problem(503, "overloaded");
    reply.retry_after();
}

#[actix_web::test]
async fn an_overloaded_hasher_makes_basic_auth_answer_503_overloaded() {
    // Arrange
    let app = TestApp::spawn().await;
    app.register(EMAIL, PASSWORD).await;
    app.hasher.set_overloaded(true);

    // Act
    let me = app.me(EMAIL, PASSWORD).await;
    let unknown = app.me("nobody@example.com", PASSWORD).await;

    // Assert
    me.problem(503, "overloaded");
    unknown.problem(503, "overloaded");
    app.hasher.set_overloaded(false);
    app.me(EMAIL, PASSWORD).await.json_with(StatusCode::OK);
}

//! Operations: liveness, readiness, metrics, and how the API answers while the store is
//! unreachable or password hashing is saturated.

use std::time::Duration;

use actix_web::{http::StatusCode, test::TestRequest};
use tokio::time::{self, Instant};

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
async fn refusals_beyond_their_pace_wait_their_turn_and_nothing_else_waits() {
    // Arrange: one refusal a second, after a burst of two seconds' worth; Tokio's clock is
    // paused, so a hold passes in no real time and is measured exactly.
    time::pause();
    let app = TestApp::spawn_paced(Duration::from_secs(1)).await;
    app.hasher.set_overloaded(true);
    let registration = serde_json::json!({ "email": EMAIL, "password": PASSWORD });
    let timed = |request| {
        let app = &app;
        async move {
            let start = Instant::now();
            let reply = app.send(request).await;
            (reply, start.elapsed())
        }
    };

    // Act
    let (first, first_held) = timed(json_post("/v1/users", &registration)).await;
    let (second, second_held) = timed(json_post("/v1/users", &registration)).await;
    let (third, third_held) = timed(json_post("/v1/users", &registration)).await;
    let (health, health_held) = timed(TestRequest::get().uri("/healthz")).await;
    let (invalid, invalid_held) = timed(json_post("/v1/users", &serde_json::json!({}))).await;

    // Assert
    for refusal in [&first, &second, &third] {
        refusal.problem(503, "overloaded");
        refusal.retry_after();
    }
    // Tokio's timer rounds a deadline up to its next millisecond.
    let a_second = Duration::from_secs(1)..=Duration::from_millis(1001);
    assert_eq!(
        [first_held, second_held],
        [Duration::ZERO; 2],
        "the burst goes at once"
    );
    assert!(
        a_second.contains(&third_held),
        "the next refusal a second later: {third_held:?}"
    );
    health.json_with(StatusCode::OK);
    assert_eq!(health_held, Duration::ZERO, "only refusals are paced");
    invalid.problem(503, "overloaded");
    assert!(
        a_second.contains(&invalid_held),
        "refused before its body is read, and paced like the others: {invalid_held:?}"
    );
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

//! Issuing a fresh code: the cooldown, the daily cap, and accounts that need no code.

use registrar_application::Error;
use registrar_domain::CodeIssued;

use crate::support::{App, DAY, SECOND, retry_after, t0};

#[tokio::test]
async fn a_new_code_within_thirty_seconds_of_registration_is_refused_with_the_time_left() {
    let app = App::new();
    let who = app.registered("ada@example.com", "0421").await;
    app.advance(10 * SECOND);

    let result = app.issue_code(&who).await;

    assert_eq!(retry_after(result), 20 * SECOND);
    assert_eq!(app.outbox_depth().await, 1, "only the registration's email");
}

#[tokio::test]
async fn a_new_code_after_the_cooldown_is_issued_and_its_email_queued() {
    let app = App::new();
    let who = app
        .registered_and_delivered("ada@example.com", "0421")
        .await;
    app.advance(30 * SECOND);
    app.entropy.will_draw(&["1111"]);

    let issued = app.issue_code(&who).await.unwrap();

    assert_eq!(
        issued,
        CodeIssued {
            expires_in: 60 * SECOND,
            resend_after: 30 * SECOND
        }
    );
    assert_eq!(app.outbox_depth().await, 1);
    assert_eq!(app.deliver().await.sent, 1);
    assert_eq!(app.mailer.sent().len(), 2);
    assert_eq!(
        app.mailer.last_code_for("ada@example.com").as_deref(),
        Some("1111")
    );
}

#[tokio::test]
async fn the_eleventh_code_within_a_day_is_refused_until_the_first_is_a_day_old() {
    let app = App::new();
    let who = app.registered("ada@example.com", "0421").await;
    let mut tenth = None;
    for _ in 1..app.codes.daily_cap() {
        app.advance(app.codes.cooldown());
        tenth = Some(app.issue_code(&who).await.unwrap());
    }
    let tenth_at = app.now().duration_since(t0()).unwrap();
    app.advance(app.codes.cooldown());
    let eleventh_at = app.now().duration_since(t0()).unwrap();

    let eleventh = app.issue_code(&who).await;

    assert_eq!(
        tenth.map(|issued| issued.resend_after),
        Some(DAY - tenth_at)
    );
    assert_eq!(retry_after(eleventh), DAY - eleventh_at);
    app.advance(DAY - eleventh_at);
    assert!(app.issue_code(&who).await.is_ok());
}

#[tokio::test]
async fn an_active_account_gets_no_new_code() {
    let app = App::new();
    let who = app
        .registered_and_delivered("ada@example.com", "0421")
        .await;
    app.activate(&who, "0421").await.unwrap();
    app.advance(app.codes.cooldown());

    let result = app.issue_code(&who).await;

    assert!(matches!(result, Err(Error::AlreadyActive)), "{result:?}");
    assert_eq!(app.outbox_depth().await, 0);
}

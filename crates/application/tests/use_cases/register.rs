//! Registering: a new pending account with its activation email, and the rules for an address
//! that is already registered.

use std::sync::Arc;

use futures_util::FutureExt;
use registrar_application::{
    Accounts, DeliveryReport, Error, RateLimits, ports::MailError, testing::PassingStore,
};
use registrar_domain::UserStatus;
use tokio::sync::Barrier;

use crate::support::{
    App, CLIENT, DAY, MINUTE, OTHER_CLIENT, OTHER_PASSWORD, PASSWORD, SECOND, registration,
    retry_after, t0,
};

#[tokio::test]
async fn registration_returns_a_pending_user_with_the_email_trimmed_and_its_domain_lower_cased() {
    let app = App::new();

    let user = app.register("  Ada@Example.COM ", PASSWORD).await.unwrap();

    assert_eq!(user.email().as_str(), "Ada@example.com");
    assert_eq!(user.status(), UserStatus::Pending);
    assert_eq!(user.created_at(), t0());
    let stored = app.stored("ada@example.com").await.unwrap();
    assert_eq!(stored.account.user(), &user);
}

#[tokio::test]
async fn registration_queues_exactly_one_activation_email_carrying_the_drawn_code() {
    let app = App::new();
    app.entropy.will_draw(&["0421"]);

    app.register("ada@example.com", PASSWORD).await.unwrap();

    assert_eq!(app.outbox_depth().await, 1);
    let report = app.deliver().await;
    assert_eq!(
        report,
        DeliveryReport {
            sent: 1,
            ..DeliveryReport::default()
        }
    );
    let sent = app.mailer.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to.as_str(), "ada@example.com");
    assert_eq!(sent[0].code.reveal(), "0421");
    assert_eq!(app.outbox_depth().await, 0);
}

#[tokio::test]
async fn registration_wakes_the_dispatcher_and_a_refused_one_does_not() {
    let app = App::new();

    app.register("ada@example.com", PASSWORD).await.unwrap();
    let woken = app.signal.notified().now_or_never();
    let refused = app.register("ada@example.com", OTHER_PASSWORD).await;
    let woken_again = app.signal.notified().now_or_never();

    assert!(woken.is_some());
    assert!(matches!(refused, Err(Error::EmailTaken)), "{refused:?}");
    assert!(woken_again.is_none());
}

#[tokio::test]
async fn an_address_whose_code_is_waiting_to_be_sent_is_taken_even_in_another_case() {
    let app = App::new();
    app.register("ada@example.com", PASSWORD).await.unwrap();
    app.advance(MINUTE);

    let result = app.register("ADA@EXAMPLE.com", OTHER_PASSWORD).await;

    assert!(matches!(result, Err(Error::EmailTaken)), "{result:?}");
    assert!(app.login("ada@example.com", PASSWORD).await.is_ok());
    assert_eq!(app.outbox_depth().await, 1);
}

#[tokio::test]
async fn an_address_whose_code_is_still_usable_is_taken() {
    let app = App::new();
    app.registered_and_delivered("ada@example.com", "0421")
        .await;
    // Past the cooldown, one second before the code expires.
    app.advance(app.codes.ttl() - SECOND);

    let result = app.register("Ada@example.com", OTHER_PASSWORD).await;

    assert!(matches!(result, Err(Error::EmailTaken)), "{result:?}");
    assert!(app.login("ada@example.com", PASSWORD).await.is_ok());
}

#[tokio::test]
async fn an_address_of_an_active_account_is_taken_for_good() {
    let app = App::new();
    let who = app
        .registered_and_delivered("ada@example.com", "0421")
        .await;
    app.activate(&who, "0421").await.unwrap();
    app.advance(7 * DAY);

    let result = app.register("ada@example.com", OTHER_PASSWORD).await;

    assert!(matches!(result, Err(Error::EmailTaken)), "{result:?}");
}

#[tokio::test]
async fn an_address_whose_code_expired_is_taken_over_by_the_new_registration() {
    let app = App::new();
    let original = app.register("ada@example.com", PASSWORD).await.unwrap();
    app.deliver().await;
    app.advance(app.codes.ttl() + SECOND);
    app.entropy.will_draw(&["1111"]);

    let taken_over = app
        .register("ADA@example.com", OTHER_PASSWORD)
        .await
        .unwrap();

    assert_eq!(taken_over.id(), original.id());
    assert_eq!(taken_over.email().as_str(), "ADA@example.com");
    assert_eq!(taken_over.status(), UserStatus::Pending);
    assert_eq!(taken_over.created_at(), app.now());
    let old = app.login("ada@example.com", PASSWORD).await;
    assert!(matches!(old, Err(Error::Unauthorized)), "{old:?}");
    let who = app.login("ada@example.com", OTHER_PASSWORD).await.unwrap();
    assert_eq!(who.user().id(), original.id());
    assert_eq!(app.deliver().await.sent, 1);
    assert_eq!(
        app.mailer.last_code_for("ADA@example.com").as_deref(),
        Some("1111")
    );
    assert!(app.activate(&who, "1111").await.is_ok());
}

#[tokio::test]
async fn a_takeover_within_the_code_cooldown_is_refused_with_the_time_left() {
    let app = App::new();
    app.register("ada@example.com", PASSWORD).await.unwrap();
    app.mailer
        .will_fail([MailError::Permanent("550 no such user".into())]);
    app.advance(10 * SECOND);
    assert_eq!(app.deliver().await.failed, 1);
    let hashes = app.hasher.calls();

    let result = app.register("ada@example.com", OTHER_PASSWORD).await;

    assert_eq!(retry_after(result), 20 * SECOND);
    assert_eq!(
        app.hasher.calls(),
        hashes,
        "a refused takeover must not pay for a hash"
    );
    app.advance(20 * SECOND);
    assert!(
        app.register("ada@example.com", OTHER_PASSWORD)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn takeovers_count_towards_the_daily_code_cap() {
    let app = App::new();
    let who = app.registered("ada@example.com", "0000").await;
    for _ in 1..app.codes.daily_cap() {
        app.advance(app.codes.cooldown());
        app.issue_code(&who).await.unwrap();
    }
    app.deliver().await;
    app.advance(app.codes.ttl() + SECOND);
    let elapsed = app.now().duration_since(t0()).unwrap();

    let result = app.register("ada@example.com", OTHER_PASSWORD).await;

    assert_eq!(retry_after(result), DAY - elapsed);
    assert!(app.login("ada@example.com", PASSWORD).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_registrations_of_one_address_give_one_account_and_one_email_taken() {
    // Several rounds, so the two requests really do overlap in some of them.
    for round in 0..20 {
        let app = App::new();
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = [
            ("ada@example.com", PASSWORD),
            ("ADA@example.com", OTHER_PASSWORD),
        ]
        .into_iter()
        .map(|(email, password)| {
            let (accounts, barrier) = (Arc::clone(&app.accounts), Arc::clone(&barrier));
            let registration = registration(email, password);
            tokio::spawn(async move {
                barrier.wait().await;
                accounts.register(registration, CLIENT).await
            })
        })
        .collect();

        let mut outcomes = Vec::new();
        for racer in racers {
            outcomes.push(racer.await.unwrap());
        }

        let registered = outcomes.iter().filter(|o| o.is_ok()).count();
        let taken = outcomes
            .iter()
            .filter(|o| matches!(o, Err(Error::EmailTaken)))
            .count();
        assert_eq!((registered, taken), (1, 1), "round {round}: {outcomes:?}");
        assert_eq!(app.outbox_depth().await, 1, "round {round}");
    }
}

#[tokio::test]
async fn a_taken_address_is_refused_before_any_password_is_hashed() {
    let app = App::new();
    app.register("ada@example.com", PASSWORD).await.unwrap();
    let hashes = app.hasher.calls();

    let result = app.register("ada@example.com", OTHER_PASSWORD).await;

    assert!(matches!(result, Err(Error::EmailTaken)), "{result:?}");
    assert_eq!(app.hasher.calls(), hashes);
}

#[tokio::test]
async fn registration_while_the_hashing_pool_is_full_answers_overloaded_and_stores_nothing() {
    let app = App::new();
    app.hasher.set_overloaded(true);

    let result = app.register("ada@example.com", PASSWORD).await;

    assert!(
        matches!(result, Err(Error::Overloaded { retry_after }) if retry_after == SECOND),
        "{result:?}"
    );
    assert!(app.stored("ada@example.com").await.is_none());
    assert_eq!(app.outbox_depth().await, 0);
}

#[tokio::test]
async fn registrations_are_limited_per_client_address() {
    let app = App::new();
    let limit = RateLimits::default().registrations_per_address;
    for i in 0..limit.max {
        app.register(&format!("user{i}@example.com"), PASSWORD)
            .await
            .unwrap();
    }
    app.advance(MINUTE);

    let over = app.register("ada@example.com", PASSWORD).await;
    let elsewhere = app
        .register_from("bob@example.com", PASSWORD, OTHER_CLIENT)
        .await;

    assert_eq!(retry_after(over), limit.window - MINUTE);
    assert!(elsewhere.is_ok(), "{elsewhere:?}");
    app.advance(limit.window - MINUTE);
    assert!(
        app.register_from("ada@example.com", PASSWORD, CLIENT)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_registration_counts_against_its_address_and_reads_the_account_in_one_store_call() {
    let app = App::new();
    let store = PassingStore::new(app.store.clone());
    let accounts = app.accounts_over(store.clone());

    accounts
        .register(registration("ada@example.com", PASSWORD), CLIENT)
        .await
        .unwrap();

    assert_eq!(store.calls("registration_state"), 1);
    assert_eq!(store.calls("throttle_hit"), 0);
    assert_eq!(store.calls("account_by_email"), 0);
    assert_eq!(store.calls("save"), 1);
}

#[tokio::test]
async fn without_per_address_limits_registrations_from_one_address_are_not_limited() {
    let app = App::with_limits(RateLimits {
        per_address: false,
        ..RateLimits::default()
    });
    let max = RateLimits::default().registrations_per_address.max;

    for i in 0..=max {
        let result = app
            .register(&format!("user{i}@example.com"), PASSWORD)
            .await;

        assert!(result.is_ok(), "registration {i}: {result:?}");
    }
}

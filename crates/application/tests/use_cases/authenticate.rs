//! Authenticating: Basic-auth credentials against the stored hash, the same failure for every
//! wrong case, throttling per account and per client address, and re-hashing stale hashes.

use registrar_application::{Error, RateLimits};

use crate::support::{App, MINUTE, OTHER_CLIENT, PASSWORD, SECOND, WRONG_PASSWORD, retry_after};

#[tokio::test]
async fn the_right_password_authenticates_the_user_whatever_the_case_of_the_address() {
    let app = App::new();
    let user = app.register("Ada@example.com", PASSWORD).await.unwrap();

    let who = app.login("  ada@EXAMPLE.com ", PASSWORD).await.unwrap();

    assert_eq!(who.user(), &user);
}

#[tokio::test]
async fn a_wrong_password_is_unauthorized() {
    let app = App::new();
    app.register("ada@example.com", PASSWORD).await.unwrap();

    let result = app.login("ada@example.com", WRONG_PASSWORD).await;

    assert!(matches!(result, Err(Error::Unauthorized)), "{result:?}");
}

#[tokio::test]
async fn an_unknown_email_is_unauthorized_and_costs_one_hash_check_like_a_wrong_password() {
    let app = App::new();
    app.register("ada@example.com", PASSWORD).await.unwrap();
    // The first unknown address also makes the dummy hash the others are checked against.
    let _ = app.login("warm-up@example.com", PASSWORD).await;

    let before = app.hasher.calls();
    let wrong_password = app.login("ada@example.com", WRONG_PASSWORD).await;
    let wrong_password_cost = app.hasher.calls() - before;
    let before = app.hasher.calls();
    let unknown_email = app.login("bob@example.com", PASSWORD).await;
    let unknown_email_cost = app.hasher.calls() - before;

    assert!(
        matches!(wrong_password, Err(Error::Unauthorized)),
        "{wrong_password:?}"
    );
    assert!(
        matches!(unknown_email, Err(Error::Unauthorized)),
        "{unknown_email:?}"
    );
    assert_eq!(wrong_password_cost, 1);
    assert_eq!(unknown_email_cost, 1);
}

#[tokio::test]
async fn a_malformed_email_is_unauthorized_like_an_unknown_one() {
    let app = App::new();
    let _ = app.login("warm-up@example.com", PASSWORD).await;

    for malformed in [
        "",
        "not-an-email",
        "ada@",
        "@example.com",
        "ada@@example.com",
    ] {
        let before = app.hasher.calls();
        let result = app.login(malformed, PASSWORD).await;

        assert!(
            matches!(result, Err(Error::Unauthorized)),
            "{malformed:?}: {result:?}"
        );
        assert_eq!(app.hasher.calls() - before, 1, "{malformed:?}");
    }
}

#[tokio::test]
async fn after_ten_failures_an_account_is_throttled_even_with_the_right_password_until_the_window_ends()
 {
    let app = App::new();
    app.register("ada@example.com", PASSWORD).await.unwrap();
    app.register("bob@example.com", PASSWORD).await.unwrap();
    let limit = RateLimits::default().login_failures_per_account;
    for _ in 0..limit.max {
        let failure = app.login("ada@example.com", WRONG_PASSWORD).await;
        assert!(matches!(failure, Err(Error::Unauthorized)), "{failure:?}");
    }
    app.advance(5 * MINUTE);

    let throttled = app.login("ada@example.com", PASSWORD).await;
    let from_elsewhere = app
        .login_from("ADA@example.com", PASSWORD, OTHER_CLIENT)
        .await;
    let other_account = app.login("bob@example.com", PASSWORD).await;

    assert_eq!(retry_after(throttled), limit.window - 5 * MINUTE);
    assert_eq!(retry_after(from_elsewhere), limit.window - 5 * MINUTE);
    assert!(other_account.is_ok(), "{other_account:?}");
    app.advance(limit.window - 5 * MINUTE - SECOND);
    assert_eq!(
        retry_after(app.login("ada@example.com", PASSWORD).await),
        SECOND
    );
    app.advance(SECOND);
    assert!(app.login("ada@example.com", PASSWORD).await.is_ok());
}

#[tokio::test]
async fn after_fifty_failures_from_one_address_logins_from_it_are_throttled_even_with_the_right_password()
 {
    let app = App::new();
    app.register("ada@example.com", PASSWORD).await.unwrap();
    let limit = RateLimits::default().login_failures_per_address;
    for i in 0..limit.max {
        let failure = app.login(&format!("guess{i}@example.com"), PASSWORD).await;
        assert!(matches!(failure, Err(Error::Unauthorized)), "{failure:?}");
    }
    app.advance(MINUTE);

    let throttled = app.login("ada@example.com", PASSWORD).await;
    let from_elsewhere = app
        .login_from("ada@example.com", PASSWORD, OTHER_CLIENT)
        .await;

    assert_eq!(retry_after(throttled), limit.window - MINUTE);
    assert!(from_elsewhere.is_ok(), "{from_elsewhere:?}");
    app.advance(limit.window - MINUTE);
    assert!(app.login("ada@example.com", PASSWORD).await.is_ok());
}

#[tokio::test]
async fn without_per_address_limits_only_the_per_account_limit_applies() {
    let app = App::with_limits(RateLimits {
        per_address: false,
        ..RateLimits::default()
    });
    app.register("ada@example.com", PASSWORD).await.unwrap();
    let defaults = RateLimits::default();
    for i in 0..defaults.login_failures_per_address.max {
        let _ = app.login(&format!("guess{i}@example.com"), PASSWORD).await;
    }

    let not_throttled = app.login("ada@example.com", PASSWORD).await;
    for _ in 0..defaults.login_failures_per_account.max {
        let _ = app.login("ada@example.com", WRONG_PASSWORD).await;
    }
    let throttled = app.login("ada@example.com", PASSWORD).await;

    assert!(not_throttled.is_ok(), "{not_throttled:?}");
    assert_eq!(
        retry_after(throttled),
        defaults.login_failures_per_account.window
    );
}

#[tokio::test]
async fn a_login_with_a_stale_hash_succeeds_and_replaces_the_stored_hash_once() {
    let app = App::new();
    app.register("ada@example.com", PASSWORD).await.unwrap();
    let original = app.stored_hash("ada@example.com").await;
    app.hasher.strengthen();

    let before = app.hasher.calls();
    let first = app.login("ada@example.com", PASSWORD).await;
    let first_cost = app.hasher.calls() - before;
    let rehashed = app.stored_hash("ada@example.com").await;
    let before = app.hasher.calls();
    let second = app.login("ada@example.com", PASSWORD).await;
    let second_cost = app.hasher.calls() - before;

    assert!(first.is_ok(), "{first:?}");
    assert_ne!(rehashed, original);
    assert_eq!(first_cost, 2, "one check and one re-hash");
    assert!(second.is_ok(), "{second:?}");
    assert_eq!(second_cost, 1, "a current hash is only checked");
    assert_eq!(app.stored_hash("ada@example.com").await, rehashed);
}

#[tokio::test]
async fn a_full_hashing_pool_refuses_authentication_before_the_store_is_asked() {
    let app = App::new();
    app.register("ada@example.com", PASSWORD).await.unwrap();
    app.hasher.set_overloaded(true);
    // Any store access would now fail as Unavailable: an Overloaded answer proves none happened.
    app.store.simulate_outage(true);

    let result = app.login("ada@example.com", PASSWORD).await;

    assert!(
        matches!(result, Err(Error::Overloaded { retry_after }) if retry_after == SECOND),
        "{result:?}"
    );
}

//! Erasing an account: the account the credentials proved is erased, whatever its state; one
//! taken over since the credentials were checked is not the caller's any more.

use registrar_application::{Accounts, Error};

use crate::support::{App, OTHER_PASSWORD, PASSWORD, SECOND};

#[tokio::test]
async fn the_authenticated_account_is_erased_with_its_queued_email() {
    let app = App::new();
    let who = app.registered("ada@example.com", "0421").await;

    app.accounts.delete(&who).await.unwrap();

    assert!(app.stored("ada@example.com").await.is_none());
    assert_eq!(app.outbox_depth().await, 0);
    let login = app.login("ada@example.com", PASSWORD).await;
    assert!(matches!(login, Err(Error::Unauthorized)), "{login:?}");
}

#[tokio::test]
async fn an_account_already_erased_is_not_an_error() {
    let app = App::new();
    let who = app.registered("ada@example.com", "0421").await;
    app.accounts.delete(&who).await.unwrap();

    let again = app.accounts.delete(&who).await;

    assert!(again.is_ok(), "{again:?}");
}

#[tokio::test]
async fn an_account_taken_over_since_the_credentials_were_checked_is_left_alone() {
    let app = App::new();
    let who = app.registered("ada@example.com", "0421").await;
    app.deliver().await;
    app.advance(app.codes.ttl() + SECOND);
    app.register("ada@example.com", OTHER_PASSWORD)
        .await
        .unwrap();

    let result = app.accounts.delete(&who).await;

    assert!(matches!(result, Err(Error::Unauthorized)), "{result:?}");
    assert!(app.stored("ada@example.com").await.is_some());
    assert!(app.login("ada@example.com", OTHER_PASSWORD).await.is_ok());
}

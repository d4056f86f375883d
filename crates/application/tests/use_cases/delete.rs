//! Erasing an account: the account the credentials proved is erased, whatever its state; one
//! taken over since the credentials were checked is not the caller's any more.

use registrar_application::{Accounts, Credentials, Error, testing::PassingStore};
use registrar_domain::Password;

use crate::support::{App, CLIENT, OTHER_PASSWORD, PASSWORD, SECOND};

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

#[tokio::test]
async fn erasing_starts_from_the_account_authentication_read_and_reads_it_no_more() {
    let app = App::new();
    app.registered("ada@example.com", "0421").await;
    let store = PassingStore::new(app.store.clone());
    let accounts = app.accounts_over(store.clone());

    let credentials = Credentials::new("ada@example.com".to_owned(), Password::new(PASSWORD));
    let who = accounts.authenticate(credentials, CLIENT).await.unwrap();
    accounts.delete(&who).await.unwrap();

    assert_eq!(store.calls("account_by_id"), 0);
    assert_eq!(store.calls("delete_account"), 1);
    assert!(app.stored("ada@example.com").await.is_none());
}

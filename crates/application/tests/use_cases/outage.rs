//! Store outages: every use case answers `Unavailable` while the store is unreachable, and all
//! work again once it is back, without a restart.

use registrar_application::{Accounts, Error, ports::StoreError};

use crate::support::{App, OTHER_PASSWORD, PASSWORD, digits};

#[tokio::test]
async fn while_the_store_is_down_every_use_case_answers_unavailable() {
    let app = App::new();
    let who = app.registered("ada@example.com", "0421").await;

    app.store.simulate_outage(true);

    let register = app.register("bob@example.com", PASSWORD).await;
    let login = app.login("ada@example.com", PASSWORD).await;
    let ready = app.accounts.ready().await;
    let activate = app.accounts.activate(&who, digits("0421")).await;
    let issue = app.issue_code(&who).await;
    let deliver = app.dispatcher.deliver_due().await;
    assert!(
        matches!(register, Err(Error::Unavailable(_))),
        "{register:?}"
    );
    assert!(matches!(login, Err(Error::Unavailable(_))), "{login:?}");
    assert!(matches!(ready, Err(Error::Unavailable(_))), "{ready:?}");
    assert!(
        matches!(activate, Err(Error::Unavailable(_))),
        "{activate:?}"
    );
    assert!(matches!(issue, Err(Error::Unavailable(_))), "{issue:?}");
    assert!(
        matches!(deliver, Err(StoreError::Unavailable(_))),
        "{deliver:?}"
    );
}

#[tokio::test]
async fn the_use_cases_work_again_once_the_store_is_back() {
    let app = App::new();
    app.register("ada@example.com", PASSWORD).await.unwrap();
    app.store.simulate_outage(true);
    let _ = app.register("bob@example.com", OTHER_PASSWORD).await;
    let _ = app.login("ada@example.com", PASSWORD).await;

    app.store.simulate_outage(false);

    assert!(app.accounts.ready().await.is_ok());
    assert!(
        app.register("bob@example.com", OTHER_PASSWORD)
            .await
            .is_ok()
    );
    let who = app.login("ada@example.com", PASSWORD).await.unwrap();
    assert_eq!(app.deliver().await.sent, 2);
    let ada_code = app.mailer.last_code_for("ada@example.com").unwrap();
    assert!(app.activate(&who, &ada_code).await.is_ok());
}

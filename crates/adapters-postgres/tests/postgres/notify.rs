//! LISTEN/NOTIFY: mail queued through one store (one replica) wakes the dispatcher of another,
//! only mail does, and a store is not told of the mail it queued itself.

use std::{future::poll_fn, pin::pin, time::Duration};

use futures_util::StreamExt;
use registrar_adapters_postgres::PgStore;
use registrar_application::{
    DispatchSignal,
    ports::{AccountChange, Store},
    testing::t0,
};
use registrar_domain::{Email, PasswordHash};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::helpers::{TestDatabase, register};

/// Generous for a loaded CI machine; the wake-up normally takes milliseconds.
const PATIENCE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_queued_through_one_store_wakes_the_dispatcher_of_another() {
    let database = TestDatabase::migrated().await;
    let listening = PgStore::new(&database.settings()).unwrap();
    let other_replica = PgStore::new(&database.settings()).unwrap();
    let signal = DispatchSignal::default();
    let forwarding = tokio::spawn({
        let signal = signal.clone();
        async move { listening.forward_mail_notifications(signal).await }
    });
    // The first poke comes once the listener is connected (it stands for whatever it missed).
    tokio::time::timeout(PATIENCE, signal.notified())
        .await
        .expect("the listener never connected");

    register(&other_replica, 10, "ada@example.com").await;

    tokio::time::timeout(PATIENCE, signal.notified())
        .await
        .expect("mail queued on another store did not wake this dispatcher");
    forwarding.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_hears_of_the_mail_other_stores_queue_and_not_of_its_own() {
    let database = TestDatabase::migrated().await;
    let listening = PgStore::new(&database.settings()).unwrap();
    let other_replica = PgStore::new(&database.settings()).unwrap();
    let mut heard = pin!(listening.mail_queued_elsewhere().await.unwrap());

    register(&listening, 10, "ada@example.com").await;
    register(&other_replica, 20, "bob@example.com").await;
    register(&listening, 30, "cy@example.com").await;
    // Notifications arrive in the order their transactions committed, so one sent now, from a
    // session of no store, comes after every notification of the registrations above.
    database
        .connect()
        .await
        .batch_execute("NOTIFY registrar_outbox, 'end'")
        .await
        .unwrap();

    let mut before_the_end = Vec::new();
    loop {
        let notification = tokio::time::timeout(PATIENCE, heard.next())
            .await
            .expect("the last notification never came")
            .expect("the connection ended")
            .unwrap();
        if notification.payload() == "end" {
            break;
        }
        before_the_end.push(notification.payload().to_owned());
    }
    assert_eq!(
        before_the_end.len(),
        1,
        "the other store's registration only: {before_the_end:?}"
    );
    assert!(
        !before_the_end[0].is_empty(),
        "the notification names the replica that queued the mail"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_that_queues_no_mail_wakes_no_dispatcher() {
    let database = TestDatabase::migrated().await;
    let store = PgStore::new(&database.settings()).unwrap();
    let (listener, mut connection) = tokio_postgres::connect(database.url(), NoTls)
        .await
        .unwrap();
    let (notifications, mut heard) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(message) = poll_fn(|cx| connection.poll_message(cx)).await {
            if let Ok(AsyncMessage::Notification(notification)) = message {
                let _ = notifications.send(notification.channel().to_owned());
            }
        }
    });
    listener
        .batch_execute("LISTEN registrar_outbox")
        .await
        .unwrap();

    register(&store, 10, "ada@example.com").await;
    // An activation, a new password: saves of an account that queue no email.
    let email = Email::parse("ada@example.com").unwrap();
    let loaded = store.account_by_email(&email, t0()).await.unwrap().unwrap();
    let mut account = loaded.account;
    account.set_password_hash(PasswordHash::from_phc("$test$second".to_owned()).unwrap());
    store
        .save(AccountChange {
            account,
            expected_version: Some(loaded.version),
            mail: None,
        })
        .await
        .unwrap();
    // A notification is sent to a listening session before it reports being idle again, so
    // after one more round trip every notification of the saves above has been read.
    listener.batch_execute("SELECT 1").await.unwrap();

    let mut channels = Vec::new();
    while let Ok(channel) = heard.try_recv() {
        channels.push(channel);
    }
    assert_eq!(
        channels,
        ["registrar_outbox"],
        "one wake-up, for the registration's email only"
    );
}

//! LISTEN/NOTIFY: mail queued through one store (one replica) wakes the dispatcher of another.

use std::time::Duration;

use registrar_adapters_postgres::PgStore;
use registrar_application::DispatchSignal;

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

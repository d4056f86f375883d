//! Outages for real: the store talks to PostgreSQL through a proxy the test cuts (connections
//! dropped, new ones refused) or stalls (a black hole). While it is down, operations fail as
//! `Unavailable` within the timeouts instead of hanging; once it is back, the same store works
//! again without being rebuilt.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use registrar_adapters_postgres::PgStore;
use registrar_application::{
    ports::{AccountChange, SaveError, Store, StoreError},
    testing::t0,
};
use registrar_domain::Email;

use crate::{
    helpers::{TestDatabase, register, server_address, with_port},
    proxy::Proxy,
};

/// Generous against a loaded CI machine; the settings below aim at about 2 s.
const BOUND: Duration = Duration::from_secs(10);

/// A migrated database, a proxy in front of the server, and a store with small timeouts that
/// reaches the database through the proxy.
async fn store_behind_a_proxy() -> (TestDatabase, Arc<Proxy>, PgStore) {
    let database = TestDatabase::migrated().await;
    let proxy = Proxy::start(server_address()).await;
    let mut settings = database.settings();
    settings.url = with_port(database.url(), proxy.port());
    settings.connect_timeout = Duration::from_secs(1);
    settings.pool_wait_timeout = Duration::from_secs(1);
    settings.statement_timeout = Duration::from_secs(2);
    let store = PgStore::new(&settings).unwrap();
    (database, proxy, store)
}

fn ada() -> Email {
    Email::parse("ada@example.com").unwrap()
}

/// Runs `operation`, checks it failed as unavailable within [`BOUND`], and returns the time.
#[allow(
    clippy::print_stderr,
    reason = "the measured times are worth seeing in test output"
)]
async fn unavailable_in_time<T: std::fmt::Debug>(
    what: &str,
    operation: impl Future<Output = Result<T, StoreError>>,
) -> Duration {
    let started = Instant::now();
    let result = operation.await;
    let elapsed = started.elapsed();
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{what}: expected unavailable, got {result:?}"
    );
    assert!(elapsed < BOUND, "{what} took {elapsed:?}");
    // Shown with `--nocapture`: how long an outage takes to be reported.
    eprintln!("{what}: unavailable after {elapsed:?}");
    elapsed
}

/// Checks the store answers again, reads what it had, and saves.
async fn works_again(store: &PgStore) {
    store.ping().await.unwrap();
    let loaded = store.account_by_email(&ada(), t0()).await.unwrap().unwrap();
    store
        .save(AccountChange {
            account: loaded.account,
            expected_version: Some(loaded.version),
            mail: None,
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_makes_the_store_unavailable_at_once_and_it_recovers() {
    let (_database, proxy, store) = store_behind_a_proxy().await;
    register(&store, 10, "ada@example.com").await;
    let loaded = store.account_by_email(&ada(), t0()).await.unwrap().unwrap();

    proxy.cut().await;
    let ping = unavailable_in_time("ping", store.ping()).await;
    let load = unavailable_in_time("load", store.account_by_email(&ada(), t0())).await;
    let saved = store
        .save(AccountChange {
            account: loaded.account.clone(),
            expected_version: Some(loaded.version),
            mail: None,
        })
        .await;
    assert!(
        matches!(saved, Err(SaveError::Store(StoreError::Unavailable(_)))),
        "{saved:?}"
    );
    unavailable_in_time("claim", store.claim_mail(t0(), Duration::from_secs(30), 10)).await;
    assert!(
        ping < Duration::from_secs(3) && load < Duration::from_secs(3),
        "{ping:?} {load:?}"
    );

    proxy.forward().await;
    works_again(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_network_makes_the_store_unavailable_within_the_timeout_and_it_recovers() {
    let (_database, proxy, store) = store_behind_a_proxy().await;
    register(&store, 10, "ada@example.com").await;

    proxy.stall().await;
    // The pooled connection hangs: the operation's deadline (2 s) ends it.
    let ping = unavailable_in_time("ping on a pooled connection", store.ping()).await;
    // A new connection hangs in its start-up: the connect timeout (1 s) ends it.
    let load = unavailable_in_time(
        "load on a new connection",
        store.account_by_email(&ada(), t0()),
    )
    .await;
    assert!(ping >= Duration::from_millis(1500), "{ping:?}");
    assert!(load >= Duration::from_millis(500), "{load:?}");

    proxy.forward().await;
    works_again(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_the_server_terminates_are_replaced_by_the_pool() {
    let database = TestDatabase::migrated().await;
    let store = PgStore::new(&database.settings()).unwrap();
    register(&store, 10, "ada@example.com").await;
    // Several pooled sessions, all idle.
    let email = ada();
    let loads = (0..4).map(|_| store.account_by_email(&email, t0()));
    for loaded in futures_util::future::join_all(loads).await {
        loaded.unwrap().unwrap();
    }

    let admin = crate::helpers::maintenance().await;
    let terminated: i64 = admin
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid()) AS t",
            &[&database.name()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(terminated >= 1);

    // What a request sees right then is at worst "unavailable" (57P01 or a closed
    // connection), never an internal error; and the store heals without a restart.
    match store.ping().await {
        Ok(()) | Err(StoreError::Unavailable(_)) => {}
        Err(other) => panic!("expected the outage to show as unavailable: {other:?}"),
    }
    works_again(&store).await;
}

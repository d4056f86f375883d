//! What only the PostgreSQL store has: migrations under a lock, row locks between claimers and
//! savers, the statement timeout, the schema's own constraints, and error messages that never
//! carry SQL.

use std::{
    collections::HashSet,
    future::poll_fn,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use registrar_adapters_postgres::PgStore;
use registrar_application::{
    ErrorChain,
    ports::{AccountChange, SaveError, Store, StoreError, ThrottleKey},
    testing::t0,
};
use registrar_domain::{Account, Email, PasswordHash, User, UserStatus};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls, error::SqlState};

use crate::helpers::{TestDatabase, fresh_store, register};

const LEASE: Duration = Duration::from_secs(30);

async fn applied_migrations(database: &TestDatabase) -> i64 {
    database
        .connect()
        .await
        .query_one("SELECT count(*) FROM refinery_schema_history", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_an_up_to_date_database_again_changes_nothing() {
    let database = TestDatabase::migrated().await;
    let store = PgStore::new(&database.settings()).unwrap();
    register(&store, 10, "ada@example.com").await;

    store.migrate().await.unwrap();
    store.migrate().await.unwrap();

    assert_eq!(applied_migrations(&database).await, migration_files());
    let email = Email::parse("ada@example.com").unwrap();
    assert!(
        store
            .account_by_email(&email, t0())
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrators_racing_on_an_empty_database_all_succeed() {
    let database = TestDatabase::empty().await;
    let racers: Vec<PgStore> = (0..4)
        .map(|_| PgStore::new(&database.settings()).unwrap())
        .collect();

    let results = futures_util::future::join_all(racers.iter().map(PgStore::migrate)).await;

    for result in results {
        result.unwrap();
    }
    assert_eq!(applied_migrations(&database).await, migration_files());
    racers[0].ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimers_never_get_the_same_message() {
    let test = fresh_store().await;
    for i in 0..40u128 {
        register(test.inner(), 1000 + 10 * i, &format!("user{i}@example.com")).await;
    }
    let store = Arc::new(test.inner().clone());

    let claimers = (0..4).map(|_| {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = store.claim_mail(t0(), LEASE, 3).await.unwrap();
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|mail| mail.id));
            }
        })
    });
    let claimed: Vec<uuid::Uuid> = futures_util::future::join_all(claimers)
        .await
        .into_iter()
        .flat_map(Result::unwrap)
        .collect();

    let distinct: HashSet<_> = claimed.iter().collect();
    assert_eq!(claimed.len(), 40, "every message claimed exactly once");
    assert_eq!(distinct.len(), 40, "no message claimed twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_skips_messages_another_transaction_holds_instead_of_waiting() {
    let test = fresh_store().await;
    for i in 0..3u128 {
        register(test.inner(), 100 + 10 * i, &format!("user{i}@example.com")).await;
    }
    let mut other = test.kept().connect().await;
    let holder = other.transaction().await.unwrap();
    let held: uuid::Uuid = holder
        .query_one(
            "SELECT id FROM email_outbox ORDER BY queued_at, id LIMIT 1 FOR UPDATE",
            &[],
        )
        .await
        .unwrap()
        .get(0);

    let started = Instant::now();
    let claimed = test.inner().claim_mail(t0(), LEASE, 10).await.unwrap();

    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let ids: Vec<_> = claimed.iter().map(|mail| mail.id).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(!ids.contains(&held));
    holder.rollback().await.unwrap();
    let rest = test.inner().claim_mail(t0(), LEASE, 10).await.unwrap();
    assert_eq!(rest.iter().map(|mail| mail.id).collect::<Vec<_>>(), [held]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_stuck_behind_a_lock_fails_as_unavailable_within_the_statement_timeout() {
    let database = TestDatabase::migrated().await;
    let mut settings = database.settings();
    settings.statement_timeout = Duration::from_secs(1);
    let store = PgStore::new(&settings).unwrap();
    register(&store, 10, "ada@example.com").await;
    let email = Email::parse("ada@example.com").unwrap();
    let loaded = store.account_by_email(&email, t0()).await.unwrap().unwrap();
    let mut account = loaded.account.clone();
    account.set_password_hash(PasswordHash::from_phc("$test$second".to_owned()).unwrap());
    let change = AccountChange {
        account,
        expected_version: Some(loaded.version),
        mail: None,
    };
    let mut other = database.connect().await;
    let holder = other.transaction().await.unwrap();
    holder
        .execute("SELECT 1 FROM users FOR UPDATE", &[])
        .await
        .unwrap();

    let started = Instant::now();
    let blocked = store.save(change.clone()).await;
    let elapsed = started.elapsed();

    assert!(
        matches!(blocked, Err(SaveError::Store(StoreError::Unavailable(_)))),
        "{blocked:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    holder.rollback().await.unwrap();
    store.save(change).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_account_with_a_taken_id_conflicts() {
    let test = fresh_store().await;
    let first = register(test.inner(), 10, "ada@example.com").await;
    let twin = Account::restore(
        User::restore(
            first.user().id(),
            Email::parse("bob@example.com").unwrap(),
            PasswordHash::from_phc("$test$twin".to_owned()).unwrap(),
            t0(),
            UserStatus::Pending,
        ),
        None,
        vec![],
    );

    let result = test
        .inner()
        .save(AccountChange {
            account: twin,
            expected_version: None,
            mail: None,
        })
        .await;

    assert!(matches!(result, Err(SaveError::Conflict)), "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_refuses_a_second_live_code_and_a_clear_code_on_sent_mail() {
    let test = fresh_store().await;
    register(test.inner(), 10, "ada@example.com").await;
    let client = test.kept().connect().await;

    let second_live = client
        .execute(
            "INSERT INTO activation_codes
                 (id, user_id, digest, issued_at, wrong_attempts, state)
             SELECT gen_random_uuid(), user_id, digest, issued_at, 0, 'live'
             FROM activation_codes",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(second_live.code(), Some(&SqlState::UNIQUE_VIOLATION));
    assert_eq!(
        second_live.as_db_error().and_then(|e| e.constraint()),
        Some("activation_codes_one_live_per_user")
    );

    let sent_with_code = client
        .execute(
            "UPDATE email_outbox SET status = 'sent', sent_at = queued_at",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(sent_with_code.code(), Some(&SqlState::CHECK_VIOLATION));
    assert_eq!(
        sent_with_code.as_db_error().and_then(|e| e.constraint()),
        Some("email_outbox_code_in_clear_only_while_pending")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_errors_name_the_operation_but_carry_no_sql_text() {
    let test = fresh_store().await;
    let client = test.kept().connect().await;
    client
        .batch_execute("ALTER TABLE throttles RENAME TO throttles_gone; ALTER TABLE users RENAME TO users_gone")
        .await
        .unwrap();
    let limit = registrar_application::ports::Limit {
        max: 3,
        window: Duration::from_mins(1),
    };
    let key = ThrottleKey::LoginFailuresForAccount("ada@example.com".into());
    let email = Email::parse("ada@example.com").unwrap();

    let errors = [
        test.inner()
            .throttle_hit(&key, limit, t0())
            .await
            .unwrap_err(),
        test.inner()
            .login_state(Some(&email), &[(key.clone(), limit)], t0())
            .await
            .unwrap_err(),
        test.inner()
            .account_by_email(&email, t0())
            .await
            .unwrap_err(),
    ];

    for error in errors {
        let StoreError::Internal(_) = &error else {
            panic!("expected an internal error, got {error:?}");
        };
        let message = ErrorChain(&error).to_string();
        assert!(message.contains("42P01"), "{message}");
        for sql in [
            "SELECT", "INSERT", "UPDATE", "CONFLICT", "WHERE", "$1", "ada@",
        ] {
            assert!(!message.contains(sql), "{message:?} contains {sql:?}");
        }
        assert!(message.len() < 120, "{message:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_database_is_dropped_with_its_guard_even_with_open_connections() {
    let test = fresh_store().await;
    test.inner().ping().await.unwrap();
    let name = test.kept().name().to_owned();
    let _open = test.kept().connect().await;

    drop(test);

    let exists: bool = crate::helpers::maintenance()
        .await
        .query_one(
            "SELECT exists(SELECT 1 FROM pg_database WHERE datname = $1)",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!exists, "{name} is still there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttles_answer_exactly_like_the_memory_store_for_any_limit() {
    let test = fresh_store().await;
    let memory = registrar_adapters_memory::MemoryStore::new();
    let window = Duration::from_secs(10);
    for max in [0, 1, 2, 5] {
        let limit = registrar_application::ports::Limit { max, window };
        let key = ThrottleKey::LoginFailuresForAccount(format!("max{max}@example.com"));
        // Events every 700 ms for a little over three windows, hits and checks interleaved.
        for step in 0..50u32 {
            let now = t0() + Duration::from_millis(700) * step;
            let (pg, mem) = if step % 3 == 2 {
                let throttles = [(key.clone(), limit)];
                (
                    test.inner()
                        .login_state(None, &throttles, now)
                        .await
                        .unwrap()
                        .account()
                        .err(),
                    memory
                        .login_state(None, &throttles, now)
                        .await
                        .unwrap()
                        .account()
                        .err(),
                )
            } else {
                (
                    test.inner().throttle_hit(&key, limit, now).await.unwrap(),
                    memory.throttle_hit(&key, limit, now).await.unwrap(),
                )
            };
            assert_eq!(pg, mem, "max {max}, step {step}");
        }
    }
}

/// How many migrations the crate embeds: the SQL files of the top-level `migrations/` folder.
fn migration_files() -> i64 {
    let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations");
    let count = std::fs::read_dir(folder)
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|ext| ext == "sql"))
        })
        .count();
    i64::try_from(count).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_deletes_in_batches_until_nothing_is_left() {
    let database = TestDatabase::migrated().await;
    let store = PgStore::new(&database.settings()).unwrap();
    // 2,500 windows that ended, over two and a half batches, and one still open.
    database
        .connect()
        .await
        .batch_execute(
            "INSERT INTO throttles (key, window_end, hits) \
             SELECT 'ended:' || i, now() - interval '1 hour', 3 FROM generate_series(1, 2500) AS i; \
             INSERT INTO throttles (key, window_end, hits) \
             VALUES ('open', now() + interval '1 hour', 1)",
        )
        .await
        .unwrap();

    let pruned = store.prune(SystemTime::now(), t0(), t0()).await.unwrap();

    assert_eq!(pruned.throttles, 2500);
    let left: Vec<String> = database
        .connect()
        .await
        .query("SELECT key FROM throttles", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(left, ["open"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queuing_mail_sends_no_notification() {
    let database = TestDatabase::migrated().await;
    let store = PgStore::new(&database.settings()).unwrap();
    let (listener, mut connection) = tokio_postgres::connect(database.url(), NoTls)
        .await
        .unwrap();
    let (payloads, mut heard) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(message) = poll_fn(|cx| connection.poll_message(cx)).await {
            if let Ok(AsyncMessage::Notification(notification)) = message {
                let _ = payloads.send(notification.payload().to_owned());
            }
        }
    });
    listener
        .batch_execute("LISTEN registrar_outbox")
        .await
        .unwrap();

    register(&store, 10, "ada@example.com").await;
    // Notifications arrive in the order their transactions committed, and a listening session
    // gets them before it reports being idle: after this one, anything the registration sent
    // has been read.
    listener
        .batch_execute("NOTIFY registrar_outbox, 'end'")
        .await
        .unwrap();
    listener.batch_execute("SELECT 1").await.unwrap();

    let mut notifications = Vec::new();
    while let Ok(payload) = heard.try_recv() {
        notifications.push(payload);
    }
    assert_eq!(
        notifications,
        ["end"],
        "the replica that queued the mail sends it; nobody else is woken"
    );
}

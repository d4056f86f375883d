//! The purge of abandoned accounts against concurrent writers, on a real server: it skips an
//! account a save is writing instead of waiting for it or deleting under it, and a takeover or
//! an activation racing it either wins (the account stays, changed) or loses (its save
//! conflicts and the account is gone): never both, never a lost update.

use std::time::{Duration, SystemTime};

use registrar_adapters_postgres::PgStore;
use registrar_application::{
    ports::{AccountChange, MailOutcome, SaveError, Store, Versioned},
    testing::t0,
};
use registrar_domain::{CodeDigits, CodeId, CodePolicy, CodeSecret, Email, NewCode, PasswordHash};

use crate::helpers::{TestDatabase, register};

const SECOND: Duration = Duration::from_secs(1);
/// Long after the accounts of these tests were registered, at `t0`.
const LATER: Duration = Duration::from_mins(90);

fn secret() -> CodeSecret {
    CodeSecret::new(*b"postgres adapter tests, 32 bytes").unwrap()
}

fn ada() -> Email {
    Email::parse("ada@example.com").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purge_skips_an_account_a_save_is_writing_and_keeps_it_when_the_save_renews_it() {
    let database = TestDatabase::migrated().await;
    let store = PgStore::new(&database.settings()).unwrap();
    let account = register(&store, 10, "ada@example.com").await;
    let id = account.user().id().as_uuid();
    let later = t0() + LATER;
    // A concurrent save holds the account's row, as a takeover does mid-transaction.
    let mut writer = database.connect().await;
    let transaction = writer.transaction().await.unwrap();
    transaction
        .execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", &[&id])
        .await
        .unwrap();

    let during = tokio::time::timeout(10 * SECOND, store.prune(later, t0(), later))
        .await
        .expect("the purge waited for the row lock instead of skipping the row")
        .unwrap();
    transaction
        .execute(
            "UPDATE users SET created_at = $2, version = version + 1 WHERE id = $1",
            &[&id, &later],
        )
        .await
        .unwrap();
    transaction.commit().await.unwrap();
    let after = store.prune(later, t0(), later).await.unwrap();

    assert_eq!(during.pending_accounts, 0);
    assert_eq!(after.pending_accounts, 0);
    let kept = store
        .account_by_email(&ada(), later)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.account.user().created_at(), later);
}

/// Registers an account at `t0` whose email then ends with `delivery`, decides a change on it at
/// [`LATER`], and runs that change's save and the purge at once, many times; checks each round
/// ended one way or the other.
async fn race_the_purge(
    delivery: MailOutcome,
    decide: impl Fn(&mut Versioned, SystemTime),
    survivor_changed: impl Fn(&Versioned) -> bool,
) {
    const ROUNDS: u128 = 40;
    let database = TestDatabase::migrated().await;
    let store = PgStore::new(&database.settings()).unwrap();
    let later = t0() + LATER;
    let (mut saved, mut purged) = (0, 0);
    for round in 0..ROUNDS {
        let email = format!("ada{round}@example.com");
        register(&store, round * 10, &email).await;
        let claimed = store.claim_mail(t0(), 30 * SECOND, 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(
            store
                .finish_mail(&[(&claimed[0], &delivery)])
                .await
                .unwrap(),
            [true]
        );
        let email = Email::parse(&email).unwrap();
        let mut loaded = store
            .account_by_email(&email, later)
            .await
            .unwrap()
            .unwrap();
        decide(&mut loaded, later);
        let change = AccountChange {
            account: loaded.account,
            expected_version: Some(loaded.version),
            mail: None,
        };
        let cutoff = t0() + SECOND;

        let (save, prune) = tokio::join!(store.save(change), store.prune(later, t0(), cutoff));

        let prune = prune.unwrap();
        let stored = store.account_by_email(&email, later).await.unwrap();
        match (save, stored) {
            (Ok(()), Some(stored)) => {
                assert!(survivor_changed(&stored), "round {round}: {stored:?}");
                assert_eq!(prune.pending_accounts, 0, "round {round}");
                saved += 1;
            }
            (Err(SaveError::Conflict), None) => {
                assert_eq!(prune.pending_accounts, 1, "round {round}");
                purged += 1;
            }
            (save, stored) => panic!("round {round}: save {save:?}, stored {stored:?}, {prune:?}"),
        }
    }
    assert_eq!(saved + purged, ROUNDS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_racing_the_purge_either_renews_the_account_or_conflicts() {
    let policy = CodePolicy::default();
    // Its email was given up on, so its code died unsent: the address is free to take over.
    let undeliverable = MailOutcome::Failed {
        error: "550 no such user".into(),
    };
    race_the_purge(
        undeliverable,
        |loaded, later| {
            let digits = CodeDigits::parse("9999").unwrap();
            // A new id per round: the account's own, moved out of the range `register` uses.
            let id = loaded.account.user().id().as_uuid().as_u128() + (1 << 64);
            let new_code = NewCode::new(
                CodeId::from_uuid(uuid::Uuid::from_u128(id)),
                digits,
                &secret(),
            );
            let email = loaded.account.user().email().clone();
            loaded
                .account
                .take_over(
                    email,
                    PasswordHash::from_phc("$test$new".to_owned()).unwrap(),
                    new_code,
                    later,
                    &policy,
                )
                .unwrap();
        },
        |stored| stored.account.user().created_at() > t0(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activation_racing_the_purge_either_activates_the_account_or_conflicts() {
    let policy = CodePolicy::default();
    // The email went out just before the owner answers, so the code is usable then.
    let accepted = MailOutcome::Sent {
        accepted_at: t0() + LATER - 10 * SECOND,
    };
    race_the_purge(
        accepted,
        |loaded, later| {
            loaded
                .account
                .activate(
                    CodeDigits::parse("0421").unwrap(),
                    &secret(),
                    later,
                    &policy,
                )
                .unwrap();
        },
        |stored| stored.account.user().is_active(),
    )
    .await;
}

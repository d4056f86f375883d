//! The store contract: what every [`Store`] must do, as tests any adapter can run.
//!
//! Run it with [`store_contract_tests!`](crate::store_contract_tests), passing an async
//! function that makes a fresh, empty store for each test.

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::{Duration, SystemTime},
};

use registrar_domain::{
    Account, ActivationRefused, CodeDeath, CodeDigits, CodeId, CodePolicy, CodeSecret, CodeState,
    CodeStatus, Email, NewCode, PasswordHash, UserId,
};
use uuid::Uuid;

use super::t0;
use crate::{
    TraceContext,
    ports::{
        AccountChange, ClaimedMail, Limit, Lookup, MailOutcome, Pruned, QueuedMail, SaveError,
        Store, ThrottleKey, Versioned,
    },
};

/// Generates one `#[tokio::test]` per contract case, each on a store from `$make`.
#[macro_export]
macro_rules! store_contract_tests {
    ($make:expr) => {
        $crate::store_contract_tests!(@cases $make;
            saves_and_loads_a_new_account_by_email_and_id,
            emails_are_unique_case_insensitively,
            a_save_at_a_stale_version_conflicts,
            a_stale_activation_writes_neither_the_user_nor_its_code,
            concurrent_saves_at_one_version_let_exactly_one_win,
            replacing_a_code_cancels_its_pending_mail,
            a_code_killed_by_wrong_guesses_cancels_its_pending_mail,
            a_claimed_message_whose_code_dies_is_cancelled_and_its_claim_goes_stale,
            recent_issues_hold_the_codes_of_the_last_24_hours,
            queued_mail_is_claimed_once_under_a_lease,
            queued_mail_keeps_its_trace_context_through_every_claim,
            an_expired_lease_lets_another_claimer_take_the_mail,
            sent_mail_marks_its_code_delivered_and_wipes_the_code,
            retried_mail_waits_for_its_next_attempt,
            failed_mail_kills_its_code,
            a_stale_claim_changes_nothing,
            a_pass_settles_each_message_by_its_own_outcome_and_claim,
            claims_take_the_oldest_due_mail_first_up_to_the_limit,
            throttles_count_to_the_limit_and_reset_after_the_window,
            throttle_keys_are_independent,
            a_throttle_key_may_be_any_user_name,
            a_login_with_no_window_closed_reads_the_account,
            a_closed_window_refuses_a_login_before_its_account_is_read,
            a_registration_counts_against_its_throttle_and_reads_the_account_until_the_limit,
            pruning_deletes_settled_mail_before_the_cutoff_and_throttle_windows_that_are_over,
            mail_is_being_sent_only_while_claimed_under_a_live_lease,
            deleting_an_account_erases_it_with_its_codes_and_mail,
            deleting_at_a_stale_version_erases_nothing,
            a_claim_on_the_mail_of_a_deleted_account_goes_stale,
            pruning_erases_accounts_left_pending_past_the_cutoff_and_nothing_else,
            a_save_of_an_account_loaded_before_it_was_pruned_conflicts,
            ping_answers,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let store = ($make)().await;
                $crate::testing::store_contract::$case(store).await;
            }
        )*
    };
}

const SECOND: Duration = Duration::from_secs(1);

fn secret() -> CodeSecret {
    CodeSecret::new(*b"store contract secret, 32 bytes.").unwrap()
}

fn uuid(n: u128) -> Uuid {
    // Version 7 layout keeps ids realistic for stores that check them.
    let mut random = [0u8; 10];
    random[..8].copy_from_slice(&u64::try_from(n).unwrap().to_be_bytes());
    uuid::Builder::from_unix_timestamp_millis(1_750_000_000_000, &random).into_uuid()
}

fn new_code(n: u128, digits: &str) -> NewCode {
    NewCode::new(
        CodeId::from_uuid(uuid(n)),
        CodeDigits::parse(digits).unwrap(),
        &secret(),
    )
}

fn hash(tag: &str) -> PasswordHash {
    PasswordHash::from_phc(format!("$test${tag}")).unwrap()
}

fn mail_for(account: &Account, n: u128, digits: &str, at: SystemTime) -> QueuedMail {
    QueuedMail {
        id: uuid(n),
        to: account.user().email().clone(),
        code: CodeDigits::parse(digits).unwrap(),
        code_id: account.code().unwrap().id(),
        queued_at: at,
        trace: None,
    }
}

/// Registers `email` at `t0` with code `digits`, queueing its mail; returns the saved account.
async fn register(store: &impl Store, n: u128, email: &str, digits: &str) -> Account {
    register_at(store, n, email, digits, t0()).await
}

/// Saves `account` at `version`, queueing no mail.
async fn save_at(store: &impl Store, account: Account, version: u64) -> Result<(), SaveError> {
    store
        .save(AccountChange {
            account,
            expected_version: Some(version),
            mail: None,
        })
        .await
}

/// Registers `ada@example.com` (as [`register`] with `n` = 10 and code `0421`) and loads it at
/// `now`.
async fn ada_registered(store: &impl Store, now: SystemTime) -> Versioned {
    register(store, 10, "ada@example.com", "0421").await;
    load(store, "ada@example.com", now).await
}

/// Settles one message alone: whether it was recorded.
async fn finish_one(store: &impl Store, mail: &ClaimedMail, outcome: MailOutcome) -> bool {
    let recorded = store.finish_mail(&[(mail, &outcome)]).await.unwrap();
    assert_eq!(recorded.len(), 1, "one answer per message");
    recorded[0]
}

/// Until when `key` is closed at `now`, as a login that reads no account sees it.
async fn throttled_until(
    store: &impl Store,
    key: &ThrottleKey,
    limit: Limit,
    now: SystemTime,
) -> Option<SystemTime> {
    match store
        .login_state(None, &[(key.clone(), limit)], now)
        .await
        .unwrap()
    {
        Lookup::Throttled(until) => Some(until),
        Lookup::Open(account) => {
            assert_eq!(account, None, "no address given, no account read");
            None
        }
    }
}

async fn load(store: &impl Store, email: &str, now: SystemTime) -> Versioned {
    store
        .account_by_email(&Email::parse(email).unwrap(), now)
        .await
        .unwrap()
        .unwrap()
}

/// A saved account loads back equal, by email and by id, with a version.
pub async fn saves_and_loads_a_new_account_by_email_and_id(store: impl Store) {
    let account = register(&store, 10, "Ada@Example.com", "0421").await;
    let by_email = load(&store, "ada@example.com", t0()).await;
    assert_eq!(by_email.account, account);
    let by_id = store
        .account_by_id(account.user().id(), t0())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_id, by_email);
    assert!(
        store
            .account_by_email(&Email::parse("bob@example.com").unwrap(), t0())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .account_by_id(UserId::from_uuid(uuid(999)), t0())
            .await
            .unwrap()
            .is_none()
    );
}

/// A second new account with the same address in another case conflicts.
pub async fn emails_are_unique_case_insensitively(store: impl Store) {
    register(&store, 10, "ada@example.com", "0421").await;
    let twin = Account::register(
        UserId::from_uuid(uuid(20)),
        Email::parse("ADA@EXAMPLE.COM").unwrap(),
        hash("other"),
        new_code(21, "1111"),
        t0(),
    );
    let result = store
        .save(AccountChange {
            account: twin,
            expected_version: None,
            mail: None,
        })
        .await;
    assert!(matches!(result, Err(SaveError::Conflict)), "{result:?}");
    assert_eq!(
        load(&store, "ada@example.com", t0())
            .await
            .account
            .user()
            .password_hash(),
        &hash("pw")
    );
}

/// Saving at a version that is no longer current conflicts and changes nothing.
pub async fn a_save_at_a_stale_version_conflicts(store: impl Store) {
    let Versioned {
        mut account,
        version,
    } = ada_registered(&store, t0()).await;
    account.set_password_hash(hash("second"));
    save_at(&store, account.clone(), version).await.unwrap();
    let reloaded = load(&store, "ada@example.com", t0()).await;
    assert_ne!(reloaded.version, version);
    account.set_password_hash(hash("third"));
    let stale = save_at(&store, account, version).await;
    assert!(matches!(stale, Err(SaveError::Conflict)), "{stale:?}");
    assert_eq!(
        load(&store, "ada@example.com", t0())
            .await
            .account
            .user()
            .password_hash(),
        &hash("second")
    );
}

/// An activation saved at a version that is no longer current conflicts and changes nothing:
/// the user stays pending, the code live, its mail pending. (A save that writes no live code is
/// one statement in the PostgreSQL store, so its version check guards the code and the mail
/// too.)
pub async fn a_stale_activation_writes_neither_the_user_nor_its_code(store: impl Store) {
    let policy = CodePolicy::default();
    let now = t0() + SECOND;
    let Versioned {
        mut account,
        version,
    } = ada_registered(&store, now).await;
    let mut moved_on = account.clone();
    moved_on.set_password_hash(hash("second"));
    save_at(&store, moved_on, version).await.unwrap();

    account.mark_code_delivered(new_code(11, "0421").id(), now);
    account
        .activate(CodeDigits::parse("0421").unwrap(), &secret(), now, &policy)
        .unwrap();
    let stale = save_at(&store, account, version).await;
    assert!(matches!(stale, Err(SaveError::Conflict)), "{stale:?}");

    let reloaded = load(&store, "ada@example.com", now).await.account;
    assert!(!reloaded.user().is_active());
    assert_eq!(reloaded.user().password_hash(), &hash("second"));
    let code = reloaded.code().unwrap();
    assert_eq!((code.state(), code.delivered_at()), (CodeState::Live, None));
    assert_eq!(store.outbox_depth().await.unwrap(), 1);
}

/// Two saves racing at the same version: exactly one wins.
pub async fn concurrent_saves_at_one_version_let_exactly_one_win(store: impl Store) {
    let store = Arc::new(store);
    register(&*store, 10, "ada@example.com", "0421").await;
    let loaded = load(&*store, "ada@example.com", t0()).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = Arc::clone(&store);
        let mut account = loaded.account.clone();
        account.set_password_hash(hash(&format!("racer{i}")));
        let version = loaded.version;
        tasks.push(tokio::spawn(async move {
            save_at(&*store, account, version).await
        }));
    }
    let mut wins = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => wins += 1,
            Err(SaveError::Conflict) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(wins, 1);
}

/// Issuing a new code kills the old one in storage and cancels its pending mail in the same
/// save: only the new code's mail is left to claim.
pub async fn replacing_a_code_cancels_its_pending_mail(store: impl Store) {
    let policy = CodePolicy::default();
    let Versioned {
        mut account,
        version,
    } = ada_registered(&store, t0() + 30 * SECOND).await;
    account
        .issue_code(new_code(30, "1111"), t0() + 30 * SECOND, &policy)
        .unwrap();
    let mail = mail_for(&account, 31, "1111", t0() + 30 * SECOND);
    store
        .save(AccountChange {
            account,
            expected_version: Some(version),
            mail: Some(mail),
        })
        .await
        .unwrap();

    let reloaded = load(&store, "ada@example.com", t0() + 30 * SECOND)
        .await
        .account;
    assert_eq!(reloaded.code().unwrap().id(), new_code(30, "1111").id());
    assert_eq!(reloaded.code().unwrap().state(), CodeState::Live);
    assert_eq!(store.outbox_depth().await.unwrap(), 1);
    let claimed = store
        .claim_mail(t0() + 31 * SECOND, 30 * SECOND, 10)
        .await
        .unwrap();
    let alive: Vec<(CodeId, String, bool)> = claimed
        .iter()
        .map(|m| (m.code_id, m.code.reveal(), m.code_alive))
        .collect();
    assert_eq!(
        alive,
        [(new_code(30, "1111").id(), "1111".to_owned(), true)]
    );
    assert_eq!(store.outbox_depth().await.unwrap(), 1);
}

/// The fifth wrong guess kills a code whose mail has not gone out yet: saving that cancels the
/// mail, so a dead code is never sent.
pub async fn a_code_killed_by_wrong_guesses_cancels_its_pending_mail(store: impl Store) {
    let policy = CodePolicy::default();
    let now = t0() + SECOND;
    let Versioned {
        mut account,
        version,
    } = ada_registered(&store, now).await;
    for _ in 0..policy.max_attempts() {
        let guess = account.activate(CodeDigits::parse("9999").unwrap(), &secret(), now, &policy);
        assert!(
            matches!(guess, Err(ActivationRefused::WrongCode { .. })),
            "{guess:?}"
        );
    }
    assert_eq!(
        account.code().unwrap().state(),
        CodeState::Dead(CodeDeath::TooManyAttempts)
    );
    save_at(&store, account, version).await.unwrap();

    assert_eq!(
        load(&store, "ada@example.com", now)
            .await
            .account
            .code()
            .unwrap()
            .state(),
        CodeState::Dead(CodeDeath::TooManyAttempts)
    );
    assert!(
        store
            .claim_mail(now, 30 * SECOND, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.outbox_depth().await.unwrap(), 0);
}

/// A message that is claimed (under a lease) when a save kills its code is cancelled all the
/// same: the claim is no longer current, so the claimer's outcome changes nothing, and the
/// message is not claimed again when the lease runs out.
pub async fn a_claimed_message_whose_code_dies_is_cancelled_and_its_claim_goes_stale(
    store: impl Store,
) {
    let policy = CodePolicy::default();
    register(&store, 10, "ada@example.com", "0421").await;
    let claimed = store.claim_mail(t0(), 30 * SECOND, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let now = t0() + SECOND;
    let Versioned {
        mut account,
        version,
    } = load(&store, "ada@example.com", now).await;
    for _ in 0..policy.max_attempts() {
        let _wrong = account.activate(CodeDigits::parse("9999").unwrap(), &secret(), now, &policy);
    }
    save_at(&store, account, version).await.unwrap();
    assert_eq!(store.outbox_depth().await.unwrap(), 0);

    let retry = MailOutcome::Retry {
        next_attempt_at: now,
        error: "421 try later".into(),
    };
    assert!(!finish_one(&store, &claimed[0], retry).await);
    assert!(
        store
            .claim_mail(t0() + 3600 * SECOND, 30 * SECOND, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.outbox_depth().await.unwrap(), 0);
}

/// Loading brings the issue times of the account's codes of the last 24 hours.
pub async fn recent_issues_hold_the_codes_of_the_last_24_hours(store: impl Store) {
    let policy = CodePolicy::default();
    register(&store, 10, "ada@example.com", "0421").await;
    let later = t0() + 3600 * SECOND;
    let Versioned {
        mut account,
        version,
    } = load(&store, "ada@example.com", later).await;
    account
        .issue_code(new_code(40, "1111"), later, &policy)
        .unwrap();
    save_at(&store, account, version).await.unwrap();
    assert_eq!(
        load(&store, "ada@example.com", later)
            .await
            .account
            .recent_issues(),
        &[t0(), later]
    );
    let next_day = t0() + CodePolicy::WINDOW + SECOND;
    assert_eq!(
        load(&store, "ada@example.com", next_day)
            .await
            .account
            .recent_issues(),
        &[later]
    );
}

/// A claimed message is not claimed again while its lease runs; attempts are counted.
pub async fn queued_mail_is_claimed_once_under_a_lease(store: impl Store) {
    register(&store, 10, "ada@example.com", "0421").await;
    let first = store.claim_mail(t0(), 30 * SECOND, 10).await.unwrap();
    assert_eq!(first.len(), 1);
    let mail = &first[0];
    assert_eq!(mail.to.as_str(), "ada@example.com");
    assert_eq!(mail.code.reveal(), "0421");
    assert_eq!(mail.attempts, 1);
    assert!(mail.code_alive);
    assert_eq!(mail.queued_at, t0());
    assert!(
        store
            .claim_mail(t0() + 29 * SECOND, 30 * SECOND, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.outbox_depth().await.unwrap(), 1);
}

/// The trace context queued with a message comes back with every claim of it, retries
/// included; a message queued without one has none.
pub async fn queued_mail_keeps_its_trace_context_through_every_claim(store: impl Store) {
    let trace = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    register_traced(&store, 10, "ada@example.com", "0421", t0(), trace).await;
    register(&store, 20, "bob@example.com", "1234").await;

    let claimed = store.claim_mail(t0(), 30 * SECOND, 10).await.unwrap();
    let traces: Vec<_> = claimed
        .iter()
        .map(|mail| (mail.to.as_str(), mail.trace))
        .collect();
    assert!(trace.is_some());
    assert_eq!(
        traces,
        [("ada@example.com", trace), ("bob@example.com", None)]
    );
    let retry = MailOutcome::Retry {
        next_attempt_at: t0() + SECOND,
        error: "421 try again later".into(),
    };
    assert!(finish_one(&store, &claimed[0], retry).await);
    let again = store
        .claim_mail(t0() + SECOND, 30 * SECOND, 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].trace), (claimed[0].id, trace));
}

/// When a claimer dies, its lease runs out and the message is claimed again, with a new claim.
pub async fn an_expired_lease_lets_another_claimer_take_the_mail(store: impl Store) {
    register(&store, 10, "ada@example.com", "0421").await;
    let first = store.claim_mail(t0(), 30 * SECOND, 10).await.unwrap();
    let second = store
        .claim_mail(t0() + 30 * SECOND, 30 * SECOND, 10)
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].id, first[0].id);
    assert_ne!(second[0].claim, first[0].claim);
    assert_eq!(second[0].attempts, 2);
}

/// A sent message makes its code usable from the acceptance time and is never claimed again.
pub async fn sent_mail_marks_its_code_delivered_and_wipes_the_code(store: impl Store) {
    let policy = CodePolicy::default();
    register(&store, 10, "ada@example.com", "0421").await;
    let claimed = store.claim_mail(t0(), 30 * SECOND, 10).await.unwrap();
    let accepted_at = t0() + 2 * SECOND;
    assert!(finish_one(&store, &claimed[0], MailOutcome::Sent { accepted_at }).await);
    let account = load(&store, "ada@example.com", accepted_at).await.account;
    assert_eq!(account.code().unwrap().delivered_at(), Some(accepted_at));
    assert_eq!(
        account.code_status(accepted_at, &policy),
        Some(CodeStatus::Usable {
            expires_at: accepted_at + policy.ttl()
        })
    );
    assert!(
        store
            .claim_mail(t0() + 3600 * SECOND, 30 * SECOND, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.outbox_depth().await.unwrap(), 0);
}

/// A retried message is due again only at its next attempt time.
pub async fn retried_mail_waits_for_its_next_attempt(store: impl Store) {
    register(&store, 10, "ada@example.com", "0421").await;
    let claimed = store.claim_mail(t0(), 30 * SECOND, 10).await.unwrap();
    let next_attempt_at = t0() + 5 * SECOND;
    let retry = MailOutcome::Retry {
        next_attempt_at,
        error: "421 try later".into(),
    };
    assert!(finish_one(&store, &claimed[0], retry).await);
    assert!(
        store
            .claim_mail(t0() + 4 * SECOND, 30 * SECOND, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let again = store
        .claim_mail(next_attempt_at, 30 * SECOND, 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 2);
    assert_eq!(store.outbox_depth().await.unwrap(), 1);
}

/// A message given up on kills its code and is never claimed again.
pub async fn failed_mail_kills_its_code(store: impl Store) {
    let policy = CodePolicy::default();
    register(&store, 10, "ada@example.com", "0421").await;
    let claimed = store.claim_mail(t0(), 30 * SECOND, 10).await.unwrap();
    let failed = MailOutcome::Failed {
        error: "550 no such user".into(),
    };
    assert!(finish_one(&store, &claimed[0], failed).await);
    let account = load(&store, "ada@example.com", t0()).await.account;
    assert!(matches!(
        account.code_status(t0(), &policy),
        Some(CodeStatus::Dead(_))
    ));
    assert!(
        store
            .claim_mail(t0() + 3600 * SECOND, 30 * SECOND, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.outbox_depth().await.unwrap(), 0);
}

/// Once a lease was taken over, the first claimer's outcome is ignored.
pub async fn a_stale_claim_changes_nothing(store: impl Store) {
    register(&store, 10, "ada@example.com", "0421").await;
    let first = store.claim_mail(t0(), 30 * SECOND, 10).await.unwrap();
    let second = store
        .claim_mail(t0() + 31 * SECOND, 30 * SECOND, 10)
        .await
        .unwrap();
    let stale = MailOutcome::Failed {
        error: "late".into(),
    };
    assert!(!finish_one(&store, &first[0], stale).await);
    let accepted_at = t0() + 32 * SECOND;
    assert!(finish_one(&store, &second[0], MailOutcome::Sent { accepted_at }).await);
    let account = load(&store, "ada@example.com", accepted_at).await.account;
    assert_eq!(account.code().unwrap().delivered_at(), Some(accepted_at));
}

/// A dispatcher settles a whole pass in one call: each message by its own outcome, the one
/// whose claim went stale left as it was, and the answers in the order given.
pub async fn a_pass_settles_each_message_by_its_own_outcome_and_claim(store: impl Store) {
    let policy = CodePolicy::default();
    let people = ["ada", "bob", "cy", "dee", "eve"];
    for (n, name) in (0u128..).step_by(10).zip(people) {
        register(&store, 10 + n, &format!("{name}@example.com"), "0421").await;
    }
    let claimed = store.claim_mail(t0(), 30 * SECOND, 10).await.unwrap();
    let mail = |name: &str| {
        claimed
            .iter()
            .find(|mail| mail.to.as_str() == format!("{name}@example.com"))
            .unwrap()
            .clone()
    };
    let mut stale = mail("eve");
    stale.claim = uuid(999);
    let accepted_at = t0() + SECOND;
    let retry_at = t0() + 5 * SECOND;
    let (ada, bob, cy, dee) = (mail("ada"), mail("bob"), mail("cy"), mail("dee"));
    let pass = [
        (&ada, &MailOutcome::Sent { accepted_at }),
        (
            &bob,
            &MailOutcome::Retry {
                next_attempt_at: retry_at,
                error: "421 try later".into(),
            },
        ),
        (
            &cy,
            &MailOutcome::Failed {
                error: "550 no such user".into(),
            },
        ),
        (&dee, &MailOutcome::Cancelled),
        (&stale, &MailOutcome::Sent { accepted_at }),
    ];

    let recorded = store.finish_mail(&pass).await.unwrap();

    assert_eq!(recorded, [true, true, true, true, false]);
    let status = |account: Account| account.code_status(accepted_at, &policy);
    assert_eq!(
        status(load(&store, "ada@example.com", accepted_at).await.account),
        Some(CodeStatus::Usable {
            expires_at: accepted_at + policy.ttl()
        })
    );
    assert!(matches!(
        status(load(&store, "cy@example.com", accepted_at).await.account),
        Some(CodeStatus::Dead(_))
    ));
    let eve = load(&store, "eve@example.com", accepted_at).await.account;
    assert_eq!(eve.code().unwrap().delivered_at(), None);
    // Bob's message is due again at its next attempt; Eve's is still under the live claim;
    // the rest are settled.
    let due: Vec<_> = store
        .claim_mail(retry_at, 30 * SECOND, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|mail| (mail.to.as_str().to_owned(), mail.attempts))
        .collect();
    assert_eq!(due, [("bob@example.com".to_owned(), 2)]);
    let after_the_lease: Vec<_> = store
        .claim_mail(t0() + 30 * SECOND, 30 * SECOND, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|mail| mail.to.as_str().to_owned())
        .collect();
    assert_eq!(after_the_lease, ["eve@example.com"]);
    assert_eq!(store.outbox_depth().await.unwrap(), 2);
}

/// Claims take due messages oldest first and no more than asked for.
pub async fn claims_take_the_oldest_due_mail_first_up_to_the_limit(store: impl Store) {
    for i in 0..5u128 {
        register(
            &store,
            100 + 10 * i,
            &format!("user{i}@example.com"),
            "0000",
        )
        .await;
    }
    let claimed = store.claim_mail(t0(), 30 * SECOND, 3).await.unwrap();
    assert_eq!(claimed.len(), 3);
    let rest = store.claim_mail(t0(), 30 * SECOND, 10).await.unwrap();
    assert_eq!(rest.len(), 2);
    let mut all: Vec<Uuid> = claimed.iter().chain(&rest).map(|m| m.id).collect();
    all.dedup();
    assert_eq!(all.len(), 5);
}

/// A throttle allows `max` events per window, then says until when it is closed, then reopens.
pub async fn throttles_count_to_the_limit_and_reset_after_the_window(store: impl Store) {
    let key = ThrottleKey::LoginFailuresForAccount("ada@example.com".into());
    let limit = Limit {
        max: 3,
        window: 60 * SECOND,
    };
    for i in 0..3 {
        let now = t0() + i * SECOND;
        assert_eq!(throttled_until(&store, &key, limit, now).await, None);
        assert_eq!(store.throttle_hit(&key, limit, now).await.unwrap(), None);
    }
    let closed_until = Some(t0() + 60 * SECOND);
    assert_eq!(
        throttled_until(&store, &key, limit, t0() + 10 * SECOND).await,
        closed_until
    );
    assert_eq!(
        store
            .throttle_hit(&key, limit, t0() + 10 * SECOND)
            .await
            .unwrap(),
        closed_until
    );
    assert_eq!(
        throttled_until(&store, &key, limit, t0() + 60 * SECOND).await,
        None
    );
    assert_eq!(
        store
            .throttle_hit(&key, limit, t0() + 60 * SECOND)
            .await
            .unwrap(),
        None
    );
}

/// Counting one key leaves the others alone.
pub async fn throttle_keys_are_independent(store: impl Store) {
    let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let limit = Limit {
        max: 1,
        window: 60 * SECOND,
    };
    let a = ThrottleKey::RegistrationsFromAddress(ip);
    let b = ThrottleKey::LoginFailuresFromAddress(ip);
    assert_eq!(store.throttle_hit(&a, limit, t0()).await.unwrap(), None);
    assert!(throttled_until(&store, &a, limit, t0()).await.is_some());
    assert_eq!(throttled_until(&store, &b, limit, t0()).await, None);
}

/// With none of its windows closed, a login reads the account as `account_by_email` does, and
/// finds none for an address nobody registered; a window that is over, or still under its
/// limit, does not close it.
pub async fn a_login_with_no_window_closed_reads_the_account(store: impl Store) {
    let now = t0() + 10 * SECOND;
    let ada = ada_registered(&store, now).await;
    let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let limit = Limit {
        max: 2,
        window: 5 * SECOND,
    };
    let account = ThrottleKey::LoginFailuresForAccount("ada@example.com".into());
    let address = ThrottleKey::LoginFailuresFromAddress(ip);
    for _ in 0..2 {
        // Closed until t0 + 5 s: over by now.
        assert_eq!(
            store.throttle_hit(&account, limit, t0()).await.unwrap(),
            None
        );
    }
    // One failure of two: still open.
    assert_eq!(
        store.throttle_hit(&address, limit, now).await.unwrap(),
        None
    );
    let throttles = [(account, limit), (address, limit)];

    let found = store
        .login_state(
            Some(&Email::parse("ADA@example.com").unwrap()),
            &throttles,
            now,
        )
        .await
        .unwrap();
    let nobody = store
        .login_state(
            Some(&Email::parse("bob@example.com").unwrap()),
            &throttles,
            now,
        )
        .await
        .unwrap();

    assert_eq!(found, Lookup::Open(Some(ada)));
    assert_eq!(nobody, Lookup::Open(None));
}

/// A closed window refuses the login: the first closed one in the order given says until
/// when, and no account comes back, though one exists.
pub async fn a_closed_window_refuses_a_login_before_its_account_is_read(store: impl Store) {
    let now = t0() + 10 * SECOND;
    ada_registered(&store, now).await;
    let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let account = ThrottleKey::LoginFailuresForAccount("ada@example.com".into());
    let address = ThrottleKey::LoginFailuresFromAddress(ip);
    let short = Limit {
        max: 1,
        window: 30 * SECOND,
    };
    let long = Limit {
        max: 1,
        window: 60 * SECOND,
    };
    let ada = Email::parse("ada@example.com").unwrap();
    let account_first = [(account.clone(), short), (address.clone(), long)];
    let address_first = [(address.clone(), long), (account.clone(), short)];
    store.throttle_hit(&address, long, now).await.unwrap();

    let address_closed = store
        .login_state(Some(&ada), &account_first, now)
        .await
        .unwrap();
    store.throttle_hit(&account, short, now).await.unwrap();
    let both_closed = store
        .login_state(Some(&ada), &account_first, now)
        .await
        .unwrap();
    let both_the_other_way = store
        .login_state(Some(&ada), &address_first, now)
        .await
        .unwrap();

    assert_eq!(address_closed, Lookup::Throttled(now + 60 * SECOND));
    assert_eq!(both_closed, Lookup::Throttled(now + 30 * SECOND));
    assert_eq!(both_the_other_way, Lookup::Throttled(now + 60 * SECOND));
}

/// A registration's read counts one event against its throttle and reads the account as
/// `account_by_email` does; once the throttle is over its limit, it says until when and reads
/// no account, until the window is over. Without a throttle it only reads.
pub async fn a_registration_counts_against_its_throttle_and_reads_the_account_until_the_limit(
    store: impl Store,
) {
    let now = t0() + 10 * SECOND;
    let ada = ada_registered(&store, now).await;
    let key = ThrottleKey::RegistrationsFromAddress(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    let limit = Limit {
        max: 2,
        window: 60 * SECOND,
    };
    let ada_email = Email::parse("ADA@example.com").unwrap();
    let bob_email = Email::parse("bob@example.com").unwrap();
    let later = now + 60 * SECOND;
    let throttled = Some((&key, limit));

    let unthrottled = store.registration_state(&ada_email, None, now).await;
    let first = store.registration_state(&ada_email, throttled, now).await;
    let second = store.registration_state(&bob_email, throttled, now).await;
    let third = store.registration_state(&ada_email, throttled, now).await;
    let fourth = store
        .registration_state(&ada_email, throttled, now + SECOND)
        .await;
    let next_window = store.registration_state(&ada_email, throttled, later).await;

    assert_eq!(unthrottled.unwrap(), Lookup::Open(Some(ada.clone())));
    assert_eq!(first.unwrap(), Lookup::Open(Some(ada)));
    assert_eq!(second.unwrap(), Lookup::Open(None));
    assert_eq!(third.unwrap(), Lookup::Throttled(later));
    assert_eq!(
        fourth.unwrap(),
        Lookup::Throttled(later),
        "refusals do not extend it"
    );
    assert_eq!(
        next_window.unwrap(),
        Lookup::Open(store.account_by_email(&ada_email, later).await.unwrap())
    );
}

/// Basic-auth user names are counted as sent, so a key can hold any text: NUL bytes,
/// kilobytes of it. Each still counts on its own.
pub async fn a_throttle_key_may_be_any_user_name(store: impl Store) {
    let limit = Limit {
        max: 1,
        window: 60 * SECOND,
    };
    let long: String = (0..8 * 1024u32)
        .map(|i| char::from_u32(0x4e00 + (i * 7919) % 0x5000).unwrap_or('x'))
        .collect();
    for name in ["nul\0byte@example.com", "\0", long.as_str()] {
        let key = ThrottleKey::LoginFailuresForAccount(name.to_owned());
        assert_eq!(store.throttle_hit(&key, limit, t0()).await.unwrap(), None);
        assert_eq!(
            throttled_until(&store, &key, limit, t0()).await,
            Some(t0() + 60 * SECOND),
            "{:?}",
            name.get(..20)
        );
    }
}

/// Pruning deletes settled mail queued before the cutoff and throttle windows that ended by
/// `now`; pending mail, newer settled mail and open windows stay, and a second prune finds
/// nothing.
pub async fn pruning_deletes_settled_mail_before_the_cutoff_and_throttle_windows_that_are_over(
    store: impl Store,
) {
    register(&store, 10, "ada@example.com", "0421").await;
    register(&store, 20, "bob@example.com", "1234").await;
    register(&store, 30, "cy@example.com", "5678").await;
    let claimed = store.claim_mail(t0(), 30 * SECOND, 2).await.unwrap();
    assert_eq!(claimed.len(), 2);
    let sent = MailOutcome::Sent {
        accepted_at: t0() + SECOND,
    };
    assert!(finish_one(&store, &claimed[0], sent).await);
    let failed = MailOutcome::Failed {
        error: "550 no such user".into(),
    };
    assert!(finish_one(&store, &claimed[1], failed).await);
    let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let (short, long) = (
        ThrottleKey::RegistrationsFromAddress(ip),
        ThrottleKey::LoginFailuresFromAddress(ip),
    );
    let short_limit = Limit {
        max: 1,
        window: 60 * SECOND,
    };
    let long_limit = Limit {
        max: 1,
        window: 600 * SECOND,
    };
    store.throttle_hit(&short, short_limit, t0()).await.unwrap();
    store.throttle_hit(&long, long_limit, t0()).await.unwrap();
    let now = t0() + 120 * SECOND;

    // Mail queued at the cutoff is not before it.
    let at_the_cutoff = store.prune(now, t0(), t0()).await.unwrap();
    let past_the_cutoff = store.prune(now, t0() + SECOND, t0()).await.unwrap();
    let again = store.prune(now, t0() + SECOND, t0()).await.unwrap();

    assert_eq!(
        at_the_cutoff,
        Pruned {
            mail: 0,
            throttles: 1,
            pending_accounts: 0
        }
    );
    assert_eq!(
        past_the_cutoff,
        Pruned {
            mail: 2,
            throttles: 0,
            pending_accounts: 0
        }
    );
    assert_eq!(again, Pruned::default());
    assert_eq!(store.outbox_depth().await.unwrap(), 1);
    let pending = store.claim_mail(now, 30 * SECOND, 10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].to.as_str(), "cy@example.com");
    assert_eq!(
        throttled_until(&store, &long, long_limit, now).await,
        Some(t0() + 600 * SECOND)
    );
}

/// Registers `email` at `at` with code `digits`, mail queued: user `n`, code `n + 1`, mail
/// `n + 2`.
async fn register_at(
    store: &impl Store,
    n: u128,
    email: &str,
    digits: &str,
    at: SystemTime,
) -> Account {
    register_traced(store, n, email, digits, at, None).await
}

/// As [`register_at`], the mail queued in the request trace `trace`.
async fn register_traced(
    store: &impl Store,
    n: u128,
    email: &str,
    digits: &str,
    at: SystemTime,
    trace: Option<TraceContext>,
) -> Account {
    let account = Account::register(
        UserId::from_uuid(uuid(n)),
        Email::parse(email).unwrap(),
        hash("pw"),
        new_code(n + 1, digits),
        at,
    );
    let mail = QueuedMail {
        trace,
        ..mail_for(&account, n + 2, digits, at)
    };
    store
        .save(AccountChange {
            account: account.clone(),
            expected_version: None,
            mail: Some(mail),
        })
        .await
        .unwrap();
    account
}

/// A message is being sent from its claim until its outcome is recorded or its lease runs out.
pub async fn mail_is_being_sent_only_while_claimed_under_a_live_lease(store: impl Store) {
    let ada = register(&store, 10, "ada@example.com", "0421").await;
    let bob = register(&store, 20, "bob@example.com", "1234").await;
    let (adas, bobs) = (ada.code().unwrap().id(), bob.code().unwrap().id());
    assert!(!store.mail_being_sent(adas, t0()).await.unwrap());

    let claimed = store.claim_mail(t0(), 30 * SECOND, 10).await.unwrap();
    assert_eq!(claimed.len(), 2);

    assert!(
        store
            .mail_being_sent(adas, t0() + 29 * SECOND)
            .await
            .unwrap()
    );
    assert!(
        !store
            .mail_being_sent(adas, t0() + 30 * SECOND)
            .await
            .unwrap()
    );
    let sent = MailOutcome::Sent {
        accepted_at: t0() + SECOND,
    };
    let bobs_mail = claimed.iter().find(|mail| mail.code_id == bobs).unwrap();
    assert!(finish_one(&store, bobs_mail, sent).await);
    assert!(
        !store
            .mail_being_sent(bobs, t0() + 2 * SECOND)
            .await
            .unwrap()
    );
    assert!(
        store
            .mail_being_sent(adas, t0() + 2 * SECOND)
            .await
            .unwrap()
    );
}

/// Erasing an account takes its codes and every message with it; the address is free again.
pub async fn deleting_an_account_erases_it_with_its_codes_and_mail(store: impl Store) {
    let ada = register(&store, 10, "ada@example.com", "0421").await;
    register(&store, 20, "bob@example.com", "1234").await;
    let Versioned { version, .. } = load(&store, "ada@example.com", t0()).await;

    store
        .delete_account(ada.user().id(), version)
        .await
        .unwrap();

    let email = Email::parse("ada@example.com").unwrap();
    assert_eq!(store.account_by_email(&email, t0()).await.unwrap(), None);
    assert_eq!(
        store.account_by_id(ada.user().id(), t0()).await.unwrap(),
        None
    );
    assert_eq!(store.outbox_depth().await.unwrap(), 1);
    let claimed = store.claim_mail(t0(), 30 * SECOND, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].to.as_str(), "bob@example.com");
    // The address and even the id can be registered again.
    register(&store, 10, "ada@example.com", "5678").await;
    assert_eq!(load(&store, "ada@example.com", t0()).await.version, 1);
    assert_eq!(load(&store, "bob@example.com", t0()).await.version, 1);
}

/// An erasure at a version other than the stored one, or of an account that is gone, is a
/// conflict and erases nothing.
pub async fn deleting_at_a_stale_version_erases_nothing(store: impl Store) {
    let ada = register(&store, 10, "ada@example.com", "0421").await;
    let id = ada.user().id();

    let stale = store.delete_account(id, 2).await;
    assert!(matches!(stale, Err(SaveError::Conflict)), "{stale:?}");
    assert_eq!(load(&store, "ada@example.com", t0()).await.version, 1);
    assert_eq!(store.outbox_depth().await.unwrap(), 1);
    store.delete_account(id, 1).await.unwrap();
    let gone = store.delete_account(id, 1).await;
    assert!(matches!(gone, Err(SaveError::Conflict)), "{gone:?}");
}

/// A message being sent when its account is erased cannot be settled afterwards: its claim is
/// no longer current.
pub async fn a_claim_on_the_mail_of_a_deleted_account_goes_stale(store: impl Store) {
    let ada = register(&store, 10, "ada@example.com", "0421").await;
    let claimed = store.claim_mail(t0(), 30 * SECOND, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);

    store.delete_account(ada.user().id(), 1).await.unwrap();

    let sent = MailOutcome::Sent {
        accepted_at: t0() + SECOND,
    };
    assert!(!finish_one(&store, &claimed[0], sent).await);
    assert_eq!(store.outbox_depth().await.unwrap(), 0);
}

/// Pruning erases accounts still pending whose last registration was before the cutoff, with
/// their mail; an account registered at the cutoff or later, and an active account however
/// old, stay.
pub async fn pruning_erases_accounts_left_pending_past_the_cutoff_and_nothing_else(
    store: impl Store,
) {
    let policy = CodePolicy::default();
    let ada = register_at(&store, 10, "ada@example.com", "0421", t0()).await;
    register_at(&store, 20, "bob@example.com", "1234", t0()).await;
    let cutoff = t0() + 10 * SECOND;
    register_at(&store, 30, "cy@example.com", "5678", cutoff).await;
    // Bob activates: his mail is sent, his code used.
    let claimed = store.claim_mail(t0(), 30 * SECOND, 10).await.unwrap();
    let bobs = claimed
        .iter()
        .find(|mail| mail.to.as_str() == "bob@example.com")
        .unwrap();
    let accepted_at = t0() + SECOND;
    assert!(finish_one(&store, bobs, MailOutcome::Sent { accepted_at }).await);
    let Versioned {
        mut account,
        version,
    } = load(&store, "bob@example.com", accepted_at).await;
    account
        .activate(
            CodeDigits::parse("1234").unwrap(),
            &secret(),
            accepted_at,
            &policy,
        )
        .unwrap();
    save_at(&store, account, version).await.unwrap();
    let now = cutoff + 3600 * SECOND;

    let pruned = store.prune(now, t0(), cutoff).await.unwrap();
    let again = store.prune(now, t0(), cutoff).await.unwrap();

    assert_eq!(
        pruned,
        Pruned {
            mail: 0,
            throttles: 0,
            pending_accounts: 1
        }
    );
    assert_eq!(again, Pruned::default());
    assert_eq!(
        store.account_by_id(ada.user().id(), now).await.unwrap(),
        None
    );
    assert!(
        load(&store, "bob@example.com", now)
            .await
            .account
            .user()
            .is_active()
    );
    assert!(
        !load(&store, "cy@example.com", now)
            .await
            .account
            .user()
            .is_active()
    );
    // Ada's claimed message went with her account; Cy's is still waiting.
    let pending = store.claim_mail(now, 30 * SECOND, 10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].to.as_str(), "cy@example.com");
    let adas = claimed
        .iter()
        .find(|mail| mail.to.as_str() == "ada@example.com")
        .unwrap();
    assert!(!finish_one(&store, adas, MailOutcome::Cancelled).await);
}

/// A change decided on an account loaded before the purge erased it conflicts instead of
/// writing to an account that is gone; a takeover resets the registration time, so the purge
/// then leaves the account alone.
pub async fn a_save_of_an_account_loaded_before_it_was_pruned_conflicts(store: impl Store) {
    let policy = CodePolicy::default();
    register_at(&store, 10, "ada@example.com", "0421", t0()).await;
    register_at(&store, 20, "bob@example.com", "1234", t0()).await;
    // Both codes die unsent, an hour and a half later; Bob's address is taken over then.
    let later = t0() + 5400 * SECOND;
    let failed = || MailOutcome::Failed {
        error: "550 no such user".into(),
    };
    for mail in store.claim_mail(t0(), 30 * SECOND, 10).await.unwrap() {
        assert!(finish_one(&store, &mail, failed()).await);
    }
    let stale = load(&store, "ada@example.com", later).await;
    let Versioned {
        mut account,
        version,
    } = load(&store, "bob@example.com", later).await;
    account
        .take_over(
            Email::parse("bob@example.com").unwrap(),
            hash("new"),
            new_code(21, "9999"),
            later,
            &policy,
        )
        .unwrap();
    save_at(&store, account, version).await.unwrap();

    let pruned = store.prune(later, t0(), t0() + SECOND).await.unwrap();

    assert_eq!(pruned.pending_accounts, 1);
    let Versioned { account, version } = stale;
    let saved = save_at(&store, account, version).await;
    assert!(matches!(saved, Err(SaveError::Conflict)), "{saved:?}");
    let email = Email::parse("ada@example.com").unwrap();
    assert_eq!(store.account_by_email(&email, later).await.unwrap(), None);
    assert_eq!(
        load(&store, "bob@example.com", later)
            .await
            .account
            .user()
            .created_at(),
        later
    );
}

/// A healthy store answers a ping.
pub async fn ping_answers(store: impl Store) {
    store.ping().await.unwrap();
}

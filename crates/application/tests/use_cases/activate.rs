//! Activating: the delivered code activates the account once; wrong, undelivered, expired and
//! replaced codes do not.

use std::sync::Arc;

use registrar_application::{Accounts, Error};
use registrar_domain::UserStatus;
use tokio::sync::Barrier;

use registrar_application::{Credentials, testing::PassingStore};
use registrar_domain::Password;

use crate::support::{App, CLIENT, PASSWORD, SECOND, digits};

#[tokio::test]
async fn the_delivered_code_activates_the_account_at_the_current_time() {
    let app = App::new();
    let who = app
        .registered_and_delivered("ada@example.com", "0421")
        .await;
    app.advance(5 * SECOND);

    let user = app.activate(&who, "0421").await.unwrap();

    let activated = UserStatus::Active {
        activated_at: app.now(),
    };
    assert_eq!(user.status(), activated);
    let stored = app.stored("ada@example.com").await.unwrap();
    assert_eq!(stored.account.user().status(), activated);
    let again = app.login("ada@example.com", PASSWORD).await.unwrap();
    assert_eq!(again.user().status(), activated);
}

#[tokio::test]
async fn a_code_stays_usable_for_its_ttl_from_the_moment_its_email_was_accepted() {
    let app = App::new();
    let who = app.registered("ada@example.com", "0421").await;
    app.advance(10 * SECOND);
    app.deliver().await;
    // Past the TTL counted from registration, within it counted from acceptance.
    app.advance(app.codes.ttl() - SECOND);

    let result = app.activate(&who, "0421").await;

    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn the_right_code_before_its_email_is_accepted_counts_as_a_wrong_attempt() {
    let app = App::new();
    let who = app.registered("ada@example.com", "0421").await;

    let early = app.activate(&who, "0421").await;

    assert!(
        matches!(
            early,
            Err(Error::WrongCode {
                attempts_remaining: 4
            })
        ),
        "{early:?}"
    );
    app.deliver().await;
    assert!(app.activate(&who, "0421").await.is_ok());
}

#[tokio::test]
async fn wrong_codes_count_down_the_attempts_and_the_fifth_kills_the_code() {
    let app = App::new();
    let who = app
        .registered_and_delivered("ada@example.com", "0421")
        .await;

    let mut remaining = Vec::new();
    for _ in 0..app.codes.max_attempts() {
        match app.activate(&who, "9999").await {
            Err(Error::WrongCode { attempts_remaining }) => remaining.push(attempts_remaining),
            other => panic!("expected WrongCode, got {other:?}"),
        }
    }
    let right_but_too_late = app.activate(&who, "0421").await;

    assert_eq!(remaining, [4, 3, 2, 1, 0]);
    assert!(
        matches!(
            right_but_too_late,
            Err(Error::CodeGone {
                too_many_attempts: true
            })
        ),
        "{right_but_too_late:?}"
    );
}

#[tokio::test]
async fn a_code_is_gone_once_its_ttl_has_passed() {
    let app = App::new();
    let who = app
        .registered_and_delivered("ada@example.com", "0421")
        .await;
    app.advance(app.codes.ttl());

    let result = app.activate(&who, "0421").await;

    assert!(
        matches!(
            result,
            Err(Error::CodeGone {
                too_many_attempts: false
            })
        ),
        "{result:?}"
    );
}

#[tokio::test]
async fn an_active_account_is_not_activated_again() {
    let app = App::new();
    let who = app
        .registered_and_delivered("ada@example.com", "0421")
        .await;
    app.activate(&who, "0421").await.unwrap();

    let same_code = app.activate(&who, "0421").await;
    let other_code = app.activate(&who, "1234").await;

    assert!(
        matches!(same_code, Err(Error::AlreadyActive)),
        "{same_code:?}"
    );
    assert!(
        matches!(other_code, Err(Error::AlreadyActive)),
        "{other_code:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_correct_activations_give_one_success_and_one_already_active() {
    // Several rounds, so the two requests really do overlap in some of them.
    for round in 0..20 {
        let app = App::new();
        let who = app
            .registered_and_delivered("ada@example.com", "0421")
            .await;
        let barrier = Arc::new(Barrier::new(2));
        let racers = (0..2).map(|_| {
            let (accounts, who, barrier) =
                (Arc::clone(&app.accounts), who.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                accounts.activate(&who, digits("0421")).await
            })
        });
        let racers: Vec<_> = racers.collect();

        let mut outcomes = Vec::new();
        for racer in racers {
            outcomes.push(racer.await.unwrap());
        }

        let successes = outcomes.iter().filter(|o| o.is_ok()).count();
        let already_active = outcomes
            .iter()
            .filter(|o| matches!(o, Err(Error::AlreadyActive)))
            .count();
        assert_eq!(
            (successes, already_active),
            (1, 1),
            "round {round}: {outcomes:?}"
        );
    }
}

#[tokio::test]
async fn a_new_code_kills_the_previous_one() {
    let app = App::new();
    let who = app
        .registered_and_delivered("ada@example.com", "0421")
        .await;
    app.advance(app.codes.cooldown());
    app.entropy.will_draw(&["1111"]);
    app.issue_code(&who).await.unwrap();
    app.deliver().await;

    let old = app.activate(&who, "0421").await;
    let new = app.activate(&who, "1111").await;

    assert!(
        matches!(
            old,
            Err(Error::WrongCode {
                attempts_remaining: 4
            })
        ),
        "{old:?}"
    );
    assert!(new.is_ok(), "{new:?}");
}

#[tokio::test]
async fn the_right_code_is_accepted_while_its_email_is_being_sent() {
    let app = App::new();
    // The client read the email before its acceptance was recorded.
    let who = app
        .registered_and_being_sent("ada@example.com", "0421")
        .await;
    app.advance(SECOND);

    let user = app.activate(&who, "0421").await.unwrap();

    assert_eq!(
        user.status(),
        UserStatus::Active {
            activated_at: app.now()
        }
    );
}

#[tokio::test]
async fn a_wrong_code_while_its_email_is_being_sent_counts_as_before() {
    let app = App::new();
    let who = app
        .registered_and_being_sent("ada@example.com", "0421")
        .await;

    let wrong = app.activate(&who, "9999").await;

    assert!(
        matches!(
            wrong,
            Err(Error::WrongCode {
                attempts_remaining: 4
            })
        ),
        "{wrong:?}"
    );
    // The wrong guess did not make the code count as delivered.
    let stored = app.stored("ada@example.com").await.unwrap();
    assert_eq!(stored.account.code().unwrap().delivered_at(), None);
}

#[tokio::test]
async fn the_right_code_once_its_sending_lease_ran_out_is_still_a_wrong_attempt() {
    let app = App::new();
    let who = app
        .registered_and_being_sent("ada@example.com", "0421")
        .await;
    // The dispatcher that claimed it has not reported: by now it is presumed dead, and the
    // email may never have gone out.
    app.advance(app.delivery.lease);

    let late = app.activate(&who, "0421").await;

    let Err(Error::WrongCode { attempts_remaining }) = late else {
        panic!("expected a counted wrong attempt, got {late:?}");
    };
    assert_eq!(attempts_remaining, 4);
    let stored = app.stored("ada@example.com").await.unwrap();
    assert_eq!(stored.account.code().unwrap().delivered_at(), None);
}

#[tokio::test]
async fn activating_starts_from_the_account_authentication_read_and_reads_it_no_more() {
    let app = App::new();
    app.registered_and_delivered("ada@example.com", "0421")
        .await;
    let store = PassingStore::new(app.store.clone());
    let accounts = app.accounts_over(store.clone());

    let credentials = Credentials::new("ada@example.com".to_owned(), Password::new(PASSWORD));
    let who = accounts.authenticate(credentials, CLIENT).await.unwrap();
    accounts.activate(&who, digits("0421")).await.unwrap();

    assert_eq!(
        store.calls("login_state"),
        1,
        "authentication reads it, with its failed-login windows"
    );
    assert_eq!(store.calls("account_by_email"), 0);
    assert_eq!(
        store.calls("account_by_id"),
        0,
        "activation does not read it again"
    );
    assert_eq!(store.calls("save"), 1);
    assert!(
        app.login("ada@example.com", PASSWORD)
            .await
            .unwrap()
            .user()
            .is_active()
    );
}

#[tokio::test]
async fn a_code_whose_email_is_recorded_as_sent_after_authentication_activates() {
    let app = App::new();
    // Authenticated while the email was still waiting: as read then, the code is not usable.
    let who = app.registered("ada@example.com", "0421").await;
    app.advance(SECOND);
    assert_eq!(app.deliver().await.sent, 1);

    let user = app.activate(&who, "0421").await.unwrap();

    assert!(user.is_active());
}

#[tokio::test]
async fn a_code_issued_after_authentication_is_the_one_that_activates() {
    let app = App::new();
    let who = app
        .registered_and_delivered("ada@example.com", "0421")
        .await;
    // Another request of the same user replaces the code after `who` read the account.
    app.advance(app.codes.cooldown());
    app.reissued_and_delivered("ada@example.com", "1111").await;

    // As read by `who`, 1111 is a wrong guess at 0421; as stored, it is the live code.
    let user = app.activate(&who, "1111").await.unwrap();

    assert!(user.is_active());
    let stored = app.stored("ada@example.com").await.unwrap();
    assert!(stored.account.user().is_active());
}

#[tokio::test]
async fn a_refusal_of_the_account_authentication_read_is_decided_again_on_the_account_now() {
    let app = App::new();
    app.registered_and_delivered("ada@example.com", "0421")
        .await;
    app.advance(app.codes.ttl() + SECOND);
    // As `who` reads the account, its only code has expired: an activation would be refused
    // at once, saving nothing (so no lost race would reveal the change that follows).
    let who = app.login("ada@example.com", PASSWORD).await.unwrap();
    app.reissued_and_delivered("ada@example.com", "1111").await;

    let user = app.activate(&who, "1111").await.unwrap();

    assert!(user.is_active());
}

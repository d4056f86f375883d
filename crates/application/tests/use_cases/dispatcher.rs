//! Delivering the outbox: what the email carries, retries with backoff per message, giving up,
//! cancelling mail for dead codes, leases, and the pass report.

use std::time::Duration;

use registrar_application::{
    DeliveryPolicy, DeliveryReport, Error, TraceContext,
    ports::{ActivationEmail, Entropy, MailError, Pruned, Store},
};
use registrar_domain::Email;

use crate::support::{App, MINUTE, OTHER_PASSWORD, PASSWORD, SECOND, digits};

fn transient() -> MailError {
    MailError::Transient("421 try again later".into())
}

fn permanent() -> MailError {
    MailError::Permanent("550 no such user".into())
}

#[tokio::test]
async fn the_activation_email_carries_the_code_and_how_long_it_stays_valid() {
    let app = App::new();
    app.entropy.will_draw(&["0421"]);
    app.register("ada@example.com", PASSWORD).await.unwrap();

    let report = app.deliver().await;

    assert_eq!(
        report,
        DeliveryReport {
            sent: 1,
            ..DeliveryReport::default()
        }
    );
    let expected = ActivationEmail {
        to: Email::parse("ada@example.com").unwrap(),
        code: digits("0421"),
        valid_for: app.codes.ttl(),
    };
    assert_eq!(app.mailer.sent(), [expected]);
    assert_eq!(
        app.deliver().await.handled(),
        0,
        "a sent email is not sent again"
    );
}

/// The trace context of request number `n`.
fn request_trace(n: u8) -> TraceContext {
    TraceContext::new([n; 16], [n; 8], true).unwrap()
}

/// Runs `request` the way request number `n`, in a trace of its own, would run.
async fn traced<T>(app: &App, n: u8, request: impl Future<Output = T>) -> T {
    app.traces.enter(Some(request_trace(n)));
    let answer = request.await;
    app.traces.enter(None);
    answer
}

#[tokio::test]
async fn each_delivery_links_to_the_trace_of_the_request_that_queued_its_email() {
    let app = App::new();
    traced(&app, 1, app.register("ada@example.com", PASSWORD))
        .await
        .unwrap();
    let who = app.login("ada@example.com", PASSWORD).await.unwrap();
    assert!(app.traces.links().is_empty(), "nothing is delivered yet");
    assert_eq!(app.deliver().await.sent, 1);
    assert_eq!(app.traces.links(), [request_trace(1)]);

    app.advance(app.codes.cooldown());
    traced(&app, 2, app.issue_code(&who)).await.unwrap();
    assert_eq!(app.deliver().await.sent, 1);

    app.advance(app.codes.ttl() + SECOND);
    traced(&app, 3, app.register("ada@example.com", OTHER_PASSWORD))
        .await
        .unwrap();
    assert_eq!(app.deliver().await.sent, 1);

    assert_eq!(
        app.traces.links(),
        [request_trace(1), request_trace(2), request_trace(3)]
    );
}

#[tokio::test]
async fn every_attempt_links_to_the_request_and_mail_queued_outside_a_trace_links_nowhere() {
    let app = App::new();
    app.register("bob@example.com", PASSWORD).await.unwrap();
    let ada = app.register("ada@example.com", PASSWORD);
    traced(&app, 1, ada).await.unwrap();
    app.mailer.will_fail([transient(), transient()]);

    assert_eq!(app.deliver().await.retried, 2);
    app.advance(MINUTE);
    assert_eq!(app.deliver().await.sent, 2);

    assert_eq!(app.traces.links(), [request_trace(1), request_trace(1)]);
}

#[tokio::test]
async fn a_transiently_failed_email_is_retried_after_its_backoff_and_not_before() {
    let app = App::new();
    let who = app.registered("ada@example.com", "0421").await;
    app.mailer.will_fail([transient()]);
    let backoff = app.delivery.backoff(1, app.entropy.unit());

    let first = app.deliver().await;
    app.advance(backoff - Duration::from_millis(1));
    let too_early = app.deliver().await;
    app.advance(Duration::from_millis(1));
    let on_time = app.deliver().await;

    assert_eq!(
        first,
        DeliveryReport {
            retried: 1,
            ..DeliveryReport::default()
        }
    );
    assert_eq!(too_early.handled(), 0);
    assert_eq!(
        on_time,
        DeliveryReport {
            sent: 1,
            ..DeliveryReport::default()
        }
    );
    assert_eq!(app.mailer.sent().len(), 1);
    assert!(app.activate(&who, "0421").await.is_ok());
}

#[tokio::test]
async fn one_failing_email_does_not_hold_up_another() {
    let app = App::new();
    app.register("ada@example.com", PASSWORD).await.unwrap();
    app.register("bob@example.com", PASSWORD).await.unwrap();
    app.mailer.will_fail([transient()]);

    let first = app.deliver().await;
    let sent_in_first_pass = app.mailer.sent().len();
    app.advance(MINUTE);
    let second = app.deliver().await;

    assert_eq!(
        first,
        DeliveryReport {
            sent: 1,
            retried: 1,
            ..DeliveryReport::default()
        }
    );
    assert_eq!(sent_in_first_pass, 1);
    assert_eq!(
        second,
        DeliveryReport {
            sent: 1,
            ..DeliveryReport::default()
        }
    );
    assert!(app.mailer.last_code_for("ada@example.com").is_some());
    assert!(app.mailer.last_code_for("bob@example.com").is_some());
}

#[tokio::test]
async fn a_permanently_failed_email_kills_its_code_and_frees_the_address() {
    let app = App::new();
    let original = app.registered("ada@example.com", "0421").await;
    app.mailer.will_fail([permanent()]);

    let report = app.deliver().await;
    let activation = app.activate(&original, "0421").await;

    assert_eq!(
        report,
        DeliveryReport {
            failed: 1,
            ..DeliveryReport::default()
        }
    );
    assert!(app.mailer.sent().is_empty());
    assert!(
        matches!(
            activation,
            Err(Error::CodeGone {
                too_many_attempts: false
            })
        ),
        "{activation:?}"
    );
    assert_eq!(app.outbox_depth().await, 0);
    app.advance(app.codes.cooldown());
    let taken_over = app
        .register("ada@example.com", OTHER_PASSWORD)
        .await
        .unwrap();
    assert_eq!(taken_over.id(), original.user().id());
}

#[tokio::test]
async fn an_email_is_given_up_after_max_attempts_transient_failures() {
    let app = App::with_delivery(DeliveryPolicy {
        max_attempts: 3,
        ..DeliveryPolicy::default()
    });
    let who = app.registered("ada@example.com", "0421").await;
    app.mailer
        .will_fail([transient(), transient(), transient()]);

    let mut reports = Vec::new();
    for _ in 0..3 {
        reports.push(app.deliver().await);
        app.advance(MINUTE);
    }

    let retried = DeliveryReport {
        retried: 1,
        ..DeliveryReport::default()
    };
    let failed = DeliveryReport {
        failed: 1,
        ..DeliveryReport::default()
    };
    assert_eq!(reports, [retried, retried, failed]);
    assert_eq!(app.outbox_depth().await, 0);
    assert_eq!(app.deliver().await.handled(), 0);
    assert!(app.mailer.sent().is_empty());
    let activation = app.activate(&who, "0421").await;
    assert!(
        matches!(
            activation,
            Err(Error::CodeGone {
                too_many_attempts: false
            })
        ),
        "{activation:?}"
    );
}

#[tokio::test]
async fn an_email_is_given_up_once_its_next_try_would_be_past_the_maximum_age() {
    let app = App::new();
    app.register("ada@example.com", PASSWORD).await.unwrap();
    app.mailer.will_fail([transient(), transient()]);

    let first = app.deliver().await;
    app.advance(app.delivery.max_age);
    let second = app.deliver().await;

    assert_eq!(first.retried, 1);
    assert_eq!(
        second,
        DeliveryReport {
            failed: 1,
            ..DeliveryReport::default()
        }
    );
    assert_eq!(app.outbox_depth().await, 0);
}

#[tokio::test]
async fn an_email_whose_code_was_replaced_before_delivery_is_never_sent() {
    let app = App::new();
    let who = app.registered("ada@example.com", "0421").await;
    app.advance(app.codes.cooldown());
    app.entropy.will_draw(&["1111"]);
    app.issue_code(&who).await.unwrap();

    let report = app.deliver().await;

    assert_eq!(
        report,
        DeliveryReport {
            sent: 1,
            ..DeliveryReport::default()
        }
    );
    let codes: Vec<String> = app
        .mailer
        .sent()
        .iter()
        .map(|mail| mail.code.reveal())
        .collect();
    assert_eq!(codes, ["1111"]);
    assert_eq!(app.outbox_depth().await, 0);
}

#[tokio::test]
async fn an_email_claimed_by_a_dispatcher_that_died_is_sent_once_its_lease_runs_out() {
    let app = App::new();
    app.register("ada@example.com", PASSWORD).await.unwrap();
    let lease = app.delivery.lease;
    let abandoned = app.store.claim_mail(app.now(), lease, 10).await.unwrap();
    assert_eq!(abandoned.len(), 1);

    let during_lease = app.deliver().await;
    app.advance(lease);
    let after_lease = app.deliver().await;

    assert_eq!(during_lease.handled(), 0);
    assert_eq!(
        after_lease,
        DeliveryReport {
            sent: 1,
            ..DeliveryReport::default()
        }
    );
    assert!(app.mailer.last_code_for("ada@example.com").is_some());
}

#[tokio::test]
async fn a_delivery_pass_reports_what_became_of_each_email() {
    let app = App::new();
    let ada = app.registered("ada@example.com", "0421").await;
    app.register("bob@example.com", PASSWORD).await.unwrap();
    app.register("cy@example.com", PASSWORD).await.unwrap();
    app.advance(app.codes.cooldown());
    app.issue_code(&ada).await.unwrap();
    // Ada's first email died with its code when the new one was issued (the store cancelled
    // it); of the three that go to the mail server, the first is refused for now and the
    // second for good.
    app.mailer.will_fail([transient(), permanent()]);

    let report = app.deliver().await;

    let expected = DeliveryReport {
        sent: 1,
        retried: 1,
        failed: 1,
        cancelled: 0,
    };
    assert_eq!(report, expected);
    assert_eq!(report.handled(), 3);
    assert_eq!(app.mailer.sent().len(), 1);
    assert_eq!(
        app.outbox_depth().await,
        1,
        "only the retried email is still waiting"
    );
}

/// A mailer that, when told a delivery was recorded, looks at whether the store already says so.
struct ProbeMailer {
    store: registrar_adapters_memory::MemoryStore,
    clock: registrar_application::testing::FakeClock,
    seen: std::sync::Arc<std::sync::Mutex<Vec<bool>>>,
}

impl registrar_application::ports::Mailer for ProbeMailer {
    async fn send_activation(&self, _email: &ActivationEmail) -> Result<(), MailError> {
        Ok(())
    }

    async fn delivery_recorded(&self, email: &ActivationEmail) {
        use registrar_application::ports::Clock;
        let stored = self
            .store
            .account_by_email(&email.to, self.clock.now())
            .await
            .unwrap();
        let delivered = stored
            .and_then(|stored| {
                stored
                    .account
                    .code()
                    .and_then(registrar_domain::ActivationCode::delivered_at)
            })
            .is_some();
        self.seen.lock().unwrap().push(delivered);
    }
}

#[tokio::test]
async fn a_mailer_hears_of_a_delivery_only_once_the_code_is_usable() {
    let app = App::new();
    app.register("ada@example.com", PASSWORD).await.unwrap();
    let seen = std::sync::Arc::default();
    let dispatcher = app.dispatcher_over(
        app.store.clone(),
        ProbeMailer {
            store: app.store.clone(),
            clock: app.clock.clone(),
            seen: std::sync::Arc::clone(&seen),
        },
    );

    let report = dispatcher.deliver_due().await.unwrap();

    assert_eq!(report.sent, 1);
    assert_eq!(*seen.lock().unwrap(), [true]);
}

#[tokio::test]
async fn pruning_keeps_sent_mail_and_pending_accounts_for_their_retention_then_deletes_them() {
    let app = App::new();
    app.register("ada@example.com", PASSWORD).await.unwrap();
    app.deliver().await;
    let retention = DeliveryPolicy::default().retention;

    app.advance(retention);
    let within = app.dispatcher.prune().await.unwrap();
    app.advance(Duration::from_secs(1));
    let after = app.dispatcher.prune().await.unwrap();

    // The registration's throttle window (10 minutes) was over long before; the account was
    // never activated, and its retention is the same as the mail's by default.
    assert_eq!(
        within,
        Pruned {
            mail: 0,
            throttles: 1,
            pending_accounts: 0
        }
    );
    assert_eq!(
        after,
        Pruned {
            mail: 1,
            throttles: 0,
            pending_accounts: 1
        }
    );
}

//! The outbox dispatcher against a real server, run as several replicas would: two stores with
//! pools of their own on one database, one dispatcher each, one shared fake clock. Row claims
//! (`FOR UPDATE SKIP LOCKED`) keep them from sending a message twice, a claim is a lease that
//! runs out when its replica dies, and one slow message does not hold up the rest.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use registrar_adapters_postgres::PgStore;
use registrar_application::{
    DeliveryPolicy, DeliveryReport, Dispatcher, NoTraces,
    ports::{ActivationEmail, Clock, MailError, MailOutcome, Mailer, Store},
    testing::{FakeClock, RecordingMailer, SeqEntropy},
};
use registrar_domain::CodePolicy;
use tokio::sync::Notify;

use crate::helpers::{TestDatabase, register};

/// Generous for a loaded CI machine; the waits normally take milliseconds.
const PATIENCE: Duration = Duration::from_secs(10);

/// A dispatcher over a store of its own (one replica), on the shared fake clock.
fn replica<M: Mailer>(
    store: &PgStore,
    mailer: M,
    clock: &FakeClock,
    policy: DeliveryPolicy,
) -> Dispatcher<PgStore, M, FakeClock, SeqEntropy, NoTraces> {
    Dispatcher::new(
        store.clone(),
        mailer,
        clock.clone(),
        SeqEntropy::default(),
        NoTraces,
        CodePolicy::default(),
        policy,
    )
}

/// The recipients of what `mailer` sent, in order.
fn recipients(mailer: &RecordingMailer) -> Vec<String> {
    mailer
        .sent()
        .iter()
        .map(|mail| mail.to.as_str().to_owned())
        .collect()
}

/// Everything the outbox, users and codes hold, to compare before and after.
async fn snapshot(client: &tokio_postgres::Client) -> String {
    client
        .query_one(
            "SELECT concat_ws(' | ',
                 (SELECT jsonb_agg(to_jsonb(o) ORDER BY o.id) FROM email_outbox AS o)::text,
                 (SELECT jsonb_agg(to_jsonb(u) ORDER BY u.id) FROM users AS u)::text,
                 (SELECT jsonb_agg(to_jsonb(c) ORDER BY c.id) FROM activation_codes AS c)::text)",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// How many messages are in `status`.
async fn count_in(client: &tokio_postgres::Client, status: &str) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM email_outbox WHERE status::text = $1",
            &[&status],
        )
        .await
        .unwrap()
        .get(0)
}

/// Runs one replica's dispatcher until the outbox is empty (bounded); what it handled.
async fn drain<M: Mailer>(
    dispatcher: &Dispatcher<PgStore, M, FakeClock, SeqEntropy, NoTraces>,
    name: &str,
) -> DeliveryReport {
    const MAX_PASSES: usize = 2_000;
    let mut total = DeliveryReport::default();
    for _ in 0..MAX_PASSES {
        if dispatcher.depth().await.unwrap() == 0 {
            return total;
        }
        let pass = dispatcher.deliver_due().await.unwrap();
        total.sent += pass.sent;
        total.retried += pass.retried;
        total.failed += pass.failed;
        total.cancelled += pass.cancelled;
        // The other replica may hold the rest under its lease: let it run.
        tokio::task::yield_now().await;
    }
    panic!("replica {name} did not see the outbox empty after {MAX_PASSES} passes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_dispatchers_on_one_database_send_each_email_once() {
    let database = TestDatabase::migrated().await;
    let store_a = PgStore::new(&database.settings()).unwrap();
    let store_b = PgStore::new(&database.settings()).unwrap();
    let addresses: Vec<String> = (0..40).map(|i| format!("user{i:02}@example.com")).collect();
    for (n, address) in (0u128..).step_by(10).zip(&addresses) {
        // Queued through either replica, as a load balancer would spread the registrations.
        let store = if n % 20 == 0 { &store_a } else { &store_b };
        register(store, 1_000 + n, address).await;
    }
    assert_eq!(store_a.outbox_depth().await.unwrap(), 40);

    let clock = FakeClock::default();
    // Small batches, so both replicas claim over and over while the other is claiming too.
    let policy = DeliveryPolicy {
        batch: 3,
        ..DeliveryPolicy::default()
    };
    let (mailer_a, mailer_b) = (RecordingMailer::default(), RecordingMailer::default());
    let dispatcher_a = replica(&store_a, mailer_a.clone(), &clock, policy);
    let dispatcher_b = replica(&store_b, mailer_b.clone(), &clock, policy);

    let (report_a, report_b) = tokio::time::timeout(PATIENCE * 6, async {
        tokio::join!(drain(&dispatcher_a, "a"), drain(&dispatcher_b, "b"))
    })
    .await
    .expect("the replicas did not empty the outbox in time");

    let mut sent = recipients(&mailer_a);
    sent.extend(recipients(&mailer_b));
    let unique: BTreeSet<&String> = sent.iter().collect();
    assert_eq!(
        unique.len(),
        sent.len(),
        "an email went out twice: {sent:?}"
    );
    let expected: BTreeSet<&String> = addresses.iter().collect();
    assert_eq!(unique, expected, "not every email went out");
    assert_eq!(
        report_a.sent + report_b.sent,
        40,
        "{report_a:?} {report_b:?}"
    );
    assert_eq!(report_a.handled() + report_b.handled(), 40);
    let client = database.connect().await;
    assert_eq!(count_in(&client, "sent").await, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_whose_dispatcher_died_is_sent_by_the_other_once_the_lease_runs_out() {
    let database = TestDatabase::migrated().await;
    let store_a = PgStore::new(&database.settings()).unwrap();
    let store_b = PgStore::new(&database.settings()).unwrap();
    register(&store_a, 10, "ada@example.com").await;
    let clock = FakeClock::default();
    let policy = DeliveryPolicy::default();
    let mailer_b = RecordingMailer::default();
    let dispatcher_b = replica(&store_b, mailer_b.clone(), &clock, policy);

    // Replica A claims the message, then dies before sending it.
    let mut claimed = store_a
        .claim_mail(clock.now(), policy.lease, policy.batch)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let stale = claimed.pop().unwrap();

    // While A's lease lasts, B leaves the message alone.
    assert_eq!(
        dispatcher_b.deliver_due().await.unwrap(),
        DeliveryReport::default()
    );
    clock.advance(policy.lease.checked_sub(Duration::from_secs(1)).unwrap());
    assert_eq!(
        dispatcher_b.deliver_due().await.unwrap(),
        DeliveryReport::default()
    );
    assert!(mailer_b.sent().is_empty());

    // Once it has run out, B sends it.
    clock.advance(Duration::from_secs(2));
    let sent_at = clock.now();
    let report = dispatcher_b.deliver_due().await.unwrap();
    assert_eq!((report.sent, report.handled()), (1, 1), "{report:?}");
    assert_eq!(recipients(&mailer_b), ["ada@example.com"]);
    assert_eq!(store_b.outbox_depth().await.unwrap(), 0);

    // A comes back and records an outcome under its old claim: refused, nothing changes.
    let client = database.connect().await;
    let before = snapshot(&client).await;
    clock.advance(Duration::from_secs(1));
    let late_outcomes = [
        MailOutcome::Sent {
            accepted_at: clock.now(),
        },
        MailOutcome::Failed {
            error: "late failure".into(),
        },
        MailOutcome::Retry {
            next_attempt_at: clock.now(),
            error: "late retry".into(),
        },
        MailOutcome::Cancelled,
    ];
    for outcome in late_outcomes {
        assert_eq!(
            store_a.finish_mail(&[(&stale, &outcome)]).await.unwrap(),
            [false],
            "a stale claim settled the message with {outcome:?}"
        );
    }
    assert_eq!(snapshot(&client).await, before);
    let row = client
        .query_one(
            "SELECT status::text, sent_at FROM email_outbox WHERE id = $1",
            &[&stale.id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "sent");
    assert_eq!(row.get::<_, std::time::SystemTime>(1), sent_at);
    assert_eq!(
        dispatcher_b.deliver_due().await.unwrap(),
        DeliveryReport::default()
    );
    assert_eq!(mailer_b.sent().len(), 1);
}

/// Accepts every email at once, except those to `slow`, which wait until `release` is
/// notified.
#[derive(Clone)]
struct SlowFor {
    slow: String,
    release: Arc<Notify>,
    sent: Arc<Mutex<Vec<String>>>,
}

impl Mailer for SlowFor {
    async fn send_activation(&self, email: &ActivationEmail) -> Result<(), MailError> {
        if email.to.as_str() == self.slow {
            self.release.notified().await;
        }
        self.sent.lock().unwrap().push(email.to.as_str().to_owned());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_mailer_does_not_hold_up_other_emails() {
    let database = TestDatabase::migrated().await;
    let store = PgStore::new(&database.settings()).unwrap();
    // The slow one is queued first, so it is at the head of the batch.
    let addresses = [
        "slow@example.com",
        "b@example.com",
        "c@example.com",
        "d@example.com",
        "e@example.com",
    ];
    for (n, address) in (0u128..).step_by(10).zip(addresses) {
        register(&store, 1_000 + n, address).await;
    }
    let mailer = SlowFor {
        slow: addresses[0].to_owned(),
        release: Arc::new(Notify::new()),
        sent: Arc::default(),
    };
    let clock = FakeClock::default();
    let dispatcher = replica(&store, mailer.clone(), &clock, DeliveryPolicy::default());
    let client = database.connect().await;

    let (report, ()) = tokio::join!(dispatcher.deliver_due(), async {
        // The others are accepted and recorded as sent while the slow one is still out.
        tokio::time::timeout(PATIENCE, async {
            while count_in(&client, "sent").await < 4 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the other emails waited for the slow one");
        let sent: BTreeSet<String> = mailer.sent.lock().unwrap().iter().cloned().collect();
        let others: BTreeSet<String> = addresses[1..].iter().map(|&a| a.to_owned()).collect();
        assert_eq!(sent, others);
        assert_eq!(count_in(&client, "pending").await, 1);
        mailer.release.notify_one();
    });

    let report = report.unwrap();
    assert_eq!((report.sent, report.handled()), (5, 5), "{report:?}");
    assert_eq!(mailer.sent.lock().unwrap().last().unwrap(), addresses[0]);
    assert_eq!(store.outbox_depth().await.unwrap(), 0);
}

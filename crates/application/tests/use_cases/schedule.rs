//! The dispatcher's loop: how much it asks of the store while registrations arrive one by one,
//! which under load is once per email and so part of the cost of every registration.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime},
};

use registrar_adapters_memory::MemoryStore;
use registrar_application::{
    Dispatcher,
    ports::{
        AccountChange, ClaimedMail, Limit, MailOutcome, Pruned, SaveError, Store, StoreError,
        ThrottleKey, Versioned,
    },
};
use registrar_domain::{CodeId, Email, UserId};
use tokio::sync::watch;

use crate::support::{App, PASSWORD};

/// The memory store, counting the calls the dispatcher's loop makes on every pass.
#[derive(Clone, Default)]
struct Counting {
    store: MemoryStore,
    claims: Arc<AtomicUsize>,
    counts: Arc<AtomicUsize>,
}

impl Store for Counting {
    async fn account_by_email(
        &self,
        email: &Email,
        now: SystemTime,
    ) -> Result<Option<Versioned>, StoreError> {
        self.store.account_by_email(email, now).await
    }

    async fn account_by_id(
        &self,
        id: UserId,
        now: SystemTime,
    ) -> Result<Option<Versioned>, StoreError> {
        self.store.account_by_id(id, now).await
    }

    async fn save(&self, change: AccountChange) -> Result<(), SaveError> {
        self.store.save(change).await
    }

    async fn claim_mail(
        &self,
        now: SystemTime,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<ClaimedMail>, StoreError> {
        self.claims.fetch_add(1, Ordering::SeqCst);
        self.store.claim_mail(now, lease, limit).await
    }

    async fn finish_mail(
        &self,
        mail: &ClaimedMail,
        outcome: MailOutcome,
    ) -> Result<bool, StoreError> {
        self.store.finish_mail(mail, outcome).await
    }

    async fn mail_being_sent(&self, code: CodeId, now: SystemTime) -> Result<bool, StoreError> {
        self.store.mail_being_sent(code, now).await
    }

    async fn outbox_depth(&self) -> Result<u64, StoreError> {
        self.counts.fetch_add(1, Ordering::SeqCst);
        self.store.outbox_depth().await
    }

    async fn throttled_until(
        &self,
        key: &ThrottleKey,
        limit: Limit,
        now: SystemTime,
    ) -> Result<Option<SystemTime>, StoreError> {
        self.store.throttled_until(key, limit, now).await
    }

    async fn throttle_hit(
        &self,
        key: &ThrottleKey,
        limit: Limit,
        now: SystemTime,
    ) -> Result<Option<SystemTime>, StoreError> {
        self.store.throttle_hit(key, limit, now).await
    }

    async fn delete_account(&self, id: UserId, expected_version: u64) -> Result<(), SaveError> {
        self.store.delete_account(id, expected_version).await
    }

    async fn prune(
        &self,
        now: SystemTime,
        mail_queued_before: SystemTime,
        pending_registered_before: SystemTime,
    ) -> Result<Pruned, StoreError> {
        self.store
            .prune(now, mail_queued_before, pending_registered_before)
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }
}

#[tokio::test]
async fn each_email_queued_alone_costs_the_loop_one_claim_and_the_gauge_waits_for_its_timer() {
    const EMAILS: usize = 10;
    let app = App::new();
    let store = Counting {
        store: app.store.clone(),
        ..Counting::default()
    };
    let dispatcher = Dispatcher::new(
        store.clone(),
        app.mailer.clone(),
        app.clock.clone(),
        app.entropy.clone(),
        app.traces.clone(),
        app.codes,
        app.delivery,
    );
    // The poll never comes within the test: only the wake-ups of the registrations drive it.
    let poll = Duration::from_hours(1);
    let (stop, stopped) = watch::channel(false);

    let registrations = async {
        for i in 0..EMAILS {
            app.register(&format!("user{i}@example.com"), PASSWORD)
                .await
                .unwrap();
            // Let the loop deliver this one before the next is queued: the busiest case, a
            // pass per email.
            while app.mailer.sent().len() <= i {
                tokio::task::yield_now().await;
            }
        }
        stop.send(true).unwrap();
    };
    tokio::join!(
        dispatcher.run(app.signal.clone(), poll, stopped),
        registrations
    );

    assert_eq!(app.mailer.sent().len(), EMAILS);
    // One claim at start-up, then one per wake-up: no second claim to learn that nothing else
    // was due.
    assert_eq!(store.claims.load(Ordering::SeqCst), 1 + EMAILS);
    // The outbox is counted for the gauge at start-up, then not again within the poll interval.
    assert_eq!(store.counts.load(Ordering::SeqCst), 1);
}

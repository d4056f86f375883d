//! A store that passes every call on to another: for tests that count what a use case asks of
//! its store, or that must keep something alive as long as the store (a throw-away database).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use registrar_domain::{CodeId, Email, UserId};

use crate::ports::{
    AccountChange, ClaimedMail, Limit, Lookup, MailOutcome, Pruned, SaveError, Store, StoreError,
    ThrottleKey, Versioned,
};

/// Passes every call to `S`, counts the calls by method name, and keeps `K` until dropped
/// (after `S`, so a pool closes before the database it points at goes).
#[derive(Debug, Clone)]
pub struct PassingStore<S, K = ()> {
    store: S,
    calls: Arc<Mutex<HashMap<&'static str, usize>>>,
    kept: K,
}

impl<S> PassingStore<S> {
    /// Passes calls to `store`.
    pub fn new(store: S) -> Self {
        Self::keeping(store, ())
    }
}

impl<S, K> PassingStore<S, K> {
    /// Passes calls to `store` and keeps `kept` as long as itself.
    pub fn keeping(store: S, kept: K) -> Self {
        Self {
            store,
            calls: Arc::default(),
            kept,
        }
    }

    /// The store the calls go to.
    pub fn inner(&self) -> &S {
        &self.store
    }

    /// What it keeps alive.
    pub fn kept(&self) -> &K {
        &self.kept
    }

    /// Calls of `method` (a [`Store`] method's name) so far, through this value and its clones.
    pub fn calls(&self, method: &str) -> usize {
        self.calls.lock().unwrap().get(method).copied().unwrap_or(0)
    }

    fn count(&self, method: &'static str) {
        *self.calls.lock().unwrap().entry(method).or_default() += 1;
    }
}

impl<S: Store, K: Send + Sync + 'static> Store for PassingStore<S, K> {
    async fn account_by_email(
        &self,
        email: &Email,
        now: SystemTime,
    ) -> Result<Option<Versioned>, StoreError> {
        self.count("account_by_email");
        self.store.account_by_email(email, now).await
    }

    async fn account_by_id(
        &self,
        id: UserId,
        now: SystemTime,
    ) -> Result<Option<Versioned>, StoreError> {
        self.count("account_by_id");
        self.store.account_by_id(id, now).await
    }

    async fn save(&self, change: AccountChange) -> Result<(), SaveError> {
        self.count("save");
        self.store.save(change).await
    }

    async fn claim_mail(
        &self,
        now: SystemTime,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<ClaimedMail>, StoreError> {
        self.count("claim_mail");
        self.store.claim_mail(now, lease, limit).await
    }

    async fn finish_mail(
        &self,
        settled: &[(&ClaimedMail, &MailOutcome)],
    ) -> Result<Vec<bool>, StoreError> {
        self.count("finish_mail");
        self.store.finish_mail(settled).await
    }

    async fn mail_being_sent(&self, code: CodeId, now: SystemTime) -> Result<bool, StoreError> {
        self.count("mail_being_sent");
        self.store.mail_being_sent(code, now).await
    }

    async fn outbox_depth(&self) -> Result<u64, StoreError> {
        self.count("outbox_depth");
        self.store.outbox_depth().await
    }

    async fn login_state(
        &self,
        email: Option<&Email>,
        throttles: &[(ThrottleKey, Limit)],
        now: SystemTime,
    ) -> Result<Lookup, StoreError> {
        self.count("login_state");
        self.store.login_state(email, throttles, now).await
    }

    async fn registration_state(
        &self,
        email: &Email,
        throttle: Option<(&ThrottleKey, Limit)>,
        now: SystemTime,
    ) -> Result<Lookup, StoreError> {
        self.count("registration_state");
        self.store.registration_state(email, throttle, now).await
    }

    async fn throttle_hit(
        &self,
        key: &ThrottleKey,
        limit: Limit,
        now: SystemTime,
    ) -> Result<Option<SystemTime>, StoreError> {
        self.count("throttle_hit");
        self.store.throttle_hit(key, limit, now).await
    }

    async fn delete_account(&self, id: UserId, expected_version: u64) -> Result<(), SaveError> {
        self.count("delete_account");
        self.store.delete_account(id, expected_version).await
    }

    async fn prune(
        &self,
        now: SystemTime,
        mail_queued_before: SystemTime,
        pending_registered_before: SystemTime,
    ) -> Result<Pruned, StoreError> {
        self.count("prune");
        self.store
            .prune(now, mail_queued_before, pending_registered_before)
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.count("ping");
        self.store.ping().await
    }
}

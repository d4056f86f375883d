//! The in-memory store: the zero-setup default for trying Registrar, and the store the other
//! crates' tests run on. It keeps everything behind one mutex, so every operation is atomic
//! and serialisable; it keeps nothing across restarts.
#![forbid(unsafe_code)]

#[cfg(feature = "testing")]
use std::sync::atomic::AtomicBool;
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use registrar_application::{
    TraceContext,
    ports::{
        AccountChange, ClaimedMail, Limit, Lookup, MailOutcome, Pruned, SaveError, Store,
        StoreError, ThrottleKey, Versioned,
    },
};
use registrar_domain::{
    Account, ActivationCode, CodeDeath, CodeDigits, CodeId, CodePolicy, CodeState, Email, User,
    UserId,
};
use uuid::Uuid;

/// The in-memory store. Clones share the same data.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    #[cfg(feature = "testing")]
    outage: Arc<AtomicBool>,
    claims: Arc<AtomicU64>,
}

#[derive(Debug, Default)]
struct State {
    users: HashMap<UserId, (User, u64)>,
    by_email: HashMap<String, UserId>,
    /// Every code of every user, in issue order: the last one is the current one.
    codes: HashMap<UserId, Vec<ActivationCode>>,
    outbox: Vec<MailRow>,
    /// Per key: when its window ends and how many events it counted.
    throttles: HashMap<String, (SystemTime, u32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MailStatus {
    Pending,
    Sent,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone)]
struct MailRow {
    id: Uuid,
    user_id: UserId,
    to: Email,
    code: Option<CodeDigits>,
    code_id: CodeId,
    queued_at: SystemTime,
    status: MailStatus,
    attempts: u32,
    next_attempt_at: SystemTime,
    lease_until: Option<SystemTime>,
    claim: Option<Uuid>,
    last_error: Option<String>,
    trace: Option<TraceContext>,
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every operation fail as if the store were unreachable (or work again): the test
    /// double's way to exercise outage handling. Only with the `testing` feature.
    #[cfg(feature = "testing")]
    pub fn simulate_outage(&self, down: bool) {
        self.outage.store(down, Ordering::SeqCst);
    }

    #[cfg_attr(
        not(feature = "testing"),
        expect(
            clippy::unnecessary_wraps,
            reason = "only a simulated outage fails it, and that exists for tests alone"
        )
    )]
    fn lock(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        #[cfg(feature = "testing")]
        if self.outage.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(Box::new(testing::SimulatedOutage)));
        }
        // A panic while holding the lock cannot leave a half-applied change: every mutation
        // below is checked before it starts. So a poisoned lock is still consistent.
        Ok(self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

impl State {
    /// Counts one event for `key`, unless it is already over `limit`: then until when it is.
    fn throttle_hit(
        &mut self,
        key: &ThrottleKey,
        limit: Limit,
        now: SystemTime,
    ) -> Option<SystemTime> {
        let entry = self
            .throttles
            .entry(key.as_storage_key())
            .or_insert((now, 0));
        if entry.0 <= now {
            *entry = (now + limit.window, 1);
            return None;
        }
        if entry.1 >= limit.max {
            return Some(entry.0);
        }
        entry.1 += 1;
        None
    }

    fn account_by_email(&self, email: &Email, now: SystemTime) -> Option<Versioned> {
        self.by_email
            .get(&email.key())
            .and_then(|id| self.account(*id, now))
    }

    fn account(&self, id: UserId, now: SystemTime) -> Option<Versioned> {
        let (user, version) = self.users.get(&id)?;
        let codes = self.codes.get(&id).map(Vec::as_slice).unwrap_or_default();
        let recent = codes
            .iter()
            .map(ActivationCode::issued_at)
            .filter(|t| {
                t.checked_add(CodePolicy::WINDOW)
                    .is_some_and(|end| end > now)
            })
            .collect();
        Some(Versioned {
            account: Account::restore(user.clone(), codes.last().cloned(), recent),
            version: *version,
        })
    }

    fn code_mut(&mut self, user_id: UserId, code_id: CodeId) -> Option<&mut ActivationCode> {
        self.codes
            .get_mut(&user_id)?
            .iter_mut()
            .find(|c| c.id() == code_id)
    }

    /// Forgets the account with this id, its codes and its mail.
    fn erase(&mut self, id: UserId) {
        if let Some((user, _)) = self.users.remove(&id) {
            self.by_email.remove(&user.email().key());
        }
        self.codes.remove(&id);
        self.outbox.retain(|row| row.user_id != id);
    }

    fn bump(&mut self, user_id: UserId) {
        if let Some((_, version)) = self.users.get_mut(&user_id) {
            *version += 1;
        }
    }

    /// Records one message's outcome; `false` when its claim is no longer current.
    fn finish_mail(&mut self, mail: &ClaimedMail, outcome: &MailOutcome) -> bool {
        let Some(row) = self.outbox.iter_mut().find(|row| {
            row.id == mail.id && row.claim == Some(mail.claim) && row.status == MailStatus::Pending
        }) else {
            return false;
        };
        row.lease_until = None;
        row.claim = None;
        let (user_id, code_id) = (row.user_id, row.code_id);
        match outcome {
            MailOutcome::Sent { accepted_at } => {
                row.status = MailStatus::Sent;
                row.code = None;
                if let Some(code) = self.code_mut(user_id, code_id) {
                    code.mark_delivered(*accepted_at);
                }
                self.bump(user_id);
            }
            MailOutcome::Retry {
                next_attempt_at,
                error,
            } => {
                row.next_attempt_at = *next_attempt_at;
                row.last_error = Some(error.clone());
            }
            MailOutcome::Failed { error } => {
                row.status = MailStatus::Failed;
                row.code = None;
                row.last_error = Some(error.clone());
                if let Some(code) = self.code_mut(user_id, code_id) {
                    code.mark_undeliverable();
                }
                self.bump(user_id);
            }
            MailOutcome::Cancelled => {
                row.status = MailStatus::Cancelled;
                row.code = None;
            }
        }
        true
    }
}

impl Store for MemoryStore {
    async fn account_by_email(
        &self,
        email: &Email,
        now: SystemTime,
    ) -> Result<Option<Versioned>, StoreError> {
        Ok(self.lock()?.account_by_email(email, now))
    }

    async fn account_by_id(
        &self,
        id: UserId,
        now: SystemTime,
    ) -> Result<Option<Versioned>, StoreError> {
        Ok(self.lock()?.account(id, now))
    }

    async fn save(&self, change: AccountChange) -> Result<(), SaveError> {
        let mut state = self.lock()?;
        let AccountChange {
            account,
            expected_version,
            mail,
        } = change;
        let user = account.user().clone();
        let id = user.id();
        let key = user.email().key();
        let version = match expected_version {
            None if state.by_email.contains_key(&key) || state.users.contains_key(&id) => {
                return Err(SaveError::Conflict);
            }
            None => 1,
            Some(expected) => match state.users.get(&id) {
                Some((_, current)) if *current == expected => expected + 1,
                _ => return Err(SaveError::Conflict),
            },
        };
        if let Some((old, _)) = state.users.get(&id) {
            let old_key = old.email().key();
            state.by_email.remove(&old_key);
        }
        state.by_email.insert(key, id);
        state.users.insert(id, (user, version));
        let codes = state.codes.entry(id).or_default();
        if let Some(current) = account.code() {
            match codes.iter_mut().find(|c| c.id() == current.id()) {
                Some(stored) => *stored = current.clone(),
                None => codes.push(current.clone()),
            }
            for other in codes
                .iter_mut()
                .filter(|c| c.id() != current.id() && c.state() == CodeState::Live)
            {
                *other = ActivationCode::restore(
                    other.id(),
                    other.digest(),
                    other.issued_at(),
                    other.delivered_at(),
                    other.wrong_attempts(),
                    CodeState::Dead(CodeDeath::Replaced),
                );
            }
            // Every other code is dead now: cancel the pending mail that carries one of them,
            // or the current code if it is dead or used, and wipe its clear code. This runs
            // before the save's own mail is queued, as in the PostgreSQL store.
            let current_is_live = current.state() == CodeState::Live;
            for row in state.outbox.iter_mut().filter(|row| {
                row.user_id == id
                    && row.status == MailStatus::Pending
                    && (row.code_id != current.id() || !current_is_live)
            }) {
                row.status = MailStatus::Cancelled;
                row.code = None;
                row.lease_until = None;
                row.claim = None;
            }
        }
        if let Some(mail) = mail {
            state.outbox.push(MailRow {
                id: mail.id,
                user_id: id,
                to: mail.to,
                code: Some(mail.code),
                code_id: mail.code_id,
                queued_at: mail.queued_at,
                status: MailStatus::Pending,
                attempts: 0,
                next_attempt_at: mail.queued_at,
                lease_until: None,
                claim: None,
                last_error: None,
                trace: mail.trace,
            });
        }
        Ok(())
    }

    async fn claim_mail(
        &self,
        now: SystemTime,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<ClaimedMail>, StoreError> {
        let mut state = self.lock()?;
        let mut due: Vec<usize> = state
            .outbox
            .iter()
            .enumerate()
            .filter(|(_, row)| {
                row.status == MailStatus::Pending
                    && row.next_attempt_at <= now
                    && row.lease_until.is_none_or(|until| until <= now)
            })
            .map(|(i, _)| i)
            .collect();
        due.sort_by_key(|i| (state.outbox[*i].queued_at, state.outbox[*i].id));
        due.truncate(limit);
        let mut claimed = Vec::with_capacity(due.len());
        for i in due {
            let claim =
                Uuid::from_u128(u128::from(self.claims.fetch_add(1, Ordering::Relaxed)) + 1);
            let row = &mut state.outbox[i];
            row.lease_until = Some(now + lease);
            row.claim = Some(claim);
            row.attempts += 1;
            let row = row.clone();
            let Some(code) = row.code else { continue };
            let code_alive = state
                .codes
                .get(&row.user_id)
                .and_then(|codes| codes.iter().find(|c| c.id() == row.code_id))
                .is_some_and(|c| c.state() == CodeState::Live);
            claimed.push(ClaimedMail {
                id: row.id,
                claim,
                user_id: row.user_id,
                to: row.to,
                code,
                code_id: row.code_id,
                attempts: row.attempts,
                queued_at: row.queued_at,
                code_alive,
                trace: row.trace,
            });
        }
        Ok(claimed)
    }

    async fn finish_mail(
        &self,
        settled: &[(&ClaimedMail, &MailOutcome)],
    ) -> Result<Vec<bool>, StoreError> {
        let mut state = self.lock()?;
        Ok(settled
            .iter()
            .map(|(mail, outcome)| state.finish_mail(mail, outcome))
            .collect())
    }

    async fn mail_being_sent(&self, code: CodeId, now: SystemTime) -> Result<bool, StoreError> {
        Ok(self.lock()?.outbox.iter().any(|row| {
            row.code_id == code
                && row.status == MailStatus::Pending
                && row.lease_until.is_some_and(|until| until > now)
        }))
    }

    async fn outbox_depth(&self) -> Result<u64, StoreError> {
        let state = self.lock()?;
        let pending = state
            .outbox
            .iter()
            .filter(|row| row.status == MailStatus::Pending)
            .count();
        Ok(u64::try_from(pending).unwrap_or(u64::MAX))
    }

    async fn login_state(
        &self,
        email: Option<&Email>,
        throttles: &[(ThrottleKey, Limit)],
        now: SystemTime,
    ) -> Result<Lookup, StoreError> {
        let state = self.lock()?;
        let closed_until = throttles.iter().find_map(|(key, limit)| {
            state
                .throttles
                .get(&key.as_storage_key())
                .and_then(|(end, count)| (*end > now && *count >= limit.max).then_some(*end))
        });
        Ok(match closed_until {
            Some(until) => Lookup::Throttled(until),
            None => Lookup::Open(email.and_then(|email| state.account_by_email(email, now))),
        })
    }

    async fn registration_state(
        &self,
        email: &Email,
        throttle: Option<(&ThrottleKey, Limit)>,
        now: SystemTime,
    ) -> Result<Lookup, StoreError> {
        let mut state = self.lock()?;
        if let Some(until) = throttle.and_then(|(key, limit)| state.throttle_hit(key, limit, now)) {
            return Ok(Lookup::Throttled(until));
        }
        Ok(Lookup::Open(state.account_by_email(email, now)))
    }

    async fn throttle_hit(
        &self,
        key: &ThrottleKey,
        limit: Limit,
        now: SystemTime,
    ) -> Result<Option<SystemTime>, StoreError> {
        Ok(self.lock()?.throttle_hit(key, limit, now))
    }

    async fn delete_account(&self, id: UserId, expected_version: u64) -> Result<(), SaveError> {
        let mut state = self.lock()?;
        match state.users.get(&id) {
            Some((_, version)) if *version == expected_version => {
                state.erase(id);
                Ok(())
            }
            _ => Err(SaveError::Conflict),
        }
    }

    async fn prune(
        &self,
        now: SystemTime,
        mail_queued_before: SystemTime,
        pending_registered_before: SystemTime,
    ) -> Result<Pruned, StoreError> {
        let mut state = self.lock()?;
        // In the PostgreSQL store's order: settled mail, throttles, then abandoned accounts
        // (whose remaining mail goes with them, uncounted).
        let (mail, throttles) = (state.outbox.len(), state.throttles.len());
        state
            .outbox
            .retain(|row| row.status == MailStatus::Pending || row.queued_at >= mail_queued_before);
        state.throttles.retain(|_, (end, _)| *end > now);
        let abandoned: Vec<UserId> = state
            .users
            .values()
            .filter(|(user, _)| !user.is_active() && user.created_at() < pending_registered_before)
            .map(|(user, _)| user.id())
            .collect();
        let gone = |before: usize, after: usize| u64::try_from(before - after).unwrap_or(u64::MAX);
        let (mail, throttles) = (
            gone(mail, state.outbox.len()),
            gone(throttles, state.throttles.len()),
        );
        for id in &abandoned {
            state.erase(*id);
        }
        Ok(Pruned {
            mail,
            throttles,
            pending_accounts: u64::try_from(abandoned.len()).unwrap_or(u64::MAX),
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.lock().map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryStore;

    registrar_application::store_contract_tests!(|| async { MemoryStore::new() });
}

#[cfg(feature = "testing")]
mod testing {
    //! What only tests need: the cause of a simulated outage.

    /// The cause of the errors `simulate_outage` makes.
    #[derive(Debug, thiserror::Error)]
    #[error("simulated outage")]
    pub(crate) struct SimulatedOutage;
}

//! The ports: what the use cases need from the world outside the process.
//!
//! Every port is `Send + Sync + 'static` and its async methods return `Send` futures, so
//! implementations can be shared across threads and driven from `tokio::spawn`.

use std::{
    fmt::Write as _,
    future::Future,
    net::IpAddr,
    time::{Duration, SystemTime},
};

use registrar_domain::{Account, CodeDigits, CodeId, Email, Password, PasswordHash, UserId};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::TraceContext;

/// The current time. Use cases read it once per step and pass it to the domain.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> SystemTime;
}

/// Randomness: codes, ids, jitter and secrets come from here, so tests can fix them.
pub trait Entropy: Send + Sync + 'static {
    /// A uniformly random activation code from a CSPRNG.
    fn activation_code(&self) -> CodeDigits;
    /// A fresh UUID v7 for `now`.
    fn uuid(&self, now: SystemTime) -> Uuid;
    /// A uniform number in `[0, 1)`, for jitter.
    fn unit(&self) -> f64;
    /// 32 random bytes, for a per-process secret.
    fn secret(&self) -> [u8; 32];
}

/// The outcome of checking a password against a hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The password matches; `stale` says the hash uses weaker parameters than configured.
    Match {
        /// Re-hash with the current parameters.
        stale: bool,
    },
    /// The password does not match.
    Mismatch,
}

/// Why hashing did not happen.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The job would wait too long for a hashing thread, or the pool's queue is at its cap.
    #[error("the password hashing pool is overloaded")]
    Overloaded {
        /// When to try again: whole seconds, at least one.
        retry_after: Duration,
    },
    /// The hash could not be computed, or the stored one could not be checked.
    #[error("password hashing failed")]
    Failed(#[source] Cause),
}

/// Distributed tracing, as far as the use cases need it: a request's trace context is kept with
/// the email it queues, and the span that later delivers the email links back to it. A link,
/// not a parent: the delivery is a trace of its own, started by the dispatcher, as in
/// OpenTelemetry's messaging conventions.
pub trait Traces: Send + Sync + 'static {
    /// The trace context of the current span, when spans are recorded.
    fn current(&self) -> Option<TraceContext>;

    /// Links `span` to the span `context` names.
    fn link(&self, span: &tracing::Span, context: TraceContext);
}

/// Password hashing, off the async threads.
pub trait PasswordHasher: Send + Sync + 'static {
    /// Hashes a password with the configured parameters and a fresh salt.
    ///
    /// # Errors
    /// MUST return [`HashError::Overloaded`] at once, without queueing, when the pool cannot
    /// take the job (it would be expected to start too late, or the queue is at its cap).
    fn hash(
        &self,
        password: Password,
    ) -> impl Future<Output = Result<PasswordHash, HashError>> + Send;

    /// Checks a password against a stored hash, taking about as long as [`Self::hash`].
    ///
    /// # Errors
    /// As for [`Self::hash`]; a hash that does not parse is [`HashError::Failed`].
    fn verify(
        &self,
        password: Password,
        hash: PasswordHash,
    ) -> impl Future<Output = Result<Verification, HashError>> + Send;

    /// Answers at once whether a job submitted now would find room, so a caller can shed a
    /// request before doing costly work of its own. Advisory: the pool may fill in between.
    ///
    /// # Errors
    /// [`HashError::Overloaded`] when [`Self::hash`] would refuse a job right now.
    fn check_room(&self) -> Result<(), HashError>;

    /// Runs `work`, CPU-bound work of a request other than hashing (the strength estimate of a
    /// new password: about half a millisecond), on the hashing threads, ahead of the jobs
    /// queued there: off the async threads, where it would hold up every request behind it,
    /// and not behind the queue, where its own request would wait for every hash ahead. It is
    /// not admitted like a hash: the caller checks [`Self::check_room`] first.
    ///
    /// # Errors
    /// [`HashError::Failed`] when the threads are gone or `work` panicked.
    fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = Result<T, HashError>> + Send;
}

/// The activation email to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationEmail {
    /// The recipient.
    pub to: Email,
    /// The code, in clear: only the mailer sees it.
    pub code: CodeDigits,
    /// How long the code stays usable once the email is accepted.
    pub valid_for: Duration,
}

/// What a port error carries as its cause: the adapter's own error, whose chain of sources is
/// logged where the failure ends (an adapter redacts what must never be logged before it boxes
/// it: SQL text, row values, the code).
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why an email was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// Worth retrying: connection trouble, time-out, 4xx reply.
    #[error("transient mail failure")]
    Transient(#[source] Cause),
    /// Not worth retrying: 5xx reply, invalid recipient.
    #[error("permanent mail failure")]
    Permanent(#[source] Cause),
}

/// Sends email. `Ok` means the mail server accepted the message.
pub trait Mailer: Send + Sync + 'static {
    /// Sends the activation email.
    ///
    /// # Errors
    /// [`MailError::Transient`] when a later try may succeed, [`MailError::Permanent`] otherwise.
    fn send_activation(
        &self,
        email: &ActivationEmail,
    ) -> impl Future<Output = Result<(), MailError>> + Send;

    /// Called once the acceptance of `email` is recorded, so its code is usable from now on.
    /// A mailer that shows the code itself (the log mailer) shows it here, so nobody can read a
    /// code before it works. Does nothing by default.
    fn delivery_recorded(&self, email: &ActivationEmail) -> impl Future<Output = ()> + Send {
        let _ = email;
        async {}
    }
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached now (connection refused, time-out); it may come back.
    #[error("the store is unavailable")]
    Unavailable(#[source] Cause),
    /// Anything else.
    #[error("store failure")]
    Internal(#[source] Cause),
}

/// Why a save did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// Someone else changed the account since it was loaded (or, for a new account, registered
    /// the address first). Load again and decide again.
    #[error("the account changed since it was loaded")]
    Conflict,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An account as loaded, with the version a save must expect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The account.
    pub account: Account,
    /// Its version in the store.
    pub version: u64,
}

/// What a read that a throttle may close found: [`Store::login_state`] and
/// [`Store::registration_state`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "returned once per request and matched at once, as `Option<Versioned>` itself is"
)]
pub enum Lookup {
    /// A throttle is over its limit until then; no account was read.
    Throttled(SystemTime),
    /// No throttle is over its limit: the account, if there is one.
    Open(Option<Versioned>),
}

impl Lookup {
    /// The account read, or until when the throttle that refused the read is over.
    ///
    /// # Errors
    /// The end of the throttle's window, when one refused the read.
    pub fn account(self) -> Result<Option<Versioned>, SystemTime> {
        match self {
            Self::Throttled(until) => Err(until),
            Self::Open(account) => Ok(account),
        }
    }
}

/// An activation email to queue in the outbox, in the same transaction as the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMail {
    /// The message's id.
    pub id: Uuid,
    /// The recipient.
    pub to: Email,
    /// The code it carries, and the code's id.
    pub code: CodeDigits,
    /// Which code it carries.
    pub code_id: CodeId,
    /// When it was queued.
    pub queued_at: SystemTime,
    /// The trace of the request that queued it, if spans were recorded.
    pub trace: Option<TraceContext>,
}

/// One unit of work: the account as it should now be, and mail to queue with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountChange {
    /// The account's new state.
    pub account: Account,
    /// The version it was loaded at; `None` for a new account.
    pub expected_version: Option<u64>,
    /// Mail to queue in the same transaction.
    pub mail: Option<QueuedMail>,
}

/// An outbox message claimed for delivery, under a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedMail {
    /// The message's id.
    pub id: Uuid,
    /// Proves this claim is still the current one when recording the outcome.
    pub claim: Uuid,
    /// The account it belongs to.
    pub user_id: UserId,
    /// The recipient.
    pub to: Email,
    /// The code, in clear.
    pub code: CodeDigits,
    /// The code's id.
    pub code_id: CodeId,
    /// Delivery attempts including this one.
    pub attempts: u32,
    /// When it was queued.
    pub queued_at: SystemTime,
    /// Whether its code is still live; mail for a dead code is not sent.
    pub code_alive: bool,
    /// The trace of the request that queued it, as queued.
    pub trace: Option<TraceContext>,
}

/// What became of a claimed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailOutcome {
    /// The mail server accepted it at this time: the code becomes usable from then.
    Sent {
        /// When the server accepted it.
        accepted_at: SystemTime,
    },
    /// Try again at `next_attempt_at`.
    Retry {
        /// When.
        next_attempt_at: SystemTime,
        /// What went wrong this time.
        error: String,
    },
    /// Given up: the code dies.
    Failed {
        /// Why.
        error: String,
    },
    /// Not sent because its code died.
    Cancelled,
}

/// A rate limit: at most `max` events per fixed `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Events allowed per window.
    pub max: u32,
    /// The window, starting at the first event.
    pub window: Duration,
}

/// What a throttle counts: one kind of event for one account or client address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ThrottleKey {
    /// Failed logins for an email address (known or not, so throttling reveals nothing).
    LoginFailuresForAccount(String),
    /// Failed logins from a client address.
    LoginFailuresFromAddress(IpAddr),
    /// Registrations from a client address.
    RegistrationsFromAddress(IpAddr),
}

impl ThrottleKey {
    /// A stable text form, for storage: short, printable, and free of addresses in clear.
    #[must_use]
    pub fn as_storage_key(&self) -> String {
        match self {
            // A user name is whatever the client sent (NUL bytes, kilobytes): only its digest
            // is fit for an index.
            Self::LoginFailuresForAccount(name) => Sha256::digest(name.as_bytes()).iter().fold(
                "login-failures:account:".to_owned(),
                |mut key, byte| {
                    let _ = write!(key, "{byte:02x}");
                    key
                },
            ),
            Self::LoginFailuresFromAddress(ip) => format!("login-failures:address:{ip}"),
            Self::RegistrationsFromAddress(ip) => format!("registrations:address:{ip}"),
        }
    }
}

/// Persistent state: accounts (with optimistic concurrency), the outbox and throttle counters.
///
/// A save is one transaction. Stores MUST behave identically; the contract suite in
/// `testing::store_contract` pins the behaviour down and runs against every implementation.
pub trait Store: Send + Sync + 'static {
    /// The account whose address has the same [`Email::key`], if any.
    fn account_by_email(
        &self,
        email: &Email,
        now: SystemTime,
    ) -> impl Future<Output = Result<Option<Versioned>, StoreError>> + Send;

    /// The account with this id, if any.
    fn account_by_id(
        &self,
        id: UserId,
        now: SystemTime,
    ) -> impl Future<Output = Result<Option<Versioned>, StoreError>> + Send;

    /// Saves an account and queues its mail, atomically.
    ///
    /// Codes of the account other than its current one MUST end up dead. In the same
    /// transaction, every outbox message of the account that was pending before the save and
    /// whose code is not live after it (a code the save killed, or the current code if it is
    /// dead or used) MUST be cancelled, its clear code wiped, whether or not it is claimed: it
    /// is never claimed again, a claim on it is no longer current (`finish_mail` returns
    /// `false`), and it does not count in [`Self::outbox_depth`]. The mail the save queues is
    /// not affected.
    ///
    /// A store MAY leave alone a message that a concurrent `claim_mail` or `finish_mail` is
    /// writing at that very moment rather than wait for it (waiting could deadlock): its
    /// dispatcher then settles it, or it is claimed again later with `code_alive: false`. A
    /// code can also die between a claim and the send, so the dispatcher keeps checking
    /// `code_alive`.
    ///
    /// # Errors
    /// MUST return [`SaveError::Conflict`] if the stored version differs from
    /// `expected_version`, or if `expected_version` is `None` and an account with the same
    /// email key or id exists; then nothing is written or cancelled.
    fn save(&self, change: AccountChange) -> impl Future<Output = Result<(), SaveError>> + Send;

    /// Claims up to `limit` messages that are due at `now` (pending, next attempt reached, no
    /// live lease), leasing them until `now + lease` and counting the attempt.
    fn claim_mail(
        &self,
        now: SystemTime,
        lease: Duration,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ClaimedMail>, StoreError>> + Send;

    /// Records what became of claimed messages, all in one unit of work (a dispatcher settles
    /// the sends that end close together at once, so the store's cost is per batch, not per
    /// email). For each message:
    /// wipes the clear code once it is sent, failed or cancelled; marks its code delivered
    /// (`Sent`) or dead (`Failed`). Returns, in the order given, whether each was recorded:
    /// `false`, changing nothing for that message, when its claim is no longer current; the
    /// others are recorded all the same.
    fn finish_mail(
        &self,
        settled: &[(&ClaimedMail, &MailOutcome)],
    ) -> impl Future<Output = Result<Vec<bool>, StoreError>> + Send;

    /// Whether a message carrying code `code` is being sent at `now`: claimed under a lease
    /// that has not run out, its outcome not recorded yet.
    fn mail_being_sent(
        &self,
        code: CodeId,
        now: SystemTime,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Messages waiting to be sent (pending, whether due or not).
    fn outbox_depth(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// What a login needs before the password is checked, in one read where the store can:
    /// the first of `throttles` (in the order given) that is over its limit at `now`, until
    /// when, counting nothing and reading no account; or, if none is, the account whose
    /// address has the same [`Email::key`] as `email`, as [`Self::account_by_email`] gives it
    /// (none when `email` is `None`).
    fn login_state(
        &self,
        email: Option<&Email>,
        throttles: &[(ThrottleKey, Limit)],
        now: SystemTime,
    ) -> impl Future<Output = Result<Lookup, StoreError>> + Send;

    /// What a registration needs before its hash, in one read where the store can: one event
    /// counted for `throttle`, as [`Self::throttle_hit`] counts it, and if that throttle was
    /// already over its limit, until when, reading no account; otherwise (or with no throttle)
    /// the account whose address has the same [`Email::key`] as `email`, as
    /// [`Self::account_by_email`] gives it.
    fn registration_state(
        &self,
        email: &Email,
        throttle: Option<(&ThrottleKey, Limit)>,
        now: SystemTime,
    ) -> impl Future<Output = Result<Lookup, StoreError>> + Send;

    /// Counts one event for `key`, unless it is already over `limit`; then returns until when it
    /// is, counting nothing.
    fn throttle_hit(
        &self,
        key: &ThrottleKey,
        limit: Limit,
        now: SystemTime,
    ) -> impl Future<Output = Result<Option<SystemTime>, StoreError>> + Send;

    /// Erases the account with this id at `expected_version`, with every code and outbox
    /// message it has (a message being sent just then may still be delivered, but its claim is
    /// no longer current).
    ///
    /// # Errors
    /// MUST return [`SaveError::Conflict`], erasing nothing, if the account is gone or its
    /// stored version differs from `expected_version`.
    fn delete_account(
        &self,
        id: UserId,
        expected_version: u64,
    ) -> impl Future<Output = Result<(), SaveError>> + Send;

    /// Deletes what no rule reads any more: settled (sent, failed or cancelled) messages queued
    /// before `mail_queued_before`, throttle windows that ended by `now`, and accounts still
    /// pending whose last registration or takeover was before `pending_registered_before`
    /// (with their codes and messages). Works in batches; safe to run concurrently with
    /// everything else, and on several replicas at once: an account that a concurrent save is
    /// writing is left for the next prune, and a save at a version loaded before the account
    /// was erased conflicts.
    fn prune(
        &self,
        now: SystemTime,
        mail_queued_before: SystemTime,
        pending_registered_before: SystemTime,
    ) -> impl Future<Output = Result<Pruned, StoreError>> + Send;

    /// Checks that the store answers.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// What one [`Store::prune`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Settled outbox messages.
    pub mail: u64,
    /// Ended throttle windows.
    pub throttles: u64,
    /// Accounts never activated within the retention.
    pub pending_accounts: u64,
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::ThrottleKey;

    #[test]
    fn storage_keys_keep_their_format() {
        // Counters already stored under these keys must still be found after an upgrade.
        assert_eq!(
            ThrottleKey::LoginFailuresForAccount("abc".to_owned()).as_storage_key(),
            "login-failures:account:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(
            ThrottleKey::LoginFailuresFromAddress(ip).as_storage_key(),
            "login-failures:address:192.0.2.1"
        );
        assert_eq!(
            ThrottleKey::RegistrationsFromAddress(ip).as_storage_key(),
            "registrations:address:192.0.2.1"
        );
    }
}

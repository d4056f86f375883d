//! The account aggregate: a user, their current activation code and when their recent codes
//! were issued. Every rule about codes (takeover, cooldown, daily cap, attempts, expiry) is
//! decided here, from the state and `now`.

use std::time::{Duration, SystemTime};

use crate::{
    ActivationCode, CodeDeath, CodeDigest, CodeDigits, CodeId, CodeSecret, CodeStatus, Email,
    PasswordHash, User, UserId,
};

/// How codes behave: lifetime after delivery, wrong attempts allowed, and how often new ones
/// may be issued.
///
/// ```
/// use std::time::Duration;
/// use registrar_domain::CodePolicy;
///
/// let policy = CodePolicy::new(Duration::from_secs(60), 5, Duration::from_secs(30), 10)?;
/// assert_eq!(policy, CodePolicy::default());
/// # Ok::<(), registrar_domain::CodePolicyError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodePolicy {
    ttl: Duration,
    max_attempts: u32,
    cooldown: Duration,
    daily_cap: u32,
}

/// A [`CodePolicy`] setting is out of range.
///
/// ```
/// use std::time::Duration;
/// use registrar_domain::{CodePolicy, CodePolicyError};
///
/// let zero = CodePolicy::new(Duration::ZERO, 5, Duration::ZERO, 10);
/// assert_eq!(zero, Err(CodePolicyError::ZeroTtl));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodePolicyError {
    /// A code must live for some time.
    #[error("the code lifetime must be longer than zero")]
    ZeroTtl,
    /// At least one attempt must be allowed.
    #[error("at least one attempt per code must be allowed")]
    ZeroAttempts,
    /// At least one code a day must be allowed.
    #[error("at least one code per day must be allowed")]
    ZeroDailyCap,
}

impl CodePolicy {
    /// The window the daily cap counts codes in.
    pub const WINDOW: Duration = Duration::from_hours(24);

    /// A policy: codes live `ttl` after delivery, die at the `max_attempts`-th wrong guess, and
    /// are issued at most once per `cooldown` and `daily_cap` times per 24 hours per account.
    pub fn new(
        ttl: Duration,
        max_attempts: u32,
        cooldown: Duration,
        daily_cap: u32,
    ) -> Result<Self, CodePolicyError> {
        if ttl.is_zero() {
            return Err(CodePolicyError::ZeroTtl);
        }
        if max_attempts == 0 {
            return Err(CodePolicyError::ZeroAttempts);
        }
        if daily_cap == 0 {
            return Err(CodePolicyError::ZeroDailyCap);
        }
        Ok(Self {
            ttl,
            max_attempts,
            cooldown,
            daily_cap,
        })
    }

    /// How long a code is usable after its email was accepted.
    #[must_use]
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Wrong attempts that kill a code.
    #[must_use]
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Least time between two codes for one account.
    #[must_use]
    pub fn cooldown(&self) -> Duration {
        self.cooldown
    }

    /// Most codes per account per 24 hours.
    #[must_use]
    pub fn daily_cap(&self) -> u32 {
        self.daily_cap
    }
}

impl Default for CodePolicy {
    fn default() -> Self {
        Self {
            ttl: Duration::from_mins(1),
            max_attempts: 5,
            cooldown: Duration::from_secs(30),
            daily_cap: 10,
        }
    }
}

/// A freshly drawn code: its id and the digest of its digits.
///
/// ```
/// use registrar_domain::{CodeDigits, CodeId, CodeSecret, NewCode};
///
/// let secret = CodeSecret::new(*b"a key of at least sixteen bytes")?;
/// let id = CodeId::from_uuid(uuid::Uuid::from_u128(1));
/// let code = NewCode::new(id, CodeDigits::parse("0421")?, &secret);
/// assert_eq!(code.id(), id);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewCode {
    id: CodeId,
    digest: CodeDigest,
}

impl NewCode {
    /// Digests `digits` under `secret` for the code `id`.
    #[must_use]
    pub fn new(id: CodeId, digits: CodeDigits, secret: &CodeSecret) -> Self {
        Self {
            id,
            digest: secret.digest(id, digits),
        }
    }

    /// The new code's id.
    #[must_use]
    pub fn id(&self) -> CodeId {
        self.id
    }
}

/// A code was issued: how long it will live once delivered and when the next may be asked for.
///
/// ```
/// # use std::time::{Duration, SystemTime};
/// # use registrar_domain::*;
/// # let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
/// # let policy = CodePolicy::default();
/// # let secret = CodeSecret::new(*b"a key of at least sixteen bytes")?;
/// # let code = |n: u128, digits: &str| -> Result<NewCode, CodeFormatError> {
/// #     let id = CodeId::from_uuid(uuid::Uuid::from_u128(n));
/// #     Ok(NewCode::new(id, CodeDigits::parse(digits)?, &secret))
/// # };
/// # let mut account = Account::register(
/// #     UserId::from_uuid(uuid::Uuid::from_u128(7)),
/// #     Email::parse("ada@example.com")?,
/// #     PasswordHash::from_phc("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into())?,
/// #     code(1, "0421")?,
/// #     t0,
/// # );
/// account.mark_code_undeliverable(CodeId::from_uuid(uuid::Uuid::from_u128(1)));
/// let later = t0 + Duration::from_secs(30);
/// let issued = account.issue_code(code(2, "1234")?, later, &policy)?;
/// assert_eq!(issued.expires_in, policy.ttl());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeIssued {
    /// Lifetime after delivery.
    pub expires_in: Duration,
    /// Time until another code may be issued.
    pub resend_after: Duration,
}

/// Why a registration could not take over an existing account.
///
/// ```
/// # use std::time::{Duration, SystemTime};
/// # use registrar_domain::*;
/// # let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
/// # let policy = CodePolicy::default();
/// # let secret = CodeSecret::new(*b"a key of at least sixteen bytes")?;
/// # let code = |n: u128, digits: &str| -> Result<NewCode, CodeFormatError> {
/// #     let id = CodeId::from_uuid(uuid::Uuid::from_u128(n));
/// #     Ok(NewCode::new(id, CodeDigits::parse(digits)?, &secret))
/// # };
/// # let mut account = Account::register(
/// #     UserId::from_uuid(uuid::Uuid::from_u128(7)),
/// #     Email::parse("ada@example.com")?,
/// #     PasswordHash::from_phc("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into())?,
/// #     code(1, "0421")?,
/// #     t0,
/// # );
/// // The first code is still waiting for its email: the address is held.
/// assert_eq!(account.can_take_over(t0, &policy), Err(TakeoverRefused::EmailTaken));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TakeoverRefused {
    /// The account is active, or its code is still usable or waiting to be sent.
    #[error("the email address is already registered")]
    EmailTaken,
    /// The account had a code too recently, or too many today.
    #[error("a new code cannot be issued for another {retry_after:?}")]
    TooSoon {
        /// Time until a code may be issued.
        retry_after: Duration,
    },
}

/// Why a new code could not be issued.
///
/// ```
/// # use std::time::{Duration, SystemTime};
/// # use registrar_domain::*;
/// # let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
/// # let policy = CodePolicy::default();
/// # let secret = CodeSecret::new(*b"a key of at least sixteen bytes")?;
/// # let code = |n: u128, digits: &str| -> Result<NewCode, CodeFormatError> {
/// #     let id = CodeId::from_uuid(uuid::Uuid::from_u128(n));
/// #     Ok(NewCode::new(id, CodeDigits::parse(digits)?, &secret))
/// # };
/// # let mut account = Account::register(
/// #     UserId::from_uuid(uuid::Uuid::from_u128(7)),
/// #     Email::parse("ada@example.com")?,
/// #     PasswordHash::from_phc("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into())?,
/// #     code(1, "0421")?,
/// #     t0,
/// # );
/// let too_soon = account.issue_code(code(2, "1234")?, t0, &policy);
/// assert!(matches!(too_soon, Err(IssueRefused::TooSoon { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IssueRefused {
    /// The account needs no code.
    #[error("the account is already active")]
    AlreadyActive,
    /// The account had a code too recently, or too many today.
    #[error("a new code cannot be issued for another {retry_after:?}")]
    TooSoon {
        /// Time until a code may be issued.
        retry_after: Duration,
    },
}

/// Why an activation attempt failed. After [`ActivationRefused::WrongCode`] the account has
/// changed (the attempt was counted) and must be saved.
///
/// ```
/// # use std::time::{Duration, SystemTime};
/// # use registrar_domain::*;
/// # let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
/// # let policy = CodePolicy::default();
/// # let secret = CodeSecret::new(*b"a key of at least sixteen bytes")?;
/// # let code = |n: u128, digits: &str| -> Result<NewCode, CodeFormatError> {
/// #     let id = CodeId::from_uuid(uuid::Uuid::from_u128(n));
/// #     Ok(NewCode::new(id, CodeDigits::parse(digits)?, &secret))
/// # };
/// # let mut account = Account::register(
/// #     UserId::from_uuid(uuid::Uuid::from_u128(7)),
/// #     Email::parse("ada@example.com")?,
/// #     PasswordHash::from_phc("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into())?,
/// #     code(1, "0421")?,
/// #     t0,
/// # );
/// // Before its email is accepted a code is not usable: a guess counts as wrong.
/// let early = account.activate(CodeDigits::parse("0421")?, &secret, t0, &policy);
/// assert!(matches!(early, Err(ActivationRefused::WrongCode { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ActivationRefused {
    /// Nothing to activate.
    #[error("the account is already active")]
    AlreadyActive,
    /// There is no usable code: it expired, died, or took too many wrong guesses.
    #[error("the activation code is no longer usable")]
    CodeGone {
        /// Whether it ran out of attempts (rather than time).
        too_many_attempts: bool,
    },
    /// The code did not match, or its email has not been accepted yet.
    #[error("the activation code is wrong")]
    WrongCode {
        /// Wrong attempts left before the code dies.
        attempts_remaining: u32,
    },
}

/// A user with their current code and the issue times of their codes in the last 24 hours.
///
/// The account's life, with a fixed clock: register, the code's email is accepted, a wrong
/// guess, then the right code.
///
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use registrar_domain::{
///     Account, ActivationRefused, CodeDigits, CodeId, CodePolicy, CodeSecret, Email, NewCode,
///     PasswordHash, UserId, UserStatus,
/// };
/// use uuid::Uuid;
///
/// let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
/// let policy = CodePolicy::default();
/// let secret = CodeSecret::new(*b"a key of at least sixteen bytes")?;
/// let (code_id, digits) = (CodeId::from_uuid(Uuid::from_u128(1)), CodeDigits::parse("0421")?);
///
/// let mut account = Account::register(
///     UserId::from_uuid(Uuid::from_u128(7)),
///     Email::parse("ada@example.com")?,
///     PasswordHash::from_phc("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into())?,
///     NewCode::new(code_id, digits, &secret),
///     t0,
/// );
/// assert_eq!(account.user().status(), UserStatus::Pending);
///
/// account.mark_code_delivered(code_id, t0 + Duration::from_secs(2));
/// let wrong = account.activate(CodeDigits::parse("9999")?, &secret, t0 + Duration::from_secs(5), &policy);
/// assert_eq!(wrong, Err(ActivationRefused::WrongCode { attempts_remaining: 4 }));
///
/// let now = t0 + Duration::from_secs(10);
/// account.activate(digits, &secret, now, &policy)?;
/// assert_eq!(account.user().status(), UserStatus::Active { activated_at: now });
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    user: User,
    code: Option<ActivationCode>,
    recent_issues: Vec<SystemTime>,
}

impl Account {
    /// A new pending account with its first code.
    #[must_use]
    pub fn register(
        id: UserId,
        email: Email,
        password_hash: PasswordHash,
        code: NewCode,
        now: SystemTime,
    ) -> Self {
        Self {
            user: User::new(id, email, password_hash, now),
            code: Some(ActivationCode::issue(code.id, code.digest, now)),
            recent_issues: vec![now],
        }
    }

    /// **For stores only**: rebuilds an account exactly as it was saved, checking none of the
    /// rules [`Account::register`] and the transitions keep. `recent_issues` are the issue
    /// times of the account's codes; those older than 24 hours are ignored. To make a new
    /// account, use [`Account::register`].
    #[must_use]
    pub fn restore(
        user: User,
        code: Option<ActivationCode>,
        mut recent_issues: Vec<SystemTime>,
    ) -> Self {
        recent_issues.sort_unstable();
        Self {
            user,
            code,
            recent_issues,
        }
    }

    /// The user.
    #[must_use]
    pub fn user(&self) -> &User {
        &self.user
    }

    /// The current (latest) code, if any.
    #[must_use]
    pub fn code(&self) -> Option<&ActivationCode> {
        self.code.as_ref()
    }

    /// Issue times of the account's codes, oldest first.
    #[must_use]
    pub fn recent_issues(&self) -> &[SystemTime] {
        &self.recent_issues
    }

    /// The current code's status at `now`.
    #[must_use]
    pub fn code_status(&self, now: SystemTime, policy: &CodePolicy) -> Option<CodeStatus> {
        self.code.as_ref().map(|c| c.status(now, policy.ttl))
    }

    /// Replaces the password hash (re-hash on login with stronger parameters).
    pub fn set_password_hash(&mut self, hash: PasswordHash) {
        self.user.set_password_hash(hash);
    }

    /// A new registration for this address. It succeeds only when nobody holds the address:
    /// the account is pending and its code expired or died. The registrant then gets the
    /// account with their password and a new code, within the usual code limits.
    pub fn take_over(
        &mut self,
        email: Email,
        password_hash: PasswordHash,
        code: NewCode,
        now: SystemTime,
        policy: &CodePolicy,
    ) -> Result<CodeIssued, TakeoverRefused> {
        self.can_take_over(now, policy)?;
        self.user.register_again(email, password_hash, now);
        Ok(self.replace_code(code, now, policy))
    }

    /// Whether [`Account::take_over`] would succeed at `now`, without changing anything.
    pub fn can_take_over(
        &self,
        now: SystemTime,
        policy: &CodePolicy,
    ) -> Result<(), TakeoverRefused> {
        let holds = self
            .code_status(now, policy)
            .is_some_and(|s| s.holds_address());
        if self.user.is_active() || holds {
            return Err(TakeoverRefused::EmailTaken);
        }
        match self.wait_before_next_code(now, policy) {
            Some(retry_after) => Err(TakeoverRefused::TooSoon { retry_after }),
            None => Ok(()),
        }
    }

    /// Issues a new code, killing the previous one.
    pub fn issue_code(
        &mut self,
        code: NewCode,
        now: SystemTime,
        policy: &CodePolicy,
    ) -> Result<CodeIssued, IssueRefused> {
        if self.user.is_active() {
            return Err(IssueRefused::AlreadyActive);
        }
        if let Some(retry_after) = self.wait_before_next_code(now, policy) {
            return Err(IssueRefused::TooSoon { retry_after });
        }
        Ok(self.replace_code(code, now, policy))
    }

    /// Tries to activate the account with `candidate`. Checks, in order: already active, no
    /// usable code, then the match (in constant time). A code whose email has not been accepted
    /// yet is not usable, and a guess at it counts as wrong.
    pub fn activate(
        &mut self,
        candidate: CodeDigits,
        secret: &CodeSecret,
        now: SystemTime,
        policy: &CodePolicy,
    ) -> Result<(), ActivationRefused> {
        if self.user.is_active() {
            return Err(ActivationRefused::AlreadyActive);
        }
        let Some(code) = self.code.as_mut() else {
            return Err(ActivationRefused::CodeGone {
                too_many_attempts: false,
            });
        };
        let matches = match code.status(now, policy.ttl) {
            CodeStatus::Usable { .. } => secret.digest(code.id(), candidate) == code.digest(),
            CodeStatus::AwaitingDelivery => false,
            CodeStatus::Dead(CodeDeath::TooManyAttempts) => {
                return Err(ActivationRefused::CodeGone {
                    too_many_attempts: true,
                });
            }
            CodeStatus::Expired | CodeStatus::Used | CodeStatus::Dead(_) => {
                return Err(ActivationRefused::CodeGone {
                    too_many_attempts: false,
                });
            }
        };
        if matches {
            code.use_up();
            self.user.activate(now);
            Ok(())
        } else {
            let attempts_remaining = code.count_wrong_attempt(policy.max_attempts);
            Err(ActivationRefused::WrongCode { attempts_remaining })
        }
    }

    /// Records that the mail server accepted the email carrying code `id` at `at`.
    pub fn mark_code_delivered(&mut self, id: CodeId, at: SystemTime) {
        if let Some(code) = self.code.as_mut().filter(|c| c.id() == id) {
            code.mark_delivered(at);
        }
    }

    /// Records that the email carrying code `id` could not be delivered: the code dies.
    pub fn mark_code_undeliverable(&mut self, id: CodeId) {
        if let Some(code) = self.code.as_mut().filter(|c| c.id() == id) {
            code.mark_undeliverable();
        }
    }

    fn replace_code(&mut self, code: NewCode, now: SystemTime, policy: &CodePolicy) -> CodeIssued {
        if let Some(old) = self.code.as_mut() {
            old.kill(CodeDeath::Replaced);
        }
        self.code = Some(ActivationCode::issue(code.id, code.digest, now));
        self.recent_issues.push(now);
        self.recent_issues.retain(|t| {
            t.checked_add(CodePolicy::WINDOW)
                .is_some_and(|end| end > now)
        });
        CodeIssued {
            expires_in: policy.ttl,
            resend_after: self.wait_before_next_code(now, policy).unwrap_or_default(),
        }
    }

    /// How long until another code may be issued, if it may not be now.
    fn wait_before_next_code(&self, now: SystemTime, policy: &CodePolicy) -> Option<Duration> {
        let in_window: Vec<SystemTime> = self
            .recent_issues
            .iter()
            .copied()
            .filter(|t| {
                t.checked_add(CodePolicy::WINDOW)
                    .is_some_and(|end| end > now)
            })
            .collect();
        let after_cooldown = in_window.last().map(|last| *last + policy.cooldown);
        let cap = usize::try_from(policy.daily_cap).unwrap_or(usize::MAX);
        let after_cap = in_window
            .len()
            .checked_sub(cap)
            .map(|over| in_window[over] + CodePolicy::WINDOW);
        let next = after_cooldown.max(after_cap)?;
        next.duration_since(now).ok().filter(|d| !d.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    const SECOND: Duration = Duration::from_secs(1);

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn secret() -> CodeSecret {
        CodeSecret::new(*b"test secret, 32 bytes long......").unwrap()
    }

    fn digits(s: &str) -> CodeDigits {
        CodeDigits::parse(s).unwrap()
    }

    fn new_code(n: u128, code: &str) -> NewCode {
        NewCode::new(
            CodeId::from_uuid(Uuid::from_u128(n)),
            digits(code),
            &secret(),
        )
    }

    fn hash(s: &str) -> PasswordHash {
        PasswordHash::from_phc(format!("$test${s}")).unwrap()
    }

    fn account(code: &str) -> Account {
        Account::register(
            UserId::from_uuid(Uuid::from_u128(42)),
            Email::parse("ada@example.com").unwrap(),
            hash("first"),
            new_code(1, code),
            t(0),
        )
    }

    fn delivered(code: &str, at: SystemTime) -> Account {
        let mut account = account(code);
        let id = account.code().unwrap().id();
        account.mark_code_delivered(id, at);
        account
    }

    #[test]
    fn the_right_code_activates_within_the_ttl_after_delivery() {
        let policy = CodePolicy::default();
        let mut account = delivered("0421", t(100));
        assert_eq!(
            account.activate(digits("0421"), &secret(), t(159), &policy),
            Ok(())
        );
        assert!(account.user().is_active());
        assert_eq!(
            account.user().status(),
            crate::UserStatus::Active {
                activated_at: t(159)
            }
        );
        assert_eq!(
            account.activate(digits("0421"), &secret(), t(159), &policy),
            Err(ActivationRefused::AlreadyActive)
        );
    }

    #[test]
    fn a_code_expires_ttl_after_delivery_not_after_issue() {
        let policy = CodePolicy::default();
        let mut account = delivered("0421", t(100));
        assert_eq!(
            account.activate(digits("0421"), &secret(), t(160), &policy),
            Err(ActivationRefused::CodeGone {
                too_many_attempts: false
            })
        );
        assert!(!account.user().is_active());
    }

    #[test]
    fn an_undelivered_code_is_not_usable_and_guesses_count() {
        let policy = CodePolicy::default();
        let mut account = account("0421");
        assert_eq!(
            account.activate(digits("0421"), &secret(), t(1), &policy),
            Err(ActivationRefused::WrongCode {
                attempts_remaining: 4
            })
        );
        assert_eq!(account.code().unwrap().wrong_attempts(), 1);
    }

    #[test]
    fn the_fifth_wrong_attempt_kills_the_code() {
        let policy = CodePolicy::default();
        let mut account = delivered("0421", t(1));
        for remaining in (0..5).rev() {
            assert_eq!(
                account.activate(digits("9999"), &secret(), t(2), &policy),
                Err(ActivationRefused::WrongCode {
                    attempts_remaining: remaining
                })
            );
        }
        assert_eq!(
            account.activate(digits("0421"), &secret(), t(3), &policy),
            Err(ActivationRefused::CodeGone {
                too_many_attempts: true
            })
        );
    }

    #[test]
    fn a_new_code_kills_the_previous_one() {
        let policy = CodePolicy::default();
        let mut account = delivered("0421", t(1));
        let issued = account
            .issue_code(new_code(2, "1111"), t(31), &policy)
            .unwrap();
        assert_eq!(
            issued,
            CodeIssued {
                expires_in: 60 * SECOND,
                resend_after: 30 * SECOND
            }
        );
        let id = account.code().unwrap().id();
        account.mark_code_delivered(id, t(32));
        assert_eq!(
            account.activate(digits("0421"), &secret(), t(33), &policy),
            Err(ActivationRefused::WrongCode {
                attempts_remaining: 4
            })
        );
        assert_eq!(
            account.activate(digits("1111"), &secret(), t(34), &policy),
            Ok(())
        );
    }

    #[test]
    fn codes_respect_the_cooldown_including_the_registration_code() {
        let policy = CodePolicy::default();
        let mut account = account("0421");
        assert_eq!(
            account.issue_code(new_code(2, "1111"), t(10), &policy),
            Err(IssueRefused::TooSoon {
                retry_after: 20 * SECOND
            })
        );
        assert!(
            account
                .issue_code(new_code(2, "1111"), t(30), &policy)
                .is_ok()
        );
    }

    #[test]
    fn at_most_ten_codes_per_24_hours() {
        let policy = CodePolicy::default();
        let mut account = account("0000");
        for i in 1..10u64 {
            account
                .issue_code(new_code(u128::from(i) + 1, "0000"), t(i * 60), &policy)
                .unwrap();
        }
        assert_eq!(account.recent_issues().len(), 10);
        // The 11th waits until the first leaves the 24-hour window.
        assert_eq!(
            account.issue_code(new_code(99, "0000"), t(3600), &policy),
            Err(IssueRefused::TooSoon {
                retry_after: Duration::from_hours(23)
            })
        );
        assert!(
            account
                .issue_code(new_code(99, "0000"), t(86_400), &policy)
                .is_ok()
        );
    }

    #[test]
    fn the_tenth_code_reports_the_wait_for_the_eleventh() {
        let policy = CodePolicy::default();
        let mut account = account("0000");
        for i in 1..9u64 {
            account
                .issue_code(new_code(u128::from(i) + 1, "0000"), t(i * 60), &policy)
                .unwrap();
        }
        let tenth = account
            .issue_code(new_code(50, "0000"), t(600), &policy)
            .unwrap();
        assert_eq!(tenth.resend_after, Duration::from_mins(24 * 60 - 10));
    }

    #[test]
    fn an_active_account_gets_no_new_code() {
        let policy = CodePolicy::default();
        let mut account = delivered("0421", t(1));
        account
            .activate(digits("0421"), &secret(), t(2), &policy)
            .unwrap();
        assert_eq!(
            account.issue_code(new_code(2, "1111"), t(100), &policy),
            Err(IssueRefused::AlreadyActive)
        );
    }

    #[test]
    fn takeover_is_refused_while_the_code_holds_the_address() {
        let policy = CodePolicy::default();
        let email = Email::parse("ADA@example.com").unwrap();
        let mut waiting = account("0421");
        assert_eq!(
            waiting.take_over(
                email.clone(),
                hash("second"),
                new_code(2, "1111"),
                t(3600),
                &policy
            ),
            Err(TakeoverRefused::EmailTaken)
        );
        let mut usable = delivered("0421", t(1));
        assert_eq!(
            usable.take_over(email, hash("second"), new_code(2, "1111"), t(60), &policy),
            Err(TakeoverRefused::EmailTaken)
        );
    }

    #[test]
    fn takeover_of_an_expired_pending_account_sets_the_new_password_and_code() {
        let policy = CodePolicy::default();
        let mut account = delivered("0421", t(1));
        let email = Email::parse("ADA@example.com").unwrap();
        let issued = account
            .take_over(
                email.clone(),
                hash("second"),
                new_code(2, "1111"),
                t(61),
                &policy,
            )
            .unwrap();
        assert_eq!(issued.resend_after, 30 * SECOND);
        assert_eq!(account.user().email(), &email);
        assert_eq!(account.user().password_hash(), &hash("second"));
        assert_eq!(account.user().created_at(), t(61));
        assert_eq!(account.code().unwrap().id(), new_code(2, "1111").id());
    }

    #[test]
    fn takeover_is_refused_for_active_accounts_and_within_the_cooldown() {
        let policy = CodePolicy::new(60 * SECOND, 5, 120 * SECOND, 10).unwrap();
        let email = Email::parse("ada@example.com").unwrap();
        let mut account = delivered("0421", t(1));
        assert_eq!(
            account.take_over(
                email.clone(),
                hash("x"),
                new_code(2, "1111"),
                t(61),
                &policy
            ),
            Err(TakeoverRefused::TooSoon {
                retry_after: 59 * SECOND
            })
        );
        account
            .activate(digits("0421"), &secret(), t(2), &policy)
            .unwrap();
        assert_eq!(
            account.take_over(email, hash("x"), new_code(2, "1111"), t(9_999), &policy),
            Err(TakeoverRefused::EmailTaken)
        );
    }

    #[test]
    fn an_undeliverable_code_frees_the_address() {
        let policy = CodePolicy::default();
        let mut account = account("0421");
        let id = account.code().unwrap().id();
        account.mark_code_undeliverable(id);
        assert_eq!(
            account.activate(digits("0421"), &secret(), t(40), &policy),
            Err(ActivationRefused::CodeGone {
                too_many_attempts: false
            })
        );
        let email = Email::parse("ada@example.com").unwrap();
        assert!(
            account
                .take_over(email, hash("x"), new_code(2, "1111"), t(40), &policy)
                .is_ok()
        );
    }

    #[test]
    fn policies_refuse_zero_settings() {
        assert_eq!(
            CodePolicy::new(Duration::ZERO, 5, SECOND, 10),
            Err(CodePolicyError::ZeroTtl)
        );
        assert_eq!(
            CodePolicy::new(SECOND, 0, SECOND, 10),
            Err(CodePolicyError::ZeroAttempts)
        );
        assert_eq!(
            CodePolicy::new(SECOND, 5, SECOND, 0),
            Err(CodePolicyError::ZeroDailyCap)
        );
    }
}

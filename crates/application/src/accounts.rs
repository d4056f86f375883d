//! The account use cases: register, authenticate, activate, issue a new code.

use std::{
    future::{self, Future},
    net::IpAddr,
    time::{Duration, SystemTime},
};

use registrar_domain::{
    Account, ActivationCode, ActivationRefused, CodeDigits, CodeId, CodeIssued, CodePolicy,
    CodeSecret, CodeStatus, Email, IssueRefused, NewCode, NewPassword, Password, PasswordHash,
    PasswordPolicy, TakeoverRefused, User, UserId,
};
use tokio::sync::OnceCell;

use crate::{
    DispatchSignal, Error,
    ports::{
        AccountChange, Clock, Entropy, Limit, PasswordHasher, QueuedMail, SaveError, Store,
        ThrottleKey, Traces, Verification, Versioned,
    },
};

/// How often a use case reloads and decides again when a concurrent change won the race.
const MAX_CONFLICT_RETRIES: usize = 8;

/// The client's network address, as the inbound adapter determined it.
pub type ClientAddr = Option<IpAddr>;

/// A registration request, built only from parsed parts.
#[derive(Debug, Clone)]
pub struct Registration {
    email: Email,
    password: NewPassword,
}

impl Registration {
    /// A registration of `email` with an accepted password.
    #[must_use]
    pub fn new(email: Email, password: NewPassword) -> Self {
        Self { email, password }
    }
}

/// Basic-auth credentials as received: the address is not parsed yet, because an address that
/// does not parse must fail exactly like an unknown one.
#[derive(Debug, Clone)]
pub struct Credentials {
    email: String,
    password: Password,
}

impl Credentials {
    /// Credentials from a user name and a (normalised) password.
    #[must_use]
    pub fn new(email: String, password: Password) -> Self {
        Self { email, password }
    }
}

/// Proof that a request's credentials were checked; only [`Accounts::authenticate`] makes one.
///
/// It keeps the account as authentication loaded it, so that the change the request goes on to
/// make starts from it instead of reading the account again (see `change_asking`).
#[derive(Debug, Clone)]
pub struct Authenticated {
    loaded: Versioned,
}

impl Authenticated {
    /// The user as of authentication.
    #[must_use]
    pub fn user(&self) -> &User {
        self.loaded.account.user()
    }
}

/// Per-account and per-address limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Failed logins per account.
    pub login_failures_per_account: Limit,
    /// Failed logins per client address.
    pub login_failures_per_address: Limit,
    /// Registrations per client address.
    pub registrations_per_address: Limit,
    /// Whether the per-address limits apply (off for load tests).
    pub per_address: bool,
}

impl Default for RateLimits {
    fn default() -> Self {
        const MINUTE: Duration = Duration::from_mins(1);
        Self {
            login_failures_per_account: Limit {
                max: 10,
                window: 15 * MINUTE,
            },
            login_failures_per_address: Limit {
                max: 50,
                window: 15 * MINUTE,
            },
            registrations_per_address: Limit {
                max: 20,
                window: 10 * MINUTE,
            },
            per_address: true,
        }
    }
}

/// What the account use cases are configured with.
#[derive(Debug, Clone)]
pub struct AccountSettings {
    /// Code lifetime, attempts, cooldown and daily cap.
    pub codes: CodePolicy,
    /// What new passwords must meet.
    pub passwords: PasswordPolicy,
    /// The key for code HMACs.
    pub secret: CodeSecret,
    /// Throttling.
    pub limits: RateLimits,
}

/// The account use cases, as the inbound adapter sees them.
pub trait Accounts: Send + Sync + 'static {
    /// Registers a new account, or takes over a pending one whose code has died, and queues
    /// the activation email.
    fn register(
        &self,
        registration: Registration,
        client: ClientAddr,
    ) -> impl Future<Output = Result<User, Error>> + Send;

    /// Checks Basic-auth credentials. Unknown addresses take as long as wrong passwords.
    fn authenticate(
        &self,
        credentials: Credentials,
        client: ClientAddr,
    ) -> impl Future<Output = Result<Authenticated, Error>> + Send;

    /// Activates the authenticated account with a code.
    fn activate(
        &self,
        who: &Authenticated,
        code: CodeDigits,
    ) -> impl Future<Output = Result<User, Error>> + Send;

    /// Issues a fresh code for the authenticated account, killing the previous one.
    fn issue_code(
        &self,
        who: &Authenticated,
    ) -> impl Future<Output = Result<CodeIssued, Error>> + Send;

    /// Erases the authenticated account, pending or active, with its codes and queued email.
    ///
    /// # Errors
    /// [`Error::Unauthorized`] when the account was taken over since the credentials were
    /// checked (they no longer name it); an account already gone is not an error.
    fn delete(&self, who: &Authenticated) -> impl Future<Output = Result<(), Error>> + Send;

    /// Whether the store answers.
    fn ready(&self) -> impl Future<Output = Result<(), Error>> + Send;

    /// What new passwords must meet, for the inbound adapter to parse registrations with.
    fn password_policy(&self) -> &PasswordPolicy;

    /// Refuses at once with [`Error::Overloaded`] while password hashing has no room, so the
    /// inbound adapter can shed a registration before paying for its strength estimate.
    fn check_capacity(&self) -> Result<(), Error>;

    /// Runs `parse`, the costly part of reading a request (the strength estimate of a new
    /// password), on the password hashing threads rather than on the async thread serving the
    /// request: there, half a millisecond a registration keeps every other request on that
    /// thread waiting behind a burst of them.
    ///
    /// # Errors
    /// [`Error::Internal`] when those threads are gone or `parse` panicked.
    fn parse_off_loop<T: Send + 'static>(
        &self,
        parse: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = Result<T, Error>> + Send;
}

/// The account use cases over their ports.
pub struct AccountService<S, H, C, E, T> {
    store: S,
    hasher: H,
    clock: C,
    entropy: E,
    traces: T,
    settings: AccountSettings,
    signal: DispatchSignal,
    dummy_hash: OnceCell<PasswordHash>,
}

impl<S, H, C, E, T> AccountService<S, H, C, E, T>
where
    S: Store,
    H: PasswordHasher,
    C: Clock,
    E: Entropy,
    T: Traces,
{
    /// The use cases over these ports; `signal` wakes the dispatcher when mail is queued.
    pub fn new(
        store: S,
        hasher: H,
        clock: C,
        entropy: E,
        traces: T,
        settings: AccountSettings,
        signal: DispatchSignal,
    ) -> Self {
        Self {
            store,
            hasher,
            clock,
            entropy,
            traces,
            settings,
            signal,
            dummy_hash: OnceCell::new(),
        }
    }

    /// A fresh code for this account: its digest for the account, its digits for the email,
    /// which keeps the trace of the request that asked for it.
    fn draw_code(&self, to: &Email, now: SystemTime) -> (NewCode, QueuedMail) {
        let digits = self.entropy.activation_code();
        let code_id = CodeId::from_uuid(self.entropy.uuid(now));
        let mail = QueuedMail {
            id: self.entropy.uuid(now),
            to: to.clone(),
            code: digits,
            code_id,
            queued_at: now,
            trace: self.traces.current(),
        };
        (NewCode::new(code_id, digits, &self.settings.secret), mail)
    }

    /// Makes the hash unknown addresses are checked against, so they cost one hash like known
    /// ones. Made on first need, with the configured parameters.
    async fn dummy_hash(&self) -> Result<PasswordHash, Error> {
        let hash = self
            .dummy_hash
            .get_or_try_init(|| async {
                let secret = self.entropy.secret();
                let filler: String = secret.iter().map(|b| char::from(b'a' + b % 26)).collect();
                self.hasher.hash(Password::new(&filler)).await
            })
            .await?;
        Ok(hash.clone())
    }

    /// Saves `account` at `version`, queueing `mail`; wakes the dispatcher on success.
    async fn save(
        &self,
        account: Account,
        expected_version: Option<u64>,
        mail: Option<QueuedMail>,
    ) -> Result<(), SaveError> {
        let queues_mail = mail.is_some();
        self.store
            .save(AccountChange {
                account,
                expected_version,
                mail,
            })
            .await?;
        if queues_mail {
            self.signal.notify();
        }
        Ok(())
    }

    /// The account of `who` for one attempt of a change, and whether it was read now: the
    /// first attempt takes the one authentication read (`authenticated`, left empty), later
    /// ones read it again; `None` once it is gone.
    async fn attempt_on(
        &self,
        who: &Authenticated,
        authenticated: &mut Option<Versioned>,
    ) -> Result<Option<(Versioned, bool)>, Error> {
        if let Some(loaded) = authenticated.take() {
            return Ok(Some((loaded, false)));
        }
        let now = self.clock.now();
        let loaded = self.store.account_by_id(who.user().id(), now).await?;
        Ok(loaded.map(|loaded| (loaded, true)))
    }

    /// The current code of `account`, when it awaits delivery.
    fn code_awaiting_delivery(&self, account: &Account, now: SystemTime) -> Option<CodeId> {
        account
            .code()
            .filter(|code| {
                code.status(now, self.settings.codes.ttl()) == CodeStatus::AwaitingDelivery
            })
            .map(ActivationCode::id)
    }

    /// `code`, when its email is being sent.
    async fn being_sent(
        &self,
        code: Option<CodeId>,
        now: SystemTime,
    ) -> Result<Option<CodeId>, Error> {
        let Some(code) = code else {
            return Ok(None);
        };
        Ok(self.store.mail_being_sent(code, now).await?.then_some(code))
    }

    /// Lets `decide` change the account of `who`, and saves it at the version it was loaded at;
    /// when a concurrent change won the race, loads and decides again. `decide` returns the
    /// answer to give once the change is saved (which may be an error, such as a counted wrong
    /// guess) and any mail to queue with it, or an error to answer at once, saving nothing.
    async fn change<R>(
        &self,
        who: &Authenticated,
        mut decide: impl FnMut(
            &mut Account,
            SystemTime,
        ) -> Result<(Result<R, Error>, Option<QueuedMail>), Error>
        + Send,
    ) -> Result<R, Error> {
        let ask_nothing = |_: &Account, _| future::ready(Ok(()));
        self.change_asking(who, ask_nothing, |account, now, ()| decide(account, now))
            .await
    }

    /// [`change`](Self::change) for a decision that needs the store's answer to a question
    /// about the account: `ask` puts it for each account loaded, so the answer `decide` gets
    /// is as fresh as the account.
    ///
    /// The first attempt starts from the account as authentication loaded it, which spares the
    /// request a read. A change saved from it is checked against its version like any other,
    /// so a change made since (an email recorded as sent bumps the version too) is a lost race
    /// as usual. Only a refusal, which saves nothing, could rest on what changed since: a
    /// refusal of that first attempt is decided again on the account read now.
    async fn change_asking<R, A, Asked>(
        &self,
        who: &Authenticated,
        mut ask: impl FnMut(&Account, SystemTime) -> Asked + Send,
        mut decide: impl FnMut(
            &mut Account,
            SystemTime,
            A,
        ) -> Result<(Result<R, Error>, Option<QueuedMail>), Error>
        + Send,
    ) -> Result<R, Error>
    where
        Asked: Future<Output = Result<A, Error>>,
    {
        let mut authenticated = Some(who.loaded.clone());
        for _ in 0..=MAX_CONFLICT_RETRIES {
            // The account was there when the caller authenticated; if it was erased since, the
            // credentials no longer name an account.
            let Some((
                Versioned {
                    mut account,
                    version,
                },
                read_now,
            )) = self.attempt_on(who, &mut authenticated).await?
            else {
                return Err(Error::Unauthorized);
            };
            let now = self.clock.now();
            let asked = ask(&account, now).await?;
            let (answer, mail) = match decide(&mut account, now, asked) {
                Ok(decided) => decided,
                Err(_) if !read_now => continue,
                Err(refused) => return Err(refused),
            };
            match self.save(account, Some(version), mail).await {
                Ok(()) => return answer,
                Err(SaveError::Conflict) => {}
                Err(SaveError::Store(error)) => return Err(error.into()),
            }
        }
        Err(conflicted())
    }

    /// Re-hashes a password whose hash has weaker parameters than configured. Best effort: a
    /// failure here must not fail the login it rides on.
    async fn rehash(&self, stored: Versioned, password: Password) {
        let hash = match self.hasher.hash(password).await {
            Ok(hash) => hash,
            Err(error) => {
                tracing::warn!(%error, "could not re-hash a password with the current parameters");
                return;
            }
        };
        let mut account = stored.account;
        account.set_password_hash(hash);
        if let Err(error) = self.save(account, Some(stored.version), None).await {
            tracing::warn!(%error, "could not store a re-hashed password");
        }
    }
}

fn too_many(until: SystemTime, now: SystemTime) -> Error {
    Error::TooManyRequests {
        retry_after: until.duration_since(now).unwrap_or_default(),
    }
}

/// Optimistic saves lost every race they were given.
#[derive(Debug, thiserror::Error)]
#[error("the account kept changing under concurrent requests")]
struct KeptChanging;

fn conflicted() -> Error {
    Error::Internal(Box::new(KeptChanging))
}

impl<S, H, C, E, T> Accounts for AccountService<S, H, C, E, T>
where
    S: Store,
    H: PasswordHasher,
    C: Clock,
    E: Entropy,
    T: Traces,
{
    #[tracing::instrument(name = "register user", skip_all, fields(user_id = tracing::field::Empty))]
    async fn register(
        &self,
        registration: Registration,
        client: ClientAddr,
    ) -> Result<User, Error> {
        let Registration { email, password } = registration;
        let limits = self.settings.limits;
        let policy = self.settings.codes;
        // With per-address limits, the registration counts against the client's address, and
        // one over the limit is refused; a taken address is refused before paying for a hash.
        let throttle = client
            .filter(|_| limits.per_address)
            .map(ThrottleKey::RegistrationsFromAddress);
        let now = self.clock.now();
        let mut existing = self
            .store
            .registration_state(
                &email,
                throttle
                    .as_ref()
                    .map(|key| (key, limits.registrations_per_address)),
                now,
            )
            .await?
            .account()
            .map_err(|until| too_many(until, now))?;
        if let Some(stored) = &existing {
            stored
                .account
                .can_take_over(self.clock.now(), &policy)
                .map_err(takeover_error)?;
        }
        let hash = self.hasher.hash(password.into_password()).await?;
        for _ in 0..MAX_CONFLICT_RETRIES {
            let now = self.clock.now();
            let (code, mail) = self.draw_code(&email, now);
            let (account, version) = match existing.take() {
                None => {
                    let id = UserId::from_uuid(self.entropy.uuid(now));
                    (
                        Account::register(id, email.clone(), hash.clone(), code, now),
                        None,
                    )
                }
                Some(Versioned {
                    mut account,
                    version,
                }) => {
                    account
                        .take_over(email.clone(), hash.clone(), code, now, &policy)
                        .map_err(takeover_error)?;
                    (account, Some(version))
                }
            };
            let user = account.user().clone();
            match self.save(account, version, Some(mail)).await {
                Ok(()) => {
                    tracing::Span::current().record("user_id", tracing::field::display(user.id()));
                    return Ok(user);
                }
                Err(SaveError::Conflict) => {
                    existing = self
                        .store
                        .account_by_email(&email, self.clock.now())
                        .await?;
                }
                Err(SaveError::Store(error)) => return Err(error.into()),
            }
        }
        Err(conflicted())
    }

    #[tracing::instrument(name = "authenticate", skip_all, fields(user_id = tracing::field::Empty))]
    async fn authenticate(
        &self,
        credentials: Credentials,
        client: ClientAddr,
    ) -> Result<Authenticated, Error> {
        // Every outcome below costs a hash: without room for one, the lookups are wasted.
        self.hasher.check_room()?;
        let Credentials { email, password } = credentials;
        let limits = self.settings.limits;
        let now = self.clock.now();
        let email = Email::parse(&email).map_err(|_| email.trim().to_ascii_lowercase());
        let account_key = ThrottleKey::LoginFailuresForAccount(match &email {
            Ok(email) => email.key(),
            Err(raw) => raw.clone(),
        });
        // Failed logins count against the email address tried and, with per-address limits, the
        // client's IP address: either one over its limit refuses the login before any hash.
        let mut throttles = vec![(account_key, limits.login_failures_per_account)];
        throttles.extend(client.filter(|_| limits.per_address).map(|ip| {
            (
                ThrottleKey::LoginFailuresFromAddress(ip),
                limits.login_failures_per_address,
            )
        }));
        let stored = self
            .store
            .login_state(email.as_ref().ok(), &throttles, now)
            .await?
            .account()
            .map_err(|until| too_many(until, now))?;
        let verification = if let Some(stored) = &stored {
            let hash = stored.account.user().password_hash().clone();
            self.hasher.verify(password.clone(), hash).await?
        } else {
            // Unknown addresses cost one hash too, so timing does not tell them apart. The
            // call that makes the dummy hash has paid for one already.
            if let Some(dummy) = self.dummy_hash.get() {
                self.hasher.verify(password.clone(), dummy.clone()).await?;
            } else {
                self.dummy_hash().await?;
            }
            Verification::Mismatch
        };
        if let (Verification::Match { stale }, Some(stored)) = (verification, stored) {
            tracing::Span::current().record(
                "user_id",
                tracing::field::display(stored.account.user().id()),
            );
            if stale {
                self.rehash(stored.clone(), password).await;
            }
            return Ok(Authenticated { loaded: stored });
        }
        let now = self.clock.now();
        for (key, limit) in &throttles {
            self.store.throttle_hit(key, *limit, now).await?;
        }
        Err(Error::Unauthorized)
    }

    #[tracing::instrument(name = "activate account", skip_all, fields(user_id = %who.user().id()))]
    async fn activate(&self, who: &Authenticated, code: CodeDigits) -> Result<User, Error> {
        let policy = self.settings.codes;
        let code_being_sent = |account: &Account, now| {
            self.being_sent(self.code_awaiting_delivery(account, now), now)
        };
        self.change_asking(who, code_being_sent, |account, now, sending| {
            // A code is usable once its email's acceptance is recorded. The right digits for a
            // code whose email is being sent prove that the email arrived before the record:
            // they count as delivered now. Wrong digits are counted as before.
            if let Some(sent) = sending {
                let mut delivered = account.clone();
                delivered.mark_code_delivered(sent, now);
                if delivered
                    .activate(code, &self.settings.secret, now, &policy)
                    .is_ok()
                {
                    *account = delivered;
                    return Ok((Ok(account.user().clone()), None));
                }
            }
            match account.activate(code, &self.settings.secret, now, &policy) {
                Ok(()) => Ok((Ok(account.user().clone()), None)),
                // The attempt was counted: save it, then report it.
                Err(ActivationRefused::WrongCode { attempts_remaining }) => {
                    Ok((Err(Error::WrongCode { attempts_remaining }), None))
                }
                Err(refused) => Err(activation_error(refused)),
            }
        })
        .await
    }

    #[tracing::instrument(name = "issue activation code", skip_all, fields(user_id = %who.user().id()))]
    async fn issue_code(&self, who: &Authenticated) -> Result<CodeIssued, Error> {
        let policy = self.settings.codes;
        self.change(who, |account, now| {
            let (code, mail) = self.draw_code(account.user().email(), now);
            let issued = account
                .issue_code(code, now, &policy)
                .map_err(issue_error)?;
            Ok((Ok(issued), Some(mail)))
        })
        .await
    }

    #[tracing::instrument(name = "delete account", skip_all, fields(user_id = %who.user().id()))]
    async fn delete(&self, who: &Authenticated) -> Result<(), Error> {
        let id = who.user().id();
        // As in `change_asking`: the delete is checked against the version of the account
        // it starts from.
        let mut authenticated = Some(who.loaded.clone());
        for _ in 0..=MAX_CONFLICT_RETRIES {
            let Some((Versioned { account, version }, _)) =
                self.attempt_on(who, &mut authenticated).await?
            else {
                return Ok(());
            };
            // A takeover keeps the id but starts a new registration: the caller proved the
            // old one, which is gone.
            if account.user().created_at() != who.user().created_at() {
                return Err(Error::Unauthorized);
            }
            match self.store.delete_account(id, version).await {
                Ok(()) => return Ok(()),
                Err(SaveError::Conflict) => {}
                Err(SaveError::Store(error)) => return Err(error.into()),
            }
        }
        Err(conflicted())
    }

    async fn ready(&self) -> Result<(), Error> {
        Ok(self.store.ping().await?)
    }

    fn password_policy(&self) -> &PasswordPolicy {
        &self.settings.passwords
    }

    fn check_capacity(&self) -> Result<(), Error> {
        Ok(self.hasher.check_room()?)
    }

    async fn parse_off_loop<R: Send + 'static>(
        &self,
        parse: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, Error> {
        Ok(self.hasher.run(parse).await?)
    }
}

// The domain's refusals are `#[non_exhaustive]` (other teams reuse the crate), so each mapping
// needs a wildcard: it answers 500 and logs the refusal rather than guess a plausible answer,
// and the tests below map every refusal the domain has today.

fn takeover_error(refused: TakeoverRefused) -> Error {
    match refused {
        TakeoverRefused::EmailTaken => Error::EmailTaken,
        TakeoverRefused::TooSoon { retry_after } => Error::TooManyRequests { retry_after },
        _ => Error::Internal(Box::new(refused)),
    }
}

fn issue_error(refused: IssueRefused) -> Error {
    match refused {
        IssueRefused::AlreadyActive => Error::AlreadyActive,
        IssueRefused::TooSoon { retry_after } => Error::TooManyRequests { retry_after },
        _ => Error::Internal(Box::new(refused)),
    }
}

fn activation_error(refused: ActivationRefused) -> Error {
    match refused {
        ActivationRefused::AlreadyActive => Error::AlreadyActive,
        ActivationRefused::WrongCode { attempts_remaining } => {
            Error::WrongCode { attempts_remaining }
        }
        ActivationRefused::CodeGone { too_many_attempts } => Error::CodeGone { too_many_attempts },
        _ => Error::Internal(Box::new(refused)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LATER: Duration = Duration::from_secs(7);

    #[test]
    fn every_takeover_refusal_has_its_answer() {
        assert!(matches!(
            takeover_error(TakeoverRefused::EmailTaken),
            Error::EmailTaken
        ));
        assert!(matches!(
            takeover_error(TakeoverRefused::TooSoon { retry_after: LATER }),
            Error::TooManyRequests { retry_after: LATER }
        ));
    }

    #[test]
    fn every_issue_refusal_has_its_answer() {
        assert!(matches!(
            issue_error(IssueRefused::AlreadyActive),
            Error::AlreadyActive
        ));
        assert!(matches!(
            issue_error(IssueRefused::TooSoon { retry_after: LATER }),
            Error::TooManyRequests { retry_after: LATER }
        ));
    }

    #[test]
    fn every_activation_refusal_has_its_answer() {
        assert!(matches!(
            activation_error(ActivationRefused::AlreadyActive),
            Error::AlreadyActive
        ));
        assert!(matches!(
            activation_error(ActivationRefused::WrongCode {
                attempts_remaining: 2
            }),
            Error::WrongCode {
                attempts_remaining: 2
            }
        ));
        for too_many_attempts in [false, true] {
            assert!(matches!(
                activation_error(ActivationRefused::CodeGone { too_many_attempts }),
                Error::CodeGone { too_many_attempts: t } if t == too_many_attempts
            ));
        }
    }
}

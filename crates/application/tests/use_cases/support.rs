//! The harness: the account use cases and the dispatcher over the same store, clock and
//! entropy, with helpers that read like the steps of a test.

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::{Duration, SystemTime},
};

use registrar_adapters_memory::MemoryStore;
use registrar_application::{
    AccountService, AccountSettings, Accounts, Authenticated, ClientAddr, Credentials,
    DeliveryPolicy, DeliveryReport, DispatchSignal, Dispatcher, Error, RateLimits, Registration,
    ports::{Clock, Mailer, Store, Versioned},
};
use registrar_domain::{
    CodeDigits, CodeIssued, CodePolicy, CodeSecret, Email, NewPassword, Password, PasswordHash,
    PasswordPolicy, User,
};

pub(crate) use registrar_application::testing::{
    FakeClock, FakeHasher, RecordingMailer, RecordingTraces, SeqEntropy, t0,
};

pub(crate) const SECOND: Duration = Duration::from_secs(1);
pub(crate) const MINUTE: Duration = Duration::from_mins(1);
pub(crate) const DAY: Duration = Duration::from_hours(24);

/// The client address requests come from unless a test says otherwise.
pub(crate) const CLIENT: ClientAddr = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)));
/// Another client.
pub(crate) const OTHER_CLIENT: ClientAddr = Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)));

/// Passwords that pass the default policy (zxcvbn score 3). No white space: the fake hasher
/// cannot hash it (its tag would not be a valid PHC string).
pub(crate) const PASSWORD: &str = "tangerine-Quokka-47-orbit";
pub(crate) const OTHER_PASSWORD: &str = "correct-horse-battery-staple";
pub(crate) const WRONG_PASSWORD: &str = "not-the-password-at-all";

pub(crate) type Service =
    AccountService<MemoryStore, FakeHasher, FakeClock, SeqEntropy, RecordingTraces>;
pub(crate) type Delivery =
    Dispatcher<MemoryStore, RecordingMailer, FakeClock, SeqEntropy, RecordingTraces>;

/// Everything a test touches. The services share the store, clock and entropy.
pub(crate) struct App {
    pub(crate) accounts: Arc<Service>,
    pub(crate) dispatcher: Delivery,
    pub(crate) store: MemoryStore,
    pub(crate) clock: FakeClock,
    pub(crate) entropy: SeqEntropy,
    pub(crate) hasher: FakeHasher,
    pub(crate) mailer: RecordingMailer,
    pub(crate) traces: RecordingTraces,
    pub(crate) signal: DispatchSignal,
    pub(crate) codes: CodePolicy,
    pub(crate) delivery: DeliveryPolicy,
    settings: AccountSettings,
}

impl App {
    /// The default policies and limits.
    pub(crate) fn new() -> Self {
        Self::build(RateLimits::default(), DeliveryPolicy::default())
    }

    /// Other rate limits.
    pub(crate) fn with_limits(limits: RateLimits) -> Self {
        Self::build(limits, DeliveryPolicy::default())
    }

    /// Another delivery policy.
    pub(crate) fn with_delivery(delivery: DeliveryPolicy) -> Self {
        Self::build(RateLimits::default(), delivery)
    }

    fn build(limits: RateLimits, delivery: DeliveryPolicy) -> Self {
        let codes = CodePolicy::default();
        let store = MemoryStore::new();
        let clock = FakeClock::default();
        let entropy = SeqEntropy::default();
        let hasher = FakeHasher::default();
        let mailer = RecordingMailer::default();
        let traces = RecordingTraces::default();
        let signal = DispatchSignal::default();
        let settings = AccountSettings {
            codes,
            passwords: PasswordPolicy::default(),
            secret: CodeSecret::new(*b"use case tests secret, 32 bytes.").unwrap(),
            limits,
        };
        let accounts = AccountService::new(
            store.clone(),
            hasher.clone(),
            clock.clone(),
            entropy.clone(),
            traces.clone(),
            settings.clone(),
            signal.clone(),
        );
        let dispatcher = Dispatcher::new(
            store.clone(),
            mailer.clone(),
            clock.clone(),
            entropy.clone(),
            traces.clone(),
            codes,
            delivery,
        );
        Self {
            accounts: Arc::new(accounts),
            dispatcher,
            store,
            clock,
            entropy,
            hasher,
            mailer,
            traces,
            signal,
            codes,
            delivery,
            settings,
        }
    }

    /// The account use cases over another store (a counting store), with the app's hasher,
    /// clock, entropy, traces, settings and dispatch signal.
    pub(crate) fn accounts_over<S: Store>(
        &self,
        store: S,
    ) -> AccountService<S, FakeHasher, FakeClock, SeqEntropy, RecordingTraces> {
        AccountService::new(
            store,
            self.hasher.clone(),
            self.clock.clone(),
            self.entropy.clone(),
            self.traces.clone(),
            self.settings.clone(),
            self.signal.clone(),
        )
    }

    /// A dispatcher over another store or mailer (a counting store, a mailer a test scripts),
    /// with the app's clock, entropy, traces and policies.
    pub(crate) fn dispatcher_over<S: Store, M: Mailer>(
        &self,
        store: S,
        mailer: M,
    ) -> Dispatcher<S, M, FakeClock, SeqEntropy, RecordingTraces> {
        Dispatcher::new(
            store,
            mailer,
            self.clock.clone(),
            self.entropy.clone(),
            self.traces.clone(),
            self.codes,
            self.delivery,
        )
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.clock.now()
    }

    pub(crate) fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// Registers from [`CLIENT`].
    pub(crate) async fn register(&self, email: &str, password: &str) -> Result<User, Error> {
        self.register_from(email, password, CLIENT).await
    }

    pub(crate) async fn register_from(
        &self,
        email: &str,
        password: &str,
        client: ClientAddr,
    ) -> Result<User, Error> {
        self.accounts
            .register(registration(email, password), client)
            .await
    }

    /// Authenticates from [`CLIENT`].
    pub(crate) async fn login(&self, email: &str, password: &str) -> Result<Authenticated, Error> {
        self.login_from(email, password, CLIENT).await
    }

    pub(crate) async fn login_from(
        &self,
        email: &str,
        password: &str,
        client: ClientAddr,
    ) -> Result<Authenticated, Error> {
        let credentials = Credentials::new(email.to_owned(), Password::new(password));
        self.accounts.authenticate(credentials, client).await
    }

    pub(crate) async fn activate(&self, who: &Authenticated, code: &str) -> Result<User, Error> {
        self.accounts.activate(who, digits(code)).await
    }

    pub(crate) async fn issue_code(&self, who: &Authenticated) -> Result<CodeIssued, Error> {
        self.accounts.issue_code(who).await
    }

    /// One dispatcher pass at the current time.
    pub(crate) async fn deliver(&self) -> DeliveryReport {
        self.dispatcher.deliver_due().await.unwrap()
    }

    /// Outbox messages waiting to be sent.
    pub(crate) async fn outbox_depth(&self) -> u64 {
        self.dispatcher.depth().await.unwrap()
    }

    /// Registers `email` with [`PASSWORD`] and code `code`, and authenticates; the email is not
    /// delivered yet.
    pub(crate) async fn registered(&self, email: &str, code: &str) -> Authenticated {
        self.entropy.will_draw(&[code]);
        self.register(email, PASSWORD).await.unwrap();
        self.login(email, PASSWORD).await.unwrap()
    }

    /// Registers `email` with [`PASSWORD`] and code `code`, has the activation email accepted
    /// by the mail server now, and then authenticates, as the user who read it does.
    pub(crate) async fn registered_and_delivered(&self, email: &str, code: &str) -> Authenticated {
        self.entropy.will_draw(&[code]);
        self.register(email, PASSWORD).await.unwrap();
        assert_eq!(
            self.deliver().await.sent,
            1,
            "the activation email should go out"
        );
        self.login(email, PASSWORD).await.unwrap()
    }

    /// Another request of the user of `email` (authenticated on its own) is issued code `code`,
    /// and its email is accepted by the mail server now.
    pub(crate) async fn reissued_and_delivered(&self, email: &str, code: &str) {
        let other = self.login(email, PASSWORD).await.unwrap();
        self.entropy.will_draw(&[code]);
        self.issue_code(&other).await.unwrap();
        assert_eq!(
            self.deliver().await.sent,
            1,
            "the new code's email should go out"
        );
    }

    /// As [`App::registered`], with the activation email claimed by a dispatcher now, which has
    /// not reported back: the mail server may have it, its acceptance is not recorded.
    pub(crate) async fn registered_and_being_sent(&self, email: &str, code: &str) -> Authenticated {
        let who = self.registered(email, code).await;
        let claimed = self
            .store
            .claim_mail(self.now(), self.delivery.lease, 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1, "the activation email should be claimed");
        who
    }

    /// The account as stored.
    pub(crate) async fn stored(&self, email: &str) -> Option<Versioned> {
        self.store
            .account_by_email(&Email::parse(email).unwrap(), self.now())
            .await
            .unwrap()
    }

    pub(crate) async fn stored_hash(&self, email: &str) -> PasswordHash {
        self.stored(email)
            .await
            .unwrap()
            .account
            .user()
            .password_hash()
            .clone()
    }
}

/// A registration as the inbound adapter would build it from a request.
pub(crate) fn registration(email: &str, password: &str) -> Registration {
    let email = Email::parse(email).unwrap();
    let password = NewPassword::parse(password, Some(&email), &PasswordPolicy::default()).unwrap();
    Registration::new(email, password)
}

pub(crate) fn digits(code: &str) -> CodeDigits {
    CodeDigits::parse(code).unwrap()
}

/// The `retry_after` of a `TooManyRequests`, failing the test on anything else.
#[track_caller]
pub(crate) fn retry_after<T: std::fmt::Debug>(result: Result<T, Error>) -> Duration {
    match result {
        Err(Error::TooManyRequests { retry_after }) => retry_after,
        other => panic!("expected TooManyRequests, got {other:?}"),
    }
}

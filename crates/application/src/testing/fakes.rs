//! Fakes for the clock, entropy, hasher, mailer and traces.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use registrar_domain::{CodeDigits, Password, PasswordHash};
use uuid::Uuid;

use crate::{
    TraceContext,
    ports::{
        ActivationEmail, Clock, Entropy, HashError, MailError, Mailer, PasswordHasher, Traces,
        Verification,
    },
};

/// A fixed point in time the fakes start from.
#[must_use]
pub fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000)
}

/// A clock that moves only when told to.
#[derive(Debug, Clone)]
pub struct FakeClock(Arc<Mutex<SystemTime>>);

impl Default for FakeClock {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(t0())))
    }
}

impl FakeClock {
    /// Moves time forward.
    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

/// Deterministic entropy: codes from a script (then `0000`, `0001`, …), ids from a counter.
#[derive(Debug, Clone, Default)]
pub struct SeqEntropy {
    codes: Arc<Mutex<VecDeque<u16>>>,
    counter: Arc<AtomicU64>,
}

impl SeqEntropy {
    /// The next codes drawn will be these, in order.
    pub fn will_draw(&self, codes: &[&str]) {
        let mut queue = self.codes.lock().unwrap();
        queue.extend(codes.iter().map(|c| c.parse::<u16>().unwrap()));
    }
}

impl Entropy for SeqEntropy {
    fn activation_code(&self) -> CodeDigits {
        let next = self.codes.lock().unwrap().pop_front();
        let value = next.unwrap_or_else(|| {
            u16::try_from(self.counter.fetch_add(1, Ordering::Relaxed) % 10_000).unwrap()
        });
        CodeDigits::from_value(value).unwrap()
    }

    fn uuid(&self, now: SystemTime) -> Uuid {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let millis = u64::try_from(
            now.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap();
        let mut random = [0u8; 10];
        random[2..].copy_from_slice(&n.to_be_bytes());
        uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
    }

    fn unit(&self) -> f64 {
        0.5
    }

    fn secret(&self) -> [u8; 32] {
        [7; 32]
    }
}

/// A hasher that "hashes" by tagging: instant, deterministic, and able to play overloaded.
/// Hashes made before [`FakeHasher::strengthen`] are reported stale afterwards.
#[derive(Debug, Clone, Default)]
pub struct FakeHasher {
    generation: Arc<AtomicU64>,
    overloaded: Arc<AtomicBool>,
    calls: Arc<AtomicU64>,
}

impl FakeHasher {
    /// From now on, hash with "stronger parameters".
    pub fn strengthen(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// Makes every call fail with `Overloaded` (or succeed again).
    pub fn set_overloaded(&self, overloaded: bool) {
        self.overloaded.store(overloaded, Ordering::Relaxed);
    }

    /// Hash and verify calls so far.
    #[must_use]
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn admit(&self) -> Result<(), HashError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.check_room()
    }
}

impl PasswordHasher for FakeHasher {
    /// Runs `work` at once, on the calling thread.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        Ok(work())
    }

    fn check_room(&self) -> Result<(), HashError> {
        if self.overloaded.load(Ordering::Relaxed) {
            Err(HashError::Overloaded {
                retry_after: Duration::from_secs(1),
            })
        } else {
            Ok(())
        }
    }

    async fn hash(&self, password: Password) -> Result<PasswordHash, HashError> {
        self.admit()?;
        let generation = self.generation.load(Ordering::Relaxed);
        PasswordHash::from_phc(format!("$fake$g={generation}${}", hex(password.expose())))
            .map_err(|e| HashError::Failed(Box::new(e)))
    }

    async fn verify(
        &self,
        password: Password,
        hash: PasswordHash,
    ) -> Result<Verification, HashError> {
        self.admit()?;
        let mut parts = hash.as_str().splitn(4, '$').skip(2);
        let (Some(generation), Some(stored)) = (parts.next(), parts.next()) else {
            return Err(HashError::Failed("not a fake hash".into()));
        };
        let current = format!("g={}", self.generation.load(Ordering::Relaxed));
        Ok(if stored == hex(password.expose()) {
            Verification::Match {
                stale: generation != current,
            }
        } else {
            Verification::Mismatch
        })
    }
}

/// Hex of the password's bytes: PHC strings may not hold white space.
fn hex(text: &str) -> String {
    use std::fmt::Write;
    text.bytes().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// A mailer that records what it sends and can be scripted to fail.
#[derive(Debug, Clone, Default)]
pub struct RecordingMailer {
    sent: Arc<Mutex<Vec<ActivationEmail>>>,
    script: Arc<Mutex<VecDeque<MailError>>>,
}

impl RecordingMailer {
    /// The emails accepted so far.
    #[must_use]
    pub fn sent(&self) -> Vec<ActivationEmail> {
        self.sent.lock().unwrap().clone()
    }

    /// The code in the last email accepted for `to`.
    #[must_use]
    pub fn last_code_for(&self, to: &str) -> Option<String> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|mail| mail.to.as_str() == to)
            .map(|mail| mail.code.reveal())
    }

    /// The next sends fail with these errors, in order.
    pub fn will_fail(&self, errors: impl IntoIterator<Item = MailError>) {
        self.script.lock().unwrap().extend(errors);
    }
}

impl Mailer for RecordingMailer {
    async fn send_activation(&self, email: &ActivationEmail) -> Result<(), MailError> {
        if let Some(error) = self.script.lock().unwrap().pop_front() {
            return Err(error);
        }
        self.sent.lock().unwrap().push(email.clone());
        Ok(())
    }
}

/// Traces that report whatever context a test sets as the current one, and record the links
/// made, in order.
#[derive(Debug, Clone, Default)]
pub struct RecordingTraces {
    current: Arc<Mutex<Option<TraceContext>>>,
    links: Arc<Mutex<Vec<TraceContext>>>,
}

impl RecordingTraces {
    /// From now on, requests run in this context (or in none).
    pub fn enter(&self, context: Option<TraceContext>) {
        *self.current.lock().unwrap() = context;
    }

    /// The contexts linked to so far.
    #[must_use]
    pub fn links(&self) -> Vec<TraceContext> {
        self.links.lock().unwrap().clone()
    }
}

impl Traces for RecordingTraces {
    fn current(&self) -> Option<TraceContext> {
        *self.current.lock().unwrap()
    }

    fn link(&self, _span: &tracing::Span, context: TraceContext) {
        self.links.lock().unwrap().push(context);
    }
}

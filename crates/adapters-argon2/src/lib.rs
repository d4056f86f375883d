//! Registrar's [`PasswordHasher`]: Argon2id (version 0x13, standard PHC strings, no pepper) on a
//! bounded pool of dedicated threads.
//!
//! Argon2 is deliberately slow and memory-hungry, so it must not run on the async workers, and
//! it must not queue without bound either: a burst of logins would otherwise pile up memory and
//! latency. This crate keeps a fixed set of OS threads (`argon2-0`, `argon2-1`, …; a fixed set
//! also keeps allocator arenas from multiplying) fed by one queue.
//!
//! Admission is by time, not by a fixed count. The pool keeps a running estimate of the CPU time
//! of one job (hash and verify alike), seeded by the fastest of three trial hashes when the
//! hasher starts, then an average in which old jobs fade and a single outlier counts little.
//! CPU time rather than wall time: a core shared with a storm of refusals must not make hashing
//! look slower and so refuse more. A request is queued when its expected start, the jobs queued
//! and running ahead of it times that estimate divided by the threads, is within
//! [`Argon2Settings::queue_timeout`]; otherwise it is answered [`HashError::Overloaded`] at once,
//! with a `retry_after` of the time the queued work needs, in whole seconds (at least one). A
//! burst the threads can finish within the timeout is therefore admitted whole, and a larger one
//! is cut where waiting would take longer. A hard cap on queued jobs,
//! [`Argon2Settings::queue_capacity`], bounds memory whatever the load. Refusing takes a lock
//! held for a few comparisons, no allocation and no hashing. A queued job whose caller
//! stopped waiting is dropped without being hashed. An admitted job is not refused later.
//!
//! [`PasswordHasher::run`] puts other CPU work of a request (the strength estimate of a new
//! password, under a millisecond) on the same threads, taken before any queued job: not on the
//! async threads, where a burst of them holds up every request, nor behind the queue, where the
//! request would wait for every hash ahead before its own could even be queued. It is not
//! admitted or measured like a job: the caller checks the room first.
//!
//! Each thread allocates one Argon2 block array of `memory_kib` on its first job and reuses it
//! for every later one, rather than allocating and freeing one per job (the allocator kept
//! several freed arrays per thread). Hashing memory is therefore `threads × memory_kib`, held by
//! the threads once they have hashed, whatever the offered load; an idle pool that never hashed
//! holds none.
//!
//! Verifying uses the algorithm, version and costs written in the stored hash, and reports the
//! match as `stale` when they are weaker than configured, so callers can re-hash. A stored hash
//! that needs more memory than configured is checked in an array allocated for that job alone,
//! up to 256 MiB (or `memory_kib` if larger); one that needs more, or more than 64 passes (or
//! `iterations` if larger), is refused as [`HashError::Failed`] without being computed.
//!
//! Metrics (via the `metrics` facade): the gauge [`metric_names::QUEUE_DEPTH`], the counter
//! [`metric_names::REJECTED_TOTAL`] (label `reason`: `expected_wait` or `queue_full`), and the
//! histograms [`metric_names::HASH_SECONDS`] (label `op`: `hash` or `verify`) and
//! [`metric_names::QUEUE_WAIT_SECONDS`].
//!
//! ```
//! use registrar_adapters_argon2::{Argon2Hasher, Argon2Settings};
//! use registrar_application::ports::{PasswordHasher, Verification};
//! use registrar_domain::Password;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let hasher = Argon2Hasher::new(Argon2Settings { threads: 1, ..Argon2Settings::default() })?;
//! let runtime = tokio::runtime::Builder::new_current_thread().build()?;
//! runtime.block_on(async {
//!     let hash = hasher.hash(Password::new("correct horse battery staple")).await?;
//!     assert!(hash.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
//!     let verdict = hasher.verify(Password::new("correct horse battery staple"), hash).await?;
//!     assert_eq!(verdict, Verification::Match { stale: false });
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })
//! # }
//! ```
#![forbid(unsafe_code)]

use std::{
    fmt, io,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::Arc,
    time::Duration,
};

use registrar_application::ports::{HashError, PasswordHasher, Verification};
use registrar_domain::{Password, PasswordHash};
use tokio::sync::oneshot;

mod admission;
mod failure;
mod phc;
mod pool;
mod priority;
mod settings;
mod work;

pub use settings::{Argon2Settings, SettingsError};

use failure::Failure;
use pool::{Clock as _, Limits, Pool, SystemClock, pool_gone};
use work::{Argon2Runner, Work};

/// The names of the metrics this crate records, for exporters that configure them by name.
pub mod metric_names {
    /// Gauge: jobs waiting in the queue for a hashing thread.
    pub const QUEUE_DEPTH: &str = "registrar_hash_queue_depth";
    /// Counter: requests answered `Overloaded`, labelled `reason`: `expected_wait` (the request
    /// would have started later than the queue timeout) or `queue_full` (the hard cap).
    pub const REJECTED_TOTAL: &str = "registrar_hash_rejected_total";
    /// Histogram: seconds of Argon2 work per request, labelled `op` (`hash`, `verify`).
    pub const HASH_SECONDS: &str = "registrar_hash_seconds";
    /// Histogram: seconds a request waited in the queue before its work started.
    pub const QUEUE_WAIT_SECONDS: &str = "registrar_hash_queue_wait_seconds";
}

/// Why the hasher could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting cannot work.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The trial hash that seeds the pool's time estimate failed (no memory for it, say).
    #[error("a trial password hash with these settings failed")]
    Trial(#[source] HashError),
    /// The operating system would not start a hashing thread.
    #[error("could not start a password hashing thread")]
    Spawn(#[source] io::Error),
}

/// The Argon2id hasher. Clones share one pool; the pool's threads stop once every clone is
/// dropped and the jobs already queued are done.
#[derive(Clone)]
pub struct Argon2Hasher {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool<Work, SystemClock>,
    settings: Argon2Settings,
}

impl Argon2Hasher {
    /// Checks `settings`, times trial hashes with them to seed the pool's estimate, and
    /// starts the pool's threads.
    pub fn new(settings: Argon2Settings) -> Result<Self, StartError> {
        let params = settings.params()?;
        let seed = trial_hash_time(&params)?;
        let limits = Limits {
            threads: settings.threads,
            queue_timeout: settings.queue_timeout,
            capacity: settings.queue_capacity,
            seed,
        };
        // The threads are detached: they stop by themselves once the pool is dropped.
        let (pool, _threads) = Pool::start(
            limits,
            SystemClock,
            |index| format!("argon2-{index}"),
            || Argon2Runner::new(params.clone()),
        )
        .map_err(StartError::Spawn)?;
        describe_metrics();
        tracing::debug!(
            threads = settings.threads,
            queue_capacity = settings.queue_capacity,
            queue_timeout_ms = settings.queue_timeout.as_millis(),
            trial_hash_ms = seed.as_millis(),
            m = settings.memory_kib,
            t = settings.iterations,
            p = settings.parallelism,
            "password hashing pool started"
        );
        Ok(Self {
            inner: Arc::new(Inner { pool, settings }),
        })
    }

    /// The settings the hasher runs with.
    #[must_use]
    pub fn settings(&self) -> &Argon2Settings {
        &self.inner.settings
    }

    /// How long one job takes a thread, as the pool currently estimates it (the estimate that
    /// admission goes by).
    #[must_use]
    pub fn hash_time(&self) -> Duration {
        self.inner.pool.estimate()
    }
}

/// Trial hashes timed before the pool starts; the fastest seeds its estimate.
const TRIAL_HASHES: usize = 3;

/// The CPU time of one hash with `params` on this machine, measured as the pool measures its
/// jobs: the fastest of [`TRIAL_HASHES`]. The first also faults in its fresh memory (48 ms
/// against 18 ms for the next, at the default costs); a seed twice too long would refuse half
/// of a first burst that fits.
fn trial_hash_time(params: &argon2::Params) -> Result<Duration, StartError> {
    // Memory of its own, freed on return: an idle pool holds no Argon2 memory.
    let mut memory = phc::Memory::new(params);
    let mut fastest = Duration::MAX;
    for _ in 0..TRIAL_HASHES {
        let started = SystemClock.thread_time();
        phc::hash(params, "a trial password", &mut memory).map_err(StartError::Trial)?;
        fastest = fastest.min(SystemClock.thread_time().saturating_sub(started));
    }
    Ok(fastest)
}

impl PasswordHasher for Argon2Hasher {
    fn check_room(&self) -> Result<(), HashError> {
        self.inner.pool.check()
    }

    async fn hash(&self, password: Password) -> Result<PasswordHash, HashError> {
        let (reply, answer) = oneshot::channel();
        self.inner.pool.submit(Work::Hash { password, reply })?;
        answer.await.map_err(|_| pool_gone())?
    }

    async fn verify(
        &self,
        password: Password,
        hash: PasswordHash,
    ) -> Result<Verification, HashError> {
        let (reply, answer) = oneshot::channel();
        self.inner.pool.submit(Work::Verify {
            password,
            hash,
            reply,
        })?;
        answer.await.map_err(|_| pool_gone())?
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let (reply, answer) = oneshot::channel();
        self.inner.pool.run_first(Box::new(move || {
            let result = catch_unwind(AssertUnwindSafe(work)).map_err(|_| Failure::Panicked);
            // A caller that stopped waiting needs no answer.
            drop(reply.send(result));
        }))?;
        Ok(answer.await.map_err(|_| pool_gone())??)
    }
}

impl fmt::Debug for Argon2Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Argon2Hasher")
            .field("settings", &self.inner.settings)
            .field("queued", &self.inner.pool.queued())
            .field("estimate", &self.inner.pool.estimate())
            .finish()
    }
}

fn describe_metrics() {
    metrics::describe_gauge!(
        metric_names::QUEUE_DEPTH,
        "Password hashing jobs waiting for a thread"
    );
    metrics::describe_counter!(
        metric_names::REJECTED_TOTAL,
        "Password hashing requests refused as overloaded"
    );
    metrics::describe_histogram!(
        metric_names::HASH_SECONDS,
        metrics::Unit::Seconds,
        "Time spent computing one Argon2 hash or verification"
    );
    metrics::describe_histogram!(
        metric_names::QUEUE_WAIT_SECONDS,
        metrics::Unit::Seconds,
        "Time a password hashing job waited for a thread"
    );
}

#[cfg(test)]
mod tests;

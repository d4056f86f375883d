//! Registrar's [`PasswordHasher`]: Argon2id (version 0x13, standard PHC strings, no pepper) on a
//! bounded pool of dedicated threads.
//!
//! Argon2 is deliberately slow and memory-hungry, so it must not run on the async workers, and
//! it must not queue without bound either: a burst of logins would otherwise pile up memory and
//! latency. This crate keeps a fixed set of OS threads (`argon2-0`, `argon2-1`, …; a fixed set
//! also keeps allocator arenas from multiplying) fed by a bounded queue. A request that finds
//! the queue full, or that waited in it longer than the queue timeout, is answered
//! [`HashError::Overloaded`] instead of being hashed.
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
//! [`metric_names::REJECTED_TOTAL`] (label `reason`: `queue_full` or `queue_timeout`), and the
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
    sync::Arc,
    thread::{self, JoinHandle},
    time::Instant,
};

use crossbeam_channel::{Sender, TrySendError};
use registrar_application::ports::{HashError, PasswordHasher, Verification};
use registrar_domain::{Password, PasswordHash};
use tokio::sync::oneshot;

mod phc;
mod pool;
mod settings;

pub use settings::{Argon2Settings, SettingsError};

use pool::{Job, Work, WorkerConfig};

/// The names of the metrics this crate records, for exporters that configure them by name.
pub mod metric_names {
    /// Gauge: jobs waiting in the queue for a hashing thread.
    pub const QUEUE_DEPTH: &str = "registrar_hash_queue_depth";
    /// Counter: requests answered `Overloaded`, labelled `reason` (`queue_full`, `queue_timeout`).
    pub const REJECTED_TOTAL: &str = "registrar_hash_rejected_total";
    /// Histogram: seconds of Argon2 work per request, labelled `op` (`hash`, `verify`).
    pub const HASH_SECONDS: &str = "registrar_hash_seconds";
    /// Histogram: seconds a request waited in the queue before its work started.
    pub const QUEUE_WAIT_SECONDS: &str = "registrar_hash_queue_wait_seconds";
}

/// Why the hasher could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A setting cannot work.
    #[error(transparent)]
    Settings(#[from] SettingsError),
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
    sender: Sender<Job>,
    settings: Argon2Settings,
    /// Tests join the workers to prove they stop; in production they are detached.
    #[cfg(test)]
    workers: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl Argon2Hasher {
    /// Checks `settings` and starts the pool's threads.
    pub fn new(settings: Argon2Settings) -> Result<Self, StartError> {
        let params = settings.params()?;
        let (sender, receiver) = crossbeam_channel::bounded(settings.queue_capacity);
        let config = Arc::new(WorkerConfig {
            params,
            queue_timeout: settings.queue_timeout,
            retry_after: settings.retry_after,
        });
        let mut workers: Vec<JoinHandle<()>> = Vec::with_capacity(settings.threads);
        for index in 0..settings.threads {
            let receiver = receiver.clone();
            let config = Arc::clone(&config);
            // On failure `sender` is dropped on return, so the threads already started stop.
            let worker = thread::Builder::new()
                .name(format!("argon2-{index}"))
                .spawn(move || pool::run(&receiver, &config))
                .map_err(StartError::Spawn)?;
            workers.push(worker);
        }
        describe_metrics();
        tracing::debug!(
            threads = settings.threads,
            queue_capacity = settings.queue_capacity,
            m = settings.memory_kib,
            t = settings.iterations,
            p = settings.parallelism,
            "password hashing pool started"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                sender,
                settings,
                #[cfg(test)]
                workers: std::sync::Mutex::new(workers),
            }),
        })
    }

    /// The settings the hasher runs with.
    #[must_use]
    pub fn settings(&self) -> &Argon2Settings {
        &self.inner.settings
    }

    /// Queues `work` without waiting: a full queue is an immediate [`HashError::Overloaded`].
    fn submit(&self, work: Work) -> Result<(), HashError> {
        let job = Job {
            work,
            enqueued_at: Instant::now(),
        };
        match self.inner.sender.try_send(job) {
            Ok(()) => {
                // Workers decrement as they take jobs, so the gauge returns to zero when idle.
                metrics::gauge!(metric_names::QUEUE_DEPTH).increment(1);
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(self.queue_full()),
            Err(TrySendError::Disconnected(_)) => Err(pool_gone()),
        }
    }

    /// Counts a refusal for want of room in the queue and says when to try again.
    fn queue_full(&self) -> HashError {
        metrics::counter!(metric_names::REJECTED_TOTAL, "reason" => "queue_full").increment(1);
        tracing::debug!("password hashing refused: the queue is full");
        HashError::Overloaded {
            retry_after: self.inner.settings.retry_after,
        }
    }
}

impl PasswordHasher for Argon2Hasher {
    fn check_room(&self) -> Result<(), HashError> {
        if self.inner.sender.is_full() {
            Err(self.queue_full())
        } else {
            Ok(())
        }
    }

    async fn hash(&self, password: Password) -> Result<PasswordHash, HashError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Work::Hash { password, reply })?;
        answer.await.map_err(|_| pool_gone())?
    }

    async fn verify(
        &self,
        password: Password,
        hash: PasswordHash,
    ) -> Result<Verification, HashError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Work::Verify {
            password,
            hash,
            reply,
        })?;
        answer.await.map_err(|_| pool_gone())?
    }
}

impl fmt::Debug for Argon2Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Argon2Hasher")
            .field("settings", &self.inner.settings)
            .field("queued", &self.inner.sender.len())
            .finish()
    }
}

fn pool_gone() -> HashError {
    tracing::error!("the password hashing threads are gone");
    HashError::Failed("the password hashing threads are gone".to_owned())
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

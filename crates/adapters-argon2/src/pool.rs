//! The pool's worker side: jobs as they travel through the bounded queue, and the loop each
//! dedicated thread runs until the last sender is dropped.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    time::{Duration, Instant},
};

use argon2::Params;
use crossbeam_channel::Receiver;
use registrar_application::ports::{HashError, Verification};
use registrar_domain::{Password, PasswordHash};
use tokio::sync::oneshot;

use crate::{
    metric_names,
    phc::{self, Memory},
};

/// What the workers need to know, shared by all of them.
pub(crate) struct WorkerConfig {
    /// The configured Argon2 costs.
    pub(crate) params: Params,
    /// The longest a job may wait before it starts.
    pub(crate) queue_timeout: Duration,
    /// What refused callers are told.
    pub(crate) retry_after: Duration,
}

/// One queued request and when it entered the queue.
pub(crate) struct Job {
    pub(crate) work: Work,
    pub(crate) enqueued_at: Instant,
}

/// What to compute, and where the answer goes.
pub(crate) enum Work {
    Hash {
        password: Password,
        reply: oneshot::Sender<Result<PasswordHash, HashError>>,
    },
    Verify {
        password: Password,
        hash: PasswordHash,
        reply: oneshot::Sender<Result<Verification, HashError>>,
    },
    /// Tests only: reports how many Argon2 blocks the worker that takes it holds. Never expires
    /// in the queue.
    #[cfg(test)]
    HeldBlocks { reply: oneshot::Sender<usize> },
    /// Tests only: occupies a worker until `release` is signalled (or dropped), after
    /// reporting its thread's name on `started`. Never expires in the queue.
    #[cfg(test)]
    Gate {
        started: oneshot::Sender<Option<String>>,
        release: std::sync::mpsc::Receiver<()>,
    },
}

impl Work {
    /// Whether the caller stopped waiting for the answer.
    fn abandoned(&self) -> bool {
        match self {
            Self::Hash { reply, .. } => reply.is_closed(),
            Self::Verify { reply, .. } => reply.is_closed(),
            #[cfg(test)]
            Self::HeldBlocks { .. } | Self::Gate { .. } => false,
        }
    }

    /// Answers with `error` instead of doing the work.
    fn refuse(self, error: HashError) {
        // A caller that stopped waiting needs no answer: send errors are ignored throughout.
        match self {
            Self::Hash { reply, .. } => drop(reply.send(Err(error))),
            Self::Verify { reply, .. } => drop(reply.send(Err(error))),
            #[cfg(test)]
            Self::HeldBlocks { .. } | Self::Gate { .. } => {}
        }
    }

    /// Does the work in the thread's `memory` and answers.
    fn run(self, config: &WorkerConfig, memory: &mut Memory) {
        match self {
            Self::Hash { password, reply } => {
                let result = timed("hash", || {
                    phc::hash(&config.params, password.expose(), memory)
                });
                drop(reply.send(result));
            }
            Self::Verify {
                password,
                hash,
                reply,
            } => {
                let result = timed("verify", || {
                    phc::verify(&config.params, password.expose(), &hash, memory)
                });
                drop(reply.send(result));
            }
            #[cfg(test)]
            Self::HeldBlocks { reply } => drop(reply.send(memory.held_blocks())),
            #[cfg(test)]
            Self::Gate { started, release } => {
                drop(started.send(std::thread::current().name().map(str::to_owned)));
                // Released by a message or by the sender being dropped: either will do.
                let _released = release.recv();
            }
        }
    }
}

/// Runs `work`, recording its duration; a panic becomes [`HashError::Failed`] so the thread
/// lives on (its Argon2 memory is wiped as the panic unwinds).
fn timed<T>(op: &'static str, work: impl FnOnce() -> Result<T, HashError>) -> Result<T, HashError> {
    let started = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|_| {
        tracing::error!(op, "password hashing panicked");
        Err(HashError::Failed("password hashing panicked".to_owned()))
    });
    metrics::histogram!(metric_names::HASH_SECONDS, "op" => op)
        .record(started.elapsed().as_secs_f64());
    result
}

/// A worker thread's life: take jobs until every sender is gone, refusing those that waited
/// longer than the queue timeout. The thread's Argon2 memory is allocated by its first job and
/// reused by every later one.
pub(crate) fn run(receiver: &Receiver<Job>, config: &WorkerConfig) {
    let mut memory = Memory::new(&config.params);
    while let Ok(job) = receiver.recv() {
        metrics::gauge!(metric_names::QUEUE_DEPTH).decrement(1);
        let waited = job.enqueued_at.elapsed();
        #[cfg(test)]
        let expires = !matches!(job.work, Work::Gate { .. } | Work::HeldBlocks { .. });
        #[cfg(not(test))]
        let expires = true;
        if expires && waited > config.queue_timeout {
            metrics::counter!(metric_names::REJECTED_TOTAL, "reason" => "queue_timeout")
                .increment(1);
            tracing::debug!(
                waited_ms = waited.as_millis(),
                "password hashing refused: the job waited longer than the queue timeout"
            );
            job.work.refuse(HashError::Overloaded {
                retry_after: config.retry_after,
            });
            continue;
        }
        if job.work.abandoned() {
            tracing::debug!("password hashing skipped: the caller stopped waiting");
            continue;
        }
        metrics::histogram!(metric_names::QUEUE_WAIT_SECONDS).record(waited.as_secs_f64());
        job.work.run(config, &mut memory);
    }
    tracing::debug!("password hashing thread stopping: the hasher was dropped");
}

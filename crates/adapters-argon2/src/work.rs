//! The hasher's jobs and the [`Runner`] that does them on each pool thread: Argon2 in the
//! thread's reusable memory, timed, with a panic turned into an error so the thread lives on.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    time::Instant,
};

use argon2::Params;
use registrar_application::ports::{HashError, Verification};
use registrar_domain::{Password, PasswordHash};
use tokio::sync::oneshot;

use crate::{
    failure::Failure,
    metric_names,
    phc::{self, Memory},
    pool::Runner,
};

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
}

/// One thread's Argon2: the configured costs and the thread's memory.
pub(crate) struct Argon2Runner {
    params: Params,
    memory: Memory,
}

impl Argon2Runner {
    /// A runner for `params`; it holds no memory until its first job.
    pub(crate) fn new(params: Params) -> Self {
        let memory = Memory::new(&params);
        Self { params, memory }
    }
}

impl Runner for Argon2Runner {
    type Job = Work;

    fn abandoned(job: &Work) -> bool {
        match job {
            Work::Hash { reply, .. } => reply.is_closed(),
            Work::Verify { reply, .. } => reply.is_closed(),
        }
    }

    fn run(&mut self, job: Work) {
        // A caller that stopped waiting needs no answer: send errors are ignored.
        match job {
            Work::Hash { password, reply } => {
                let result = timed("hash", || {
                    phc::hash(&self.params, password.expose(), &mut self.memory)
                });
                drop(reply.send(result));
            }
            Work::Verify {
                password,
                hash,
                reply,
            } => {
                let result = timed("verify", || {
                    phc::verify(&self.params, password.expose(), &hash, &mut self.memory)
                });
                drop(reply.send(result));
            }
        }
    }
}

/// Runs `work`, recording its duration; a panic becomes [`HashError::Failed`] so the thread
/// lives on (its Argon2 memory is wiped as the panic unwinds, whatever the passes).
fn timed<T>(op: &'static str, work: impl FnOnce() -> Result<T, HashError>) -> Result<T, HashError> {
    let started = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|_| {
        tracing::error!(op, "password hashing panicked");
        Err(Failure::Panicked.into())
    });
    metrics::histogram!(metric_names::HASH_SECONDS, "op" => op)
        .record(started.elapsed().as_secs_f64());
    result
}

#[cfg(test)]
mod tests {
    use argon2::{Algorithm, Argon2, PasswordHasher as _, Version};

    use super::*;

    fn password() -> Password {
        Password::new("correct horse battery staple")
    }

    fn hash(runner: &mut Argon2Runner, password: Password) -> Result<PasswordHash, HashError> {
        let (reply, mut answer) = oneshot::channel();
        runner.run(Work::Hash { password, reply });
        answer.try_recv().unwrap()
    }

    fn verify(
        runner: &mut Argon2Runner,
        password: Password,
        hash: PasswordHash,
    ) -> Result<Verification, HashError> {
        let (reply, mut answer) = oneshot::channel();
        runner.run(Work::Verify {
            password,
            hash,
            reply,
        });
        answer.try_recv().unwrap()
    }

    /// A PHC string for `password` made by the argon2 crate itself, with costs `m`, `t`, `p`.
    fn stored_hash(m: u32, t: u32, p: u32, password: &str) -> PasswordHash {
        let params = Params::new(m, t, p, None).unwrap();
        let phc = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(password.as_bytes())
            .unwrap()
            .to_string();
        PasswordHash::from_phc(phc).unwrap()
    }

    #[test]
    fn a_runner_holds_no_argon2_memory_until_its_first_job_then_one_configured_array() {
        let mut runner = Argon2Runner::new(Params::new(1024, 1, 1, None).unwrap());
        assert_eq!(
            runner.memory.held_blocks(),
            0,
            "an idle thread holds nothing"
        );

        for _ in 0..5 {
            let stored = hash(&mut runner, password()).unwrap();
            assert_eq!(
                verify(&mut runner, password(), stored).unwrap(),
                Verification::Match { stale: false }
            );
        }
        assert_eq!(runner.memory.held_blocks(), 1024);

        // Stored hashes with other costs than configured (1024 KiB, t=1, p=1): weaker ones are
        // checked in part of the thread's array, stronger ones in one freed after the job.
        for (m, t, p, stale) in [
            (256, 1, 1, true),
            (1024, 1, 1, false),
            (4096, 3, 2, false),
            (2048, 1, 4, false),
            (512, 2, 2, true),
        ] {
            let stored = stored_hash(m, t, p, "correct horse battery staple");
            assert_eq!(
                verify(&mut runner, password(), stored.clone()).unwrap(),
                Verification::Match { stale },
                "m={m} t={t} p={p}"
            );
            assert_eq!(
                verify(
                    &mut runner,
                    Password::new("correct horse battery stable"),
                    stored
                )
                .unwrap(),
                Verification::Mismatch,
                "m={m} t={t} p={p}"
            );
            assert_eq!(runner.memory.held_blocks(), 1024, "m={m} t={t} p={p}");
        }
    }

    #[test]
    fn a_job_whose_caller_left_is_abandoned() {
        let (reply, answer) = oneshot::channel();
        let job = Work::Hash {
            password: password(),
            reply,
        };
        assert!(!Argon2Runner::abandoned(&job));
        drop(answer);
        assert!(Argon2Runner::abandoned(&job));
    }
}

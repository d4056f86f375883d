//! Why a hashing job failed, in the adapter's own terms: the cause that
//! [`HashError::Failed`] carries, with the library's error kept as its source, so the one line
//! that logs a 500 names the step that broke and what Argon2, the allocator or the OS said.
//! No message repeats a stored hash's salt or output, nor anything of the password.

use std::collections::TryReserveError;

use argon2::password_hash;
use registrar_application::ports::{Cause, HashError};
use registrar_domain::PasswordHashError;

/// What went wrong in the pool or in a job.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    /// The job panicked; the thread caught it and lives on.
    #[error("a password hashing job panicked")]
    Panicked,
    /// Every hashing thread has stopped.
    #[error("the password hashing threads are gone")]
    PoolGone,
    /// The allocator had no room for a job's Argon2 memory.
    #[error("no memory for {kib} KiB of password hashing")]
    NoMemory {
        /// The memory asked for.
        kib: usize,
        /// The allocator's refusal.
        #[source]
        source: TryReserveError,
    },
    /// The thread's kept memory is smaller than the configured costs need: a bug.
    #[error("the password hashing memory is smaller than expected")]
    MemoryTooSmall,
    /// No salt: the OS had no randomness, or the salt was refused.
    #[error("no random salt")]
    Salt(#[source] Cause),
    /// Argon2 refused the inputs or costs.
    #[error("Argon2 could not hash")]
    Argon2(#[source] password_hash::Error),
    /// Argon2's output did not read back as a PHC string: a bug.
    #[error("Argon2 produced a hash that is not a PHC string")]
    NotPhc(#[source] PasswordHashError),
    /// A stored hash that cannot be checked: it names the step, the source says why.
    #[error("the stored password hash {step}")]
    Unusable {
        /// What could not be done with it: "does not parse", "is not Argon2", ….
        step: &'static str,
        /// The library's error.
        #[source]
        source: Cause,
    },
    /// A stored hash asks for more memory than a job may take.
    #[error(
        "the stored password hash needs {needs} KiB of memory, more than the {allowed} KiB allowed"
    )]
    TooMuchMemory {
        /// KiB the stored costs need.
        needs: usize,
        /// KiB a job may take.
        allowed: usize,
    },
    /// A stored hash asks for more passes than a job may make.
    #[error("the stored password hash needs {needs} passes, more than the {allowed} allowed")]
    TooManyPasses {
        /// Passes the stored costs ask for.
        needs: u32,
        /// Passes a job may make.
        allowed: u32,
    },
    /// A stored hash without a salt or an output: nothing to compare against.
    #[error("the stored password hash has no salt or no output")]
    Incomplete,
}

impl Failure {
    /// A stored hash that failed at `step`, for `source`.
    pub(crate) fn unusable(
        step: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Unusable {
            step,
            source: Box::new(source),
        }
    }
}

impl From<Failure> for HashError {
    fn from(failure: Failure) -> Self {
        Self::Failed(Box::new(failure))
    }
}

//! The hasher's settings: the Argon2id costs and the size, queue and time limits of the pool
//! that runs them, checked once before any thread starts.

use std::{num::NonZeroUsize, thread, time::Duration};

use argon2::Params;

/// Argon2id costs and pool limits. Hashing memory is `threads × memory_kib` KiB, held by each
/// thread from its first job on (plus, only while it is checked, a stored hash's stronger `m`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Argon2Settings {
    /// Memory cost `m`, in KiB. Default 19456 (19 MiB).
    pub memory_kib: u32,
    /// Time cost `t`, the number of passes over memory. Default 2.
    pub iterations: u32,
    /// Degree of parallelism `p` (lanes). Default 1.
    pub parallelism: u32,
    /// Dedicated hashing threads. Default one per available core.
    pub threads: usize,
    /// The hard cap on jobs waiting for a thread, a memory guard whatever the load: beyond it
    /// requests are refused at once, however short the expected wait. Default 256 per thread,
    /// well above the queue timeout's admission at the default costs (about 95 per thread at
    /// 21 ms a hash).
    pub queue_capacity: usize,
    /// The longest expected start admitted: a request whose work would be expected to start
    /// later (the jobs ahead of it at the measured time per job, spread over the threads) is
    /// refused at once. Default 2 s.
    pub queue_timeout: Duration,
}

impl Argon2Settings {
    /// The memory cost `m` (KiB) of the default settings, OWASP's minimum for Argon2id.
    pub const DEFAULT_MEMORY_KIB: u32 = 19 * 1024;
    /// The time cost `t` of the default settings.
    pub const DEFAULT_ITERATIONS: u32 = 2;
    /// The parallelism `p` of the default settings.
    pub const DEFAULT_PARALLELISM: u32 = 1;
    /// The hard cap on queued jobs per thread in the default settings.
    pub const DEFAULT_QUEUE_PER_THREAD: usize = 256;
    /// The queue timeout of the default settings.
    pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(2);

    /// Checks every setting without starting anything.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.params().map(drop)
    }

    /// The Argon2 parameters, once every setting has been checked.
    pub(crate) fn params(&self) -> Result<Params, SettingsError> {
        if self.threads == 0 {
            return Err(SettingsError::NoThreads);
        }
        if self.queue_capacity == 0 {
            return Err(SettingsError::NoQueue);
        }
        if self.queue_timeout.is_zero() {
            return Err(SettingsError::NoQueueTimeout);
        }
        Params::new(self.memory_kib, self.iterations, self.parallelism, None).map_err(|source| {
            SettingsError::InvalidParams {
                memory_kib: self.memory_kib,
                iterations: self.iterations,
                parallelism: self.parallelism,
                source,
            }
        })
    }
}

impl Default for Argon2Settings {
    fn default() -> Self {
        let threads = thread::available_parallelism().map_or(1, NonZeroUsize::get);
        Self {
            memory_kib: Self::DEFAULT_MEMORY_KIB,
            iterations: Self::DEFAULT_ITERATIONS,
            parallelism: Self::DEFAULT_PARALLELISM,
            threads,
            queue_capacity: threads.saturating_mul(Self::DEFAULT_QUEUE_PER_THREAD),
            queue_timeout: Self::DEFAULT_QUEUE_TIMEOUT,
        }
    }
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// Argon2 refuses these costs (for example `m` below 8 KiB per lane, or `t` or `p` zero).
    #[error("invalid Argon2 parameters m={memory_kib} KiB, t={iterations}, p={parallelism}")]
    InvalidParams {
        /// The memory cost asked for.
        memory_kib: u32,
        /// The time cost asked for.
        iterations: u32,
        /// The parallelism asked for.
        parallelism: u32,
        /// Argon2's reason.
        #[source]
        source: argon2::Error,
    },
    /// The pool was given no threads.
    #[error("the password hashing pool needs at least one thread")]
    NoThreads,
    /// The queue was given no room.
    #[error("the password hashing queue needs room for at least one job")]
    NoQueue,
    /// The queue timeout is zero, which would refuse every job that cannot start at once.
    #[error("the password hashing queue timeout must be longer than zero")]
    NoQueueTimeout,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_contract_costs_and_one_thread_per_core() {
        let settings = Argon2Settings::default();
        let cores = thread::available_parallelism().map_or(1, NonZeroUsize::get);
        assert_eq!(
            (
                settings.memory_kib,
                settings.iterations,
                settings.parallelism
            ),
            (19_456, 2, 1)
        );
        assert_eq!(settings.threads, cores);
        assert_eq!(settings.queue_capacity, 256 * cores);
        assert_eq!(settings.queue_timeout, Duration::from_secs(2));
        assert_eq!(settings.validate(), Ok(()));
    }

    #[test]
    fn argon2_refusals_become_typed_errors() {
        for (m, t, p) in [(1, 2, 1), (19_456, 0, 1), (19_456, 2, 0), (8, 1, 2)] {
            let settings = Argon2Settings {
                memory_kib: m,
                iterations: t,
                parallelism: p,
                ..Argon2Settings::default()
            };
            let error = settings.validate().unwrap_err();
            assert!(
                matches!(error, SettingsError::InvalidParams { memory_kib, iterations, parallelism, .. }
                    if (memory_kib, iterations, parallelism) == (m, t, p)),
                "m={m} t={t} p={p}: {error:?}"
            );
            assert!(std::error::Error::source(&error).is_some());
        }
    }

    #[test]
    fn an_empty_pool_queue_or_timeout_is_refused() {
        let base = Argon2Settings::default();
        let no_threads = Argon2Settings {
            threads: 0,
            ..base.clone()
        };
        let no_queue = Argon2Settings {
            queue_capacity: 0,
            ..base.clone()
        };
        let no_timeout = Argon2Settings {
            queue_timeout: Duration::ZERO,
            ..base
        };
        assert_eq!(no_threads.validate(), Err(SettingsError::NoThreads));
        assert_eq!(no_queue.validate(), Err(SettingsError::NoQueue));
        assert_eq!(no_timeout.validate(), Err(SettingsError::NoQueueTimeout));
    }
}

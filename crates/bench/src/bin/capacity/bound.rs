//! The Argon2 bound: how many passwords one CPU hashes per second with the hasher the server
//! runs (the `registrar-adapters-argon2` pool with one thread, default costs), so every
//! throughput figure can be read as a share of what the hashing alone allows.
//!
//! Each CPU is measured by this program re-run as `capacity hash-bound` under `taskset -c N`:
//! the whole child process, its hashing thread included, runs on that CPU only. Each CPU alone
//! (the others idle) gives the bound of a server pinned to one CPU; every CPU at once gives the
//! whole machine's, which is less than the sum of the CPUs alone: the cores share caches and
//! memory bandwidth (and may be two threads of one physical core), and Argon2 lives on both.

use std::time::{Duration, Instant};

use registrar_adapters_argon2::{Argon2Hasher, Argon2Settings};
use registrar_application::ports::PasswordHasher;
use registrar_bench::PASSWORD;
use registrar_domain::Password;

use crate::machine::{self, Machine};

/// The hidden subcommand that measures the CPU it runs on.
pub(crate) const SUBCOMMAND: &str = "hash-bound";
/// Hashes before the measured ones: the first one also faults in the thread's Argon2 array.
const WARM_UP: usize = 2;
/// The measured hashes run for at least this long...
const MEASURE_FOR: Duration = Duration::from_secs(2);
/// ...and number at least this many.
const MEASURE_AT_LEAST: usize = 8;

/// The hash time measured on one CPU.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuBound {
    /// The CPU, or `None` when the child could not be pinned.
    pub(crate) cpu: Option<usize>,
    /// Median wall time of one hash, seconds.
    pub(crate) seconds_per_hash: f64,
}

impl CpuBound {
    /// Hashes per second: registrations (one hash) or activations (one verify, the same cost).
    pub(crate) fn per_second(&self) -> f64 {
        1.0 / self.seconds_per_hash
    }
}

/// Per CPU, the faster of two measurements: other processes on the CPU only ever slow hashing
/// down, so the faster one is nearer what the CPU can do.
pub(crate) fn faster(first: &[CpuBound], second: &[CpuBound]) -> Vec<CpuBound> {
    first
        .iter()
        .zip(second)
        .map(|(one, other)| {
            if other.seconds_per_hash < one.seconds_per_hash {
                *other
            } else {
                *one
            }
        })
        .collect()
}

/// The bound of every CPU together: the sum over measurements taken all at once.
pub(crate) fn whole_machine(together: &[CpuBound]) -> f64 {
    together.iter().map(CpuBound::per_second).sum()
}

/// `CPU 0 52.1 ms per hash = 19.2/s; …; sum 38.0/s`.
pub(crate) fn describe(bounds: &[CpuBound]) -> String {
    let each: Vec<String> = bounds
        .iter()
        .map(|bound| {
            format!(
                "{} {:.1} ms per hash = {:.1}/s",
                bound
                    .cpu
                    .map_or_else(|| "unpinned".to_owned(), |cpu| format!("CPU {cpu}")),
                bound.seconds_per_hash * 1000.0,
                bound.per_second()
            )
        })
        .collect();
    format!("{}; sum {:.1}/s", each.join("; "), whole_machine(bounds))
}

/// Measures every CPU of `machine` in turn, pinned; on a machine where nothing can be pinned, one
/// unpinned measurement.
pub(crate) fn measure(machine: &Machine) -> Result<Vec<CpuBound>, String> {
    targets(machine).into_iter().map(measure_on).collect()
}

/// Measures every CPU of `machine` at the same time, each pinned, as the whole machine hashes
/// when every core has a hashing thread; on a machine where nothing can be pinned, one unpinned
/// measurement.
pub(crate) fn measure_together(machine: &Machine) -> Result<Vec<CpuBound>, String> {
    std::thread::scope(|scope| {
        let running: Vec<_> = targets(machine)
            .into_iter()
            .map(|cpu| scope.spawn(move || measure_on(cpu)))
            .collect();
        running
            .into_iter()
            .map(|child| {
                child
                    .join()
                    .unwrap_or_else(|_| Err("a hash measurement panicked".to_owned()))
            })
            .collect()
    })
}

/// Measures the first CPU of `machine`, the one a pinned server runs on (unpinned where nothing
/// can be pinned).
pub(crate) fn measure_first(machine: &Machine) -> Result<CpuBound, String> {
    measure_on(targets(machine).into_iter().next().flatten())
}

fn targets(machine: &Machine) -> Vec<Option<usize>> {
    if machine.taskset {
        machine.cpus.iter().copied().map(Some).collect()
    } else {
        vec![None]
    }
}

fn measure_on(cpu: Option<usize>) -> Result<CpuBound, String> {
    let text = machine::run_self_on(cpu, &[SUBCOMMAND])?;
    let seconds_per_hash = text
        .parse::<f64>()
        .ok()
        .filter(|seconds| *seconds > 0.0)
        .ok_or_else(|| format!("the hash measurement on CPU {cpu:?} printed {text:?}"))?;
    Ok(CpuBound {
        cpu,
        seconds_per_hash,
    })
}

/// The child's side: hashes with the server's hasher (one thread, default costs) on whatever
/// CPU it was started on, and returns the median seconds per hash: a neighbour that takes the
/// CPU now and then stretches a few hashes, which moves a mean but hardly a median.
pub(crate) fn seconds_per_hash() -> Result<f64, String> {
    let hasher = Argon2Hasher::new(Argon2Settings {
        threads: 1,
        ..Argon2Settings::default()
    })
    .map_err(|error| format!("cannot start the hasher: {error}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|error| format!("cannot start a runtime: {error}"))?;
    runtime.block_on(async {
        for _ in 0..WARM_UP {
            hash_once(&hasher).await?;
        }
        let start = Instant::now();
        let mut samples = Vec::new();
        while start.elapsed() < MEASURE_FOR || samples.len() < MEASURE_AT_LEAST {
            let hashing = Instant::now();
            hash_once(&hasher).await?;
            samples.push(hashing.elapsed());
        }
        Ok(crate::report::percentile(&samples, 50).as_secs_f64())
    })
}

async fn hash_once(hasher: &Argon2Hasher) -> Result<(), String> {
    hasher
        .hash(Password::new(PASSWORD))
        .await
        .map(drop)
        .map_err(|error| format!("hashing failed: {error}"))
}

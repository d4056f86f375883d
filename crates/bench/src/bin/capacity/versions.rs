//! argon2 0.5 against argon2 0.6 on one CPU: the time of one Argon2id hash with the default
//! costs, each version in its own block array allocated once and reused, as the server's hashing
//! threads do. The question was whether moving to 0.6 costs speed; it stays in every run so
//! that the answer is checked again on each machine and each release of either.
//!
//! The two are timed in alternating rounds (0.5 then 0.6, then 0.6 then 0.5, …) in one process
//! pinned to one CPU: a neighbour that takes the CPU for a while, or a frequency change, slows
//! both alike instead of only the version measured at that moment.

use std::time::{Duration, Instant};

use registrar_bench::PASSWORD;

use crate::machine::{self, Machine};

/// The hidden subcommand that runs the comparison on the CPU it was started on.
pub(crate) const SUBCOMMAND: &str = "argon2-versions";
/// Rounds of one hash with each version: about 3.5 s at 17 ms a hash.
const ROUNDS: usize = 100;
/// The default costs (`Argon2Settings::default()`): m in KiB, t, p.
const COSTS: (u32, u32, u32) = (19 * 1024, 2, 1);
/// Any fixed salt: both versions hash the same input, and must agree on the output.
const SALT: &[u8] = b"capacity-versions";

/// Runs the comparison in a child pinned to the machine's first CPU (unpinned without
/// `taskset`) and returns the line the report prints.
pub(crate) fn measure(machine: &Machine) -> Result<String, String> {
    let cpu = machine.taskset.then_some(machine.cpus[0]);
    let place = cpu.map_or_else(|| "unpinned".to_owned(), |cpu| format!("CPU {cpu}"));
    machine::run_self_on(cpu, &[SUBCOMMAND, &place])
}

/// The child's side: the comparison on whatever CPU it runs on, described for `place`.
pub(crate) fn compare(place: &str) -> Result<String, String> {
    let (m, t, p) = COSTS;
    let old = argon2_05::Argon2::new(
        argon2_05::Algorithm::Argon2id,
        argon2_05::Version::V0x13,
        argon2_05::Params::new(m, t, p, None).map_err(|error| format!("argon2 0.5: {error}"))?,
    );
    let new = argon2_06::Argon2::new(
        argon2_06::Algorithm::Argon2id,
        argon2_06::Version::V0x13,
        argon2_06::Params::new(m, t, p, None).map_err(|error| format!("argon2 0.6: {error}"))?,
    );
    let mut old_blocks = vec![argon2_05::Block::new(); old.params().block_count()];
    let mut new_blocks = vec![argon2_06::Block::new(); new.params().block_count()];
    let mut old_hash = |out: &mut [u8]| {
        old.hash_password_into_with_memory(PASSWORD.as_bytes(), SALT, out, &mut old_blocks)
            .map_err(|error| format!("argon2 0.5 could not hash: {error}"))
    };
    let mut new_hash = |out: &mut [u8]| {
        new.hash_password_into_with_memory(PASSWORD.as_bytes(), SALT, out, &mut new_blocks)
            .map_err(|error| format!("argon2 0.6 could not hash: {error}"))
    };

    // The first hash of each faults its array in; it also shows the two compute the same thing.
    let (mut old_out, mut new_out) = ([0_u8; 32], [0_u8; 32]);
    old_hash(&mut old_out)?;
    new_hash(&mut new_out)?;
    if old_out != new_out {
        return Err("argon2 0.5 and 0.6 give different hashes of the same input".to_owned());
    }

    let (mut old_times, mut new_times) = (Times::default(), Times::default());
    for round in 0..ROUNDS {
        if round % 2 == 0 {
            old_times.time(|| old_hash(&mut old_out))?;
            new_times.time(|| new_hash(&mut new_out))?;
        } else {
            new_times.time(|| new_hash(&mut new_out))?;
            old_times.time(|| old_hash(&mut old_out))?;
        }
    }
    Ok(describe(&old_times, &new_times, place))
}

/// One version's hashes: wall time, and the thread's CPU time, which leaves out the moments a
/// neighbour held the CPU (not what it did to the caches).
#[derive(Debug, Default)]
struct Times {
    wall: Vec<Duration>,
    cpu: Vec<Duration>,
}

impl Times {
    fn time(&mut self, hash: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
        let (wall, cpu) = (Instant::now(), thread_cpu_time());
        hash()?;
        self.cpu.push(thread_cpu_time().saturating_sub(cpu));
        self.wall.push(wall.elapsed());
        Ok(())
    }
}

fn thread_cpu_time() -> Duration {
    let time = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(time.tv_sec).unwrap_or_default(),
        u32::try_from(time.tv_nsec).unwrap_or_default(),
    )
}

/// `Argon2 per hash: 0.5 x ms, 0.6 y ms (median of N interleaved, CPU 0)` in wall time, the
/// middle 80 % of each, the medians in CPU time, and the median over the rounds of the ratio
/// 0.6 / 0.5: the two hashes of a round are moments apart, so a slow spell of the machine
/// cancels out of their ratio more than out of the medians.
fn describe(old: &Times, new: &Times, place: &str) -> String {
    let ms = |samples: &[Duration], percent| {
        crate::report::percentile(samples, percent).as_secs_f64() * 1000.0
    };
    let ratio = |old: &[Duration], new: &[Duration]| {
        let mut ratios: Vec<f64> = old
            .iter()
            .zip(new)
            .map(|(old, new)| new.as_secs_f64() / old.as_secs_f64())
            .collect();
        ratios.sort_by(f64::total_cmp);
        ratios.get(ratios.len() / 2).copied().unwrap_or(f64::NAN)
    };
    format!(
        "Argon2 per hash: 0.5 {:.1} ms, 0.6 {:.1} ms (median of {} interleaved, {place}); \
         middle 80 %: 0.5 {:.1}–{:.1} ms, 0.6 {:.1}–{:.1} ms; thread CPU time: 0.5 {:.1} ms, \
         0.6 {:.1} ms; median ratio 0.6 / 0.5 per round: {:.3} wall, {:.3} CPU",
        ms(&old.wall, 50),
        ms(&new.wall, 50),
        old.wall.len(),
        ms(&old.wall, 10),
        ms(&old.wall, 90),
        ms(&new.wall, 10),
        ms(&new.wall, 90),
        ms(&old.cpu, 50),
        ms(&new.cpu, 50),
        ratio(&old.wall, &new.wall),
        ratio(&old.cpu, &new.cpu),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Times, describe};

    fn times(wall: impl Fn(u64) -> u64, cpu: impl Fn(u64) -> u64) -> Times {
        Times {
            wall: (10..=19)
                .map(|ms| Duration::from_millis(wall(ms)))
                .collect(),
            cpu: (10..=19).map(|ms| Duration::from_millis(cpu(ms))).collect(),
        }
    }

    #[test]
    fn the_line_gives_both_medians_their_spread_and_the_paired_ratios() {
        let old = times(|ms| ms, |ms| ms - 5);
        let new = times(|ms| ms * 2, |ms| ms - 5);
        assert_eq!(
            describe(&old, &new, "CPU 0"),
            "Argon2 per hash: 0.5 14.0 ms, 0.6 28.0 ms (median of 10 interleaved, CPU 0); \
             middle 80 %: 0.5 10.0–18.0 ms, 0.6 20.0–36.0 ms; thread CPU time: 0.5 9.0 ms, \
             0.6 9.0 ms; median ratio 0.6 / 0.5 per round: 2.000 wall, 1.000 CPU"
        );
    }
}

//! The pace at which `overloaded` refusals are answered.
//!
//! A refusal is cheap for the service's code (tens of microseconds) but not for the machine: a
//! client that opens a connection per request costs the kernel an accept, a send and a close on
//! the server's core each time, and the threads that answer requests have priority over the
//! hashing threads (so health probes stay quick). Clients that resend at once on every 503,
//! never heeding `Retry-After`, therefore turn any spare time of the HTTP threads into more
//! refusals, and take the core from the hashes that were admitted: on one core, 64 such clients
//! held the rate of 201s to a quarter of what hashing allows. The pacer bounds what refusals may
//! take instead: refusals are answered at once while they come at a sustainable pace (or in a
//! burst of up to two seconds of it); past that, each waits its turn, at most a second, without
//! holding a thread. A client that heeds `Retry-After` waits at least a second anyway, and
//! never notices.
//!
//! A held refusal keeps its connection open, about 30 KiB of memory (3,400 clients resending at
//! once raised the peak RSS by 98 MiB), within the server's limit on connections like any
//! other. Capping the refusals held, and answering the rest at once, was tried: the storm took
//! the CPU back, and the peak fell only from 172 to 139 MiB. Crowds that large need a limit on
//! connections per client in front of the service.
//!
//! The schedule is the generic cell rate algorithm, virtual-scheduling form: one instant, the
//! time the next refusal would be due at the pace, moved on by one interval per refusal.

use std::{num::NonZeroU32, sync::Mutex, time::Duration};

use actix_web::rt::time::{self, Instant};

/// How far refusals may run ahead of the pace before they are held, in time at the pace.
const BURST: Duration = Duration::from_secs(2);

/// The longest a refusal is held: `Retry-After` is at least a second, so a client that heeds it
/// loses nothing, and a storm larger than the pace allows is still answered within a second.
const LONGEST_HOLD: Duration = Duration::from_secs(1);

/// Paces the refusals of one server (every worker thread shares it).
#[derive(Debug)]
pub struct RefusalPacer {
    schedule: Mutex<Schedule>,
}

impl RefusalPacer {
    /// Refusals at up to `per_second` answered at once, and a burst of two seconds' worth.
    #[must_use]
    pub fn new(per_second: NonZeroU32) -> Self {
        Self {
            schedule: Mutex::new(Schedule::new(per_second, BURST, LONGEST_HOLD)),
        }
    }

    /// Waits for the turn of a refusal made now.
    pub(crate) async fn wait_turn(&self) {
        let wait = self.hold(Instant::now());
        if !wait.is_zero() {
            metrics::counter!("registrar_http_refusals_held_total").increment(1);
            time::sleep(wait).await;
        }
    }

    /// How long the refusal made at `now` waits before it is answered.
    fn hold(&self, now: Instant) -> Duration {
        // The schedule is always left whole (each step is one assignment), so a panic elsewhere
        // while it was held leaves nothing to repair.
        self.schedule
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .hold(now)
    }
}

#[derive(Debug)]
struct Schedule {
    /// Between two refusals at the pace.
    interval: Duration,
    /// How far ahead of the pace a refusal may be and still go at once.
    burst: Duration,
    /// The longest hold.
    longest: Duration,
    /// When the next refusal is due at the pace; `None` before the first.
    due: Option<Instant>,
}

impl Schedule {
    fn new(per_second: NonZeroU32, burst: Duration, longest: Duration) -> Self {
        let interval = Duration::from_secs(1) / per_second.get();
        Self {
            interval,
            // At least one interval, so an idle schedule answers the first refusal at once.
            burst: burst.max(interval),
            longest,
            due: None,
        }
    }

    fn hold(&mut self, now: Instant) -> Duration {
        let due = self.due.map_or(now, |due| due.max(now)) + self.interval;
        // A storm beyond the pace is held the longest, not longer and longer: the schedule
        // never runs further ahead than that.
        let due = due.min(now + self.burst + self.longest);
        self.due = Some(due);
        due.saturating_duration_since(now + self.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// 100 refusals a second (10 ms apart), a burst of 50 ms (5 refusals), held at most 30 ms.
    fn schedule() -> Schedule {
        Schedule::new(NonZeroU32::new(100).unwrap(), 50 * MS, 30 * MS)
    }

    #[test]
    fn a_burst_within_the_allowance_is_answered_at_once_and_the_next_refusal_waits_its_turn() {
        let mut schedule = schedule();
        let start = Instant::now();

        let holds: Vec<Duration> = (0..8).map(|_| schedule.hold(start)).collect();

        assert_eq!(
            holds,
            [0, 0, 0, 0, 0, 10, 20, 30].map(|ms| ms * MS),
            "five at once, then one interval more for each"
        );
    }

    #[test]
    fn refusals_at_the_pace_are_never_held() {
        let mut schedule = schedule();
        let start = Instant::now();

        for n in 0..1_000 {
            assert_eq!(
                schedule.hold(start + n * 10 * MS),
                Duration::ZERO,
                "refusal {n}"
            );
        }
    }

    #[test]
    fn a_storm_is_held_the_longest_and_no_longer() {
        let mut schedule = schedule();
        let start = Instant::now();

        // 1,000 refusals within 10 ms, then one more once the longest hold and the burst are
        // over.
        let holds: Vec<Duration> = (0..1_000)
            .map(|n| schedule.hold(start + Duration::from_micros(n * 10)))
            .collect();
        let after = schedule.hold(start + 90 * MS);

        assert!(holds.iter().all(|hold| *hold <= 30 * MS), "{holds:?}");
        assert_eq!(holds.iter().filter(|hold| **hold >= 29 * MS).count(), 993);
        assert_eq!(after, Duration::ZERO, "the schedule did not run ahead");
    }

    #[test]
    fn after_a_quiet_spell_the_whole_burst_is_answered_at_once_again() {
        let mut schedule = schedule();
        let start = Instant::now();
        for _ in 0..20 {
            schedule.hold(start);
        }

        let later = start + Duration::from_secs(1);
        let holds: Vec<Duration> = (0..6).map(|_| schedule.hold(later)).collect();

        assert_eq!(holds, [0, 0, 0, 0, 0, 10].map(|ms| ms * MS));
    }
}

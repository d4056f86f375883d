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
//! The pace is not a number of its own: the server gives it as the time between two refusals,
//! asked again at each refusal, so it can follow how long the work it protects takes on this
//! machine at this moment (a refusal and a hash both slow down with the machine).
//!
//! A held refusal keeps its connection open, about 30 KiB of memory (3,400 clients resending at
//! once raised the peak RSS by 98 MiB), within the server's limit on connections like any
//! other. Capping the refusals held, and answering the rest at once, was tried: the storm took
//! the CPU back, and the peak fell only from 172 to 139 MiB. Crowds that large need a limit on
//! connections per client in front of the service.
//!
//! The schedule is the generic cell rate algorithm, virtual-scheduling form: one instant, the
//! time the next refusal would be due at the pace, moved on by one interval per refusal.

use std::{fmt, sync::Mutex, time::Duration};

use actix_web::rt::time::{self, Instant};

/// How far refusals may run ahead of the pace before they are held, in time at the pace.
const BURST: Duration = Duration::from_secs(2);

/// The longest a refusal is held: `Retry-After` is at least a second, so a client that heeds it
/// loses nothing, and a storm larger than the pace allows is still answered within a second.
const LONGEST_HOLD: Duration = Duration::from_secs(1);

/// Paces the refusals of one server (every worker thread shares it).
pub struct RefusalPacer {
    interval: Box<dyn Fn() -> Duration + Send + Sync>,
    schedule: Mutex<Schedule>,
}

impl RefusalPacer {
    /// Refusals at one per `interval()` answered at once, and a burst of two seconds' worth;
    /// `interval` is asked at every refusal. A zero interval answers every refusal at once.
    #[must_use]
    pub fn new(interval: impl Fn() -> Duration + Send + Sync + 'static) -> Self {
        Self {
            interval: Box::new(interval),
            schedule: Mutex::new(Schedule::new(BURST, LONGEST_HOLD)),
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
        let interval = (self.interval)();
        // The schedule is always left whole (each step is one assignment), so a panic elsewhere
        // while it was held leaves nothing to repair.
        self.schedule
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .hold(now, interval)
    }
}

impl fmt::Debug for RefusalPacer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefusalPacer")
            .field("interval", &(self.interval)())
            .field("schedule", &self.schedule)
            .finish()
    }
}

#[derive(Debug)]
struct Schedule {
    /// How far ahead of the pace a refusal may be and still go at once.
    burst: Duration,
    /// The longest hold.
    longest: Duration,
    /// When the next refusal is due at the pace; `None` before the first.
    due: Option<Instant>,
}

impl Schedule {
    fn new(burst: Duration, longest: Duration) -> Self {
        Self {
            burst,
            longest,
            due: None,
        }
    }

    /// The hold of a refusal made at `now`, at one refusal per `interval`.
    fn hold(&mut self, now: Instant, interval: Duration) -> Duration {
        // At least one interval, so an idle schedule answers the first refusal at once.
        let burst = self.burst.max(interval);
        let due = self.due.map_or(now, |due| due.max(now)) + interval;
        // A storm beyond the pace is held the longest, not longer and longer: the schedule
        // never runs further ahead than that.
        let due = due.min(now + burst + self.longest);
        self.due = Some(due);
        due.saturating_duration_since(now + burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    };

    const MS: Duration = Duration::from_millis(1);
    /// 100 refusals a second.
    const INTERVAL: Duration = Duration::from_millis(10);

    /// A burst of 50 ms (5 refusals at [`INTERVAL`]), held at most 30 ms.
    fn schedule() -> Schedule {
        Schedule::new(50 * MS, 30 * MS)
    }

    #[test]
    fn a_burst_within_the_allowance_is_answered_at_once_and_the_next_refusal_waits_its_turn() {
        let mut schedule = schedule();
        let start = Instant::now();

        let holds: Vec<Duration> = (0..8).map(|_| schedule.hold(start, INTERVAL)).collect();

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
                schedule.hold(start + n * 10 * MS, INTERVAL),
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
            .map(|n| schedule.hold(start + Duration::from_micros(n * 10), INTERVAL))
            .collect();
        let after = schedule.hold(start + 90 * MS, INTERVAL);

        assert!(holds.iter().all(|hold| *hold <= 30 * MS), "{holds:?}");
        assert_eq!(holds.iter().filter(|hold| **hold >= 29 * MS).count(), 993);
        assert_eq!(after, Duration::ZERO, "the schedule did not run ahead");
    }

    #[test]
    fn after_a_quiet_spell_the_whole_burst_is_answered_at_once_again() {
        let mut schedule = schedule();
        let start = Instant::now();
        for _ in 0..20 {
            schedule.hold(start, INTERVAL);
        }

        let later = start + Duration::from_secs(1);
        let holds: Vec<Duration> = (0..6).map(|_| schedule.hold(later, INTERVAL)).collect();

        assert_eq!(holds, [0, 0, 0, 0, 0, 10].map(|ms| ms * MS));
    }

    #[test]
    fn each_refusal_moves_the_schedule_on_by_the_interval_it_is_given() {
        let mut schedule = schedule();
        let start = Instant::now();

        let mut holds: Vec<Duration> = (0..5).map(|_| schedule.hold(start, INTERVAL)).collect();
        holds.push(schedule.hold(start, 2 * INTERVAL));
        holds.push(schedule.hold(start, INTERVAL / 2));

        assert_eq!(
            holds,
            [0, 0, 0, 0, 0, 20, 25].map(|ms| ms * MS),
            "the burst at 10 ms, then 20 ms more, then 5 ms more"
        );
    }

    #[test]
    fn the_pacer_asks_for_its_interval_at_every_refusal() {
        let interval_ms = Arc::new(AtomicU64::new(0));
        let pacer = RefusalPacer::new({
            let interval_ms = Arc::clone(&interval_ms);
            move || Duration::from_millis(interval_ms.load(Ordering::Relaxed))
        });
        let start = Instant::now();

        let unpaced = (0..10_000).all(|_| pacer.hold(start).is_zero());
        interval_ms.store(100, Ordering::Relaxed);
        let holds: Vec<Duration> = (0..21).map(|_| pacer.hold(start)).collect();

        assert!(unpaced, "a zero interval holds nothing");
        assert_eq!(
            holds,
            [[Duration::ZERO; 20].as_slice(), &[100 * MS]].concat(),
            "two seconds at 100 ms are 20 refusals at once; the next waits one interval"
        );
    }
}

//! Admission to the hashing pool by time rather than by count: the bookkeeping of work admitted
//! and a running estimate of how much work one job takes, kept free of threads and clocks (every
//! job's cost is an argument) so that tests drive the very rule the pool applies.
//!
//! A job is admitted when its expected start, the work ahead of it (queued and running jobs)
//! spread over the threads at the estimated time per job, is within the queue timeout, and the
//! queue is below its hard cap. A fixed count would refuse a burst the threads could finish in a
//! fraction of the timeout, or admit more than they can start in time when hashing is slow.
//!
//! A job's cost is the CPU time its thread spent on it, not the wall time it took. The wall time
//! also counts what else ran on the core meanwhile, and the worst of that is our own refusals:
//! clients that resend at once on every 503 take CPU from the hashing threads, each hash then
//! looks slower, more jobs are refused, and the storm feeds itself (the benchmark saw the rate of
//! successes fall to 0.38 of the bound that way). CPU time stays what the hash costs. What it
//! does not see is a share of a core smaller than one per thread (a fractional CPU quota), which
//! is why the deployment gives the pool whole cores.

use std::time::Duration;

/// How much one sample moves the estimate: it is `(1 - 1/8) × estimate + 1/8 × sample`, so old
/// samples fade within a few dozen jobs.
const WEIGHT_OF_A_SAMPLE: u128 = 8;

/// A sample counts as at most this many times the current estimate: a single outlier (a stored
/// hash with higher costs) raises the estimate by at most
/// `(4 - 1) / 8`, and the next ordinary jobs bring it back. A lasting change still gets through,
/// compounding by that factor per job.
const OUTLIER_FACTOR: u32 = 4;

/// The least the estimate may be, so that it can always grow back from a sample.
const LEAST_ESTIMATE: Duration = Duration::from_micros(1);

/// Why a job was not admitted, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// What stood in the way.
    pub(crate) reason: Reason,
    /// Whole seconds, at least one: the time the threads need to finish the work admitted.
    pub(crate) retry_after: Duration,
}

/// What stood in the way of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// The job would be expected to start later than the queue timeout.
    ExpectedWait,
    /// The queue holds as many jobs as its hard cap allows.
    QueueFull,
}

impl Reason {
    /// The value of the `reason` label on the refusal counter.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::ExpectedWait => "expected_wait",
            Self::QueueFull => "queue_full",
        }
    }
}

/// The work admitted to the pool and the estimated time of one job.
#[derive(Debug)]
pub(crate) struct Backlog {
    threads: u32,
    queue_timeout: Duration,
    capacity: usize,
    /// Admitted, not yet taken by a thread.
    queued: usize,
    /// Taken by a thread, not yet finished.
    running: usize,
    estimate: Duration,
}

impl Backlog {
    /// An empty backlog for `threads` threads (at least one is assumed), admitting jobs expected
    /// to start within `queue_timeout` while fewer than `capacity` wait, with `seed` as the
    /// first estimate of one job's time.
    pub(crate) fn new(
        threads: usize,
        queue_timeout: Duration,
        capacity: usize,
        seed: Duration,
    ) -> Self {
        Self {
            threads: u32::try_from(threads).unwrap_or(u32::MAX).max(1),
            queue_timeout,
            capacity,
            queued: 0,
            running: 0,
            estimate: seed.max(LEAST_ESTIMATE),
        }
    }

    /// The estimated time of one job.
    pub(crate) fn estimate(&self) -> Duration {
        self.estimate
    }

    /// Jobs admitted and not yet taken by a thread.
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }

    /// When a job admitted now would be expected to start, from now: the work ahead of it,
    /// spread over the threads. Running jobs count whole, which errs late by under one job.
    pub(crate) fn expected_start(&self) -> Duration {
        self.time_for(self.queued.saturating_add(self.running))
    }

    /// Whether a job would be admitted now, without admitting it.
    pub(crate) fn check(&self) -> Result<(), Refusal> {
        let reason = if self.queued >= self.capacity {
            Reason::QueueFull
        } else if self.expected_start() > self.queue_timeout {
            Reason::ExpectedWait
        } else {
            return Ok(());
        };
        Err(Refusal {
            reason,
            retry_after: self.retry_after(),
        })
    }

    /// Admits a job if [`Self::check`] allows it, counting it as queued.
    pub(crate) fn admit(&mut self) -> Result<(), Refusal> {
        self.check()?;
        self.queued += 1;
        Ok(())
    }

    /// A queued job left without running: its caller had gone, or it never reached the queue.
    pub(crate) fn withdraw(&mut self) {
        self.queued = self.queued.saturating_sub(1);
    }

    /// A thread took a queued job.
    pub(crate) fn start(&mut self) {
        self.queued = self.queued.saturating_sub(1);
        self.running += 1;
    }

    /// A running job finished after `cost` of work, which joins the estimate.
    pub(crate) fn finish(&mut self, cost: Duration) {
        self.running = self.running.saturating_sub(1);
        let ceiling = self.estimate.saturating_mul(OUTLIER_FACTOR);
        let sample = cost.min(ceiling);
        let weighted = (WEIGHT_OF_A_SAMPLE - 1) * self.estimate.as_nanos() + sample.as_nanos();
        let nanos = u64::try_from(weighted / WEIGHT_OF_A_SAMPLE).unwrap_or(u64::MAX);
        self.estimate = Duration::from_nanos(nanos).max(LEAST_ESTIMATE);
    }

    /// What a refused caller is told: the time the threads need for the work admitted, in
    /// whole seconds rounded up, at least one. By then a retry finds the queue drained.
    fn retry_after(&self) -> Duration {
        let drain = self.expected_start();
        let mut seconds = drain.as_secs();
        if drain.subsec_nanos() > 0 {
            seconds = seconds.saturating_add(1);
        }
        Duration::from_secs(seconds.max(1))
    }

    /// The time `jobs` jobs take on the threads at the current estimate.
    fn time_for(&self, jobs: usize) -> Duration {
        let jobs = u128::try_from(jobs).unwrap_or(u128::MAX);
        let nanos = self.estimate.as_nanos().saturating_mul(jobs) / u128::from(self.threads);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: Duration = Duration::from_millis(21);
    const TIMEOUT: Duration = Duration::from_secs(2);

    /// Admits jobs until one is refused; the count admitted and the refusal.
    fn fill(backlog: &mut Backlog) -> (usize, Refusal) {
        let mut admitted = 0;
        loop {
            match backlog.admit() {
                Ok(()) => admitted += 1,
                Err(refusal) => return (admitted, refusal),
            }
        }
    }

    /// Runs `jobs` jobs of `cost` each, one after the other.
    fn run(backlog: &mut Backlog, jobs: u32, cost: Duration) {
        for _ in 0..jobs {
            backlog.admit().unwrap();
            backlog.start();
            backlog.finish(cost);
        }
    }

    #[test]
    fn a_burst_the_threads_finish_within_the_timeout_is_admitted_whole() {
        let mut backlog = Backlog::new(2, TIMEOUT, 1024, HASH);
        for i in 0..64 {
            assert_eq!(backlog.admit(), Ok(()), "job {i}");
        }
        assert_eq!(backlog.queued(), 64);
        // A 65th would wait for 64 jobs on 2 threads: 64 / 2 × 21 ms.
        assert_eq!(backlog.expected_start(), Duration::from_millis(672));
    }

    #[test]
    fn the_first_job_expected_to_start_after_the_timeout_is_refused() {
        let mut backlog = Backlog::new(2, TIMEOUT, 1024, HASH);
        let (admitted, refusal) = fill(&mut backlog);
        // Job k waits k / 2 × 21 ms: within 2 s up to k = 190, so 191 jobs (0 to 190) get in.
        assert_eq!(admitted, 191);
        assert_eq!(refusal.reason, Reason::ExpectedWait);
        // 191 jobs on 2 threads take 2.0055 s: come back in 3 s.
        assert_eq!(refusal.retry_after, Duration::from_secs(3));
        assert_eq!(backlog.check(), Err(refusal));
        assert_eq!(backlog.queued(), 191, "a refusal changes nothing");

        let mut one_thread = Backlog::new(1, TIMEOUT, 1024, HASH);
        assert_eq!(
            fill(&mut one_thread).0,
            96,
            "2 s / 21 ms = 95.2, plus the job that starts at once"
        );
    }

    #[test]
    fn the_hard_cap_refuses_however_short_the_expected_wait() {
        let mut backlog = Backlog::new(2, TIMEOUT, 10, Duration::from_micros(10));
        let (admitted, refusal) = fill(&mut backlog);
        assert_eq!(admitted, 10);
        assert_eq!(refusal.reason, Reason::QueueFull);
        assert_eq!(
            refusal.retry_after,
            Duration::from_secs(1),
            "never less than a second"
        );

        // A job taken by a thread frees its place in the queue.
        backlog.start();
        assert_eq!(backlog.admit(), Ok(()));
        backlog.withdraw();
        assert_eq!(backlog.queued(), 9);
        assert_eq!(backlog.admit(), Ok(()));
    }

    #[test]
    fn work_that_finishes_or_is_withdrawn_makes_room_again() {
        let mut backlog = Backlog::new(1, TIMEOUT, 1024, HASH);
        let admitted = fill(&mut backlog).0;
        backlog.start();
        assert!(
            backlog.check().is_err(),
            "a running job is still work ahead"
        );
        backlog.finish(HASH);
        assert_eq!(backlog.admit(), Ok(()));
        for _ in 0..admitted {
            backlog.withdraw();
        }
        assert_eq!(backlog.queued(), 0);
        assert_eq!(backlog.expected_start(), Duration::ZERO);
        backlog.withdraw();
        assert_eq!(backlog.queued(), 0, "never below empty");
    }

    #[test]
    fn the_estimate_follows_a_change_of_hash_cost() {
        let mut backlog = Backlog::new(2, TIMEOUT, 1024, HASH);
        run(&mut backlog, 10, HASH);
        assert_eq!(backlog.estimate(), HASH);

        // Hashing becomes twice as costly (stored hashes with higher costs, a slower CPU): the
        // estimate climbs to it, and the pool then admits half as many.
        let slower = HASH * 2;
        run(&mut backlog, 60, slower);
        let error = backlog.estimate().abs_diff(slower);
        assert!(error < slower / 100, "estimate {:?}", backlog.estimate());
        assert_eq!(fill(&mut backlog).0, 96, "2 s / 42 ms × 2 threads");

        // And back down when it is fast again.
        let mut backlog = Backlog::new(2, TIMEOUT, 1024, slower);
        run(&mut backlog, 60, HASH);
        assert!(
            backlog.estimate().abs_diff(HASH) < HASH / 100,
            "{:?}",
            backlog.estimate()
        );
    }

    #[test]
    fn one_outlier_moves_the_estimate_little_and_briefly() {
        let mut backlog = Backlog::new(2, TIMEOUT, 1024, HASH);
        // A job that took a whole minute of work (a stored hash with huge costs).
        run(&mut backlog, 1, Duration::from_mins(1));
        assert!(
            backlog.estimate() <= HASH * 11 / 8,
            "{:?}",
            backlog.estimate()
        );
        assert!(fill(&mut backlog).0 >= 191 * 8 / 11);
        let mut backlog = Backlog::new(2, TIMEOUT, 1024, HASH);
        run(&mut backlog, 1, Duration::from_mins(1));
        run(&mut backlog, 16, HASH);
        assert!(
            backlog.estimate() < HASH * 21 / 20,
            "{:?}",
            backlog.estimate()
        );
    }

    #[test]
    fn an_estimate_never_reaches_zero_and_can_always_grow() {
        let mut backlog = Backlog::new(1, TIMEOUT, 1024, Duration::ZERO);
        run(&mut backlog, 3, Duration::ZERO);
        assert_eq!(backlog.estimate(), LEAST_ESTIMATE);
        run(&mut backlog, 200, HASH);
        assert!(
            backlog.estimate().abs_diff(HASH) < HASH / 100,
            "{:?}",
            backlog.estimate()
        );
    }

    #[test]
    fn huge_numbers_saturate_instead_of_panicking() {
        let mut backlog = Backlog::new(usize::MAX, Duration::MAX, usize::MAX, Duration::MAX);
        assert_eq!(backlog.admit(), Ok(()));
        backlog.start();
        backlog.finish(Duration::from_secs(1));
        let mut zero_threads = Backlog::new(0, TIMEOUT, 4, Duration::MAX);
        assert_eq!(zero_threads.admit(), Ok(()));
        let refusal = zero_threads.admit().unwrap_err();
        assert_eq!(refusal.reason, Reason::ExpectedWait);
        assert!(refusal.retry_after >= Duration::from_secs(1));
    }
}

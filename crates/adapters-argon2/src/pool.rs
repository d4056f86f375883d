//! The pool of dedicated threads, generic over what a job is and how it runs (a [`Runner`]), so
//! that the admission, queueing and shutdown the hasher relies on are tested with a runner and
//! a clock the tests control, while production types carry nothing for tests.

use std::{
    io,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crossbeam_channel::{Receiver, Sender, select_biased};
use registrar_application::ports::HashError;

use crate::{
    admission::{Backlog, Refusal},
    failure::Failure,
    metric_names,
};

/// Runs the pool's jobs, one instance per thread (it may keep per-thread state, such as memory).
pub(crate) trait Runner: Send + 'static {
    /// A job and the means to answer its caller.
    type Job: Send + 'static;

    /// Whether the caller stopped waiting for the answer, so the job need not run.
    fn abandoned(job: &Self::Job) -> bool;

    /// Does the job and answers its caller.
    fn run(&mut self, job: Self::Job);
}

/// Where the pool reads the time, to measure waits and the work of jobs.
pub(crate) trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Instant;

    /// The CPU time the calling thread has used so far.
    fn thread_time(&self) -> Duration;
}

/// The clocks of the operating system.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    #[cfg(unix)]
    fn thread_time(&self) -> Duration {
        let time = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        // The kernel never reports a negative CPU time; zero is the harmless reading if it did.
        Duration::new(
            u64::try_from(time.tv_sec).unwrap_or_default(),
            u32::try_from(time.tv_nsec).unwrap_or_default(),
        )
    }

    /// Elsewhere, wall time since the first reading: a job's cost then includes its waits for
    /// the CPU.
    #[cfg(not(unix))]
    fn thread_time(&self) -> Duration {
        static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        EPOCH.get_or_init(Instant::now).elapsed()
    }
}

/// How to size and admit work to a pool.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Dedicated threads.
    pub(crate) threads: usize,
    /// The longest expected start for which a job is admitted.
    pub(crate) queue_timeout: Duration,
    /// The hard cap on queued jobs.
    pub(crate) capacity: usize,
    /// The first estimate of one job's time.
    pub(crate) seed: Duration,
}

/// A job in the queue and when it entered.
struct Queued<J> {
    job: J,
    enqueued_at: Instant,
}

/// What the submitting side and the threads share.
struct Shared<C> {
    backlog: Mutex<Backlog>,
    clock: C,
}

impl<C> Shared<C> {
    fn backlog(&self) -> MutexGuard<'_, Backlog> {
        // The backlog holds counters only, each update complete before it can panic: a poisoned
        // lock still guards consistent numbers.
        self.backlog.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Work that goes ahead of the queue: short, and outside admission (see [`Pool::run_first`]).
pub(crate) type Task = Box<dyn FnOnce() + Send>;

/// The submitting side of a pool. The threads stop once it is dropped and the jobs already
/// queued are done.
pub(crate) struct Pool<J, C> {
    sender: Sender<Queued<J>>,
    first: Sender<Task>,
    shared: Arc<Shared<C>>,
}

impl<J: Send + 'static, C: Clock> Pool<J, C> {
    /// Starts one thread per runner `runners` makes (`name` gives each its name), admitting
    /// work within `limits`. The handles let a caller wait for the threads to stop.
    pub(crate) fn start<R>(
        limits: Limits,
        clock: C,
        name: impl Fn(usize) -> String,
        mut runners: impl FnMut() -> R,
    ) -> io::Result<(Self, Vec<JoinHandle<()>>)>
    where
        R: Runner<Job = J>,
    {
        // Unbounded: the backlog's cap bounds what is sent, and each task is a request in flight.
        let (sender, receiver) = crossbeam_channel::unbounded();
        let (first, tasks) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            backlog: Mutex::new(Backlog::new(
                limits.threads,
                limits.queue_timeout,
                limits.capacity,
                limits.seed,
            )),
            clock,
        });
        let mut handles = Vec::with_capacity(limits.threads);
        for index in 0..limits.threads {
            let receiver = receiver.clone();
            let tasks = tasks.clone();
            let shared = Arc::clone(&shared);
            let runner = runners();
            // On failure `sender` is dropped on return, so the threads already started stop.
            handles.push(
                thread::Builder::new()
                    .name(name(index))
                    .spawn(move || work(runner, &receiver, &tasks, &shared))?,
            );
        }
        Ok((
            Self {
                sender,
                first,
                shared,
            },
            handles,
        ))
    }

    /// Queues `job` if the admission rule allows it, or refuses it at once.
    pub(crate) fn submit(&self, job: J) -> Result<(), HashError> {
        self.shared.backlog().admit().map_err(refused)?;
        let queued = Queued {
            job,
            enqueued_at: self.shared.clock.now(),
        };
        if self.sender.send(queued).is_err() {
            self.shared.backlog().withdraw();
            return Err(pool_gone());
        }
        // Threads decrement as they take jobs, so the gauge returns to zero when idle.
        metrics::gauge!(metric_names::QUEUE_DEPTH).increment(1);
        Ok(())
    }

    /// Runs `task` on the next thread free, before any queued job: work of a request that must
    /// be done before its job can be submitted (the strength estimate of a new password, under
    /// a millisecond), which would otherwise wait behind the whole queue, or run on the async
    /// threads. Tasks bypass admission and are not measured: the request already passed
    /// [`Self::check`], and a task is a few percent of a job.
    pub(crate) fn run_first(&self, task: Task) -> Result<(), HashError> {
        self.first.send(task).map_err(|_| pool_gone())
    }

    /// Whether [`Self::submit`] would admit a job now, counting a refusal like it.
    pub(crate) fn check(&self) -> Result<(), HashError> {
        self.shared.backlog().check().map_err(refused)
    }

    /// Jobs waiting for a thread.
    pub(crate) fn queued(&self) -> usize {
        self.shared.backlog().queued()
    }

    /// The pool's current estimate of one job's time.
    pub(crate) fn estimate(&self) -> Duration {
        self.shared.backlog().estimate()
    }
}

/// Counts a refusal and turns it into the port's error.
fn refused(refusal: Refusal) -> HashError {
    metrics::counter!(metric_names::REJECTED_TOTAL, "reason" => refusal.reason.label())
        .increment(1);
    tracing::debug!(
        reason = refusal.reason.label(),
        "password hashing refused: the pool is overloaded"
    );
    HashError::Overloaded {
        retry_after: refusal.retry_after,
    }
}

/// The error for a pool whose threads are gone.
pub(crate) fn pool_gone() -> HashError {
    tracing::error!("the password hashing threads are gone");
    Failure::PoolGone.into()
}

/// A thread's life: run the tasks sent first, else take jobs, until the pool is gone and its
/// jobs done; skip jobs whose caller left, and feed the CPU time of each one run to the
/// estimate.
fn work<R: Runner, C: Clock>(
    mut runner: R,
    receiver: &Receiver<Queued<R::Job>>,
    tasks: &Receiver<Task>,
    shared: &Shared<C>,
) {
    crate::priority::lower_this_thread();
    loop {
        // Biased: a task waiting is taken before any job. Once the pool is gone (the task
        // channel empty and closed), the queued jobs are still done.
        let next = select_biased! {
            recv(tasks) -> task => match task {
                Ok(task) => {
                    // A task answers its own caller, panic or not; the thread lives on.
                    if catch_unwind(AssertUnwindSafe(task)).is_err() {
                        tracing::error!("a task on a password hashing thread panicked");
                    }
                    continue;
                }
                Err(_) => receiver.recv(),
            },
            recv(receiver) -> queued => queued,
        };
        let Ok(Queued { job, enqueued_at }) = next else {
            break;
        };
        metrics::gauge!(metric_names::QUEUE_DEPTH).decrement(1);
        if R::abandoned(&job) {
            shared.backlog().withdraw();
            tracing::debug!("password hashing skipped: the caller stopped waiting");
            continue;
        }
        shared.backlog().start();
        metrics::histogram!(metric_names::QUEUE_WAIT_SECONDS).record(
            shared
                .clock
                .now()
                .saturating_duration_since(enqueued_at)
                .as_secs_f64(),
        );
        let before = shared.clock.thread_time();
        runner.run(job);
        let cost = shared.clock.thread_time().saturating_sub(before);
        shared.backlog().finish(cost);
    }
    tracing::debug!("password hashing thread stopping: the hasher was dropped");
}

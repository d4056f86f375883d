//! The pool with a fake runner and a fake clock: jobs that hold their thread until the test
//! releases them and that take whatever time the test says, so admission, abandonment and
//! shutdown are shown without racing a hash computation or reading the real time.

use std::{
    collections::BTreeSet,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

#[cfg(target_os = "linux")]
use thread_priority::{NormalThreadSchedulePolicy, ThreadSchedulePolicy, thread_schedule_policy};

use super::*;
use crate::pool::{Clock, Runner};

const HASH: Duration = Duration::from_millis(21);
const TIMEOUT: Duration = Duration::from_secs(2);
const PATIENCE: Duration = Duration::from_secs(5);

/// A clock that moves only when a fake job says it took time: of work (CPU time and wall time
/// alike) or of waiting for a CPU (wall time alone).
#[derive(Clone)]
struct FakeClock {
    wall: Arc<Mutex<Instant>>,
    cpu: Arc<Mutex<Duration>>,
}

impl FakeClock {
    fn new() -> Self {
        Self {
            wall: Arc::new(Mutex::new(Instant::now())),
            cpu: Arc::new(Mutex::new(Duration::ZERO)),
        }
    }

    fn work(&self, for_: Duration) {
        *self.cpu.lock().unwrap() += for_;
        self.wait(for_);
    }

    fn wait(&self, for_: Duration) {
        *self.wall.lock().unwrap() += for_;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        *self.wall.lock().unwrap()
    }

    fn thread_time(&self) -> Duration {
        *self.cpu.lock().unwrap()
    }
}

/// A fake job: takes `cost` of work on the fake clock, and `descheduled` of waiting for a CPU,
/// optionally after holding its thread.
struct FakeJob {
    cost: Duration,
    descheduled: Duration,
    /// Told the thread's name when the job starts.
    started: Option<mpsc::Sender<Option<String>>>,
    /// Holds the thread until a message arrives or the sender is dropped.
    release: Option<mpsc::Receiver<()>>,
    /// The caller; dropping the receiver abandons the job.
    reply: oneshot::Sender<()>,
    /// Runs on the pool's thread when the job does, to look at that thread.
    inspect: Option<Box<dyn FnOnce() + Send>>,
}

struct FakeRunner {
    clock: FakeClock,
    ran: Arc<AtomicUsize>,
}

impl Runner for FakeRunner {
    type Job = FakeJob;

    fn abandoned(job: &FakeJob) -> bool {
        job.reply.is_closed()
    }

    fn run(&mut self, job: FakeJob) {
        if let Some(inspect) = job.inspect {
            inspect();
        }
        if let Some(started) = job.started {
            started
                .send(std::thread::current().name().map(str::to_owned))
                .unwrap();
        }
        if let Some(release) = job.release {
            // Released by a message or by the sender being dropped: either will do.
            let _released = release.recv();
        }
        self.clock.work(job.cost);
        self.clock.wait(job.descheduled);
        self.ran.fetch_add(1, Ordering::SeqCst);
        let _answered = job.reply.send(());
    }
}

struct Fixture {
    pool: Pool<FakeJob, FakeClock>,
    threads: Vec<JoinHandle<()>>,
    ran: Arc<AtomicUsize>,
}

fn fixture(threads: usize, capacity: usize, seed: Duration) -> Fixture {
    let clock = FakeClock::new();
    let ran = Arc::new(AtomicUsize::new(0));
    let limits = Limits {
        threads,
        queue_timeout: TIMEOUT,
        capacity,
        seed,
    };
    let (pool, threads) = Pool::start(
        limits,
        clock.clone(),
        |index| format!("fake-{index}"),
        || FakeRunner {
            clock: clock.clone(),
            ran: Arc::clone(&ran),
        },
    )
    .unwrap();
    Fixture { pool, threads, ran }
}

/// A job holding the thread that takes it until the gate is released or dropped.
struct Gate {
    started: mpsc::Receiver<Option<String>>,
    release: mpsc::Sender<()>,
    done: oneshot::Receiver<()>,
}

impl Gate {
    /// Waits until a thread has taken the job; that thread's name.
    fn started(&self) -> Option<String> {
        self.started.recv_timeout(PATIENCE).unwrap()
    }

    /// Lets the job finish and waits for it.
    fn open(self) {
        self.release.send(()).unwrap();
        self.done.blocking_recv().unwrap();
    }
}

fn gate(pool: &Pool<FakeJob, FakeClock>, cost: Duration) -> Gate {
    let (started_tx, started) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let (reply, done) = oneshot::channel();
    pool.submit(FakeJob {
        cost,
        descheduled: Duration::ZERO,
        started: Some(started_tx),
        release: Some(release_rx),
        reply,
        inspect: None,
    })
    .unwrap();
    Gate {
        started,
        release,
        done,
    }
}

/// Submits a job of `cost`; the receiver its answer goes to.
fn job(
    pool: &Pool<FakeJob, FakeClock>,
    cost: Duration,
) -> Result<oneshot::Receiver<()>, HashError> {
    let (reply, done) = oneshot::channel();
    pool.submit(FakeJob {
        cost,
        descheduled: Duration::ZERO,
        started: None,
        release: None,
        reply,
        inspect: None,
    })?;
    Ok(done)
}

/// Submits jobs of `cost` until one is refused: the admitted ones' receivers and the
/// refusal's `retry_after`.
fn fill(pool: &Pool<FakeJob, FakeClock>, cost: Duration) -> (Vec<oneshot::Receiver<()>>, Duration) {
    let mut admitted = Vec::new();
    loop {
        match job(pool, cost) {
            Ok(done) => admitted.push(done),
            Err(refusal) => return (admitted, retry_after(refusal)),
        }
    }
}

/// The `retry_after` of a refusal; any other error fails the test.
fn retry_after(error: HashError) -> Duration {
    match error {
        HashError::Overloaded { retry_after } => retry_after,
        HashError::Failed(cause) => panic!("expected a refusal, got a failure: {cause}"),
    }
}

#[test]
fn the_hasher_can_be_shared_across_threads_and_tasks() {
    fn assert_shareable<T: Clone + Send + Sync + 'static>() {}
    assert_shareable::<Argon2Hasher>();
}

#[test]
fn a_burst_within_the_queue_timeout_is_admitted_whole_and_the_next_job_is_refused_at_once() {
    let fixture = fixture(2, 1024, HASH);
    let gates = [gate(&fixture.pool, HASH), gate(&fixture.pool, HASH)];
    for gate in &gates {
        gate.started();
    }

    // Both threads are held, so nothing is measured meanwhile: 2 running and 189 queued jobs
    // are 191 × 21 ms / 2 threads = 2.0055 s of work, and the 191st job queued after them
    // (expected to start after 2 s) is refused while every thread is still busy.
    let (admitted, retry_after) = fill(&fixture.pool, HASH);
    assert_eq!(admitted.len(), 189);
    assert_eq!(retry_after, Duration::from_secs(3));
    assert_eq!(fixture.pool.queued(), 189);

    for gate in gates {
        gate.open();
    }
    for done in admitted {
        done.blocking_recv().unwrap();
    }
    assert_eq!(fixture.ran.load(Ordering::SeqCst), 191);
    assert_eq!(fixture.pool.queued(), 0);
    fixture.pool.check().unwrap();
}

#[test]
fn the_hard_cap_refuses_however_short_the_expected_wait() {
    let fixture = fixture(1, 3, Duration::from_micros(1));
    let gate = gate(&fixture.pool, HASH);
    gate.started();
    let (admitted, retry_after) = fill(&fixture.pool, HASH);
    assert_eq!(admitted.len(), 3);
    assert_eq!(retry_after, Duration::from_secs(1));
    gate.open();
    for done in admitted {
        done.blocking_recv().unwrap();
    }
    assert_eq!(fixture.ran.load(Ordering::SeqCst), 4);
}

#[test]
fn the_estimate_follows_the_measured_time_of_jobs_and_admission_with_it() {
    let fixture = fixture(1, 1024, HASH);
    // Hashing becomes twice as slow as the trial hash said.
    let slower = HASH * 2;
    for _ in 0..60 {
        job(&fixture.pool, slower).unwrap().blocking_recv().unwrap();
    }
    let estimate = fixture.pool.estimate();
    assert!(estimate.abs_diff(slower) < slower / 100, "{estimate:?}");

    // One thread at 42 ms: the jobs expected to start within 2 s are those with up to 47 ahead.
    let gate = gate(&fixture.pool, slower);
    gate.started();
    let (admitted, _) = fill(&fixture.pool, slower);
    assert_eq!(admitted.len() + 1, 48);
    gate.open();
    for done in admitted {
        done.blocking_recv().unwrap();
    }
}

#[test]
fn time_a_job_waits_for_the_cpu_does_not_count_as_its_cost() {
    let fixture = fixture(1, 1024, HASH);
    // Clients that resend at once on every refusal take the core from the hashing thread: each
    // hash now takes four times its work in wall time.
    for _ in 0..60 {
        let (reply, done) = oneshot::channel();
        fixture
            .pool
            .submit(FakeJob {
                cost: HASH,
                descheduled: HASH * 3,
                started: None,
                release: None,
                reply,
                inspect: None,
            })
            .unwrap();
        done.blocking_recv().unwrap();
    }
    assert_eq!(fixture.pool.estimate(), HASH);

    // So 64 clients still fit in the 2 s (64 × 21 ms), and none is refused to feed the storm.
    let gate = gate(&fixture.pool, HASH);
    gate.started();
    let (admitted, _) = fill(&fixture.pool, HASH);
    assert_eq!(
        admitted.len() + 1,
        96,
        "2 s / 21 ms = 95.2, plus the job running"
    );
    gate.open();
    for done in admitted {
        done.blocking_recv().unwrap();
    }
}

#[test]
fn a_queued_job_whose_caller_left_is_dropped_unrun() {
    let fixture = fixture(1, 4, HASH);
    let gate = gate(&fixture.pool, HASH);
    gate.started();
    let left = job(&fixture.pool, Duration::from_mins(1)).unwrap();
    let stays = job(&fixture.pool, HASH).unwrap();
    drop(left);
    gate.open();
    stays.blocking_recv().unwrap();
    assert_eq!(fixture.ran.load(Ordering::SeqCst), 2);
    assert_eq!(fixture.pool.queued(), 0);
    // The minute-long job never ran, so it never reached the estimate.
    assert_eq!(fixture.pool.estimate(), HASH);
}

#[test]
fn check_refuses_exactly_when_submit_would() {
    let fixture = fixture(1, 1, HASH);
    let gate = gate(&fixture.pool, HASH);
    gate.started();
    // The thread is busy but the queue has room.
    fixture.pool.check().unwrap();
    let queued = job(&fixture.pool, HASH).unwrap();
    let refusal = retry_after(fixture.pool.check().unwrap_err());
    assert_eq!(retry_after(job(&fixture.pool, HASH).unwrap_err()), refusal);
    gate.open();
    queued.blocking_recv().unwrap();
    fixture.pool.check().unwrap();
}

/// The scheduling policy of the thread that takes a job.
#[cfg(target_os = "linux")]
fn policy_of_a_pool_thread(pool: &Pool<FakeJob, FakeClock>) -> ThreadSchedulePolicy {
    let (sender, policy) = mpsc::channel();
    let (reply, done) = oneshot::channel();
    pool.submit(FakeJob {
        cost: HASH,
        descheduled: Duration::ZERO,
        started: None,
        release: None,
        reply,
        inspect: Some(Box::new(move || {
            sender.send(thread_schedule_policy().unwrap()).unwrap();
        })),
    })
    .unwrap();
    done.blocking_recv().unwrap();
    policy.recv_timeout(PATIENCE).unwrap()
}

#[cfg(target_os = "linux")]
#[test]
fn hashing_threads_give_way_to_every_other_thread_of_the_process() {
    let fixture = fixture(2, 16, HASH);
    let here = thread_schedule_policy().unwrap();
    for _ in 0..4 {
        assert_eq!(
            policy_of_a_pool_thread(&fixture.pool),
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle)
        );
    }
    assert_eq!(
        thread_schedule_policy().unwrap(),
        here,
        "the rest of the process keeps its policy"
    );
    assert_ne!(
        here,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle)
    );
}

#[test]
fn threads_are_named_and_each_takes_its_own_job() {
    let fixture = fixture(2, 4, HASH);
    let (first, second) = (gate(&fixture.pool, HASH), gate(&fixture.pool, HASH));
    let names: BTreeSet<_> = [first.started(), second.started()]
        .into_iter()
        .map(Option::unwrap)
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["fake-0".to_owned(), "fake-1".to_owned()])
    );
}

#[test]
fn dropping_the_pool_stops_the_threads_once_the_queued_jobs_are_done() {
    let Fixture { pool, threads, ran } = fixture(2, 4, HASH);
    let gate = gate(&pool, HASH);
    gate.started();
    let queued: Vec<_> = (0..3).map(|_| job(&pool, HASH).unwrap()).collect();
    drop(pool);
    gate.open();
    for done in queued {
        done.blocking_recv().unwrap();
    }
    let (stopped_tx, stopped) = mpsc::channel();
    std::thread::spawn(move || {
        for thread in threads {
            thread.join().unwrap();
        }
        stopped_tx.send(()).unwrap();
    });
    stopped
        .recv_timeout(PATIENCE)
        .expect("the threads did not stop after the pool was dropped");
    assert_eq!(ran.load(Ordering::SeqCst), 4);
}

#[test]
fn a_task_runs_before_the_jobs_queued_ahead_of_it() {
    let fixture = fixture(1, 8, HASH);
    let gate = gate(&fixture.pool, HASH);
    gate.started();
    let queued: Vec<_> = (0..3).map(|_| job(&fixture.pool, HASH).unwrap()).collect();
    let (seen_tx, seen) = mpsc::channel();
    let ran = Arc::clone(&fixture.ran);
    fixture
        .pool
        .run_first(Box::new(move || {
            seen_tx.send(ran.load(Ordering::SeqCst)).unwrap();
        }))
        .unwrap();

    gate.open();

    assert_eq!(
        seen.recv_timeout(PATIENCE).unwrap(),
        1,
        "only the job already running finished before the task"
    );
    for done in queued {
        done.blocking_recv().unwrap();
    }
    assert_eq!(fixture.pool.estimate(), HASH, "a task is not measured");
}

#[test]
fn a_task_that_panics_leaves_its_thread_serving() {
    let fixture = fixture(1, 8, HASH);
    fixture
        .pool
        .run_first(Box::new(|| panic!("a task's own failure")))
        .unwrap();
    job(&fixture.pool, HASH)
        .unwrap()
        .blocking_recv()
        .expect("the thread lived on to run the job");
    assert_eq!(fixture.ran.load(Ordering::SeqCst), 1);
}

#[test]
fn a_pool_whose_threads_are_gone_fails_instead_of_hanging() {
    let fixture = fixture(0, 4, HASH);
    assert!(fixture.threads.is_empty());
    assert!(matches!(
        job(&fixture.pool, HASH),
        Err(HashError::Failed(_))
    ));
    assert_eq!(fixture.pool.queued(), 0, "the failed job is not counted");
    assert!(matches!(
        fixture.pool.run_first(Box::new(|| ())),
        Err(HashError::Failed(_))
    ));
}

#[tokio::test]
async fn invalid_settings_start_no_pool() {
    let error = Argon2Hasher::new(Argon2Settings {
        memory_kib: 4,
        ..Argon2Settings::default()
    })
    .unwrap_err();
    assert!(matches!(
        error,
        StartError::Settings(SettingsError::InvalidParams { memory_kib: 4, .. })
    ));
}

fn small(threads: usize) -> Argon2Hasher {
    Argon2Hasher::new(Argon2Settings {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
        threads,
        queue_capacity: 64,
        queue_timeout: Duration::from_mins(1),
    })
    .unwrap()
}

#[test]
fn debug_output_shows_settings_and_the_pool_state_only() {
    let debug = format!("{:?}", small(1));
    assert!(debug.contains("memory_kib: 1024"), "{debug}");
    assert!(debug.contains("queued: 0"), "{debug}");
}

#[test]
fn the_trial_hash_seeds_the_estimate() {
    let hasher = small(1);
    let estimate = hasher.inner.pool.estimate();
    assert!(estimate > Duration::from_micros(1), "{estimate:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_jobs_on_reused_memory_match_only_their_own_password() {
    let hasher = small(2);
    let passwords: Vec<String> = (0..24).map(|i| format!("password number {i}")).collect();
    let stored = join_tasks(passwords.iter().map(|p| {
        let hasher = hasher.clone();
        let password = Password::new(p);
        async move { hasher.hash(password).await.unwrap() }
    }))
    .await;
    let verdicts = join_tasks(stored.iter().enumerate().flat_map(|(i, hash)| {
        [i, (i + 1) % passwords.len()].map(|candidate| {
            let hasher = hasher.clone();
            let password = Password::new(&passwords[candidate]);
            let hash = hash.clone();
            async move { (i == candidate, hasher.verify(password, hash).await) }
        })
    }))
    .await;
    for (own, verdict) in verdicts {
        let expected = if own {
            Verification::Match { stale: false }
        } else {
            Verification::Mismatch
        };
        assert_eq!(verdict.unwrap(), expected);
    }
}

/// Runs every future as its own task and collects the outputs in order.
async fn join_tasks<T: Send + 'static>(
    futures: impl IntoIterator<Item = impl Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let tasks: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(tasks.len());
    for task in tasks {
        outputs.push(task.await.unwrap());
    }
    outputs
}

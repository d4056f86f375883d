//! Pool behaviour that needs a worker held busy on demand: a test-only gate job occupies a
//! thread until the test releases it, so overload and queue expiry are shown without racing
//! the hash computation.

use std::{
    collections::BTreeSet,
    sync::mpsc,
    time::{Duration, Instant},
};

use argon2::{
    Algorithm, Argon2, Params, PasswordHasher as _, Version,
    password_hash::{SaltString, rand_core::OsRng},
};

use super::*;

const RETRY_AFTER: Duration = Duration::from_millis(1500);

fn small(threads: usize, queue_capacity: usize, queue_timeout: Duration) -> Argon2Hasher {
    Argon2Hasher::new(Argon2Settings {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
        threads,
        queue_capacity,
        queue_timeout,
        retry_after: RETRY_AFTER,
    })
    .unwrap()
}

/// A job holding one worker until the returned sender is used or dropped.
struct Gate {
    started: oneshot::Receiver<Option<String>>,
    release: mpsc::Sender<()>,
}

fn gate(hasher: &Argon2Hasher) -> Gate {
    let (started_tx, started) = oneshot::channel();
    let (release, release_rx) = mpsc::channel();
    hasher
        .submit(Work::Gate {
            started: started_tx,
            release: release_rx,
        })
        .unwrap();
    Gate { started, release }
}

/// Polls `done` until it holds, failing the test after 5 s.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn password() -> Password {
    Password::new("correct horse battery staple")
}

/// The Argon2 blocks held by the worker that takes the probe (with one thread: the only one).
async fn held_blocks(hasher: &Argon2Hasher) -> usize {
    let (reply, held) = oneshot::channel();
    hasher.submit(Work::HeldBlocks { reply }).unwrap();
    held.await.unwrap()
}

/// A PHC string for `password` made by the argon2 crate itself, with costs `m`, `t`, `p`.
fn stored_hash(m: u32, t: u32, p: u32, password: &str) -> PasswordHash {
    let params = Params::new(m, t, p, None).unwrap();
    let phc = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string();
    PasswordHash::from_phc(phc).unwrap()
}

#[test]
fn the_hasher_can_be_shared_across_threads_and_tasks() {
    fn assert_shareable<T: Clone + Send + Sync + 'static>() {}
    assert_shareable::<Argon2Hasher>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_at_once_and_only_admitted_jobs_succeed() {
    let hasher = small(1, 1, Duration::from_mins(1));
    let gate = gate(&hasher);
    gate.started.await.unwrap();

    let requests: Vec<_> = (0..20)
        .map(|_| {
            let hasher = hasher.clone();
            tokio::spawn(async move { hasher.hash(password()).await })
        })
        .collect();
    // With the only worker held, one request fits in the queue and the other 19 are answered
    // while the worker is still busy: they never waited for a thread.
    wait_until("19 requests are refused", || {
        requests.iter().filter(|r| r.is_finished()).count() == 19
    })
    .await;
    assert_eq!(hasher.inner.sender.len(), 1);

    gate.release.send(()).unwrap();
    let mut admitted = 0;
    let mut refused = 0;
    for request in requests {
        match request.await.unwrap() {
            Ok(hash) => {
                admitted += 1;
                assert_eq!(
                    hasher.verify(password(), hash).await,
                    Ok(Verification::Match { stale: false })
                );
            }
            Err(HashError::Overloaded { retry_after }) => {
                refused += 1;
                assert_eq!(retry_after, RETRY_AFTER);
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((admitted, refused), (1, 19));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_is_refused_like_hash_when_the_queue_is_full() {
    let hasher = small(1, 1, Duration::from_mins(1));
    let gate = gate(&hasher);
    gate.started.await.unwrap();
    let hash = PasswordHash::from_phc(
        "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNo".into(),
    )
    .unwrap();
    let queued = tokio::spawn({
        let hasher = hasher.clone();
        let hash = hash.clone();
        async move { hasher.verify(password(), hash).await }
    });
    wait_until("the first verify is queued", || {
        hasher.inner.sender.len() == 1
    })
    .await;

    assert_eq!(
        hasher.verify(password(), hash).await,
        Err(HashError::Overloaded {
            retry_after: RETRY_AFTER
        })
    );
    drop(gate.release);
    assert_eq!(queued.await.unwrap(), Ok(Verification::Mismatch));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_room_refuses_exactly_while_the_queue_is_full() {
    let hasher = small(1, 1, Duration::from_mins(1));
    let gate = gate(&hasher);
    gate.started.await.unwrap();
    // The worker is busy but the queue has room.
    assert_eq!(hasher.check_room(), Ok(()));

    let queued = tokio::spawn({
        let hasher = hasher.clone();
        async move { hasher.hash(password()).await }
    });
    wait_until("a hash is queued", || hasher.inner.sender.len() == 1).await;

    assert_eq!(
        hasher.check_room(),
        Err(HashError::Overloaded {
            retry_after: RETRY_AFTER
        })
    );
    drop(gate.release);
    queued.await.unwrap().unwrap();
    assert_eq!(hasher.check_room(), Ok(()));
}

/// Holds the single worker, queues one hash, lets `hold` pass, then frees the worker.
async fn hash_queued_behind_a_busy_worker(
    queue_timeout: Duration,
    hold: Duration,
) -> Result<PasswordHash, HashError> {
    let hasher = small(1, 4, queue_timeout);
    let gate = gate(&hasher);
    gate.started.await.unwrap();
    let request = tokio::spawn({
        let hasher = hasher.clone();
        async move { hasher.hash(password()).await }
    });
    wait_until("the hash is queued", || hasher.inner.sender.len() == 1).await;
    // The job was enqueued before this point, so once `hold` has passed here it has waited at
    // least that long when the worker takes it: no race with the clock.
    let queued_by = Instant::now();
    std::thread::sleep(hold);
    assert!(queued_by.elapsed() >= hold);
    gate.release.send(()).unwrap();
    request.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_waited_longer_than_the_queue_timeout_is_refused_unhashed() {
    let result =
        hash_queued_behind_a_busy_worker(Duration::from_millis(1), Duration::from_millis(5)).await;
    assert_eq!(
        result,
        Err(HashError::Overloaded {
            retry_after: RETRY_AFTER
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_within_the_queue_timeout_is_hashed_after_waiting() {
    let result =
        hash_queued_behind_a_busy_worker(Duration::from_mins(1), Duration::from_millis(5)).await;
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threads_are_named_and_each_takes_its_own_job() {
    let hasher = small(2, 4, Duration::from_mins(1));
    let (first, second) = (gate(&hasher), gate(&hasher));
    let names: BTreeSet<_> = [first.started.await.unwrap(), second.started.await.unwrap()]
        .into_iter()
        .map(Option::unwrap)
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["argon2-0".to_owned(), "argon2-1".to_owned()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_clone_stops_the_threads() {
    let hasher = small(2, 4, Duration::from_mins(1));
    let workers: Vec<_> = hasher.inner.workers.lock().unwrap().drain(..).collect();
    let clone = hasher.clone();
    drop(hasher);
    assert!(
        clone.hash(password()).await.is_ok(),
        "a clone keeps the pool"
    );
    assert!(workers.iter().all(|w| !w.is_finished()));

    drop(clone);
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        for worker in workers {
            worker.join().unwrap();
        }
        done_tx.send(()).unwrap();
    });
    done.recv_timeout(Duration::from_secs(5))
        .expect("the hashing threads did not stop after the hasher was dropped");
}

#[tokio::test]
async fn a_pool_whose_threads_are_gone_fails_instead_of_hanging() {
    let (sender, receiver) = crossbeam_channel::bounded(4);
    drop(receiver);
    let hasher = Argon2Hasher {
        inner: Arc::new(Inner {
            sender,
            settings: Argon2Settings::default(),
            workers: std::sync::Mutex::new(Vec::new()),
        }),
    };
    assert!(matches!(
        hasher.hash(password()).await,
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

#[test]
fn debug_output_shows_settings_only() {
    let hasher = small(1, 1, Duration::from_secs(1));
    let debug = format!("{hasher:?}");
    assert!(debug.contains("memory_kib: 1024"), "{debug}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_holds_no_argon2_memory_until_its_first_job_then_one_configured_array() {
    let hasher = small(1, 4, Duration::from_mins(1));
    assert_eq!(held_blocks(&hasher).await, 0, "an idle pool holds nothing");

    for _ in 0..5 {
        let hash = hasher.hash(password()).await.unwrap();
        assert_eq!(
            hasher.verify(password(), hash).await,
            Ok(Verification::Match { stale: false })
        );
    }
    assert_eq!(held_blocks(&hasher).await, 1024);

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
            hasher.verify(password(), stored.clone()).await,
            Ok(Verification::Match { stale }),
            "m={m} t={t} p={p}"
        );
        assert_eq!(
            hasher
                .verify(Password::new("correct horse battery stable"), stored)
                .await,
            Ok(Verification::Mismatch),
            "m={m} t={t} p={p}"
        );
        assert_eq!(held_blocks(&hasher).await, 1024, "m={m} t={t} p={p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_jobs_on_reused_memory_match_only_their_own_password() {
    let hasher = small(2, 64, Duration::from_mins(1));
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
        assert_eq!(verdict, Ok(expected));
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

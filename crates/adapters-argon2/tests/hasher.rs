//! The hasher through its port only, as the application sees it: PHC output, verification
//! against hashes of other parameters and algorithms, staleness, and overload under a burst.
// Helpers outside `#[test]` functions unwrap too: a panic here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, Version};
use registrar_adapters_argon2::{Argon2Hasher, Argon2Settings};
use registrar_application::ports::{HashError, PasswordHasher, Verification};
use registrar_domain::{Password, PasswordHash};

const PASSWORD: &str = "correct horse battery staple";

fn hasher_with(memory_kib: u32, iterations: u32) -> Argon2Hasher {
    Argon2Hasher::new(Argon2Settings {
        memory_kib,
        iterations,
        threads: 2,
        queue_capacity: 64,
        ..Argon2Settings::default()
    })
    .unwrap()
}

fn default_hasher() -> Argon2Hasher {
    Argon2Hasher::new(Argon2Settings {
        threads: 2,
        ..Argon2Settings::default()
    })
    .unwrap()
}

fn password() -> Password {
    Password::new(PASSWORD)
}

#[tokio::test]
async fn a_hashed_password_verifies_and_a_wrong_one_does_not() {
    let hasher = hasher_with(1024, 1);
    let hash = hasher.hash(password()).await.unwrap();

    assert_eq!(
        hasher.verify(password(), hash.clone()).await.unwrap(),
        Verification::Match { stale: false }
    );
    assert_eq!(
        hasher
            .verify(Password::new("correct horse battery stapler"), hash.clone())
            .await
            .unwrap(),
        Verification::Mismatch
    );
    assert_eq!(
        hasher.verify(Password::new(""), hash).await.unwrap(),
        Verification::Mismatch
    );
}

#[tokio::test]
async fn passwords_are_hashed_in_their_normalised_form() {
    let hasher = hasher_with(1024, 1);
    // NFKC turns the ligature "ﬃ" into "ffi": both spellings are one password.
    let hash = hasher
        .hash(Password::new("o\u{FB03}ce-chair-42"))
        .await
        .unwrap();
    assert_eq!(
        hasher
            .verify(Password::new("office-chair-42"), hash)
            .await
            .unwrap(),
        Verification::Match { stale: false }
    );
}

#[tokio::test]
async fn default_settings_write_a_standard_argon2id_phc_string() {
    let hasher = default_hasher();
    let hash = hasher.hash(password()).await.unwrap();

    let prefix = "$argon2id$v=19$m=19456,t=2,p=1$";
    assert!(hash.as_str().starts_with(prefix), "unexpected hash layout");
    // A 16-byte salt and a 32-byte output, in unpadded base64.
    let (salt, output) = hash.as_str()[prefix.len()..].split_once('$').unwrap();
    assert_eq!((salt.len(), output.len()), (22, 43));
    assert_eq!(
        hasher.verify(password(), hash).await.unwrap(),
        Verification::Match { stale: false }
    );
}

#[tokio::test]
async fn a_hash_with_weaker_parameters_verifies_as_stale() {
    let weak = hasher_with(8192, 1).hash(password()).await.unwrap();
    assert!(weak.as_str().starts_with("$argon2id$v=19$m=8192,t=1,p=1$"));

    let hasher = default_hasher();
    assert_eq!(
        hasher.verify(password(), weak.clone()).await.unwrap(),
        Verification::Match { stale: true }
    );
    assert_eq!(
        hasher
            .verify(Password::new("wrong password"), weak)
            .await
            .unwrap(),
        Verification::Mismatch
    );
    let current = hasher.hash(password()).await.unwrap();
    assert_eq!(
        hasher.verify(password(), current).await.unwrap(),
        Verification::Match { stale: false }
    );
}

#[tokio::test]
async fn a_hash_with_stronger_parameters_is_not_stale() {
    let strong = hasher_with(2048, 2).hash(password()).await.unwrap();
    assert_eq!(
        hasher_with(1024, 1)
            .verify(password(), strong)
            .await
            .unwrap(),
        Verification::Match { stale: false }
    );
}

#[tokio::test]
async fn an_argon2i_hash_with_the_configured_costs_is_stale() {
    let params = Params::new(19_456, 2, 1, None).unwrap();
    let argon2i = Argon2::new(Algorithm::Argon2i, Version::V0x13, params)
        .hash_password(PASSWORD.as_bytes())
        .unwrap()
        .to_string();
    assert!(argon2i.starts_with("$argon2i$v=19$m=19456,t=2,p=1$"));
    let argon2i = PasswordHash::from_phc(argon2i).unwrap();

    let hasher = default_hasher();
    assert_eq!(
        hasher.verify(password(), argon2i.clone()).await.unwrap(),
        Verification::Match { stale: true }
    );
    assert_eq!(
        hasher
            .verify(Password::new("wrong password"), argon2i)
            .await
            .unwrap(),
        Verification::Mismatch
    );
}

#[tokio::test]
async fn a_hash_that_does_not_parse_fails() {
    let hasher = hasher_with(1024, 1);
    for garbage in [
        "$garbage",
        "$argon2id$v=19$m=1024",
        "$2b$12$R9h/cIPz0gi.URNNX3kh2O",
    ] {
        let hash = PasswordHash::from_phc(garbage.to_owned()).unwrap();
        let result = hasher.verify(password(), hash).await;
        assert!(
            matches!(result, Err(HashError::Failed(_))),
            "{garbage}: {result:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_queue_cap_is_partly_refused_at_once() {
    // One thread, one queue slot (a timeout long enough never to matter), and a hash slow
    // enough that the burst arrives while it runs.
    let hasher = Argon2Hasher::new(Argon2Settings {
        memory_kib: 8192,
        iterations: 3,
        threads: 1,
        queue_capacity: 1,
        queue_timeout: Duration::from_secs(30),
        ..Argon2Settings::default()
    })
    .unwrap();
    let requests: Vec<_> = (0..20)
        .map(|_| {
            let hasher = hasher.clone();
            tokio::spawn(async move { hasher.hash(password()).await })
        })
        .collect();

    let mut digests = Vec::new();
    let mut refused = 0;
    for request in requests {
        match request.await.unwrap() {
            Ok(hash) => digests.push(hash),
            Err(HashError::Overloaded { retry_after }) => {
                // Whole seconds, at least one.
                assert!(retry_after >= Duration::from_secs(1), "{retry_after:?}");
                assert_eq!(retry_after.subsec_nanos(), 0, "{retry_after:?}");
                refused += 1;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(refused >= 1, "nothing was refused");
    assert!(!digests.is_empty(), "nothing was hashed");
    assert_eq!(digests.len() + refused, 20);
    for hash in digests {
        assert_eq!(
            hasher.verify(password(), hash).await.unwrap(),
            Verification::Match { stale: false }
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_the_pool_finishes_within_the_queue_timeout_is_admitted_whole() {
    // 64 hashes of about a millisecond on one thread: well within the default 2 s, although
    // the burst arrives far faster than the thread hashes.
    let hasher = Argon2Hasher::new(Argon2Settings {
        memory_kib: 1024,
        iterations: 1,
        threads: 1,
        ..Argon2Settings::default()
    })
    .unwrap();
    let requests: Vec<_> = (0..64)
        .map(|_| {
            let hasher = hasher.clone();
            tokio::spawn(async move { hasher.hash(password()).await })
        })
        .collect();
    let mut refused = 0;
    for request in requests {
        match request.await.unwrap() {
            Ok(_) => {}
            Err(HashError::Overloaded { .. }) => refused += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(refused, 0);
}

#[tokio::test]
async fn hashes_written_by_argon2_0_5_verify_unchanged() {
    // Written by argon2 0.5's `PasswordHasher::hash_password` with the salt
    // "saltsaltsaltsalt": a dependency upgrade must keep verifying what is already stored (the
    // crate's own unit tests check that it writes the same strings).
    let stored = [
        (
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$QKHrg5tayLGcN+Y0HVPNaBqykOVLUxlMkZycXE1uWRM",
            PASSWORD,
            false,
        ),
        (
            "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$5Tx9YkNNWfq1gl0Huxrt8T0TE4IsPYoxCIG6y6JJZ6I",
            PASSWORD,
            true,
        ),
        (
            "$argon2i$v=19$m=2048,t=2,p=2$c2FsdHNhbHRzYWx0c2FsdA$r9fNnFoRRCzjzUFUSj8sR/p/QdPt8Wk80txg39+P7OA",
            PASSWORD,
            true,
        ),
        (
            "$argon2d$v=19$m=1024,t=3,p=1$c2FsdHNhbHRzYWx0c2FsdA$MlSC+sv88U0E6qGJ/x5Gg/tBs1Sg9SuiAn2bNmfuM7w",
            "hunter22",
            true,
        ),
    ];
    let hasher = default_hasher();
    for (phc, password, stale) in stored {
        let hash = PasswordHash::from_phc(phc.to_owned()).unwrap();
        assert_eq!(
            hasher
                .verify(Password::new(password), hash.clone())
                .await
                .unwrap(),
            Verification::Match { stale },
            "{phc}"
        );
        assert_eq!(
            hasher
                .verify(Password::new("not the password"), hash)
                .await
                .unwrap(),
            Verification::Mismatch,
            "{phc}"
        );
    }
}

#[tokio::test]
async fn work_run_through_the_hasher_runs_on_a_hashing_thread_and_a_panic_is_a_failure() {
    let hasher = hasher_with(1024, 1);

    let thread = hasher
        .run(|| std::thread::current().name().map(str::to_owned))
        .await
        .unwrap();
    let panicked = hasher.run(|| -> u8 { panic!("a bug in the work") }).await;

    let thread = thread.unwrap_or_default();
    assert!(thread.starts_with("argon2-"), "ran on {thread:?}");
    assert!(
        matches!(panicked, Err(HashError::Failed(_))),
        "{panicked:?}"
    );
    assert!(
        hasher.hash(password()).await.is_ok(),
        "the thread lives on after the panic"
    );
}

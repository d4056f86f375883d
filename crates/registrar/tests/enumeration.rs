//! Enumeration: with the real Argon2 hasher, a login for an unknown address takes about as long
//! as one with a wrong password, so response times do not reveal who has an account.
//!
//! This compares two latency distributions measured side by side (medians, interleaved
//! samples), not a speed target: the bound is a ratio, wide enough for a loaded CI machine and
//! far narrower than the difference a missing hash would make (a verify costs milliseconds;
//! skipping it costs microseconds).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use std::time::{Duration, Instant};

use registrar_adapters_argon2::{Argon2Hasher, Argon2Settings};
use registrar_adapters_memory::MemoryStore;
use registrar_application::{
    AccountService, AccountSettings, Accounts, Credentials, DispatchSignal, Error, NoTraces,
    OsEntropy, RateLimits, Registration, SystemClock, ports::Limit,
};
use registrar_domain::{CodePolicy, CodeSecret, Email, NewPassword, Password, PasswordPolicy};

const SAMPLES: usize = 25;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_emails_take_as_long_as_wrong_passwords() {
    let generous = Limit {
        max: 10_000,
        window: Duration::from_mins(15),
    };
    let accounts = AccountService::new(
        MemoryStore::new(),
        // The default parameters: the real cost of a verify.
        Argon2Hasher::new(Argon2Settings::default()).unwrap(),
        SystemClock,
        OsEntropy,
        NoTraces,
        AccountSettings {
            codes: CodePolicy::default(),
            passwords: PasswordPolicy::default(),
            secret: CodeSecret::new(*b"enumeration test secret, 32 byte").unwrap(),
            limits: RateLimits {
                login_failures_per_account: generous,
                login_failures_per_address: generous,
                registrations_per_address: generous,
                per_address: true,
            },
        },
        DispatchSignal::default(),
    );
    let email = Email::parse("known@example.com").unwrap();
    let policy = PasswordPolicy::default();
    let password =
        NewPassword::parse("correct horse battery staple", Some(&email), &policy).unwrap();
    accounts
        .register(Registration::new(email, password), None)
        .await
        .unwrap();
    let login =
        |user: &str| Credentials::new(user.to_owned(), Password::new("wrong password, surely"));
    // Warm up both paths (the dummy hash is made on first use).
    for user in ["known@example.com", "nobody@example.com"] {
        assert!(matches!(
            accounts.authenticate(login(user), None).await,
            Err(Error::Unauthorized)
        ));
    }

    let (mut unknown, mut wrong) = (Vec::new(), Vec::new());
    for i in 0..SAMPLES {
        for (user, samples) in [
            (format!("nobody{i}@example.com"), &mut unknown),
            ("known@example.com".to_owned(), &mut wrong),
        ] {
            let started = Instant::now();
            let result = accounts.authenticate(login(&user), None).await;
            samples.push(started.elapsed());
            assert!(matches!(result, Err(Error::Unauthorized)), "{result:?}");
        }
    }

    let (unknown, wrong) = (median(unknown), median(wrong));
    let ratio = unknown.as_secs_f64() / wrong.as_secs_f64();
    assert!(
        (0.67..=1.5).contains(&ratio),
        "unknown email median {unknown:?} vs wrong password median {wrong:?} (ratio {ratio:.2})"
    );
}

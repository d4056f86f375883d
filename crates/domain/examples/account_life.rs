//! An account's life driven through the `Account` aggregate alone, with a fixed clock: register,
//! the code's email is accepted, a wrong guess, the right code, and a late second try.
//!
//! `cargo run -p registrar-domain --example account_life`
#![allow(clippy::print_stdout, reason = "the example shows each step")]

use std::time::{Duration, SystemTime};

use registrar_domain::{
    Account, ActivationRefused, CodeDigits, CodeId, CodePolicy, CodeSecret, CodeStatus, Email,
    IssueRefused, NewCode, NewPassword, PasswordHash, PasswordPolicy, UserId, UserStatus,
};
use uuid::Uuid;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The domain reads no clock and draws no randomness: time and codes are inputs.
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_hours(500_000);
    let at = |seconds| t0 + Duration::from_secs(seconds);
    let policy = CodePolicy::default();
    let secret = CodeSecret::new(*b"a key of at least sixteen bytes")?;

    let email = Email::parse("Ada@Example.com")?;
    NewPassword::parse(
        "correct horse battery staple",
        Some(&email),
        &PasswordPolicy::default(),
    )?;
    // Hashing is someone else's job; the aggregate only keeps the PHC string.
    let hash = PasswordHash::from_phc("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into())?;

    let code_id = CodeId::from_uuid(Uuid::from_u128(1));
    let digits = CodeDigits::parse("0421")?;
    let mut account = Account::register(
        UserId::from_uuid(Uuid::from_u128(7)),
        email,
        hash,
        NewCode::new(code_id, digits, &secret),
        t0,
    );
    println!(
        "registered {}: {:?}",
        account.user().email(),
        account.user().status()
    );
    assert_eq!(
        account.code_status(t0, &policy),
        Some(CodeStatus::AwaitingDelivery)
    );

    // A code works only once its email was accepted, and for a minute from then.
    account.mark_code_delivered(code_id, at(2));
    let wrong = account.activate(CodeDigits::parse("9999")?, &secret, at(5), &policy);
    println!("a wrong guess: {wrong:?}");
    assert_eq!(
        wrong,
        Err(ActivationRefused::WrongCode {
            attempts_remaining: policy.max_attempts() - 1
        })
    );

    account.activate(digits, &secret, at(10), &policy)?;
    println!("activated: {:?}", account.user().status());
    assert_eq!(
        account.user().status(),
        UserStatus::Active {
            activated_at: at(10)
        }
    );

    let again = account.issue_code(
        NewCode::new(CodeId::from_uuid(Uuid::from_u128(2)), digits, &secret),
        at(90),
        &policy,
    );
    println!("a new code for an active account: {again:?}");
    assert_eq!(again, Err(IssueRefused::AlreadyActive));
    Ok(())
}

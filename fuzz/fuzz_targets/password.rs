//! `NewPassword::parse` never panics, on any text and with or without an email to compare.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registrar_domain::{Email, NewPassword, PasswordPolicy};

fuzz_target!(|data: &[u8]| {
    // Request bodies are at most 16 KiB; zxcvbn is skipped beyond 128 characters anyway.
    let text = String::from_utf8_lossy(&data[..data.len().min(16 * 1024)]);
    let policy = PasswordPolicy::default();
    let email = Email::parse("lovelace@example.com").ok();
    let _ = NewPassword::parse(&text, None, &policy);
    let _ = NewPassword::parse(&text, email.as_ref(), &policy);
});

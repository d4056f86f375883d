//! `Email::parse` never panics, and what it accepts is short, trimmed and parses to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registrar_domain::Email;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(email) = Email::parse(&text) {
        assert!(email.as_str().len() <= 254);
        assert_eq!(email.as_str(), email.as_str().trim());
        assert_eq!(Email::parse(email.as_str()).as_ref(), Ok(&email));
        assert_eq!(email.key(), email.as_str().to_ascii_lowercase());
    }
});

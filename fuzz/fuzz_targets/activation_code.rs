//! `CodeDigits::parse` never panics and accepts exactly four ASCII digits, which round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registrar_domain::CodeDigits;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let four_digits = text.len() == 4 && text.bytes().all(|b| b.is_ascii_digit());
    match CodeDigits::parse(&text) {
        Ok(code) => {
            assert!(four_digits);
            assert_eq!(code.reveal(), text);
        }
        Err(_) => assert!(!four_digits),
    }
});

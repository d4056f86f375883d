//! The `Authorization: Basic` parser never panics on any header value.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = registrar_api::fuzzing::basic_auth(data);
});

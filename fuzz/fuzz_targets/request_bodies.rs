//! The registration and activation body parsers never panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = registrar_api::fuzzing::register_body(data);
    let _ = registrar_api::fuzzing::activation_body(data);
});

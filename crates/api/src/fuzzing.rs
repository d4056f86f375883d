//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`): the request parsers the
//! handlers use, callable on raw bytes. Each must return for every input, never panic.

use registrar_domain::PasswordPolicy;

use crate::{
    dto::{ActivationBody, RegisterUserBody},
    extract::{BasicAuth, parse_json},
};

/// Parses an `Authorization` header value as the API does; whether credentials came out.
#[must_use]
pub fn basic_auth(header: &[u8]) -> bool {
    BasicAuth::parse(header).is_some()
}

/// Parses a registration body as the API does, down to domain types; whether it is accepted.
#[must_use]
pub fn register_body(body: &[u8]) -> bool {
    parse_json::<RegisterUserBody>(body)
        .and_then(|dto| dto.try_into_domain(&PasswordPolicy::default()))
        .is_ok()
}

/// Parses an activation body as the API does; whether a well-formed code came out.
#[must_use]
pub fn activation_body(body: &[u8]) -> bool {
    parse_json::<ActivationBody>(body)
        .and_then(ActivationBody::try_into_code)
        .is_ok()
}

//! Integration tests of the HTTP API against the HTTP contract: the real actix application and use
//! cases over the in-memory store, with a fake clock, scripted entropy, a fake hasher and a
//! recording mailer. Time moves only when a test moves it; nothing sleeps; every test gets a
//! fresh application.
//!
//! One test binary, one module per part of the contract, and a shared [`helpers`] harness.

// Test code, helpers included: a panic from an `unwrap` is a failed test, not a crashed service
// (clippy.toml allows `unwrap` in `#[test]` functions only, not in the helpers they call).
#![allow(clippy::unwrap_used)]

mod activation;
mod auth;
mod errors;
mod helpers;
mod new_code;
mod openapi;
mod ops;
mod register;

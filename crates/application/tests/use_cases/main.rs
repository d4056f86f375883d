//! Integration tests of the use cases: [`AccountService`](registrar_application::AccountService)
//! and [`Dispatcher`](registrar_application::Dispatcher) over one in-memory store, with a fake
//! clock, scripted entropy, a fake hasher and a recording mailer. Time only moves when a test
//! moves it; nothing sleeps.
//!
//! One test binary, with one module per use case and a shared [`support`] harness.

// Test code, helpers included: a panic from an `unwrap` or a `Duration` underflow is a failed
// test, not a crashed service (clippy.toml allows `unwrap` in `#[test]` functions only).
#![allow(clippy::unwrap_used, clippy::unchecked_time_subtraction)]

mod activate;
mod authenticate;
mod delete;
mod dispatcher;
mod issue_code;
mod outage;
mod register;
mod schedule;
mod support;

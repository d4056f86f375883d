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
mod dispatcher;
mod issue_code;
mod outage;
mod register;
mod support;

// The fakes are the crate's own `src/testing/fakes.rs`, compiled into this binary. The
// `testing` module itself is only there when the `testing` feature is on, which a plain
// `cargo test -p registrar-application` does not turn on (only a workspace-wide build unifies it
// in from the adapters' dev-dependencies), so these tests would otherwise build in one run and
// not the other. The file names the ports as `crate::ports`, hence the import. It is formatted
// with the crate's sources, not as part of this binary, hence the skip.
#[rustfmt::skip]
#[path = "../../src/testing/fakes.rs"]
#[allow(
    dead_code,
    unreachable_pub,
    clippy::missing_panics_doc,
    clippy::unwrap_used
)]
mod fakes;
use registrar_application::ports;

//! Registrar's test toolkit: the one PostgreSQL finder and throw-away-database helper, the one
//! fake SMTP server and the one child-process spawner that every crate's tests and the
//! benchmarks share, so that each exists once and behaves the same everywhere.
//!
//! Dev-only: it may only ever be a dev-dependency (the architecture test enforces it), so it
//! never reaches the shipped binary. It panics freely, as test code does: a panic is a failed
//! test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::missing_panics_doc,
    reason = "test toolkit: a panic is a failed test"
)]

pub mod postgres;
pub mod process;
pub mod smtp;

//! The PostgreSQL store against a real server: the shared store contract, then what only this
//! adapter has (migrations, row locks, time-outs, outages, error messages).
//!
//! Every test runs in a fresh database of its own (see `helpers`), on the server the test
//! toolkit finds: `REGISTRAR_TEST_DATABASE_URL`, else `127.0.0.1:5432`, else a private cluster
//! of the installed PostgreSQL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::missing_panics_doc,
    reason = "test code: a panic is a failed test"
)]

mod adapter;
mod contract;
mod dispatch;
mod helpers;
mod outage;
mod proxy;
mod purge;
mod tls;

//! Test doubles for the ports and the store contract suite, shared by every crate's tests
//! (feature `testing`). Nothing here is compiled into the service.
#![allow(clippy::missing_panics_doc, clippy::unwrap_used, clippy::expect_used)]

mod fakes;
mod passing;
pub mod store_contract;

pub use fakes::{FakeClock, FakeHasher, RecordingMailer, RecordingTraces, SeqEntropy, t0};
pub use passing::PassingStore;

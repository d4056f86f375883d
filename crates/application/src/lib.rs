//! Registrar's use cases and the ports they need.
//!
//! The use cases ([`AccountService`], [`Dispatcher`]) read like the business rules; everything
//! they touch outside the process (storage, password hashing, mail, time, randomness, tracing)
//! is a port: a trait in [`ports`], implemented by an adapter crate and chosen by the binary.
#![forbid(unsafe_code)]

mod accounts;
mod delivery;
mod error;
pub mod ports;
mod signal;
mod system;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod trace;

pub use accounts::{
    AccountService, AccountSettings, Accounts, Authenticated, ClientAddr, Credentials, RateLimits,
    Registration,
};
pub use delivery::{DeliveryPolicy, DeliveryReport, Dispatcher};
pub use error::{Error, ErrorChain};
pub use signal::DispatchSignal;
pub use system::{NoTraces, OsEntropy, SystemClock};
pub use trace::TraceContext;

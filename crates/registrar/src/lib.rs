//! The `registrar` binary's library half: configuration, telemetry and wiring, kept out of
//! `main` so tests can start the real service in-process.
#![forbid(unsafe_code)]

pub mod config;
pub mod healthcheck;
pub mod startup;
pub mod telemetry;

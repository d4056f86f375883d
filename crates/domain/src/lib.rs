//! Registrar's rules and types: what an account, an email address, a password and an activation
//! code are, and how an account moves from `pending` to `active`.
//!
//! This crate does no I/O, reads no clock and draws no randomness: the current time and fresh
//! codes are passed in, so every rule is a plain function of its inputs.
//!
//! ```
//! use registrar_domain::{Email, NewPassword, PasswordPolicy};
//!
//! let email = Email::parse("  Ada@Example.COM ")?;
//! assert_eq!(email.as_str(), "Ada@example.com");
//! let password = NewPassword::parse("correct horse battery staple", Some(&email), &PasswordPolicy::default());
//! assert!(password.is_ok());
//! # Ok::<(), registrar_domain::EmailError>(())
//! ```
//!
//! The account's whole life, with a fixed clock, is the example on [`Account`] and in
//! `examples/account_life.rs` (`cargo run -p registrar-domain --example account_life`).
//!
//! The refusals and errors are `#[non_exhaustive]`: this crate is reused outside Registrar, and
//! a new refusal must not break its users' builds. Constructors named `restore` are for stores
//! only: they rebuild what was saved without checking the rules.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod account;
mod code;
mod email;
mod password;
mod user;

pub use account::{
    Account, ActivationRefused, CodeIssued, CodePolicy, CodePolicyError, IssueRefused, NewCode,
    TakeoverRefused,
};
pub use code::{
    ActivationCode, CodeDeath, CodeDigest, CodeDigits, CodeFormatError, CodeId, CodeSecret,
    CodeSecretError, CodeState, CodeStatus,
};
pub use email::{Email, EmailError};
pub use password::{
    NewPassword, Password, PasswordHash, PasswordHashError, PasswordPolicy, PasswordProblem,
    PasswordRejected,
};
pub use user::{User, UserId, UserStatus};

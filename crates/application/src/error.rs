//! The one error type of the application layer: every way a use case can fail, in terms the
//! inbound adapter can map to a response.

use std::time::Duration;

use crate::ports::{HashError, StoreError};

/// Why a use case failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The credentials are missing, malformed or wrong, or the account does not exist.
    #[error("the credentials were not accepted")]
    Unauthorized,
    /// The address belongs to an active account or to one whose code still holds it.
    #[error("the email address is already registered")]
    EmailTaken,
    /// The account is already active.
    #[error("the account is already active")]
    AlreadyActive,
    /// The account has no usable code.
    #[error("the activation code is no longer usable")]
    CodeGone {
        /// It died of wrong attempts rather than age.
        too_many_attempts: bool,
    },
    /// The code did not match (or its email is not delivered yet).
    #[error("the activation code is wrong")]
    WrongCode {
        /// Wrong attempts left before the code dies.
        attempts_remaining: u32,
    },
    /// A limit was hit; try again later.
    #[error("too many requests")]
    TooManyRequests {
        /// When to try again.
        retry_after: Duration,
    },
    /// The password hashing pool cannot take the work now.
    #[error("the service is overloaded")]
    Overloaded {
        /// When to try again.
        retry_after: Duration,
    },
    /// The store cannot be reached.
    #[error("the store is unavailable")]
    Unavailable(#[source] StoreError),
    /// Anything else: a bug or a broken dependency. Never shown to clients.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Retry-After for answers to requests that failed because the store was unreachable.
    pub const UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(5);
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(_) => Self::Unavailable(error),
            StoreError::Internal(message) => Self::Internal(message),
        }
    }
}

impl From<HashError> for Error {
    fn from(error: HashError) -> Self {
        match error {
            HashError::Overloaded { retry_after } => Self::Overloaded { retry_after },
            HashError::Failed(message) => Self::Internal(message),
        }
    }
}

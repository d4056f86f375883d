//! The one error type of the application layer: every way a use case can fail, in terms the
//! inbound adapter can map to a response.

use std::{fmt, time::Duration};

use crate::ports::{Cause, HashError, StoreError};

/// Why a use case failed.
#[derive(Debug, thiserror::Error)]
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
    #[error("internal error")]
    Internal(#[source] Cause),
}

impl Error {
    /// Retry-After for answers to requests that failed because the store was unreachable.
    pub const UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(5);
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(_) => Self::Unavailable(error),
            StoreError::Internal(_) => Self::Internal(error.into()),
        }
    }
}

impl From<HashError> for Error {
    fn from(error: HashError) -> Self {
        match error {
            HashError::Overloaded { retry_after } => Self::Overloaded { retry_after },
            HashError::Failed(_) => Self::Internal(error.into()),
        }
    }
}

/// Shows an error with all its sources, `: caused by: ` between levels: how failures are logged
/// and recorded, so that the cause an adapter kept is seen.
#[derive(Debug, Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": caused by: {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("42P01 relation \"users\" does not exist")]
    struct Driver;

    #[derive(Debug, thiserror::Error)]
    #[error("load account by email")]
    struct Operation(#[source] Driver);

    #[test]
    fn a_store_failure_keeps_every_level_of_its_cause() {
        let error = Error::from(StoreError::Internal(Box::new(Operation(Driver))));
        assert_eq!(
            ErrorChain(&error).to_string(),
            "internal error: caused by: store failure: caused by: load account by email: \
             caused by: 42P01 relation \"users\" does not exist"
        );
    }

    #[test]
    fn an_unreachable_store_stays_unavailable_with_its_cause() {
        let error = Error::from(StoreError::Unavailable(Box::new(Operation(Driver))));
        assert!(matches!(error, Error::Unavailable(_)), "{error:?}");
        assert!(ErrorChain(&error).to_string().ends_with("does not exist"));
    }
}

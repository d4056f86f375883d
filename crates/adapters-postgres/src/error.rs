//! Errors at the boundary: what the database said, turned into the application's `StoreError`
//! and `SaveError`, and the setup errors of building the pool and migrating.
//!
//! The rule: anything that means "the database cannot be reached right now" becomes
//! `StoreError::Unavailable` (the API answers 503 and retries are worth it); everything else is
//! `StoreError::Internal`. The cause names the operation, the SQLSTATE and the server's one-line
//! message, never the SQL text, parameters or the server's DETAIL (which can hold row values);
//! under a broken connection it keeps the I/O or TLS error as its source.

use std::fmt;

use registrar_application::ports::{SaveError, StoreError};
use tokio_postgres::error::SqlState;

/// Why building the store or migrating failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The settings do not describe a usable database connection.
    #[error("invalid database settings: {0}")]
    Settings(String),
    /// The database could not be reached, or refused the session.
    #[error("cannot connect to the database")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Applying the migrations failed; nothing of the failed run was kept.
    #[error("applying the database migrations failed")]
    Migration(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// How an operation failed, before it is mapped to the port's errors.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The database or the connection failed.
    Db(tokio_postgres::Error),
    /// Waiting for a pooled connection failed.
    Pool(deadpool_postgres::PoolError),
    /// The operation ran out of time.
    TimedOut,
    /// A save lost the optimistic-concurrency race, or the address is taken.
    Conflict,
    /// A stored value does not make a valid domain value (or the reverse): a bug or tampering.
    Invalid(String),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Db(error)
    }
}

impl Failure {
    /// Whether the connection this happened on should be thrown away rather than reused: it
    /// is broken, or in an unknown state after a time-out.
    pub(crate) fn poisons_connection(&self) -> bool {
        match self {
            Self::Db(error) => {
                is_unavailable(error) && error.code() != Some(&SqlState::QUERY_CANCELED)
            }
            Self::TimedOut => true,
            Self::Pool(_) | Self::Conflict | Self::Invalid(_) => false,
        }
    }
}

/// A port's error for a failed operation, which `op` names (a short phrase such as "load
/// account"): what `PgStore::run` answers with, so each port method names its operation once.
pub(crate) trait PortError {
    fn from_failure(failure: Failure, op: &'static str) -> Self;
}

impl PortError for StoreError {
    fn from_failure(failure: Failure, op: &'static str) -> Self {
        let unavailable = match &failure {
            Failure::Db(error) | Failure::Pool(deadpool_postgres::PoolError::Backend(error)) => {
                is_unavailable(error)
            }
            Failure::Pool(error) => !matches!(
                error,
                deadpool_postgres::PoolError::Closed
                    | deadpool_postgres::PoolError::NoRuntimeSpecified
                    | deadpool_postgres::PoolError::PostCreateHook(_)
            ),
            Failure::TimedOut => true,
            Failure::Conflict | Failure::Invalid(_) => false,
        };
        let cause = Box::new(OperationFailed { op, failure });
        if unavailable {
            Self::Unavailable(cause)
        } else {
            Self::Internal(cause)
        }
    }
}

/// A save can also lose the optimistic-concurrency race, or find the address taken.
impl PortError for SaveError {
    fn from_failure(failure: Failure, op: &'static str) -> Self {
        match failure {
            Failure::Conflict => Self::Conflict,
            Failure::Db(error) if is_account_conflict(&error) => Self::Conflict,
            other => Self::Store(StoreError::from_failure(other, op)),
        }
    }
}

/// Whether the error means the database cannot be reached now, or is going away, or was too
/// slow: connection refused/reset/closed, class 08 (connection exception), 57P01–57P03 (admin
/// or crash shutdown, cannot connect now), 53300 (too many connections) and 57014 (statement
/// timeout). A TLS refusal (untrusted certificate, server without TLS under `require`) is not.
pub(crate) fn is_unavailable(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    if let Some(code) = error.code() {
        return code.code().starts_with("08")
            || [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
                SqlState::TOO_MANY_CONNECTIONS,
                SqlState::QUERY_CANCELED,
            ]
            .contains(code);
    }
    // No server error: the socket failed (refused, reset, timed out, closed mid-message). Not
    // when TLS refused the server's certificate, which reaches us as an I/O error too: that is
    // the settings or the server's certificate, and waiting does not mend it.
    std::error::Error::source(error).is_some_and(<dyn std::error::Error>::is::<std::io::Error>)
        && !matches!(tls_error(error), Some(rustls::Error::InvalidCertificate(_)))
}

/// The rustls error under a failed TLS handshake (tokio-rustls wraps it in an I/O error).
fn tls_error(error: &tokio_postgres::Error) -> Option<&rustls::Error> {
    std::error::Error::source(error)?
        .downcast_ref::<std::io::Error>()?
        .get_ref()?
        .downcast_ref::<rustls::Error>()
}

/// A unique violation on the users' primary key or email key: someone has the account.
fn is_account_conflict(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&SqlState::UNIQUE_VIOLATION)
        && error
            .as_db_error()
            .and_then(|db| db.constraint())
            .is_some_and(|name| name == "users_email_key" || name == "users_pkey")
}

/// An operation's failure as the port carries it: the operation, then what failed. What it
/// shows of a server error is the SQLSTATE and the one-line message, never the statement,
/// its parameters or the DETAIL (which can hold row values); a connection failure keeps the
/// driver's error, with the I/O or TLS error beneath it, as its source.
#[derive(Debug)]
struct OperationFailed {
    op: &'static str,
    failure: Failure,
}

impl fmt::Display for OperationFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use deadpool_postgres::{PoolError, TimeoutType};
        let op = self.op;
        match &self.failure {
            Failure::Db(error) | Failure::Pool(PoolError::Backend(error)) => {
                match error.as_db_error() {
                    Some(db) => write!(f, "{op}: {} {}", db.code().code(), db.message()),
                    None => match tls_error(error) {
                        Some(rustls::Error::InvalidCertificate(_)) => {
                            write!(f, "{op}: the database's TLS certificate was refused")
                        }
                        _ => write!(f, "{op}: the database connection failed"),
                    },
                }
            }
            Failure::Pool(PoolError::Timeout(TimeoutType::Wait)) => {
                write!(f, "{op}: no free database connection in time")
            }
            Failure::Pool(PoolError::Timeout(TimeoutType::Create | TimeoutType::Recycle)) => {
                write!(f, "{op}: connecting to the database timed out")
            }
            Failure::Pool(PoolError::Closed) => write!(f, "{op}: the pool is closed"),
            Failure::Pool(PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_)) => {
                write!(f, "{op}: the pool is misconfigured")
            }
            Failure::TimedOut => write!(f, "{op}: timed out"),
            // Only saves can conflict; anywhere else it would be a bug in this adapter.
            Failure::Conflict => write!(f, "{op}: unexpected conflict"),
            Failure::Invalid(what) => write!(f, "{op}: invalid data: {what}"),
        }
    }
}

impl std::error::Error for OperationFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.failure {
            // A server error ends here: the driver's own text would add the DETAIL.
            Failure::Db(error) | Failure::Pool(deadpool_postgres::PoolError::Backend(error))
                if error.as_db_error().is_none() =>
            {
                Some(error)
            }
            _ => None,
        }
    }
}

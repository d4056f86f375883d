//! Users: who registered, with which address and password, and whether they have activated.

use std::{fmt, time::SystemTime};

use uuid::Uuid;

use crate::{Email, PasswordHash};

/// A user's identity: a UUID (v7, so ids sort by creation time).
///
/// ```
/// use registrar_domain::UserId;
/// use uuid::Uuid;
///
/// let id = UserId::from_uuid(Uuid::from_u128(7));
/// assert_eq!(id.as_uuid(), Uuid::from_u128(7));
/// assert_eq!(id.to_string(), "00000000-0000-0000-0000-000000000007");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(Uuid);

impl UserId {
    /// Wraps a UUID.
    #[must_use]
    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The UUID.
    #[must_use]
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Whether the user has proved they own their address.
///
/// ```
/// use std::time::SystemTime;
/// use registrar_domain::{Email, PasswordHash, User, UserId, UserStatus};
///
/// let user = User::new(
///     UserId::from_uuid(uuid::Uuid::from_u128(7)),
///     Email::parse("ada@example.com")?,
///     PasswordHash::from_phc("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into())?,
///     SystemTime::UNIX_EPOCH,
/// );
/// assert_eq!(user.status(), UserStatus::Pending);
/// assert!(!user.is_active());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserStatus {
    /// Registered, waiting for the code.
    Pending,
    /// Activated with a code.
    Active {
        /// When the code was accepted.
        activated_at: SystemTime,
    },
}

/// A registered user.
///
/// ```
/// use std::time::SystemTime;
/// use registrar_domain::{Email, PasswordHash, User, UserId};
///
/// let email = Email::parse("ada@example.com")?;
/// let user = User::new(
///     UserId::from_uuid(uuid::Uuid::from_u128(7)),
///     email.clone(),
///     PasswordHash::from_phc("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into())?,
///     SystemTime::UNIX_EPOCH,
/// );
/// assert_eq!(user.email(), &email);
/// assert_eq!(user.created_at(), SystemTime::UNIX_EPOCH);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    id: UserId,
    email: Email,
    password_hash: PasswordHash,
    created_at: SystemTime,
    status: UserStatus,
}

impl User {
    /// A freshly registered, pending user.
    #[must_use]
    pub fn new(id: UserId, email: Email, password_hash: PasswordHash, now: SystemTime) -> Self {
        Self {
            id,
            email,
            password_hash,
            created_at: now,
            status: UserStatus::Pending,
        }
    }

    /// **For stores only**: rebuilds a user exactly as it was saved, checking none of the rules
    /// of registration and activation; to make a new user, use [`User::new`].
    #[must_use]
    pub fn restore(
        id: UserId,
        email: Email,
        password_hash: PasswordHash,
        created_at: SystemTime,
        status: UserStatus,
    ) -> Self {
        Self {
            id,
            email,
            password_hash,
            created_at,
            status,
        }
    }

    /// The user's id.
    #[must_use]
    pub fn id(&self) -> UserId {
        self.id
    }

    /// The user's address.
    #[must_use]
    pub fn email(&self) -> &Email {
        &self.email
    }

    /// The stored password hash.
    #[must_use]
    pub fn password_hash(&self) -> &PasswordHash {
        &self.password_hash
    }

    /// When the account was (last) registered.
    #[must_use]
    pub fn created_at(&self) -> SystemTime {
        self.created_at
    }

    /// Pending or active.
    #[must_use]
    pub fn status(&self) -> UserStatus {
        self.status
    }

    /// Whether the account has been activated.
    #[must_use]
    pub fn is_active(&self) -> bool {
        matches!(self.status, UserStatus::Active { .. })
    }

    /// Replaces the password hash (a re-hash with stronger parameters, or a takeover).
    pub fn set_password_hash(&mut self, hash: PasswordHash) {
        self.password_hash = hash;
    }

    pub(crate) fn register_again(&mut self, email: Email, hash: PasswordHash, now: SystemTime) {
        self.email = email;
        self.password_hash = hash;
        self.created_at = now;
    }

    pub(crate) fn activate(&mut self, now: SystemTime) {
        self.status = UserStatus::Active { activated_at: now };
    }
}

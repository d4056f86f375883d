//! Users: who registered, with which address and password, and whether they have activated.

use std::{fmt, time::SystemTime};

use uuid::Uuid;

use crate::{Email, PasswordHash};

/// A user's identity: a UUID (v7, so ids sort by creation time).
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

    /// Rebuilds a user from storage.
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

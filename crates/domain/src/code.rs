//! Activation codes: four digits sent by email, stored only as an HMAC, usable for a while
//! after the mail server accepted them, for a bounded number of wrong guesses.

use std::{
    fmt,
    time::{Duration, SystemTime},
};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// The four digits of a code, `0000` to `9999`. Never shown in `Debug` output.
///
/// ```
/// use registrar_domain::CodeDigits;
///
/// let code = CodeDigits::parse("0421")?;
/// assert_eq!(code.reveal(), "0421");
/// assert_eq!(format!("{code:?}"), "CodeDigits(****)");
/// assert_eq!(CodeDigits::from_value(421), Some(code));
/// # Ok::<(), registrar_domain::CodeFormatError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CodeDigits(u16);

/// The text is not exactly four ASCII digits.
///
/// ```
/// use registrar_domain::{CodeDigits, CodeFormatError};
///
/// assert_eq!(CodeDigits::parse("42a1"), Err(CodeFormatError));
/// assert_eq!(CodeDigits::parse(" 0421"), Err(CodeFormatError));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an activation code is exactly 4 digits, 0000 to 9999")]
pub struct CodeFormatError;

impl CodeDigits {
    /// Number of distinct codes.
    pub const COUNT: u16 = 10_000;

    /// The code with this value, if it is below 10 000 (how a random draw becomes a code).
    #[must_use]
    pub fn from_value(value: u16) -> Option<Self> {
        (value < Self::COUNT).then_some(Self(value))
    }

    /// Parses exactly four ASCII digits (no sign, no white space).
    pub fn parse(text: &str) -> Result<Self, CodeFormatError> {
        let bytes = text.as_bytes();
        if bytes.len() != 4 || !bytes.iter().all(u8::is_ascii_digit) {
            return Err(CodeFormatError);
        }
        Ok(Self(
            bytes
                .iter()
                .fold(0, |acc, b| acc * 10 + u16::from(b - b'0')),
        ))
    }

    /// The code as four digits, for the email that carries it.
    #[must_use]
    pub fn reveal(&self) -> String {
        format!("{:04}", self.0)
    }
}

impl fmt::Debug for CodeDigits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CodeDigits(****)")
    }
}

/// A code's identity.
///
/// ```
/// use registrar_domain::CodeId;
/// use uuid::Uuid;
///
/// let id = CodeId::from_uuid(Uuid::from_u128(1));
/// assert_eq!(id.as_uuid(), Uuid::from_u128(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CodeId(Uuid);

impl CodeId {
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

/// The server secret that keys code HMACs, so a copy of the database does not reveal codes.
///
/// ```
/// use registrar_domain::{CodeDigits, CodeId, CodeSecret};
///
/// let secret = CodeSecret::new(*b"a key of at least sixteen bytes")?;
/// let id = CodeId::from_uuid(uuid::Uuid::from_u128(1));
/// let digest = secret.digest(id, CodeDigits::parse("0421")?);
/// assert_eq!(digest, secret.digest(id, CodeDigits::parse("0421")?));
/// assert_ne!(digest, secret.digest(id, CodeDigits::parse("0422")?));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct CodeSecret(Vec<u8>);

/// The secret is too short to key an HMAC safely.
///
/// ```
/// use registrar_domain::{CodeSecret, CodeSecretError};
///
/// assert_eq!(CodeSecret::new(*b"too short").err(), Some(CodeSecretError));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the secret must be at least {min} bytes long", min = CodeSecret::MIN_LEN)]
pub struct CodeSecretError;

impl CodeSecret {
    /// Shortest secret accepted, in bytes.
    pub const MIN_LEN: usize = 16;

    /// Wraps secret key material.
    pub fn new(key: impl Into<Vec<u8>>) -> Result<Self, CodeSecretError> {
        let key = key.into();
        if key.len() < Self::MIN_LEN {
            return Err(CodeSecretError);
        }
        Ok(Self(key))
    }

    /// HMAC-SHA256 of the code, bound to the code's id so equal digits never give equal digests.
    #[must_use]
    pub fn digest(&self, id: CodeId, digits: CodeDigits) -> CodeDigest {
        // HMAC accepts keys of any length, so this cannot fail; the fallback keeps it total.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else {
            return CodeDigest([0; 32]);
        };
        mac.update(id.0.as_bytes());
        mac.update(&digits.0.to_be_bytes());
        CodeDigest(mac.finalize().into_bytes().into())
    }
}

impl fmt::Debug for CodeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CodeSecret(<redacted>)")
    }
}

/// The keyed digest a code is stored as. Compared in constant time; never shown in `Debug`.
///
/// ```
/// use registrar_domain::CodeDigest;
///
/// let digest = CodeDigest::from_bytes([7; 32]);
/// assert_eq!(digest.as_bytes(), &[7; 32]);
/// assert_eq!(format!("{digest:?}"), "CodeDigest(<redacted>)");
/// ```
#[derive(Clone, Copy, Eq)]
pub struct CodeDigest([u8; 32]);

impl CodeDigest {
    /// Rebuilds a digest from storage.
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The digest's bytes, for storage.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl PartialEq for CodeDigest {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for CodeDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CodeDigest(<redacted>)")
    }
}

/// Why a code can no longer be used.
///
/// ```
/// # use std::time::{Duration, SystemTime};
/// # use registrar_domain::*;
/// # let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
/// # let id = CodeId::from_uuid(uuid::Uuid::from_u128(1));
/// # let digest = CodeDigest::from_bytes([0; 32]);
/// let died = ActivationCode::restore(id, digest, t0, Some(t0), 5, CodeState::Dead(CodeDeath::TooManyAttempts));
/// assert_eq!(died.status(t0, Duration::from_secs(60)), CodeStatus::Dead(CodeDeath::TooManyAttempts));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodeDeath {
    /// A newer code was issued.
    Replaced,
    /// Too many wrong attempts.
    TooManyAttempts,
    /// The email carrying it could not be delivered.
    Undeliverable,
}

/// The stored state of a code.
///
/// ```
/// # use std::time::{Duration, SystemTime};
/// # use registrar_domain::*;
/// # let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
/// # let id = CodeId::from_uuid(uuid::Uuid::from_u128(1));
/// # let digest = CodeDigest::from_bytes([0; 32]);
/// let used = ActivationCode::restore(id, digest, t0, Some(t0), 0, CodeState::Used);
/// assert_eq!(used.state(), CodeState::Used);
/// assert_eq!(used.status(t0, Duration::from_secs(60)), CodeStatus::Used);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodeState {
    /// Can still be used (once delivered and while not expired).
    Live,
    /// Activated the account.
    Used,
    /// Can never be used.
    Dead(CodeDeath),
}

/// What a code is good for at a given moment.
///
/// ```
/// # use std::time::{Duration, SystemTime};
/// # use registrar_domain::*;
/// # let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
/// # let id = CodeId::from_uuid(uuid::Uuid::from_u128(1));
/// # let digest = CodeDigest::from_bytes([0; 32]);
/// let ttl = Duration::from_secs(60);
/// let mut code = ActivationCode::restore(id, digest, t0, None, 0, CodeState::Live);
/// assert_eq!(code.status(t0, ttl), CodeStatus::AwaitingDelivery);
/// code.mark_delivered(t0);
/// let expires_at = t0 + ttl;
/// assert_eq!(code.status(t0, ttl), CodeStatus::Usable { expires_at });
/// assert!(code.status(t0, ttl).holds_address());
/// assert_eq!(code.status(expires_at, ttl), CodeStatus::Expired);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeStatus {
    /// The mail server has not accepted its email yet: not usable, but not expired either.
    AwaitingDelivery,
    /// Usable until the given time.
    Usable {
        /// The first moment it is no longer usable.
        expires_at: SystemTime,
    },
    /// Its time ran out.
    Expired,
    /// It activated the account.
    Used,
    /// It died.
    Dead(CodeDeath),
}

impl CodeStatus {
    /// Whether the code still holds the address: usable now, or about to be once delivered.
    #[must_use]
    pub fn holds_address(&self) -> bool {
        matches!(self, Self::AwaitingDelivery | Self::Usable { .. })
    }
}

/// An activation code as stored: its digest, when it was issued and delivered, and how many
/// wrong guesses it has taken.
///
/// ```
/// # use std::time::{Duration, SystemTime};
/// # use registrar_domain::*;
/// # let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
/// # let id = CodeId::from_uuid(uuid::Uuid::from_u128(1));
/// # let digest = CodeDigest::from_bytes([0; 32]);
/// let code = ActivationCode::restore(id, digest, t0, Some(t0), 2, CodeState::Live);
/// assert_eq!((code.id(), code.wrong_attempts(), code.delivered_at()), (id, 2, Some(t0)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationCode {
    id: CodeId,
    digest: CodeDigest,
    issued_at: SystemTime,
    delivered_at: Option<SystemTime>,
    wrong_attempts: u32,
    state: CodeState,
}

impl ActivationCode {
    pub(crate) fn issue(id: CodeId, digest: CodeDigest, now: SystemTime) -> Self {
        Self {
            id,
            digest,
            issued_at: now,
            delivered_at: None,
            wrong_attempts: 0,
            state: CodeState::Live,
        }
    }

    /// **For stores only**: rebuilds a code exactly as it was saved, checking none of the rules
    /// the account keeps; new codes come from [`Account::register`](crate::Account::register)
    /// and [`Account::issue_code`](crate::Account::issue_code).
    #[must_use]
    pub fn restore(
        id: CodeId,
        digest: CodeDigest,
        issued_at: SystemTime,
        delivered_at: Option<SystemTime>,
        wrong_attempts: u32,
        state: CodeState,
    ) -> Self {
        Self {
            id,
            digest,
            issued_at,
            delivered_at,
            wrong_attempts,
            state,
        }
    }

    /// The code's id.
    #[must_use]
    pub fn id(&self) -> CodeId {
        self.id
    }

    /// The stored digest.
    #[must_use]
    pub fn digest(&self) -> CodeDigest {
        self.digest
    }

    /// When it was issued.
    #[must_use]
    pub fn issued_at(&self) -> SystemTime {
        self.issued_at
    }

    /// When the mail server accepted its email, if it has.
    #[must_use]
    pub fn delivered_at(&self) -> Option<SystemTime> {
        self.delivered_at
    }

    /// Wrong guesses so far.
    #[must_use]
    pub fn wrong_attempts(&self) -> u32 {
        self.wrong_attempts
    }

    /// Live, used or dead.
    #[must_use]
    pub fn state(&self) -> CodeState {
        self.state
    }

    /// What the code is good for at `now`, given how long codes live after delivery.
    #[must_use]
    pub fn status(&self, now: SystemTime, ttl: Duration) -> CodeStatus {
        match (self.state, self.delivered_at) {
            (CodeState::Used, _) => CodeStatus::Used,
            (CodeState::Dead(cause), _) => CodeStatus::Dead(cause),
            (CodeState::Live, None) => CodeStatus::AwaitingDelivery,
            (CodeState::Live, Some(delivered_at)) => {
                let expires_at = delivered_at + ttl;
                if now < expires_at {
                    CodeStatus::Usable { expires_at }
                } else {
                    CodeStatus::Expired
                }
            }
        }
    }

    /// Records that the mail server accepted the email at `at`; the code's lifetime starts then.
    /// A code that died meanwhile stays dead, and a second acceptance (at-least-once delivery)
    /// does not extend the first.
    pub fn mark_delivered(&mut self, at: SystemTime) {
        if self.state == CodeState::Live && self.delivered_at.is_none() {
            self.delivered_at = Some(at);
        }
    }

    /// Kills the code: its email could not be delivered.
    pub fn mark_undeliverable(&mut self) {
        if self.state == CodeState::Live {
            self.state = CodeState::Dead(CodeDeath::Undeliverable);
        }
    }

    pub(crate) fn kill(&mut self, cause: CodeDeath) {
        if self.state == CodeState::Live {
            self.state = CodeState::Dead(cause);
        }
    }

    pub(crate) fn use_up(&mut self) {
        self.state = CodeState::Used;
    }

    /// Counts a wrong attempt; returns how many remain, killing the code at the limit.
    pub(crate) fn count_wrong_attempt(&mut self, max_attempts: u32) -> u32 {
        self.wrong_attempts = self.wrong_attempts.saturating_add(1);
        let remaining = max_attempts.saturating_sub(self.wrong_attempts);
        if remaining == 0 {
            self.kill(CodeDeath::TooManyAttempts);
        }
        remaining
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secret() -> CodeSecret {
        CodeSecret::new(*b"0123456789abcdef0123456789abcdef").unwrap()
    }

    #[test]
    fn digits_parse_exactly_four_ascii_digits() {
        assert_eq!(CodeDigits::parse("0421").unwrap().reveal(), "0421");
        assert_eq!(CodeDigits::parse("0000").unwrap().reveal(), "0000");
        assert_eq!(CodeDigits::parse("9999").unwrap().reveal(), "9999");
        for bad in [
            "", "421", "04210", " 0421", "0421 ", "+421", "-421", "04a1", "٠٤٢١", "0x21",
        ] {
            assert_eq!(CodeDigits::parse(bad), Err(CodeFormatError), "{bad:?}");
        }
    }

    #[test]
    fn digits_come_from_values_below_ten_thousand() {
        assert_eq!(CodeDigits::from_value(7).unwrap().reveal(), "0007");
        assert!(CodeDigits::from_value(9_999).is_some());
        assert!(CodeDigits::from_value(10_000).is_none());
    }

    #[test]
    fn digests_depend_on_key_id_and_digits() {
        let id = CodeId::from_uuid(Uuid::from_u128(1));
        let other_id = CodeId::from_uuid(Uuid::from_u128(2));
        let code = CodeDigits::parse("1234").unwrap();
        let digest = secret().digest(id, code);
        assert_eq!(digest, secret().digest(id, code));
        assert_ne!(digest, secret().digest(other_id, code));
        assert_ne!(
            digest,
            secret().digest(id, CodeDigits::parse("1235").unwrap())
        );
        let other_key = CodeSecret::new(*b"another secret key of 32 bytes!!").unwrap();
        assert_ne!(digest, other_key.digest(id, code));
    }

    #[test]
    fn digests_are_hmac_sha256_of_the_id_then_the_digits_big_endian() {
        // Stored digests must still match after an upgrade of the HMAC crates: this is
        // HMAC-SHA256(key, 16 bytes of the UUID, then 1234 as two bytes big-endian).
        let digest = secret().digest(
            CodeId::from_uuid(Uuid::from_u128(1)),
            CodeDigits::parse("1234").unwrap(),
        );
        assert_eq!(
            digest.as_bytes(),
            &[
                0x14, 0xe9, 0xfa, 0xc0, 0x22, 0xf5, 0xca, 0x1f, 0xb5, 0xbf, 0x93, 0x80, 0x78, 0x00,
                0x11, 0x44, 0x5a, 0x7b, 0x72, 0x38, 0xc6, 0x3e, 0x8f, 0x09, 0xe1, 0x45, 0x39, 0xab,
                0xa8, 0x9c, 0x05, 0xae
            ]
        );
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(CodeSecret::new(*b"short").is_err());
    }

    #[test]
    fn codes_and_digests_do_not_show_in_debug_output() {
        let code = CodeDigits::parse("4321").unwrap();
        assert!(!format!("{code:?}").contains("4321"));
        let digest = secret().digest(CodeId::from_uuid(Uuid::nil()), code);
        assert_eq!(format!("{digest:?}"), "CodeDigest(<redacted>)");
    }

    #[test]
    fn a_code_is_usable_for_its_ttl_from_delivery_only() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ttl = Duration::from_mins(1);
        let mut code = ActivationCode::issue(
            CodeId::from_uuid(Uuid::nil()),
            secret().digest(
                CodeId::from_uuid(Uuid::nil()),
                CodeDigits::parse("0001").unwrap(),
            ),
            t0,
        );
        assert_eq!(
            code.status(t0 + Duration::from_hours(1), ttl),
            CodeStatus::AwaitingDelivery
        );
        let delivered = t0 + Duration::from_secs(10);
        code.mark_delivered(delivered);
        code.mark_delivered(delivered + Duration::from_secs(30));
        assert_eq!(
            code.status(delivered + Duration::from_secs(59), ttl),
            CodeStatus::Usable {
                expires_at: delivered + ttl
            }
        );
        assert_eq!(code.status(delivered + ttl, ttl), CodeStatus::Expired);
    }

    proptest! {
        #[test]
        fn every_value_round_trips_through_text(value in 0u16..10_000) {
            let digits = CodeDigits::from_value(value).unwrap();
            prop_assert_eq!(CodeDigits::parse(&digits.reveal()), Ok(digits));
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,8}") {
            let _ = CodeDigits::parse(&text);
        }
    }
}

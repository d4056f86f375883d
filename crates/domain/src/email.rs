//! Email addresses: parsed once, stored trimmed with the domain lower-cased, compared
//! case-insensitively.

use std::fmt;

/// Longest local part (RFC 5321 §4.5.3.1.1).
const MAX_LOCAL_LEN: usize = 64;
/// Longest domain label (RFC 1035 §2.3.4).
const MAX_LABEL_LEN: usize = 63;

/// A syntactically valid email address.
///
/// The address is stored trimmed, with its domain lower-cased; the local part keeps its case for
/// display. Two addresses that differ only in case are the same account: [`Email::key`] is the
/// value uniqueness is decided on.
///
/// Accepted: an RFC 5321 dot-atom local part (ASCII letters, digits and
/// ``!#$%&'*+-/=?^_`{|}~``, dots between atoms) and a DNS host name with at least two labels.
/// Quoted local parts, address literals and non-ASCII addresses are refused.
///
/// ```
/// use registrar_domain::Email;
///
/// let email = Email::parse(" Ada@Example.COM ")?;
/// assert_eq!(email.as_str(), "Ada@example.com");
/// assert_eq!((email.local_part(), email.domain()), ("Ada", "example.com"));
/// assert_eq!(email.key(), Email::parse("ada@EXAMPLE.com")?.key());
/// # Ok::<(), registrar_domain::EmailError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Email {
    address: String,
    at: usize,
}

/// Why a string is not an [`Email`].
///
/// ```
/// use registrar_domain::{Email, EmailError};
///
/// assert_eq!(Email::parse("ada.example.com"), Err(EmailError::NotOneAt));
/// assert_eq!(Email::parse("   "), Err(EmailError::Empty));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EmailError {
    /// Nothing but white space.
    #[error("the email address is empty")]
    Empty,
    /// Longer than 254 characters.
    #[error("the email address is longer than {max} characters", max = Email::MAX_LEN)]
    TooLong,
    /// No `@`, or more than one.
    #[error("the email address must contain exactly one '@'")]
    NotOneAt,
    /// The part before the `@` is empty, too long or has characters that are not allowed.
    #[error("the part before '@' is not valid: {0}")]
    LocalPart(&'static str),
    /// The part after the `@` is not a host name like `example.com`.
    #[error("the part after '@' is not a valid domain: {0}")]
    Domain(&'static str),
}

impl Email {
    /// Longest address accepted, in octets (RFC 5321's 256-octet path minus the angle brackets).
    pub const MAX_LEN: usize = 254;

    /// Parses an address, trimming surrounding white space and lower-casing the domain.
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(EmailError::Empty);
        }
        if trimmed.len() > Self::MAX_LEN {
            return Err(EmailError::TooLong);
        }
        let mut parts = trimmed.split('@');
        let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(EmailError::NotOneAt);
        };
        check_local_part(local)?;
        check_domain(domain)?;
        let address = format!("{local}@{}", domain.to_ascii_lowercase());
        Ok(Self {
            at: local.len(),
            address,
        })
    }

    /// The address as stored: trimmed, domain lower-cased.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.address
    }

    /// The part before the `@`, as given.
    #[must_use]
    pub fn local_part(&self) -> &str {
        &self.address[..self.at]
    }

    /// The domain, lower-cased.
    #[must_use]
    pub fn domain(&self) -> &str {
        &self.address[self.at + 1..]
    }

    /// The case-insensitive identity of the address: two emails with the same key are the
    /// same account.
    #[must_use]
    pub fn key(&self) -> String {
        self.address.to_ascii_lowercase()
    }
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
}

fn check_local_part(local: &str) -> Result<(), EmailError> {
    if local.is_empty() {
        return Err(EmailError::LocalPart("it is empty"));
    }
    if local.len() > MAX_LOCAL_LEN {
        return Err(EmailError::LocalPart("it is longer than 64 characters"));
    }
    if local.split('.').any(str::is_empty) {
        return Err(EmailError::LocalPart(
            "dots may not start or end it, nor stand next to each other",
        ));
    }
    if !local.chars().all(|c| c == '.' || is_atext(c)) {
        return Err(EmailError::LocalPart(
            "it may only hold letters, digits and !#$%&'*+-/=?^_`{|}~.",
        ));
    }
    Ok(())
}

fn check_domain(domain: &str) -> Result<(), EmailError> {
    if domain.is_empty() {
        return Err(EmailError::Domain("it is empty"));
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return Err(EmailError::Domain(
            "it needs at least one dot, as in example.com",
        ));
    }
    for label in &labels {
        if label.is_empty() || label.len() > MAX_LABEL_LEN {
            return Err(EmailError::Domain(
                "each dot-separated part must be 1 to 63 characters long",
            ));
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(EmailError::Domain(
                "it may only hold letters, digits, hyphens and dots",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(EmailError::Domain(
                "a part may not start or end with a hyphen",
            ));
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(EmailError::Domain("the last part may not be all digits"));
    }
    Ok(())
}

impl AsRef<str> for Email {
    fn as_ref(&self) -> &str {
        &self.address
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.address)
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Email").field(&self.address).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_trims_and_lower_cases_the_domain_only() {
        let email = Email::parse("  Ada.Lovelace@Example.COM\n").unwrap();
        assert_eq!(email.as_str(), "Ada.Lovelace@example.com");
        assert_eq!(email.local_part(), "Ada.Lovelace");
        assert_eq!(email.domain(), "example.com");
        assert_eq!(email.key(), "ada.lovelace@example.com");
    }

    #[test]
    fn emails_differing_only_in_case_share_a_key() {
        let a = Email::parse("Ada@Example.com").unwrap();
        let b = Email::parse("ada@example.COM").unwrap();
        assert_eq!(a.key(), b.key());
    }

    #[test]
    fn parse_accepts_common_real_addresses() {
        for ok in [
            "a@b.co",
            "first.last+tag@sub.example.org",
            "o'brien@example.ie",
            "x_y-z@ex-ample.com",
            "1234@example.com",
        ] {
            assert!(Email::parse(ok).is_ok(), "{ok} should parse");
        }
    }

    #[test]
    fn parse_refuses_malformed_addresses() {
        for (bad, want) in [
            ("", EmailError::Empty),
            ("   ", EmailError::Empty),
            ("plainaddress", EmailError::NotOneAt),
            ("a@b@example.com", EmailError::NotOneAt),
        ] {
            assert_eq!(Email::parse(bad), Err(want), "{bad:?}");
        }
        for bad in [
            "@example.com",
            ".ada@example.com",
            "ada.@example.com",
            "a..b@example.com",
            "ada lovelace@example.com",
            "ada@",
            "ada@localhost",
            "ada@example..com",
            "ada@-example.com",
            "ada@example.com.",
            "ada@[127.0.0.1]",
            "ada@1.2.3.4",
            "adä@example.com",
            "ada@exämple.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn parse_enforces_rfc_5321_lengths() {
        let local64 = "a".repeat(64);
        assert!(Email::parse(&format!("{local64}@example.com")).is_ok());
        assert!(matches!(
            Email::parse(&format!("{local64}a@example.com")),
            Err(EmailError::LocalPart(_))
        ));
        let label63 = "b".repeat(63);
        assert!(Email::parse(&format!("a@{label63}.com")).is_ok());
        assert!(Email::parse(&format!("a@{label63}b.com")).is_err());
        // 254 is the most: 64 + 1 + 189.
        let domain = format!(
            "{}.{}.{}.com",
            "c".repeat(61),
            "d".repeat(61),
            "e".repeat(61)
        );
        let at_limit = format!("{local64}@{domain}");
        assert_eq!(at_limit.len(), 254);
        assert!(Email::parse(&at_limit).is_ok());
        assert_eq!(
            Email::parse(&format!("{local64}@x{domain}")),
            Err(EmailError::TooLong)
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(raw in "\\PC{0,300}") {
            let _ = Email::parse(&raw);
        }

        #[test]
        fn parsing_is_idempotent(
            local in "[a-zA-Z0-9+_-]{1,20}(\\.[a-zA-Z0-9]{1,10}){0,2}",
            domain in "[a-zA-Z0-9]{1,20}\\.[a-zA-Z]{2,6}",
        ) {
            let first = Email::parse(&format!(" {local}@{domain} ")).unwrap();
            let second = Email::parse(first.as_str()).unwrap();
            prop_assert_eq!(&first, &second);
            prop_assert_eq!(first.local_part(), local.as_str());
            prop_assert_eq!(first.domain(), domain.to_ascii_lowercase());
        }

        #[test]
        fn a_parsed_address_is_never_longer_than_254(raw in "[a-z]{1,70}@[a-z]{1,70}\\.[a-z]{1,70}\\.[a-z]{2,70}") {
            if let Ok(email) = Email::parse(&raw) {
                prop_assert!(email.as_str().len() <= Email::MAX_LEN);
            }
        }
    }
}

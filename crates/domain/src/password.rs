//! Passwords: NFKC-normalised secrets, the registration policy they must meet, and their
//! stored hashes.

use std::fmt;

use unicode_normalization::UnicodeNormalization;

use crate::Email;

/// A password as typed, NFKC-normalised. Its value never appears in `Debug` output.
///
/// ```
/// use registrar_domain::Password;
///
/// // NFKC: the "ﬁ" ligature is typed as "fi".
/// let password = Password::new("ﬁsh and chips");
/// assert_eq!(password.expose(), "fish and chips");
/// assert_eq!(format!("{password:?}"), "Password(<redacted>)");
/// ```
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Normalises a password (NFKC), the form it is hashed and compared in.
    #[must_use]
    pub fn new(raw: &str) -> Self {
        Self(raw.nfkc().collect())
    }

    /// The normalised password, for the hasher.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn length(&self) -> usize {
        self.0.chars().count()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// What a new password must meet: its length in Unicode scalar values after NFKC, and the
/// least zxcvbn score (0–4) it must reach.
///
/// ```
/// use registrar_domain::PasswordPolicy;
///
/// assert_eq!(PasswordPolicy::default().min_score(), 3);
/// assert_eq!(PasswordPolicy::with_min_score(9).min_score(), 4);
/// assert_eq!((PasswordPolicy::MIN_LEN, PasswordPolicy::MAX_LEN), (8, 128));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordPolicy {
    min_len: usize,
    max_len: usize,
    min_score: u8,
}

impl PasswordPolicy {
    /// The fewest characters a new password may have.
    pub const MIN_LEN: usize = 8;
    /// The most characters a new password may have.
    pub const MAX_LEN: usize = 128;

    /// The contract's policy with a custom least zxcvbn score (clamped to 0–4).
    #[must_use]
    pub fn with_min_score(min_score: u8) -> Self {
        Self {
            min_score: min_score.min(4),
            ..Self::default()
        }
    }

    /// The least zxcvbn score accepted.
    #[must_use]
    pub fn min_score(&self) -> u8 {
        self.min_score
    }
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_len: Self::MIN_LEN,
            max_len: Self::MAX_LEN,
            min_score: 3,
        }
    }
}

/// One reason a new password was refused.
///
/// ```
/// use registrar_domain::{NewPassword, PasswordPolicy, PasswordProblem};
///
/// let Err(rejected) = NewPassword::parse("short", None, &PasswordPolicy::default()) else {
///     unreachable!("five characters are too few");
/// };
/// assert!(rejected.0.contains(&PasswordProblem::TooShort { min: 8 }));
/// assert_eq!(PasswordProblem::TooShort { min: 8 }.code(), "too_short");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PasswordProblem {
    /// Fewer characters than the policy asks for.
    TooShort {
        /// The least length.
        min: usize,
    },
    /// More characters than the policy allows.
    TooLong {
        /// The greatest length.
        max: usize,
    },
    /// Easy to guess, according to zxcvbn.
    TooWeak {
        /// zxcvbn's warning, when it has one.
        warning: Option<String>,
        /// zxcvbn's suggestions.
        suggestions: Vec<String>,
    },
    /// Contains the part of the email address before the `@`.
    ContainsEmail,
}

impl PasswordProblem {
    /// A stable, machine-readable name for the problem.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooShort { .. } => "too_short",
            Self::TooLong { .. } => "too_long",
            Self::TooWeak { .. } => "too_weak",
            Self::ContainsEmail => "contains_email",
        }
    }
}

impl fmt::Display for PasswordProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort { min } => {
                write!(f, "the password must be at least {min} characters long")
            }
            Self::TooLong { max } => {
                write!(f, "the password must be at most {max} characters long")
            }
            Self::TooWeak {
                warning,
                suggestions,
            } => {
                f.write_str("the password is too easy to guess")?;
                if let Some(warning) = warning {
                    write!(f, ": {}", warning.trim_end_matches('.'))?;
                }
                f.write_str(".")?;
                for suggestion in suggestions {
                    write!(f, " {suggestion}")?;
                }
                Ok(())
            }
            Self::ContainsEmail => {
                f.write_str("the password must not contain the part of the email before '@'")
            }
        }
    }
}

/// A new password was refused; it lists every problem found, not just the first.
///
/// ```
/// use registrar_domain::{Email, NewPassword, PasswordPolicy, PasswordProblem};
///
/// let email = Email::parse("ada.lovelace@example.com")?;
/// let Err(rejected) = NewPassword::parse("ada.lovelace", Some(&email), &PasswordPolicy::default()) else {
///     unreachable!("the address's own name is refused");
/// };
/// assert!(rejected.0.contains(&PasswordProblem::ContainsEmail));
/// # Ok::<(), registrar_domain::EmailError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the password was refused: {} problem(s)", .0.len())]
pub struct PasswordRejected(pub Vec<PasswordProblem>);

/// A password that meets the [`PasswordPolicy`]: the only kind an account can be created with.
///
/// ```
/// use registrar_domain::{NewPassword, PasswordPolicy};
///
/// let accepted = NewPassword::parse("correct horse battery staple", None, &PasswordPolicy::default())?;
/// assert_eq!(accepted.into_password().expose(), "correct horse battery staple");
/// # Ok::<(), registrar_domain::PasswordRejected>(())
/// ```
#[derive(Clone)]
pub struct NewPassword(Password);

impl NewPassword {
    /// Normalises `raw` and checks it against `policy`.
    ///
    /// `email` is the address being registered, when it parsed: the password may not contain its
    /// local part (case-insensitively, for local parts of 4 or more characters), and zxcvbn is
    /// told about it so that passwords built from it score low.
    pub fn parse(
        raw: &str,
        email: Option<&Email>,
        policy: &PasswordPolicy,
    ) -> Result<Self, PasswordRejected> {
        let password = Password::new(raw);
        let length = password.length();
        let mut problems = Vec::new();
        if length < policy.min_len {
            problems.push(PasswordProblem::TooShort {
                min: policy.min_len,
            });
        }
        if length > policy.max_len {
            problems.push(PasswordProblem::TooLong {
                max: policy.max_len,
            });
        }
        let local = email.map(Email::local_part);
        if let Some(local) = local.filter(|l| l.chars().count() >= 4)
            && password
                .expose()
                .to_lowercase()
                .contains(&local.to_lowercase())
        {
            problems.push(PasswordProblem::ContainsEmail);
        }
        // zxcvbn's cost grows with length: a password already refused for its length is not
        // scored, nor any password when no score would be refused.
        if length <= policy.max_len && policy.min_score > 0 {
            let mut hints = vec!["registrar"];
            if let Some(email) = email {
                hints.push(email.local_part());
                hints.extend(email.domain().split('.'));
            }
            let estimate = zxcvbn::zxcvbn(password.expose(), &hints);
            if u8::from(estimate.score()) < policy.min_score {
                let feedback = estimate.feedback();
                problems.push(PasswordProblem::TooWeak {
                    warning: feedback
                        .and_then(zxcvbn::feedback::Feedback::warning)
                        .map(|warning| warning.to_string()),
                    suggestions: feedback
                        .map(|f| f.suggestions().iter().map(ToString::to_string).collect())
                        .unwrap_or_default(),
                });
            }
        }
        if problems.is_empty() {
            Ok(Self(password))
        } else {
            Err(PasswordRejected(problems))
        }
    }

    /// The accepted password, for hashing.
    #[must_use]
    pub fn into_password(self) -> Password {
        self.0
    }
}

impl fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewPassword(<redacted>)")
    }
}

/// A password hash in the PHC string format (`$argon2id$v=19$m=…`). Never shown in `Debug`.
///
/// ```
/// use registrar_domain::PasswordHash;
///
/// let phc = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
/// let hash = PasswordHash::from_phc(phc.into())?;
/// assert_eq!(hash.as_str(), phc);
/// # Ok::<(), registrar_domain::PasswordHashError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

/// The string is not a PHC hash string.
///
/// ```
/// use registrar_domain::{PasswordHash, PasswordHashError};
///
/// assert_eq!(PasswordHash::from_phc("hunter2".into()).err(), Some(PasswordHashError));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a PHC password hash string")]
pub struct PasswordHashError;

impl PasswordHash {
    /// Wraps a PHC string, checking only its outline: the hasher checks the rest.
    pub fn from_phc(phc: String) -> Result<Self, PasswordHashError> {
        if phc.starts_with('$') && phc.len() > 1 && !phc.contains(char::is_whitespace) {
            Ok(Self(phc))
        } else {
            Err(PasswordHashError)
        }
    }

    /// The PHC string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STRONG: &str = "correct horse battery staple";

    fn problems(raw: &str, email: &str) -> Vec<&'static str> {
        let email = Email::parse(email).unwrap();
        match NewPassword::parse(raw, Some(&email), &PasswordPolicy::default()) {
            Ok(_) => vec![],
            Err(PasswordRejected(problems)) => problems.iter().map(PasswordProblem::code).collect(),
        }
    }

    #[test]
    fn a_strong_password_is_accepted() {
        assert!(problems(STRONG, "ada@example.com").is_empty());
    }

    #[test]
    fn length_counts_unicode_scalars_after_nfkc() {
        // Eight characters of 2 to 4 bytes each are still eight characters.
        assert!(!problems("ÄäÖöÜüßé", "ada@example.com").contains(&"too_short"));
        assert!(problems("ÄäÖöÜüß", "ada@example.com").contains(&"too_short"));
        // NFKC turns the ligature "ﬃ" (1 char) into "ffi" (3 chars).
        assert!(!problems("ﬃﬃﬃ", "ada@example.com").contains(&"too_short"));
        assert_eq!(Password::new("ﬃ").expose(), "ffi");
    }

    #[test]
    fn length_bounds_are_8_and_128() {
        let long_ok: String = STRONG.chars().cycle().take(128).collect();
        assert!(!problems(&long_ok, "ada@example.com").contains(&"too_long"));
        let too_long: String = STRONG.chars().cycle().take(129).collect();
        assert_eq!(problems(&too_long, "ada@example.com"), vec!["too_long"]);
    }

    #[test]
    fn common_passwords_are_too_weak() {
        for weak in ["password", "12345678", "qwertyuiop", "iloveyou1"] {
            assert!(
                problems(weak, "ada@example.com").contains(&"too_weak"),
                "{weak}"
            );
        }
    }

    #[test]
    fn a_policy_of_score_zero_refuses_no_weak_password_but_still_the_rest() {
        let email = Email::parse("lovelac@example.com").unwrap();
        let policy = PasswordPolicy::with_min_score(0);
        assert!(NewPassword::parse("password", Some(&email), &policy).is_ok());
        let Err(PasswordRejected(problems)) = NewPassword::parse("lovelac", Some(&email), &policy)
        else {
            panic!("a short password holding the local part was accepted");
        };
        assert_eq!(
            problems
                .iter()
                .map(PasswordProblem::code)
                .collect::<Vec<_>>(),
            vec!["too_short", "contains_email"]
        );
    }

    #[test]
    fn the_email_local_part_is_refused_case_insensitively() {
        assert!(
            problems("Xq7#mLovelace-Zebra-Canoe", "lovelace@example.com")
                .contains(&"contains_email")
        );
        // Local parts shorter than four characters are not checked.
        assert!(
            !problems("adaxq7#mZebra-Canoe-Fjord", "ada@example.com").contains(&"contains_email")
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        assert_eq!(
            problems("lovelac", "lovelac@example.com"),
            vec!["too_short", "contains_email", "too_weak"]
        );
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let password = Password::new("hunter2-secret");
        assert!(!format!("{password:?}").contains("hunter2"));
        let hash =
            PasswordHash::from_phc("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()).unwrap();
        assert!(!format!("{hash:?}").contains("argon2id"));
    }

    #[test]
    fn phc_outline_is_checked() {
        assert!(PasswordHash::from_phc(String::new()).is_err());
        assert!(PasswordHash::from_phc("plain".into()).is_err());
        assert!(PasswordHash::from_phc("$argon2id$ x".into()).is_err());
    }

    proptest! {
        // zxcvbn takes milliseconds per long password: fewer cases keep the suite quick.
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn parse_never_panics_and_reports_length_right(raw in "\\PC{0,200}") {
            let result = NewPassword::parse(&raw, None, &PasswordPolicy::default());
            let len = Password::new(&raw).length();
            if let Err(PasswordRejected(problems)) = &result {
                prop_assert_eq!(problems.contains(&PasswordProblem::TooShort { min: 8 }), len < 8);
                prop_assert_eq!(problems.contains(&PasswordProblem::TooLong { max: 128 }), len > 128);
            } else {
                prop_assert!((8..=128).contains(&len));
            }
        }

        #[test]
        fn normalisation_is_idempotent(raw in "\\PC{0,64}") {
            let once = Password::new(&raw);
            let twice = Password::new(once.expose());
            prop_assert_eq!(twice.expose(), once.expose());
        }
    }
}

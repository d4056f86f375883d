//! Request and response bodies, and their conversion to and from domain types. Request fields
//! are all optional so that a missing member and a JSON `null` are both reported as `required`
//! (422), while a value of the wrong JSON type is a malformed request (400).

use std::time::SystemTime;

use paperclip::actix::Apiv2Schema;
use registrar_application::Registration;
use registrar_domain::{
    CodeDigits, CodeIssued, Email, EmailError, NewPassword, PasswordPolicy, PasswordRejected, User,
    UserStatus,
};
use serde::{Deserialize, Serialize};

use crate::{ApiError, error::FieldError};

/// Registration: an email address and a password.
#[derive(Debug, Deserialize, Apiv2Schema)]
pub(crate) struct RegisterUserBody {
    /// The address to register; at most 254 characters; stored trimmed with the domain lower-cased.
    email: Option<String>,
    /// 8 to 128 characters after NFKC normalisation; must not be easy to guess (zxcvbn score 3
    /// or more by default) nor contain the part of the email before '@'.
    password: Option<String>,
}

fn required(field: &str) -> FieldError {
    FieldError::new(field, "required", format_args!("`{field}` is required"))
}

impl RegisterUserBody {
    /// Parses the body into a registration, reporting every field's problems at once.
    pub(crate) fn try_into_domain(self, policy: &PasswordPolicy) -> Result<Registration, ApiError> {
        let mut errors = Vec::new();
        let email = match self.email.as_deref().map(Email::parse) {
            None => {
                errors.push(required("email"));
                None
            }
            Some(Ok(email)) => Some(email),
            Some(Err(error)) => {
                let code = if error == EmailError::TooLong {
                    "too_long"
                } else {
                    "invalid"
                };
                errors.push(FieldError::new("email", code, error));
                None
            }
        };
        let password = match self.password.as_deref() {
            None => {
                errors.push(required("password"));
                None
            }
            Some(raw) => match NewPassword::parse(raw, email.as_ref(), policy) {
                Ok(password) => Some(password),
                Err(PasswordRejected(problems)) => {
                    errors.extend(
                        problems
                            .iter()
                            .map(|problem| FieldError::new("password", problem.code(), problem)),
                    );
                    None
                }
            },
        };
        match (email, password) {
            (Some(email), Some(password)) if errors.is_empty() => {
                Ok(Registration::new(email, password))
            }
            _ => Err(ApiError::Validation(errors)),
        }
    }
}

/// An activation attempt.
#[derive(Debug, Deserialize, Apiv2Schema)]
pub(crate) struct ActivationBody {
    /// The 4-digit code from the activation email, as a string: exactly four ASCII digits.
    code: Option<String>,
}

impl ActivationBody {
    /// Parses the code: exactly four ASCII digits.
    pub(crate) fn try_into_code(self) -> Result<CodeDigits, ApiError> {
        let Some(code) = self.code else {
            return Err(ApiError::Validation(vec![required("code")]));
        };
        CodeDigits::parse(&code).map_err(|error| {
            ApiError::Validation(vec![FieldError::new("code", "invalid_format", error)])
        })
    }
}

/// Whether the account is activated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Apiv2Schema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum StatusBody {
    /// Registered, not yet activated.
    Pending,
    /// Activated.
    Active,
}

/// A user account.
#[derive(Debug, Serialize, Apiv2Schema)]
pub(crate) struct UserBody {
    /// The account's id (UUID v7).
    id: String,
    /// The address, trimmed, with the domain lower-cased.
    email: String,
    /// `pending` until activated, then `active`.
    status: StatusBody,
    /// When the account was registered (RFC 3339, UTC).
    created_at: String,
    /// When the account was activated (RFC 3339, UTC), or null.
    activated_at: Option<String>,
}

/// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-21T15:40:00.123Z`.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

impl From<&User> for UserBody {
    fn from(user: &User) -> Self {
        let (status, activated_at) = match user.status() {
            UserStatus::Pending => (StatusBody::Pending, None),
            UserStatus::Active { activated_at } => {
                (StatusBody::Active, Some(rfc3339(activated_at)))
            }
        };
        Self {
            id: user.id().to_string(),
            email: user.email().to_string(),
            status,
            created_at: rfc3339(user.created_at()),
            activated_at,
        }
    }
}

/// A new code is on its way.
#[derive(Debug, Serialize, Apiv2Schema)]
pub(crate) struct CodeIssuedBody {
    /// How long the code stays usable once its email has been accepted by the mail server.
    expires_in_seconds: u64,
    /// How long until another code may be requested.
    resend_after_seconds: u64,
}

impl From<CodeIssued> for CodeIssuedBody {
    fn from(issued: CodeIssued) -> Self {
        Self {
            expires_in_seconds: issued.expires_in.as_secs(),
            resend_after_seconds: issued.resend_after.as_secs()
                + u64::from(issued.resend_after.subsec_nanos() > 0),
        }
    }
}

/// The process is alive, or ready.
#[derive(Debug, Serialize, Apiv2Schema)]
pub(crate) struct HealthBody {
    /// `ok` or `ready`.
    status: &'static str,
}

impl HealthBody {
    pub(crate) const ALIVE: Self = Self { status: "ok" };
    pub(crate) const READY: Self = Self { status: "ready" };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> RegisterUserBody {
        serde_json::from_str(json).unwrap()
    }

    fn codes(result: Result<Registration, ApiError>) -> Vec<(String, String)> {
        match result {
            Err(ApiError::Validation(errors)) => {
                errors.into_iter().map(|e| (e.field, e.code)).collect()
            }
            Err(other) => panic!("unexpected {other:?}"),
            Ok(_) => vec![],
        }
    }

    #[test]
    fn null_and_missing_fields_are_both_required() {
        let policy = PasswordPolicy::default();
        let want = vec![
            ("email".into(), "required".into()),
            ("password".into(), "required".into()),
        ];
        assert_eq!(codes(body(r"{}").try_into_domain(&policy)), want);
        assert_eq!(
            codes(body(r#"{"email":null,"password":null}"#).try_into_domain(&policy)),
            want
        );
    }

    #[test]
    fn every_field_problem_is_reported() {
        let policy = PasswordPolicy::default();
        let found = codes(body(r#"{"email":"nope","password":"short"}"#).try_into_domain(&policy));
        assert_eq!(found[0], ("email".into(), "invalid".into()));
        assert!(found.contains(&("password".into(), "too_short".into())));
        assert!(found.contains(&("password".into(), "too_weak".into())));
    }

    #[test]
    fn wrong_json_types_do_not_deserialize() {
        assert!(serde_json::from_str::<RegisterUserBody>(r#"{"email":1,"password":"x"}"#).is_err());
        assert!(serde_json::from_str::<ActivationBody>(r#"{"code":421}"#).is_err());
    }

    #[test]
    fn codes_must_be_four_ascii_digits() {
        let parse = |json: &str| {
            serde_json::from_str::<ActivationBody>(json)
                .unwrap()
                .try_into_code()
        };
        assert!(parse(r#"{"code":"0421"}"#).is_ok());
        for bad in [
            r#"{"code":"421"}"#,
            r#"{"code":" 0421"}"#,
            r#"{"code":"04210"}"#,
            r"{}",
            r#"{"code":null}"#,
        ] {
            assert!(matches!(parse(bad), Err(ApiError::Validation(_))), "{bad}");
        }
    }
}

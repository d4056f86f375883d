//! The API's one error type and its problem+json rendering (RFC 9457): every error response of
//! the service is made here.

use std::{fmt, time::Duration};

use actix_web::{
    HttpResponse, ResponseError,
    http::{StatusCode, header},
};
use paperclip::v2::schema::Apiv2Errors;
use registrar_application::Error;
use serde::Serialize;
use serde_json::{Map, Value, json};

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The `WWW-Authenticate` challenge sent with every 401.
pub const BASIC_CHALLENGE: &str = r#"Basic realm="registrar", charset="UTF-8""#;

/// One problem with one field of a request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, paperclip::actix::Apiv2Schema)]
pub struct FieldError {
    /// The body member the problem is about.
    pub field: String,
    /// A stable, machine-readable name for the problem.
    pub code: String,
    /// What is wrong, for people.
    pub message: String,
}

impl FieldError {
    pub(crate) fn new(field: &str, code: &str, message: impl fmt::Display) -> Self {
        Self {
            field: field.into(),
            code: code.into(),
            message: message.to_string(),
        }
    }
}

/// Why a request failed, as the API reports it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// No such route.
    #[error("no such resource")]
    NotFound,
    /// The route exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed {
        /// The methods the route takes.
        allow: &'static str,
    },
    /// The body is not declared as JSON.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// The body is larger than the limit.
    #[error("payload too large")]
    PayloadTooLarge,
    /// The body is not valid JSON, or has wrong JSON types.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The body is well-formed but its values are not acceptable.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// A use case failed.
    #[error(transparent)]
    App(#[from] Error),
}

/// The fixed parts of one kind of problem.
struct Kind {
    status: StatusCode,
    slug: &'static str,
    title: &'static str,
}

impl Kind {
    const fn new(status: StatusCode, slug: &'static str, title: &'static str) -> Self {
        Self {
            status,
            slug,
            title,
        }
    }
}

/// Every problem type the API answers with: (status, slug, title). The OpenAPI description is
/// built from this list too.
pub(crate) const PROBLEM_TYPES: &[(u16, &str, &str)] = &[
    (400, "malformed-request", "Malformed request"),
    (400, "wrong-activation-code", "Wrong activation code"),
    (401, "unauthorized", "Unauthorized"),
    (404, "not-found", "Not found"),
    (405, "method-not-allowed", "Method not allowed"),
    (409, "email-taken", "Email already registered"),
    (409, "already-active", "Account already active"),
    (410, "activation-code-expired", "Activation code expired"),
    (413, "payload-too-large", "Payload too large"),
    (415, "unsupported-media-type", "Unsupported media type"),
    (422, "validation-failed", "Validation failed"),
    (429, "too-many-requests", "Too many requests"),
    (500, "internal", "Internal server error"),
    (503, "overloaded", "Service overloaded"),
    (503, "unavailable", "Service unavailable"),
];

fn kind(slug: &'static str) -> Kind {
    let (status, title) = PROBLEM_TYPES
        .iter()
        .find(|(_, s, _)| *s == slug)
        .map_or((500, "Internal server error"), |(status, _, title)| {
            (*status, *title)
        });
    Kind::new(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        slug,
        title,
    )
}

impl ApiError {
    /// The problem for a bare error status produced outside the handlers (the safety net for
    /// responses that were not made here).
    #[must_use]
    pub fn for_status(status: StatusCode) -> Self {
        match status.as_u16() {
            400 => Self::Malformed("the request could not be read".into()),
            401 => Self::App(Error::Unauthorized),
            404 => Self::NotFound,
            405 => Self::MethodNotAllowed { allow: "" },
            413 => Self::PayloadTooLarge,
            415 => Self::UnsupportedMediaType,
            _ => Self::App(Error::Internal(format!("unexpected status {status}"))),
        }
    }

    fn kind(&self) -> Kind {
        kind(match self {
            Self::NotFound => "not-found",
            Self::MethodNotAllowed { .. } => "method-not-allowed",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::PayloadTooLarge => "payload-too-large",
            Self::Malformed(_) => "malformed-request",
            Self::Validation(_) => "validation-failed",
            Self::App(error) => match error {
                Error::Unauthorized => "unauthorized",
                Error::EmailTaken => "email-taken",
                Error::AlreadyActive => "already-active",
                Error::CodeGone { .. } => "activation-code-expired",
                Error::WrongCode { .. } => "wrong-activation-code",
                Error::TooManyRequests { .. } => "too-many-requests",
                Error::Overloaded { .. } => "overloaded",
                Error::Unavailable(_) => "unavailable",
                _ => "internal",
            },
        })
    }

    fn detail(&self) -> String {
        match self {
            Self::NotFound => "There is no resource at this path.".into(),
            Self::MethodNotAllowed { allow: "" } => {
                "This resource does not take this method.".into()
            }
            Self::MethodNotAllowed { allow } => {
                format!("This resource takes only: {allow}.")
            }
            Self::UnsupportedMediaType => {
                "The request body must be JSON, sent with Content-Type: application/json.".into()
            }
            Self::PayloadTooLarge => format!(
                "The request body is larger than {} bytes.",
                crate::extract::BODY_LIMIT
            ),
            Self::Malformed(why) => why.clone(),
            Self::Validation(errors) => match errors.as_slice() {
                [one] => format!("{}: {}", one.field, one.message),
                _ => format!("{} fields have problems; see `errors`.", errors.len()),
            },
            Self::App(error) => match error {
                Error::Unauthorized => {
                    "Valid Basic credentials (email:password) are required.".into()
                }
                Error::EmailTaken => "An account with this email address already exists.".into(),
                Error::AlreadyActive => "The account is already active.".into(),
                Error::CodeGone {
                    too_many_attempts: true,
                } => "The activation code took too many wrong attempts; ask for a new one.".into(),
                Error::CodeGone { .. } => {
                    "There is no usable activation code: it expired or was never delivered; ask for a new one.".into()
                }
                Error::WrongCode { attempts_remaining } => format!(
                    "The activation code is wrong; {attempts_remaining} attempt(s) left for this code."
                ),
                Error::TooManyRequests { retry_after } => format!(
                    "Too many requests; try again in {} second(s).",
                    seconds(*retry_after)
                ),
                Error::Overloaded { .. } => {
                    "The service is busy; try again shortly.".into()
                }
                Error::Unavailable(_) => "The service cannot reach its store; try again shortly.".into(),
                _ => "An unexpected error occurred.".into(),
            },
        }
    }

    fn extensions(&self) -> Map<String, Value> {
        let mut members = Map::new();
        match self {
            Self::Validation(errors) => {
                members.insert("errors".into(), json!(errors));
            }
            Self::App(Error::WrongCode { attempts_remaining }) => {
                members.insert("attempts_remaining".into(), json!(attempts_remaining));
            }
            Self::App(Error::CodeGone { too_many_attempts }) => {
                let reason = if *too_many_attempts {
                    "too_many_attempts"
                } else {
                    "expired"
                };
                members.insert("reason".into(), json!(reason));
            }
            _ => {}
        }
        if let Some(retry_after) = self.retry_after() {
            members.insert("retry_after_seconds".into(), json!(retry_after));
        }
        members
    }

    /// Seconds a client should wait, for 429 and 503 answers.
    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::App(
                Error::TooManyRequests { retry_after } | Error::Overloaded { retry_after },
            ) => Some(seconds(*retry_after)),
            Self::App(Error::Unavailable(_)) => Some(seconds(Error::UNAVAILABLE_RETRY_AFTER)),
            _ => None,
        }
    }

    /// The problem document.
    #[must_use]
    pub fn to_problem(&self) -> Value {
        let kind = self.kind();
        let mut body = Map::new();
        body.insert("type".into(), json!(format!("/problems/{}", kind.slug)));
        body.insert("title".into(), json!(kind.title));
        body.insert("status".into(), json!(kind.status.as_u16()));
        body.insert("detail".into(), json!(self.detail()));
        body.extend(self.extensions());
        Value::Object(body)
    }
}

/// Whole seconds, rounded up, at least 1: a client must never be told to retry at once.
fn seconds(duration: Duration) -> u64 {
    let whole = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    whole.max(1)
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.kind().status
    }

    fn error_response(&self) -> HttpResponse {
        let kind = self.kind();
        // Logged once, here, where the error becomes a response; the body stays opaque. Shedding
        // load and a store outage are expected conditions with their own metrics and logs, not
        // faults: only internal errors are logged as errors.
        match self {
            Self::App(Error::Overloaded { .. }) => {
                tracing::debug!("request shed: the hashing pool is full");
            }
            Self::App(Error::Unavailable(_)) => {
                tracing::warn!(error = %ErrorChain(self), "request failed: the store is unavailable");
            }
            _ if kind.status.is_server_error() => {
                tracing::error!(error = %ErrorChain(self), status = kind.status.as_u16(), "request failed");
            }
            _ => {}
        }
        let mut response = HttpResponse::build(kind.status);
        response.content_type(PROBLEM_JSON);
        if let Some(retry_after) = self.retry_after() {
            response.insert_header((header::RETRY_AFTER, retry_after.to_string()));
        }
        match self {
            Self::App(Error::Unauthorized) => {
                response.insert_header((header::WWW_AUTHENTICATE, BASIC_CHALLENGE));
            }
            Self::MethodNotAllowed { allow } if !allow.is_empty() => {
                response.insert_header((header::ALLOW, *allow));
            }
            _ => {}
        }
        response.body(self.to_problem().to_string())
    }
}

/// Error chains are documented in the OpenAPI post-processing (see `openapi.rs`), per route.
impl Apiv2Errors for ApiError {}

/// Formats an error with its sources, one "caused by" per level.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

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

    #[test]
    fn every_slug_has_one_status_and_title() {
        for (i, (_, slug, _)) in PROBLEM_TYPES.iter().enumerate() {
            assert!(
                PROBLEM_TYPES[i + 1..]
                    .iter()
                    .all(|(_, other, _)| other != slug),
                "{slug}"
            );
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_never_says_zero() {
        assert_eq!(seconds(Duration::ZERO), 1);
        assert_eq!(seconds(Duration::from_millis(1)), 1);
        assert_eq!(seconds(Duration::from_millis(29_001)), 30);
        assert_eq!(seconds(Duration::from_secs(30)), 30);
    }

    #[test]
    fn internal_errors_never_reach_the_body() {
        let error = ApiError::App(Error::Internal("relation \"users\" does not exist".into()));
        let body = error.to_problem().to_string();
        assert!(!body.contains("relation"), "{body}");
        assert_eq!(error.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}

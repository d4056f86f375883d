//! The API's one error type and its problem+json rendering (RFC 9457): every error response of
//! the service is made here.

use std::{fmt, time::Duration};

use actix_web::{
    HttpResponse, ResponseError,
    http::{StatusCode, header},
};
use paperclip::v2::schema::Apiv2Errors;
use registrar_application::{Error, ErrorChain};
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

/// Every kind of problem the API answers with. Its status, slug and title are facts of the kind,
/// so a kind without them does not compile; the OpenAPI description is built from this enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// The body is not JSON, or has wrong JSON types.
    MalformedRequest,
    /// The activation code did not match.
    WrongActivationCode,
    /// Credentials missing or not accepted.
    Unauthorized,
    /// No such route.
    NotFound,
    /// The route does not take this method.
    MethodNotAllowed,
    /// The address is registered.
    EmailTaken,
    /// The account is active already.
    AlreadyActive,
    /// There is no usable activation code.
    ActivationCodeExpired,
    /// The body is over the limit.
    PayloadTooLarge,
    /// The body is not declared as JSON.
    UnsupportedMediaType,
    /// The body's values are not acceptable.
    ValidationFailed,
    /// A rate limit was hit.
    TooManyRequests,
    /// A bug or a broken dependency.
    Internal,
    /// Load was shed.
    Overloaded,
    /// The store cannot be reached.
    Unavailable,
}

impl Problem {
    /// Every kind, in the order the documentation lists them.
    pub const ALL: [Self; 15] = [
        Self::MalformedRequest,
        Self::WrongActivationCode,
        Self::Unauthorized,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::EmailTaken,
        Self::AlreadyActive,
        Self::ActivationCodeExpired,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::ValidationFailed,
        Self::TooManyRequests,
        Self::Internal,
        Self::Overloaded,
        Self::Unavailable,
    ];

    /// The HTTP status it is answered with.
    #[must_use]
    pub const fn status(self) -> StatusCode {
        match self {
            Self::MalformedRequest | Self::WrongActivationCode => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::EmailTaken | Self::AlreadyActive => StatusCode::CONFLICT,
            Self::ActivationCodeExpired => StatusCode::GONE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::ValidationFailed => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Overloaded | Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable name that ends the problem's `type` URI.
    #[must_use]
    pub const fn slug(self) -> &'static str {
        match self {
            Self::MalformedRequest => "malformed-request",
            Self::WrongActivationCode => "wrong-activation-code",
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::EmailTaken => "email-taken",
            Self::AlreadyActive => "already-active",
            Self::ActivationCodeExpired => "activation-code-expired",
            Self::PayloadTooLarge => "payload-too-large",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::ValidationFailed => "validation-failed",
            Self::TooManyRequests => "too-many-requests",
            Self::Internal => "internal",
            Self::Overloaded => "overloaded",
            Self::Unavailable => "unavailable",
        }
    }

    /// The fixed, human-readable summary.
    #[must_use]
    pub const fn title(self) -> &'static str {
        match self {
            Self::MalformedRequest => "Malformed request",
            Self::WrongActivationCode => "Wrong activation code",
            Self::Unauthorized => "Unauthorized",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::EmailTaken => "Email already registered",
            Self::AlreadyActive => "Account already active",
            Self::ActivationCodeExpired => "Activation code expired",
            Self::PayloadTooLarge => "Payload too large",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::ValidationFailed => "Validation failed",
            Self::TooManyRequests => "Too many requests",
            Self::Internal => "Internal server error",
            Self::Overloaded => "Service overloaded",
            Self::Unavailable => "Service unavailable",
        }
    }

    /// Whether the answer carries `Retry-After` (and `retry_after_seconds`).
    #[must_use]
    pub const fn retries(self) -> bool {
        matches!(
            self,
            Self::TooManyRequests | Self::Overloaded | Self::Unavailable
        )
    }
}

/// Everything an error's response says beyond its [`Problem`].
struct Answer {
    problem: Problem,
    detail: String,
    members: Map<String, Value>,
    retry_after: Option<Duration>,
    header: Option<(header::HeaderName, &'static str)>,
}

impl Answer {
    fn new(problem: Problem, detail: impl Into<String>) -> Self {
        Self {
            problem,
            detail: detail.into(),
            members: Map::new(),
            retry_after: None,
            header: None,
        }
    }

    fn with(mut self, member: &str, value: Value) -> Self {
        self.members.insert(member.into(), value);
        self
    }

    fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    fn header(mut self, name: header::HeaderName, value: &'static str) -> Self {
        self.header = Some((name, value));
        self
    }
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
            _ => Self::App(Error::Internal(Box::new(UnexpectedStatus(status)))),
        }
    }

    /// The kind of problem this error is.
    #[must_use]
    pub fn problem(&self) -> Problem {
        self.answer().problem
    }

    /// How this error is answered: the one place every error meets its problem, matched
    /// exhaustively, so that a new error does not build until it is given its answer.
    fn answer(&self) -> Answer {
        match self {
            Self::NotFound => Answer::new(Problem::NotFound, "There is no resource at this path."),
            Self::MethodNotAllowed { allow: "" } => Answer::new(
                Problem::MethodNotAllowed,
                "This resource does not take this method.",
            ),
            Self::MethodNotAllowed { allow } => Answer::new(
                Problem::MethodNotAllowed,
                format!("This resource takes only: {allow}."),
            )
            .header(header::ALLOW, allow),
            Self::UnsupportedMediaType => Answer::new(
                Problem::UnsupportedMediaType,
                "The request body must be JSON, sent with Content-Type: application/json.",
            ),
            Self::PayloadTooLarge => Answer::new(
                Problem::PayloadTooLarge,
                format!(
                    "The request body is larger than {} bytes.",
                    crate::extract::BODY_LIMIT
                ),
            ),
            Self::Malformed(why) => Answer::new(Problem::MalformedRequest, why.clone()),
            Self::Validation(errors) => Answer::new(
                Problem::ValidationFailed,
                match errors.as_slice() {
                    [one] => format!("{}: {}", one.field, one.message),
                    _ => format!("{} fields have problems; see `errors`.", errors.len()),
                },
            )
            .with("errors", json!(errors)),
            Self::App(error) => app_answer(error),
        }
    }
}

fn app_answer(error: &Error) -> Answer {
    match error {
        Error::Unauthorized => Answer::new(
            Problem::Unauthorized,
            "Valid Basic credentials (email:password) are required.",
        )
        .header(header::WWW_AUTHENTICATE, BASIC_CHALLENGE),
        Error::EmailTaken => Answer::new(
            Problem::EmailTaken,
            "An account with this email address already exists.",
        ),
        Error::AlreadyActive => {
            Answer::new(Problem::AlreadyActive, "The account is already active.")
        }
        Error::CodeGone { too_many_attempts } => {
            let (detail, reason) = if *too_many_attempts {
                (
                    "The activation code took too many wrong attempts; ask for a new one.",
                    "too_many_attempts",
                )
            } else {
                (
                    "There is no usable activation code: it expired or was never delivered; ask for a new one.",
                    "expired",
                )
            };
            Answer::new(Problem::ActivationCodeExpired, detail).with("reason", json!(reason))
        }
        Error::WrongCode { attempts_remaining } => Answer::new(
            Problem::WrongActivationCode,
            format!(
                "The activation code is wrong; {attempts_remaining} attempt(s) left for this code."
            ),
        )
        .with("attempts_remaining", json!(attempts_remaining)),
        Error::TooManyRequests { retry_after } => Answer::new(
            Problem::TooManyRequests,
            format!(
                "Too many requests; try again in {} second(s).",
                seconds(*retry_after)
            ),
        )
        .retry_after(*retry_after),
        Error::Overloaded { retry_after } => Answer::new(
            Problem::Overloaded,
            "The service is busy; try again shortly.",
        )
        .retry_after(*retry_after),
        Error::Unavailable(_) => Answer::new(
            Problem::Unavailable,
            "The service cannot reach its store; try again shortly.",
        )
        .retry_after(Error::UNAVAILABLE_RETRY_AFTER),
        // The cause stays in the log: it may name SQL, a driver or a host.
        Error::Internal(_) => Answer::new(Problem::Internal, "An unexpected error occurred."),
    }
}

impl Answer {
    /// The problem document.
    fn to_problem(&self) -> Value {
        let problem = self.problem;
        let mut body = Map::new();
        body.insert(
            "type".into(),
            json!(format!("/problems/{}", problem.slug())),
        );
        body.insert("title".into(), json!(problem.title()));
        body.insert("status".into(), json!(problem.status().as_u16()));
        body.insert("detail".into(), json!(self.detail));
        body.extend(self.members.clone());
        if let Some(retry_after) = self.retry_after {
            body.insert("retry_after_seconds".into(), json!(seconds(retry_after)));
        }
        Value::Object(body)
    }
}

impl ApiError {
    /// The problem document.
    #[must_use]
    pub fn to_problem(&self) -> Value {
        self.answer().to_problem()
    }
}

/// Whole seconds, rounded up, at least 1: a client must never be told to retry at once.
fn seconds(duration: Duration) -> u64 {
    let whole = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    whole.max(1)
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.problem().status()
    }

    fn error_response(&self) -> HttpResponse {
        let answer = self.answer();
        let status = answer.problem.status();
        // Logged once, here, where the error becomes a response; the body stays opaque. Shedding
        // load and a store outage are expected conditions with their own metrics and logs, not
        // faults: only internal errors are logged as errors.
        match answer.problem {
            Problem::Overloaded => tracing::debug!("request shed: the hashing pool is full"),
            Problem::Unavailable => {
                tracing::warn!(error = %ErrorChain(self), "request failed: the store is unavailable");
            }
            _ if status.is_server_error() => {
                tracing::error!(error = %ErrorChain(self), status = status.as_u16(), "request failed");
            }
            _ => {}
        }
        let mut response = HttpResponse::build(status);
        response.content_type(PROBLEM_JSON);
        if let Some(retry_after) = answer.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds(retry_after).to_string()));
        }
        if let Some(header) = answer.header.clone() {
            response.insert_header(header);
        }
        response.body(answer.to_problem().to_string())
    }
}

/// Error chains are documented in the OpenAPI post-processing (see `openapi.rs`), per route.
impl Apiv2Errors for ApiError {}

/// A status the handlers never answer with reached the safety net.
#[derive(Debug, thiserror::Error)]
#[error("unexpected status {0}")]
struct UnexpectedStatus(StatusCode);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_listed_once_with_its_own_slug() {
        // Exhaustive on purpose: a new kind does not build until it is listed here and in ALL.
        let listed = |problem: Problem| match problem {
            Problem::MalformedRequest
            | Problem::WrongActivationCode
            | Problem::Unauthorized
            | Problem::NotFound
            | Problem::MethodNotAllowed
            | Problem::EmailTaken
            | Problem::AlreadyActive
            | Problem::ActivationCodeExpired
            | Problem::PayloadTooLarge
            | Problem::UnsupportedMediaType
            | Problem::ValidationFailed
            | Problem::TooManyRequests
            | Problem::Internal
            | Problem::Overloaded
            | Problem::Unavailable => Problem::ALL.iter().filter(|p| **p == problem).count(),
        };
        for (i, problem) in Problem::ALL.iter().enumerate() {
            assert_eq!(listed(*problem), 1, "{problem:?}");
            assert!(
                Problem::ALL[i + 1..]
                    .iter()
                    .all(|other| other.slug() != problem.slug()),
                "{problem:?}"
            );
        }
        assert_eq!(Problem::ALL.len(), Problem::Unavailable as usize + 1);
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

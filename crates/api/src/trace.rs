//! W3C trace context: the `traceparent` request header that lets a request join its caller's
//! trace, and the trace id every log line of the request carries.
//!
//! The span a request runs in is made a child of the caller's span when the header is valid.
//! When an OpenTelemetry layer is installed (traces are exported), the trace id is the one that
//! layer assigns, so logs and exported spans agree; without it, the header's trace id, or a
//! fresh random one, is only written to the logs. [`remote_span_context`] turns a stored trace
//! context into OpenTelemetry's form, for the binary's span links.

use std::fmt;

use actix_web::http::header::HeaderMap;
use opentelemetry::{
    Context,
    trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState},
};
use registrar_application::TraceContext;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The W3C trace context header.
const TRACEPARENT: &str = "traceparent";

/// The span field, and the JSON log member, that carries a request's trace id.
pub const TRACE_ID_FIELD: &str = "trace_id";

/// A caller's position in its trace, from a valid `traceparent` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceParent(TraceContext);

impl TraceParent {
    /// The header of `headers`, when there is exactly one and it is valid.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let mut values = headers.get_all(TRACEPARENT);
        let value = values.next()?;
        if values.next().is_some() {
            // Two parents are no parent: the specification says to start a new trace.
            return None;
        }
        TraceContext::parse(value.to_str().ok()?).map(Self)
    }

    fn context(self) -> Context {
        Context::new().with_remote_span_context(remote_span_context(self.0))
    }
}

/// The OpenTelemetry form of a span in another process (or in an earlier request): a remote
/// span context, to be a parent or the target of a link.
#[must_use]
pub fn remote_span_context(context: TraceContext) -> SpanContext {
    let flags = if context.sampled() {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    SpanContext::new(
        TraceId::from_bytes(context.trace_id()),
        SpanId::from_bytes(context.span_id()),
        flags,
        true,
        TraceState::default(),
    )
}

/// A trace id as the logs show it: 32 lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LoggedTraceId(TraceId);

impl fmt::Display for LoggedTraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Joins `span` to the caller's trace, if any, and returns the trace id it runs in.
pub(crate) fn join(span: &tracing::Span, parent: Option<TraceParent>) -> LoggedTraceId {
    if let Some(parent) = parent {
        // A no-op unless an OpenTelemetry layer is installed.
        drop(span.set_parent(parent.context()));
    }
    let assigned = span.context().span().span_context().trace_id();
    if assigned != TraceId::INVALID {
        return LoggedTraceId(assigned);
    }
    LoggedTraceId(TraceId::from_bytes(parent.map_or_else(
        || uuid::Uuid::new_v4().into_bytes(),
        |parent| parent.0.trace_id(),
    )))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a failed test")]

    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn header(value: &str) -> Option<TraceParent> {
        let mut headers = HeaderMap::new();
        let name = actix_web::http::header::HeaderName::from_static(TRACEPARENT);
        headers.append(name, value.parse().unwrap());
        TraceParent::from_headers(&headers)
    }

    #[test]
    fn a_valid_header_gives_its_trace_and_parent() {
        let parent = header(VALID).unwrap();
        let span = remote_span_context(parent.0);
        assert_eq!(
            LoggedTraceId(span.trace_id()).to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(
            span.span_id(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap()
        );
        assert!(span.is_sampled());
        assert!(span.is_remote());
    }

    #[test]
    fn an_invalid_header_is_ignored() {
        // The parser's rules are tested with it, in the application crate.
        assert_eq!(
            header("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
            None
        );
        let unsampled = header("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        assert!(!remote_span_context(unsampled.unwrap().0).is_sampled());
    }

    #[test]
    fn two_headers_start_a_new_trace() {
        let mut headers = HeaderMap::new();
        let name = actix_web::http::header::HeaderName::from_static(TRACEPARENT);
        headers.append(name.clone(), VALID.parse().unwrap());
        assert!(TraceParent::from_headers(&headers).is_some());
        headers.append(name, VALID.parse().unwrap());
        assert_eq!(TraceParent::from_headers(&headers), None);
    }

    #[test]
    fn without_an_exporter_the_logs_show_the_callers_trace_or_a_fresh_one() {
        let span = tracing::Span::none();
        let parent = header(VALID).unwrap();
        assert_eq!(
            join(&span, Some(parent)).to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let fresh = join(&span, None).to_string();
        assert_eq!(fresh.len(), 32);
        assert!(fresh.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(fresh, join(&span, None).to_string());
    }
}

//! W3C trace context: the `traceparent` request header that lets a request join its caller's
//! trace, and the trace id every log line of the request carries.
//!
//! The span a request runs in is made a child of the caller's span when the header is valid.
//! When an OpenTelemetry layer is installed (traces are exported), the trace id is the one that
//! layer assigns, so logs and exported spans agree; without it, the header's trace id, or a
//! fresh random one, is only written to the logs.

use std::fmt;

use actix_web::http::header::HeaderMap;
use opentelemetry::{
    Context,
    trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState},
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The W3C trace context header.
const TRACEPARENT: &str = "traceparent";

/// The span field, and the JSON log member, that carries a request's trace id.
pub const TRACE_ID_FIELD: &str = "trace_id";

/// A caller's position in its trace, from a valid `traceparent` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceParent {
    trace_id: TraceId,
    parent_id: SpanId,
    flags: TraceFlags,
}

impl TraceParent {
    /// The header of `headers`, when there is exactly one and it is valid.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let mut values = headers.get_all(TRACEPARENT);
        let value = values.next()?;
        if values.next().is_some() {
            // Two parents are no parent: the specification says to start a new trace.
            return None;
        }
        Self::parse(value.to_str().ok()?)
    }

    /// Parses `version-traceid-parentid-flags`, refusing what the W3C specification refuses:
    /// version `ff`, all-zero ids, upper-case hex, and for version `00` anything after the flags.
    /// A later version may append fields after a dash, which are ignored.
    fn parse(value: &str) -> Option<Self> {
        let value = value.trim_matches([' ', '\t']);
        let mut parts = value.splitn(5, '-');
        let version = hex_field(parts.next()?, 2)?;
        let trace_id = hex_field(parts.next()?, 32)?;
        let parent_id = hex_field(parts.next()?, 16)?;
        let flags = hex_field(parts.next()?, 2)?;
        let rest = parts.next();
        if version == "ff" || (version == "00" && rest.is_some()) {
            return None;
        }
        let trace_id = TraceId::from_hex(trace_id).ok()?;
        let parent_id = SpanId::from_hex(parent_id).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != TraceId::INVALID && parent_id != SpanId::INVALID).then_some(Self {
            trace_id,
            parent_id,
            flags: TraceFlags::new(flags & TraceFlags::SAMPLED.to_u8()),
        })
    }

    fn context(self) -> Context {
        Context::new().with_remote_span_context(SpanContext::new(
            self.trace_id,
            self.parent_id,
            self.flags,
            true,
            TraceState::default(),
        ))
    }
}

/// `field` when it is exactly `len` lower-case hex digits.
fn hex_field(field: &str, len: usize) -> Option<&str> {
    (field.len() == len
        && field
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
    .then_some(field)
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
    LoggedTraceId(parent.map_or_else(
        || TraceId::from_bytes(uuid::Uuid::new_v4().into_bytes()),
        |parent| parent.trace_id,
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a failed test")]

    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_header_gives_its_trace_and_parent() {
        let parent = TraceParent::parse(VALID).unwrap();
        assert_eq!(
            LoggedTraceId(parent.trace_id).to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(
            parent.parent_id,
            SpanId::from_hex("00f067aa0ba902b7").unwrap()
        );
        assert!(parent.flags.is_sampled());
    }

    #[test]
    fn a_later_version_may_carry_more_fields() {
        let value = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-future";
        assert!(TraceParent::parse(value).is_some());
    }

    #[test]
    fn invalid_headers_are_ignored() {
        for value in [
            "",
            "00",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(value), None, "{value:?}");
        }
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
        let parent = TraceParent::parse(VALID).unwrap();
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

//! W3C trace context as a plain value: where a span stands in a distributed trace, so that the
//! work a request leaves behind (an email in the outbox) can point back at the request's trace.
//!
//! The use cases never see tracing's machinery: they hold a [`TraceContext`] the [`Traces`]
//! port captured and hand it back to the port later. Parsing lives here, once, for every place
//! a `traceparent` comes from: the request header and the stored outbox row.
//!
//! [`Traces`]: crate::ports::Traces

use std::fmt;

/// A span's position in its trace (W3C `traceparent`): trace id, span id and whether the
/// caller sampled it. Only [`Self::parse`] and [`Self::new`] make one, so a value is always
/// well-formed: neither id is all zeros.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
}

impl TraceContext {
    /// The context with these ids; `None` when either is all zeros (the specification's
    /// invalid ids).
    #[must_use]
    pub fn new(trace_id: [u8; 16], span_id: [u8; 8], sampled: bool) -> Option<Self> {
        (trace_id != [0; 16] && span_id != [0; 8]).then_some(Self {
            trace_id,
            span_id,
            sampled,
        })
    }

    /// Parses `version-traceid-parentid-flags`, refusing what the W3C specification refuses:
    /// version `ff`, all-zero ids, upper-case hex, and for version `00` anything after the
    /// flags. A later version may append fields after a dash, which are ignored. Spaces and tabs
    /// around the value are ignored, as in an HTTP header. Of the flags, only "sampled" is
    /// kept.
    #[must_use]
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim_matches([' ', '\t']);
        let mut parts = value.splitn(5, '-');
        let [version] = hex::<1>(parts.next()?)?;
        let trace_id = hex::<16>(parts.next()?)?;
        let span_id = hex::<8>(parts.next()?)?;
        let [flags] = hex::<1>(parts.next()?)?;
        if version == 0xff || (version == 0 && parts.next().is_some()) {
            return None;
        }
        Self::new(trace_id, span_id, flags & SAMPLED != 0)
    }

    /// The trace this context belongs to.
    #[must_use]
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The span it names within the trace.
    #[must_use]
    pub fn span_id(&self) -> [u8; 8] {
        self.span_id
    }

    /// Whether the span's trace is recorded.
    #[must_use]
    pub fn sampled(&self) -> bool {
        self.sampled
    }
}

/// The `sampled` bit of the trace flags.
const SAMPLED: u8 = 0x01;

/// The `traceparent` form, version `00`: what [`TraceContext::parse`] reads back.
impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("00-")?;
        self.trace_id
            .iter()
            .try_for_each(|b| write!(f, "{b:02x}"))?;
        f.write_str("-")?;
        self.span_id.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        write!(f, "-{:02x}", u8::from(self.sampled))
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TraceContext")
            .field(&format_args!("{self}"))
            .finish()
    }
}

/// `field` as `N` bytes, when it is exactly `2 N` lower-case hex digits.
fn hex<const N: usize>(field: &str) -> Option<[u8; N]> {
    let digits = field.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let mut bytes = [0; N];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(bytes)
}

fn nibble(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a failed test")]

    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_header_gives_its_trace_and_span() {
        let context = TraceContext::parse(VALID).unwrap();
        assert_eq!(
            context.trace_id(),
            0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128.to_be_bytes()
        );
        assert_eq!(context.span_id(), 0x00f0_67aa_0ba9_02b7_u64.to_be_bytes());
        assert!(context.sampled());
    }

    #[test]
    fn a_context_reads_back_from_its_text() {
        for value in [
            VALID,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        ] {
            let context = TraceContext::parse(value).unwrap();
            assert_eq!(context.to_string(), value);
            assert_eq!(TraceContext::parse(&context.to_string()), Some(context));
        }
    }

    #[test]
    fn a_later_version_may_carry_more_fields_and_unknown_flags_are_dropped() {
        let value = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-future";
        let context = TraceContext::parse(value).unwrap();
        assert_eq!(context.to_string(), VALID);
        let value = " \t00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02 ";
        assert!(!TraceContext::parse(value).unwrap().sampled());
    }

    #[test]
    fn invalid_values_are_refused() {
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
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-+1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-é",
        ] {
            assert_eq!(TraceContext::parse(value), None, "{value:?}");
        }
    }

    #[test]
    fn all_zero_ids_make_no_context() {
        assert_eq!(TraceContext::new([0; 16], [1; 8], true), None);
        assert_eq!(TraceContext::new([1; 16], [0; 8], true), None);
        assert!(TraceContext::new([1; 16], [1; 8], false).is_some());
    }
}

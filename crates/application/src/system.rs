//! The production clock and entropy source, and the trace port of a process that records no
//! spans.

use std::time::SystemTime;

use rand::Rng;
use registrar_domain::CodeDigits;
use uuid::Uuid;

use crate::{
    TraceContext,
    ports::{Clock, Entropy, Traces},
};

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The operating system's CSPRNG (through `rand`'s thread-local generator, seeded from it).
#[derive(Debug, Clone, Copy, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn activation_code(&self) -> CodeDigits {
        // `random_range` is uniform (rejection sampling), so every code is equally likely.
        let value = rand::rng().random_range(0..CodeDigits::COUNT);
        CodeDigits::from_value(value).unwrap_or_else(|| unreachable!("value is below COUNT"))
    }

    fn uuid(&self, now: SystemTime) -> Uuid {
        let millis = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut random = [0u8; 10];
        rand::rng().fill(&mut random);
        uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
    }

    fn unit(&self) -> f64 {
        rand::rng().random::<f64>()
    }

    fn secret(&self) -> [u8; 32] {
        rand::rng().random()
    }
}

/// Traces for a process that exports no spans: there is no context to keep and nothing to link.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTraces;

impl Traces for NoTraces {
    fn current(&self) -> Option<TraceContext> {
        None
    }

    fn link(&self, _span: &tracing::Span, _context: TraceContext) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_cover_the_whole_range_roughly_uniformly() {
        let mut counts = [0u32; 10];
        for _ in 0..20_000 {
            let code = OsEntropy.activation_code().reveal();
            counts[usize::from(code.as_bytes()[0] - b'0')] += 1;
        }
        // 2,000 expected per leading digit; 5 standard deviations is about ±210.
        for count in counts {
            assert!((1_790..=2_210).contains(&count), "{counts:?}");
        }
    }

    #[test]
    fn uuids_are_v7_and_unique() {
        let now = SystemTime::now();
        let ids: HashSet<Uuid> = (0..1000).map(|_| OsEntropy.uuid(now)).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| id.get_version_num() == 7));
    }
}

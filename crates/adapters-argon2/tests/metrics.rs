//! The hasher's metrics, read back through a recording `metrics` recorder installed for this
//! test binary only: refusals are counted, work is timed, and the queue gauge returns to zero.
// Helpers outside `#[test]` functions unwrap too: a panic here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use metrics::{
    Counter, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use registrar_adapters_argon2::{Argon2Hasher, Argon2Settings, metric_names};
use registrar_application::ports::{HashError, PasswordHasher, Verification};
use registrar_domain::Password;

/// A gauge that also remembers the highest value it reached.
#[derive(Default)]
struct PeakGauge {
    state: Mutex<(f64, f64)>,
}

impl PeakGauge {
    fn update(&self, change: impl FnOnce(f64) -> f64) {
        let mut state = self.state.lock().unwrap();
        state.0 = change(state.0);
        state.1 = state.1.max(state.0);
    }
}

impl GaugeFn for PeakGauge {
    fn increment(&self, value: f64) {
        self.update(|v| v + value);
    }
    fn decrement(&self, value: f64) {
        self.update(|v| v - value);
    }
    fn set(&self, value: f64) {
        self.update(|_| value);
    }
}

#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

#[derive(Default)]
struct TestRecorder {
    counters: Mutex<HashMap<String, Arc<AtomicU64>>>,
    gauges: Mutex<HashMap<String, Arc<PeakGauge>>>,
    histograms: Mutex<HashMap<String, Arc<Samples>>>,
}

/// `name{label=value,…}`, labels in key order.
fn render(key: &Key) -> String {
    let labels: Vec<_> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    if labels.is_empty() {
        key.name().to_owned()
    } else {
        format!("{}{{{}}}", key.name(), labels.join(","))
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut counters = self.counters.lock().unwrap();
        Counter::from_arc(Arc::clone(counters.entry(render(key)).or_default()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let mut gauges = self.gauges.lock().unwrap();
        Gauge::from_arc(Arc::clone(gauges.entry(render(key)).or_default()))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let mut histograms = self.histograms.lock().unwrap();
        Histogram::from_arc(Arc::clone(histograms.entry(render(key)).or_default()))
    }
}

impl TestRecorder {
    fn counter(&self, name: &str) -> u64 {
        self.counters
            .lock()
            .unwrap()
            .get(name)
            .map_or(0, |c| c.load(Ordering::SeqCst))
    }

    fn gauge(&self, name: &str) -> (f64, f64) {
        *self.gauges.lock().unwrap()[name].state.lock().unwrap()
    }

    fn samples(&self, name: &str) -> Vec<f64> {
        self.histograms
            .lock()
            .unwrap()
            .get(name)
            .map(|s| s.0.lock().unwrap().clone())
            .unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_counted_work_is_timed_and_the_queue_gauge_drains() {
    let recorder = Arc::new(TestRecorder::default());
    metrics::set_global_recorder(Arc::clone(&recorder)).unwrap();
    let hasher = Argon2Hasher::new(Argon2Settings {
        memory_kib: 8192,
        iterations: 3,
        threads: 1,
        queue_capacity: 1,
        queue_timeout: Duration::from_secs(30),
        ..Argon2Settings::default()
    })
    .unwrap();

    let requests: Vec<_> = (0..20)
        .map(|_| {
            let hasher = hasher.clone();
            tokio::spawn(async move { hasher.hash(Password::new("correct horse")).await })
        })
        .collect();
    let mut digests = Vec::new();
    let mut refused = 0;
    for request in requests {
        match request.await.unwrap() {
            Ok(hash) => digests.push(hash),
            Err(HashError::Overloaded { .. }) => refused += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    let hash = digests.pop().unwrap();
    assert_eq!(
        hasher
            .verify(Password::new("correct horse"), hash)
            .await
            .unwrap(),
        Verification::Match { stale: false }
    );

    let rejected = format!("{}{{reason=queue_full}}", metric_names::REJECTED_TOTAL);
    assert!(refused >= 1);
    assert_eq!(recorder.counter(&rejected), refused);

    let hash_seconds = recorder.samples(&format!("{}{{op=hash}}", metric_names::HASH_SECONDS));
    assert_eq!(hash_seconds.len(), digests.len() + 1);
    assert!(hash_seconds.iter().all(|s| *s > 0.0 && *s < 10.0));
    let verify_seconds = recorder.samples(&format!("{}{{op=verify}}", metric_names::HASH_SECONDS));
    assert_eq!(verify_seconds.len(), 1);
    assert_eq!(
        recorder.samples(metric_names::QUEUE_WAIT_SECONDS).len(),
        digests.len() + 2
    );

    // Every admitted job was counted in and out; at most the queue slot plus the job a worker
    // has just taken (but not yet counted out) were ever counted as waiting.
    let (depth, peak) = recorder.gauge(metric_names::QUEUE_DEPTH);
    assert!(depth.abs() < f64::EPSILON, "depth {depth}");
    assert!(peak <= 2.0, "peak {peak}");
}

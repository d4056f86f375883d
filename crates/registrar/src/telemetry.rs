//! Logging and metrics set-up for the process.

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::LogFormat;

/// Installs the global tracing subscriber: `RUST_LOG` filter (default `info`), pretty or JSON
/// lines on stdout. Events from the `log` crate (actix's own) are forwarded to it.
pub fn init_logging(format: LogFormat) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info"))
        // tokio-postgres logs statements with their parameters (password hashes, clear codes in
        // the outbox) at debug level: never let them through, whatever RUST_LOG asks for.
        .add_directive(quiet("tokio_postgres=info"));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Pretty => registry.with(fmt::layer()).try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
    }
    .context("could not install the log subscriber")
}

fn quiet(directive: &str) -> tracing_subscriber::filter::Directive {
    directive
        .parse()
        .unwrap_or_else(|_| tracing_subscriber::filter::LevelFilter::INFO.into())
}

/// Latency buckets, in seconds: from a cache-hot request to a slow hash under load.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Installs the global Prometheus recorder and returns the handle `/metrics` renders.
pub fn init_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
        .context("invalid histogram buckets")?
        .install_recorder()
        .context("could not install the metrics recorder")?;
    metrics::describe_counter!(
        "registrar_http_requests_total",
        "HTTP requests by method, route and status"
    );
    metrics::describe_histogram!(
        "registrar_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "HTTP request latency"
    );
    metrics::describe_gauge!("registrar_outbox_depth", "Emails waiting to be sent");
    metrics::describe_counter!(
        "registrar_emails_sent_total",
        "Activation emails accepted by the mail server"
    );
    metrics::describe_counter!(
        "registrar_emails_failed_total",
        "Activation emails given up on"
    );
    metrics::describe_counter!(
        "registrar_email_attempts_failed_total",
        "Failed delivery tries that will be retried"
    );
    metrics::describe_counter!(
        "registrar_pruned_total",
        "Rows pruned from the store, by what: settled mail, throttle windows that are over"
    );
    metrics::describe_gauge!(
        "registrar_hash_queue_depth",
        "Password hashing jobs waiting for a thread"
    );
    metrics::describe_counter!(
        "registrar_hash_rejected_total",
        "Hashing requests refused as overloaded, by reason: expected_wait or queue_full"
    );
    metrics::gauge!("registrar_outbox_depth").set(0.0);
    metrics::counter!("registrar_emails_sent_total").absolute(0);
    metrics::counter!("registrar_emails_failed_total").absolute(0);
    metrics::gauge!("registrar_hash_queue_depth").set(0.0);
    Ok(handle)
}

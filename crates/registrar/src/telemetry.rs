//! Logging, tracing and metrics set-up for the process.
//!
//! Logs go to stdout, pretty (colour only on a terminal) or one JSON object per line; every line
//! written for a request carries its `trace_id` at the top level. Spans are exported over
//! OTLP/HTTP only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set: without it no exporter, no
//! OpenTelemetry layer and no background thread exist. With it, the use cases' trace port is
//! OpenTelemetry's, so an email's delivery span links to the request that queued the email.

use std::{fmt, io::IsTerminal as _};

use anyhow::Context as _;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use registrar_api::{TRACE_ID_FIELD, remote_span_context};
use registrar_application::{NoTraces, TraceContext, ports::Traces};
use tracing::{
    Event, Level, Subscriber,
    field::{Field, Visit},
    span,
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{
    EnvFilter, Layer,
    fmt::{
        self as tfmt, FmtContext, FormatEvent, FormatFields,
        format::{Format, Json, JsonFields, Writer},
    },
    layer::Context,
    prelude::*,
    registry::LookupSpan,
};

use crate::config::LogFormat;

/// The collector endpoint; traces are exported only when it is set.
const OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The service name spans are exported under.
const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
const DEFAULT_SERVICE_NAME: &str = "registrar";

/// What must outlive the server for telemetry to be complete: the span exporter, whose batch
/// is flushed by [`Telemetry::shutdown`].
#[must_use = "dropping it early loses the spans not yet exported"]
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// The trace port for the use cases: OpenTelemetry's while spans are exported.
    #[must_use]
    pub fn traces(&self) -> ProcessTraces {
        if self.tracer_provider.is_some() {
            ProcessTraces::Exported(OtelTraces)
        } else {
            ProcessTraces::Off(NoTraces)
        }
    }

    /// Exports the spans still batched, then stops the exporter.
    pub fn shutdown(self) {
        if let Some(Err(error)) = self.tracer_provider.map(|provider| provider.shutdown()) {
            tracing::warn!(error = %error, "could not flush the last spans");
        }
    }
}

/// Trace contexts read from, and links written to, the OpenTelemetry layer of the global
/// subscriber.
#[derive(Debug, Clone, Copy, Default)]
pub struct OtelTraces;

impl Traces for OtelTraces {
    fn current(&self) -> Option<TraceContext> {
        let context = tracing::Span::current().context();
        let span = context.span();
        let span = span.span_context();
        TraceContext::new(
            span.trace_id().to_bytes(),
            span.span_id().to_bytes(),
            span.is_sampled(),
        )
    }

    fn link(&self, span: &tracing::Span, context: TraceContext) {
        span.add_link(remote_span_context(context));
    }
}

/// The trace port of this process, chosen once at start-up like the mailer.
#[derive(Debug, Clone, Copy)]
pub enum ProcessTraces {
    /// Spans are exported.
    Exported(OtelTraces),
    /// No exporter: nothing to capture, nothing to link.
    Off(NoTraces),
}

impl Traces for ProcessTraces {
    fn current(&self) -> Option<TraceContext> {
        match self {
            Self::Exported(traces) => traces.current(),
            Self::Off(traces) => traces.current(),
        }
    }

    fn link(&self, span: &tracing::Span, context: TraceContext) {
        match self {
            Self::Exported(traces) => traces.link(span, context),
            Self::Off(traces) => traces.link(span, context),
        }
    }
}

/// Installs the global tracing subscriber: `RUST_LOG` filter (default `info`), pretty or JSON
/// lines on stdout, and the OTLP exporter when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Events from
/// the `log` crate (actix's own) are forwarded to it.
///
/// Call it before any async runtime starts: the exporter's HTTP client is a blocking one that
/// runs on the batch processor's own thread.
pub fn init(format: LogFormat) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info"))
        // tokio-postgres logs statements with their parameters (password hashes, clear codes in
        // the outbox) at debug level: never let them through, whatever RUST_LOG asks for.
        .add_directive(quiet("tokio_postgres=info"));
    let tracer_provider = tracer_provider()?;
    let otel = tracer_provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer().with_tracer(provider.tracer(DEFAULT_SERVICE_NAME))
    });
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(QuietClientErrors)
        .with(RequestTraces)
        .with(otel);
    let ansi = std::io::stdout().is_terminal();
    match format {
        LogFormat::Pretty => registry.with(tfmt::layer().with_ansi(ansi)).try_init(),
        LogFormat::Json => registry.with(json_lines(std::io::stdout)).try_init(),
    }
    .context("could not install the log subscriber")?;
    if let Some(endpoint) = tracer_provider
        .as_ref()
        .and(std::env::var(OTLP_ENDPOINT).ok())
    {
        tracing::info!(endpoint, "exporting traces over OTLP/HTTP");
    }
    Ok(Telemetry { tracer_provider })
}

/// The OTLP/HTTP span exporter, when `OTEL_EXPORTER_OTLP_ENDPOINT` names one.
fn tracer_provider() -> anyhow::Result<Option<SdkTracerProvider>> {
    let Some(endpoint) = std::env::var(OTLP_ENDPOINT)
        .ok()
        .filter(|endpoint| !endpoint.trim().is_empty())
    else {
        return Ok(None);
    };
    // The exporter's client speaks plain HTTP only (no second TLS stack in the binary): a
    // collector next to the service (sidecar, node agent) is the intended receiver.
    if !endpoint.starts_with("http://") {
        anyhow::bail!(
            "{OTLP_ENDPOINT}={endpoint}: only http:// collector endpoints are supported \
             (run a collector beside the service)"
        );
    }
    // The exporter reads the endpoint (adding `/v1/traces`), headers and timeout from the
    // standard OTEL_EXPORTER_OTLP_* variables itself.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .context("could not build the OTLP span exporter")?;
    let service_name = std::env::var(SERVICE_NAME)
        .ok()
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
    Ok(Some(
        SdkTracerProvider::builder()
            .with_resource(Resource::builder().with_service_name(service_name).build())
            .with_batch_exporter(exporter)
            .build(),
    ))
}

/// One JSON object per line on `writer`, with the request's `trace_id` at the top level.
fn json_lines<S, W>(writer: W) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> tfmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tfmt::layer()
        .with_ansi(false)
        .with_writer(writer)
        .fmt_fields(JsonFields::new())
        .event_format(WithTraceId(
            tfmt::format()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false),
        ))
}

fn quiet(directive: &str) -> tracing_subscriber::filter::Directive {
    directive
        .parse()
        .unwrap_or_else(|_| tracing_subscriber::filter::LevelFilter::INFO.into())
}

/// A request's trace id, kept on the span that declared the [`TRACE_ID_FIELD`] field.
struct RequestTrace(String);

/// Keeps the trace id a span records, so every line logged inside it can show it.
struct RequestTraces;

impl RequestTraces {
    fn keep<S>(id: &span::Id, ctx: &Context<'_, S>, record: impl FnOnce(&mut dyn Visit))
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let mut found = TraceIdVisitor(None);
        record(&mut found);
        if let (Some(trace_id), Some(span)) = (found.0, ctx.span(id)) {
            span.extensions_mut().replace(RequestTrace(trace_id));
        }
    }
}

impl<S> Layer<S> for RequestTraces
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        Self::keep(id, &ctx, |visitor| attrs.record(visitor));
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        Self::keep(id, &ctx, |visitor| values.record(visitor));
    }
}

struct TraceIdVisitor(Option<String>);

impl Visit for TraceIdVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == TRACE_ID_FIELD {
            self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == TRACE_ID_FIELD {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

/// The stock JSON line, with the `trace_id` of the request it was written for (if any) as a
/// top-level member, so a log query needs no knowledge of span nesting.
struct WithTraceId(Format<Json>);

impl<S, N> FormatEvent<S, N> for WithTraceId
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let trace_id = ctx.event_scope().and_then(|scope| {
            scope.from_root().find_map(|span| {
                span.extensions()
                    .get::<RequestTrace>()
                    .map(|trace| trace.0.clone())
            })
        });
        let Some(trace_id) = trace_id else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            // The id is 32 hex digits, or a header's value checked to be: nothing to escape.
            Some(rest) => write!(writer, "{{\"{TRACE_ID_FIELD}\":\"{trace_id}\",{rest}"),
            None => writer.write_str(&line),
        }
    }
}

/// Keeps a client's malformed request line or header out of the error log: actix's HTTP/1
/// dispatcher reports it at ERROR, which would page an operator for someone else's bytes. The
/// client gets its 400 all the same; the event is counted in
/// `registrar_http_malformed_requests_total` instead.
struct QuietClientErrors;

/// Where actix's HTTP/1 dispatcher logs stream errors.
const DISPATCHER_TARGET: &str = "actix_http::h1::dispatcher";

impl<S: Subscriber> Layer<S> for QuietClientErrors {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let metadata = event.metadata();
        if *metadata.level() != Level::ERROR || metadata.target() != DISPATCHER_TARGET {
            return true;
        }
        let mut message = MessageVisitor(String::new());
        event.record(&mut message);
        if message.0.contains("request parse error") {
            metrics::counter!("registrar_http_malformed_requests_total").increment(1);
            false
        } else {
            true
        }
    }
}

struct MessageVisitor(String);

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

/// Latency buckets, in seconds: from a cache-hot request to a slow hash under load.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The process's metrics, rendered in the Prometheus text format.
pub struct Metrics {
    handle: PrometheusHandle,
    process: metrics_process::Collector,
}

impl Metrics {
    /// The current metrics, with the process metrics read afresh.
    #[must_use]
    pub fn render(&self) -> String {
        self.process.collect();
        self.handle.render()
    }

    /// Drains the histograms' old samples; call it every few seconds.
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }
}

/// Installs the global Prometheus recorder. Every counter is registered at zero, so the first
/// scrape lists them all and a rate over a fresh process needs no special case.
pub fn init_metrics() -> anyhow::Result<Metrics> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
        .context("invalid histogram buckets")?
        .install_recorder()
        .context("could not install the metrics recorder")?;
    let process = metrics_process::Collector::default();
    process.describe();
    metrics::describe_gauge!(
        "registrar_build_info",
        "Always 1; the version label says which build is running"
    );
    metrics::gauge!("registrar_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    metrics::describe_counter!(
        "registrar_http_requests_total",
        "HTTP requests by method, route and status"
    );
    metrics::describe_histogram!(
        "registrar_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "HTTP request latency"
    );
    metrics::describe_counter!(
        "registrar_http_malformed_requests_total",
        "Requests whose request line or headers did not parse (answered 400 by the HTTP codec)"
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
        "registrar_emails_cancelled_total",
        "Activation emails not sent because their code died first"
    );
    metrics::describe_counter!(
        "registrar_pruned_total",
        "Rows pruned from the store, by what: settled mail, throttle windows that are over, accounts never activated within the retention"
    );
    metrics::describe_gauge!(
        "registrar_hash_queue_depth",
        "Password hashing jobs waiting for a thread"
    );
    metrics::describe_counter!(
        "registrar_hash_rejected_total",
        "Hashing requests refused as overloaded, by reason: expected_wait or queue_full"
    );
    metrics::describe_counter!(
        "registrar_http_refusals_held_total",
        "503 overloaded refusals held for their turn because refusals came faster than their pace"
    );
    metrics::gauge!("registrar_outbox_depth").set(0.0);
    metrics::gauge!("registrar_hash_queue_depth").set(0.0);
    for counter in [
        "registrar_http_malformed_requests_total",
        "registrar_emails_sent_total",
        "registrar_emails_failed_total",
        "registrar_email_attempts_failed_total",
        "registrar_emails_cancelled_total",
        "registrar_http_refusals_held_total",
    ] {
        metrics::counter!(counter).absolute(0);
    }
    for what in ["mail", "throttles", "pending_accounts"] {
        metrics::counter!("registrar_pruned_total", "what" => what).absolute(0);
    }
    for reason in ["expected_wait", "queue_full"] {
        metrics::counter!("registrar_hash_rejected_total", "reason" => reason).absolute(0);
    }
    let metrics = Metrics { handle, process };
    // The process metrics are there from the first scrape too.
    metrics.process.collect();
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a failed test")]

    use std::sync::{Arc, Mutex};

    use serde_json::Value;

    use super::*;

    /// Log output kept in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(captured: &Captured) -> Vec<Value> {
        String::from_utf8(captured.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[test]
    fn lines_in_nested_spans_carry_the_request_trace_id_at_the_top_level() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::registry()
            .with(RequestTraces)
            .with(json_lines(move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("before any request");
            let request = tracing::info_span!("http request", trace_id = tracing::field::Empty);
            request.record(TRACE_ID_FIELD, "4bf92f3577b34da6a3ce929d0e0e4736");
            request.in_scope(|| {
                tracing::info_span!("register user", user_id = 7).in_scope(|| {
                    tracing::info!(answer = 42, "deep inside");
                });
            });
            tracing::info!(parent: &request, "request completed");
        });
        let lines = lines(&captured);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0].get("trace_id"), None);
        for line in &lines[1..] {
            assert_eq!(
                line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
                "{line}"
            );
        }
        assert_eq!(lines[1]["message"], "deep inside");
        assert_eq!(lines[1]["answer"], 42);
        assert_eq!(lines[1]["span"]["name"], "register user");
    }
}

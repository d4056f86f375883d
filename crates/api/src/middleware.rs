//! The middleware every request passes through: request id, one span and one log line per
//! request (joined to the caller's trace when it sends `traceparent`), metrics, the early 413 for
//! declared oversize bodies, the safety net that turns any error response not made by
//! [`ApiError`] into problem+json, and the pace of `overloaded` refusals ([`RefusalPacer`]).

use std::time::Instant;

use actix_web::{
    Error, ResponseError,
    body::{BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::{
        Method,
        header::{self, HeaderName, HeaderValue},
    },
    middleware::Next,
    web::Data,
};
use tracing::Instrument;

use crate::{
    ApiError, RefusalPacer,
    error::{PROBLEM_JSON, Problem},
    extract::{BODY_LIMIT, declared_length},
    trace::{self, TraceParent},
};

/// The request id header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The caller's request id when it is 1–128 characters of `[A-Za-z0-9._-]`, else a new one.
fn request_id(req: &ServiceRequest) -> HeaderValue {
    req.headers()
        .get(REQUEST_ID)
        .filter(|value| {
            let bytes = value.as_bytes();
            (1..=128).contains(&bytes.len())
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                .unwrap_or(HeaderValue::from_static("unknown"))
        })
}

/// The method as a metrics label: the standard ones by name, any other as `OTHER`, so clients
/// cannot mint label values (each would be a time series kept for good).
fn method_label(method: &Method) -> String {
    const STANDARD: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::TRACE,
        Method::CONNECT,
    ];
    if STANDARD.contains(method) {
        method.to_string()
    } else {
        "OTHER".to_owned()
    }
}

fn declares_oversize_body(req: &ServiceRequest) -> bool {
    declared_length(req.request()).is_some_and(|length| length > BODY_LIMIT)
}

fn is_problem(response: &ServiceResponse<BoxBody>) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(PROBLEM_JSON.as_bytes()))
}

/// Whether `response` refuses its request as `overloaded`.
fn is_overloaded(response: &ServiceResponse<BoxBody>) -> bool {
    response
        .response()
        .error()
        .and_then(Error::as_error::<ApiError>)
        .is_some_and(|error| error.problem() == Problem::Overloaded)
}

/// Wraps every request; see the module docs.
pub(crate) async fn observe(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    // HEAD is GET without the body: route it as GET; the HTTP codec, which saw the request
    // was HEAD, sends the headers only.
    if req.method() == Method::HEAD {
        req.head_mut().method = Method::GET;
    }
    let request_id = request_id(&req);
    let method = method_label(req.method());
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let span = tracing::info_span!(
        "http request",
        method = %req.method(),
        path = %req.path(),
        request_id = %String::from_utf8_lossy(request_id.as_bytes()),
        trace_id = tracing::field::Empty,
    );
    let trace_id = trace::join(&span, TraceParent::from_headers(req.headers()));
    span.record(trace::TRACE_ID_FIELD, tracing::field::display(trace_id));
    let started = Instant::now();
    // The request must not be cloned before routing (actix needs to own it uniquely), so an
    // error from the inner services is passed on as is; handlers never produce one, since
    // actix turns their errors into responses before they get here.
    let mut response = if declares_oversize_body(&req) {
        let _entered = span.enter();
        req.into_response(ApiError::PayloadTooLarge.error_response())
    } else {
        next.call(req)
            .instrument(span.clone())
            .await?
            .map_into_boxed_body()
    };
    let status = response.status();
    if (status.is_client_error() || status.is_server_error()) && !is_problem(&response) {
        let _entered = span.enter();
        let problem = ApiError::for_status(status).error_response();
        response = response.into_response(problem);
    }
    response.headers_mut().insert(REQUEST_ID, request_id);
    if is_overloaded(&response)
        && let Some(pacer) = response.request().app_data::<Data<RefusalPacer>>()
    {
        pacer.wait_turn().await;
    }

    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    metrics::counter!(
        "registrar_http_requests_total",
        "method" => method.clone(), "route" => route.clone(), "status" => status.to_string()
    )
    .increment(1);
    metrics::histogram!(
        "registrar_http_request_duration_seconds",
        "method" => method, "route" => route
    )
    .record(elapsed.as_secs_f64());
    tracing::info!(parent: &span, status, latency_ms = milliseconds(elapsed), "request completed");
    Ok(response)
}

/// `elapsed` in milliseconds to the microsecond, as a number that prints without float noise
/// (`1.234`, not `1.2340000000000002`).
fn milliseconds(elapsed: std::time::Duration) -> f64 {
    // Exact: a whole number of microseconds below 2^53 divides to the nearest double of its
    // decimal, which is what the shortest-round-trip formatting prints.
    #[allow(
        clippy::cast_precision_loss,
        reason = "below 2^53 µs (285 years) the cast is exact"
    )]
    let micros = elapsed.as_micros() as f64;
    micros / 1e3
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::milliseconds;

    #[test]
    fn latencies_print_without_float_noise() {
        for (elapsed, printed) in [
            (Duration::from_nanos(1_234_567), "1.234"),
            (Duration::from_micros(169_004), "169.004"),
            (Duration::from_micros(300), "0.3"),
            (Duration::from_micros(4_100), "4.1"),
            (Duration::from_secs(2), "2000"),
            (Duration::ZERO, "0"),
        ] {
            assert_eq!(milliseconds(elapsed).to_string(), printed);
        }
        // Seconds scaled up, as the latency used to be computed, print noise.
        assert_eq!(
            (Duration::from_micros(4_100).as_secs_f64() * 1e3).to_string(),
            "4.1000000000000005"
        );
    }
}

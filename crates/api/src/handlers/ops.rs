//! Operations endpoints: liveness, readiness, metrics.

use paperclip::actix::{api_v2_operation, web::Data, web::Json};
use registrar_application::Accounts;

use crate::{ApiError, MetricsSource, dto::HealthBody, reply::PrometheusText};

/// Liveness
#[api_v2_operation(
    operation_id = "healthz",
    tags(Operations),
    summary = "Liveness: the process is up",
    produces = "application/json"
)]
pub(crate) async fn healthz() -> Result<Json<HealthBody>, ApiError> {
    Ok(Json(HealthBody::ALIVE))
}

/// Readiness
#[api_v2_operation(
    operation_id = "readyz",
    tags(Operations),
    summary = "Readiness: the store answers",
    description = "503 `unavailable` while the store cannot be reached.",
    produces = "application/json"
)]
pub(crate) async fn readyz<A: Accounts>(accounts: Data<A>) -> Result<Json<HealthBody>, ApiError> {
    accounts.ready().await?;
    Ok(Json(HealthBody::READY))
}

/// Metrics
#[api_v2_operation(
    operation_id = "metrics",
    tags(Operations),
    summary = "Prometheus metrics",
    description = "Request counts and latency, hashing queue, outbox depth, emails sent and failed.",
    produces = "text/plain"
)]
pub(crate) async fn metrics(source: Data<MetricsSource>) -> Result<PrometheusText, ApiError> {
    Ok(PrometheusText(source.render()))
}

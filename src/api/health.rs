//! Liveness (the process answers), readiness (the database answers and we
//! are not shutting down) and Prometheus metrics.

use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::HttpResponse;
use serde_json::json;

use super::State;
use crate::error::ApiError;

/// Readiness must answer within this, whatever the database does.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

#[utoipa::path(get, path = "/health/live", tag = "operations", description = "The process answers.",
    responses((status = 200)))]
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "UP"}))
}

#[utoipa::path(get, path = "/health/ready", tag = "operations",
    description = "200 while the database answers and the service is not shutting down; 503 otherwise.",
    responses((status = 200), (status = 503, body = crate::error::ErrorBody)))]
pub async fn ready(state: State) -> Result<HttpResponse, ApiError> {
    if state.shutting_down.load(Ordering::SeqCst) {
        return Err(ApiError::Unavailable);
    }
    match tokio::time::timeout(READY_TIMEOUT, state.ctx.store.ping()).await {
        Ok(Ok(())) => Ok(HttpResponse::Ok().json(json!({"status": "UP", "database": "UP"}))),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: database not answering");
            Err(ApiError::Unavailable)
        }
        Err(_) => {
            tracing::warn!("readiness: database check timed out");
            Err(ApiError::Unavailable)
        }
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    description = "Prometheus text: request counts and latency summaries per route and status, pool \
                   connections, password comparisons, argon2 runs, their total time and the argon2 buffers held.",
    responses((status = 200, content_type = "text/plain")))]
pub async fn metrics(state: State) -> HttpResponse {
    let (connections, idle) = state.ctx.store.pool_state();
    metrics::with_local_recorder(state.metrics.as_ref(), || {
        metrics::gauge!("db_pool_connections").set(f64::from(connections));
        metrics::gauge!("db_pool_idle_connections").set(f64::from(idle));
        metrics::counter!("password_comparisons_total").absolute(state.ctx.passwords.comparisons());
        let (runs, seconds) = state.ctx.passwords.hashing_totals();
        metrics::counter!("password_hashes_total").absolute(runs);
        // A counter (monotonic, integer): microseconds rather than seconds.
        metrics::counter!("password_hash_microseconds_total").absolute((seconds * 1e6) as u64);
        // argon2 buffers kept for the next hash (freed after 30 s without one).
        metrics::gauge!("password_hash_buffers_held").set(state.ctx.passwords.buffers_held() as f64);
    });
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.metrics.handle().render())
}

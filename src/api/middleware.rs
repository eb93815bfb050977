//! Every request gets a request id (taken from `x-request-id` when it is
//! sane, generated otherwise), a tracing span carrying it, a log line, and
//! its count and latency in the metrics, labelled by route pattern.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use tracing::Instrument;

use super::State;
use crate::error::ApiError;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const MAX_REQUEST_ID: usize = 128;

#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// A client's request id is kept only if it is short, visible ASCII: it ends
/// up in logs and the audit trail.
fn client_request_id(req: &ServiceRequest) -> Option<String> {
    let value = req.headers().get(REQUEST_ID)?.to_str().ok()?;
    let ok = !value.is_empty() && value.len() <= MAX_REQUEST_ID && value.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| value.to_owned())
}

/// Headers beyond the configured size are refused before any handler runs.
fn headers_too_large(req: &ServiceRequest) -> Option<usize> {
    let limit = req.app_data::<State>()?.ctx.config.settings.server.max_header_bytes;
    let size: usize = req.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    (size > limit).then_some(limit)
}

pub async fn observe<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = client_request_id(&req).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.path());
    let started = Instant::now();
    let mut response = match headers_too_large(&req) {
        Some(limit) => req.error_response(ApiError::HeadersTooLarge(limit)).map_into_right_body(),
        None => next.call(req).instrument(span.clone()).await?.map_into_left_body(),
    };
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let route = response.request().match_pattern().unwrap_or_else(|| "unmatched".to_owned());
    if let Some(state) = response.request().app_data::<State>() {
        metrics::with_local_recorder(state.metrics.as_ref(), || {
            let labels = [("route", route.clone()), ("status", status.to_string())];
            metrics::counter!("http_requests_total", &labels).increment(1);
            metrics::histogram!("http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
        });
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    span.in_scope(|| tracing::info!(status, route = %route, elapsed_ms = elapsed.as_secs_f64() * 1e3, "request"));
    Ok(response)
}

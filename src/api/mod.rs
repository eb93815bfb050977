//! HTTP: actix handlers, one file per resource, and the single route table.
//! Handlers parse and check input, call a use case, and shape the answer;
//! they never touch diesel.

pub mod audit;
pub mod auth;
pub mod health;
pub mod jwks;
pub mod middleware;
pub mod organisation;
pub mod role;
pub mod token;
pub mod user;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use metrics_exporter_prometheus::PrometheusRecorder;

use crate::error::ApiError;
use crate::service::Context;
use crate::service::audit::RequestMeta;

/// Shared by every handler.
pub struct AppState {
    pub ctx: Context,
    /// Set on SIGTERM/SIGINT: readiness answers 503 from then on.
    pub shutting_down: Arc<AtomicBool>,
    pub metrics: Arc<PrometheusRecorder>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

pub type State = web::Data<AppState>;

/// The request id and the peer address, for the audit log.
pub fn request_meta(req: &HttpRequest) -> RequestMeta {
    RequestMeta {
        request_id: req
            .extensions()
            .get::<middleware::RequestId>()
            .map(|r| r.0.clone()),
        // The peer only: forwarding headers are client-controlled unless a
        // trusted proxy sets them (RFC 9700 §4.13).
        source_ip: req.peer_addr().map(|a| a.ip().to_string()),
    }
}

/// The route table: every route of the service, in one place.
pub fn routes(cfg: &mut web::ServiceConfig, body_limit: usize, token_body_limit: usize) {
    cfg.app_data(json_config(body_limit))
        .app_data(
            web::PathConfig::default().error_handler(|_, _| ApiError::NotFound("resource").into()),
        )
        .app_data(
            web::QueryConfig::default()
                .error_handler(|e, _| ApiError::BadRequest(format!("invalid query: {e}")).into()),
        )
        .route("/health/live", web::get().to(health::live))
        .route("/health/ready", web::get().to(health::ready))
        .route("/metrics", web::get().to(health::metrics))
        .route("/.well-known/jwks.json", web::get().to(jwks::jwks))
        .route(
            "/.well-known/oauth-authorization-server",
            web::get().to(token::metadata),
        )
        .service(
            web::scope("/api/sts/token/v1")
                .app_data(web::PayloadConfig::new(token_body_limit))
                .route("", web::post().to(token::token))
                .route("/revoke", web::post().to(token::revoke)),
        )
        .service(
            web::scope("/api/sts/organisation/v1")
                .route("", web::post().to(organisation::create))
                .route("", web::get().to(organisation::list))
                .route("/{id}", web::get().to(organisation::detail))
                .route("/{id}", web::patch().to(organisation::update))
                .route("/{id}", web::delete().to(organisation::delete))
                .route("/{id}/member", web::get().to(organisation::members))
                .route(
                    "/{id}/member/{user_id}",
                    web::put().to(organisation::add_member),
                )
                .route(
                    "/{id}/member/{user_id}",
                    web::delete().to(organisation::remove_member),
                )
                .route(
                    "/{id}/member/{user_id}/permissions",
                    web::get().to(organisation::explain),
                ),
        )
        .service(
            web::scope("/api/sts/user/v1")
                .route("", web::post().to(user::create))
                .route("", web::get().to(user::list))
                .route("/{id}", web::get().to(user::detail))
                .route("/{id}", web::patch().to(user::update))
                .route("/{id}", web::delete().to(user::delete))
                .route("/{id}/secret", web::post().to(user::rotate_secret)),
        )
        .route("/api/sts/audit/v1", web::get().to(audit::list))
        .route("/api/sts/role/v1", web::get().to(role::roles))
        .route("/api/sts/me/v1", web::get().to(role::me))
        .default_service(web::to(not_found));
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("route"))
}

fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(move |error, _| {
            use actix_web::error::JsonPayloadError;
            let api = match &error {
                JsonPayloadError::Overflow { .. }
                | JsonPayloadError::OverflowKnownLength { .. } => ApiError::PayloadTooLarge(limit),
                JsonPayloadError::ContentType => {
                    ApiError::BadRequest("expected Content-Type: application/json".into())
                }
                // serde's data errors describe the client's own input (an unknown
                // or missing field, a wrong type), so they are worth showing.
                JsonPayloadError::Deserialize(e) if e.is_data() => {
                    ApiError::BadRequest(format!("invalid body: {e}"))
                }
                _ => ApiError::BadRequest("malformed JSON body".into()),
            };
            api.into()
        })
}

/// A page request: `page` from 0, `pageSize` 1–1000.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub page: i64,
    pub page_size: i64,
}

pub const MAX_PAGE_SIZE: i64 = 1000;
pub const DEFAULT_PAGE_SIZE: i64 = 50;

impl Page {
    pub fn new(page: Option<i64>, page_size: Option<i64>) -> Result<Self, ApiError> {
        let page = page.unwrap_or(0);
        let page_size = page_size.unwrap_or(DEFAULT_PAGE_SIZE);
        if page < 0 || page > i64::from(i32::MAX) {
            return Err(ApiError::BadRequest("page must be 0 or more".into()));
        }
        if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
            return Err(ApiError::BadRequest(format!(
                "pageSize must be between 1 and {MAX_PAGE_SIZE}"
            )));
        }
        Ok(Self { page, page_size })
    }

    pub fn total_pages(&self, total_items: i64) -> i64 {
        (total_items + self.page_size - 1) / self.page_size
    }
}

/// Core's list shape.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListPage<T> {
    pub values: Vec<T>,
    pub total_pages: i64,
    pub total_items: i64,
}

impl<T> ListPage<T> {
    pub fn new(values: Vec<T>, total_items: i64, page: Page) -> Self {
        Self {
            values,
            total_pages: page.total_pages(total_items),
            total_items,
        }
    }
}

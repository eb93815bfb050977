//! HTTP: actix handlers, one file per resource, and the single route table.
//! Handlers parse and check input, call a use case, and shape the answer;
//! they never touch diesel.

pub mod audit;
pub mod auth;
pub mod health;
pub mod jwks;
pub mod middleware;
pub mod openapi;
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

impl AppState {
    /// The state of one HTTP worker: its own database pool of `connections`,
    /// everything else shared (docs/DECISIONS.md).
    pub fn for_worker(&self, connections: u32) -> Self {
        let ctx = Context { store: self.ctx.store.for_worker(connections), ..self.ctx.clone() };
        Self { ctx, shutting_down: self.shutting_down.clone(), metrics: self.metrics.clone() }
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("ctx", &self.ctx).finish_non_exhaustive()
    }
}

pub type State = web::Data<AppState>;

/// The request id and the client address, for the audit log and throttling.
pub fn request_meta(req: &HttpRequest) -> RequestMeta {
    let trusted = req.app_data::<State>().map(|s| s.ctx.config.trusted_proxies.as_slice()).unwrap_or_default();
    RequestMeta {
        request_id: req.extensions().get::<middleware::RequestId>().map(|r| r.0.clone()),
        source_ip: client_address(req.peer_addr().map(|a| a.ip()), req.headers(), trusted).map(|ip| ip.to_string()),
    }
}

/// The peer, unless the peer is a trusted proxy: then the address that proxy
/// appended last to `X-Forwarded-For`. Forwarding headers from anyone else
/// are client-controlled and ignored (RFC 9700 §4.13), so a client cannot
/// choose the address it is throttled under.
pub fn client_address(
    peer: Option<std::net::IpAddr>,
    headers: &actix_web::http::header::HeaderMap,
    trusted: &[std::net::IpAddr],
) -> Option<std::net::IpAddr> {
    let peer = peer?;
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let forwarded = headers.get_all("x-forwarded-for").filter_map(|v| v.to_str().ok()).last();
    let hop = forwarded.and_then(|list| list.rsplit(',').next()).and_then(|ip| ip.trim().parse().ok());
    Some(hop.unwrap_or(peer))
}

/// Declares the route table once: it registers every route (each path a
/// resource that answers 405 to other methods) and lists them in `ROUTES`,
/// which the OpenAPI test checks against the published description.
macro_rules! route_table {
    ($( $path:literal => { $( $method:ident => $handler:path ),+ $(,)? } ),+ $(,)?) => {
        /// Every (method, path) the service answers, in registration order.
        pub const ROUTES: &[(&str, &str)] = &[ $( $( (stringify!($method), $path) ),+ ),+ ];

        fn register(cfg: &mut web::ServiceConfig) {
            $(
                cfg.service(
                    web::resource($path)
                        $( .route(web::$method().to($handler)) )+
                        .default_service(web::to(method_not_allowed)),
                );
            )+
        }
    };
}

route_table! {
    "/health/live" => { get => health::live },
    "/health/ready" => { get => health::ready },
    "/metrics" => { get => health::metrics },
    "/.well-known/jwks.json" => { get => jwks::jwks },
    "/.well-known/oauth-authorization-server" => { get => token::metadata },
    "/api/sts/openapi.json" => { get => openapi::document },
    "/api/sts/token/v1" => { post => token::token },
    "/api/sts/token/v1/revoke" => { post => token::revoke },
    "/api/sts/organisation/v1" => { post => organisation::create, get => organisation::list },
    "/api/sts/organisation/v1/{id}" => {
        get => organisation::detail,
        patch => organisation::update,
        delete => organisation::delete,
    },
    "/api/sts/organisation/v1/{id}/member" => { get => organisation::members },
    "/api/sts/organisation/v1/{id}/member/{userId}" => {
        put => organisation::add_member,
        delete => organisation::remove_member,
    },
    "/api/sts/organisation/v1/{id}/member/{userId}/permissions" => { get => organisation::explain },
    "/api/sts/user/v1" => { post => user::create, get => user::list },
    "/api/sts/user/v1/{id}" => { get => user::detail, patch => user::update, delete => user::delete },
    "/api/sts/user/v1/{id}/secret" => { post => user::rotate_secret },
    "/api/sts/audit/v1" => { get => audit::list },
    "/api/sts/role/v1" => { get => role::roles },
    "/api/sts/me/v1" => { get => role::me },
}

/// Installs the route table and the extractor settings.
pub fn routes(cfg: &mut web::ServiceConfig) {
    // Path ids are judged by `Ids`, after authentication.
    register(cfg);
    cfg.default_service(web::to(not_found));
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("route"))
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

/// Parses a JSON body after the caller was authenticated and authorised,
/// so that a stranger learns nothing about the body's shape.
pub fn json_body<T: serde::de::DeserializeOwned>(req: &HttpRequest, body: &web::Bytes) -> Result<T, ApiError> {
    let is_json = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
    if !is_json {
        return Err(ApiError::BadRequest("expected Content-Type: application/json".into()));
    }
    serde_json::from_slice(body).map_err(|e| {
        // serde's data errors describe the client's own input (an unknown
        // or missing field, a wrong type), so they are worth showing.
        if e.is_data() {
            ApiError::BadRequest(format!("invalid body: {e}"))
        } else {
            ApiError::BadRequest("malformed JSON body".into())
        }
    })
}

/// Reads a body up to `limit` bytes; `None` when it is larger (413).
pub async fn read_body(payload: web::Payload, limit: usize) -> Result<Option<web::Bytes>, ApiError> {
    match payload.to_bytes_limited(limit).await {
        Ok(Ok(bytes)) => Ok(Some(bytes)),
        Ok(Err(_)) => Err(ApiError::BadRequest("the request body could not be read".into())),
        Err(_) => Ok(None),
    }
}

/// The JSON body of an admin request, read after authorisation, within the
/// configured body limit.
pub async fn admin_body<T: serde::de::DeserializeOwned>(
    req: &HttpRequest,
    state: &State,
    payload: web::Payload,
) -> Result<T, ApiError> {
    let limit = state.ctx.config.settings.server.body_limit_bytes;
    let body = read_body(payload, limit).await?.ok_or(ApiError::PayloadTooLarge(limit))?;
    json_body(req, &body)
}

/// Parses the query string, after authentication (see [`json_body`]).
pub fn query<T: serde::de::DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    serde_urlencoded::from_str(req.query_string()).map_err(|e| ApiError::BadRequest(format!("invalid query: {e}")))
}

/// The answer to a create: the new resource's id.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Created {
    pub id: uuid::Uuid,
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
            return Err(ApiError::BadRequest(format!("pageSize must be between 1 and {MAX_PAGE_SIZE}")));
        }
        Ok(Self { page, page_size })
    }

    pub fn total_pages(&self, total_items: i64) -> i64 {
        (total_items + self.page_size - 1) / self.page_size
    }
}

/// Core's list shape.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListPage<T> {
    pub values: Vec<T>,
    pub total_pages: i64,
    pub total_items: i64,
}

impl<T> ListPage<T> {
    pub fn new(values: Vec<T>, total_items: i64, page: Page) -> Self {
        Self { values, total_pages: page.total_pages(total_items), total_items }
    }
}

/// Path parameters, parsed at extraction but judged only when the handler
/// asks, after authentication: a stranger gets 401 before learning what an
/// id must look like. A malformed id is a 404, like an unknown one.
pub struct Ids<T>(Result<T, ApiError>);

impl<T: serde::de::DeserializeOwned> actix_web::FromRequest for Ids<T> {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(Ok(Self(req.match_info().load::<T>().map_err(|_| ApiError::NotFound("resource")))))
    }
}

impl<T> Ids<T> {
    pub fn get(self) -> Result<T, ApiError> {
        self.0
    }
}

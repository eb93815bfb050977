//! `GET /.well-known/jwks.json`: the public keys (next, current and retired),
//! pre-serialised whenever the key set changes, served from memory with a
//! validator so caches can revalidate.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};

use super::State;

#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "tokens",
    description = "The public Ed25519 keys (CONTRACT §1), with an ETag; 304 on If-None-Match.",
    responses((status = 200, description = "`{keys:[{kty,crv,x,kid,alg,use}]}`"), (status = 304)))]
pub async fn jwks(req: HttpRequest, state: State) -> HttpResponse {
    let keys = state.ctx.keys.ring();
    let max_age = state.ctx.config.settings.tokens.jwks_max_age_secs;
    let cache = format!("public, max-age={max_age}");
    let matches = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == keys.etag()));
    let mut response = if matches { HttpResponse::NotModified() } else { HttpResponse::Ok() };
    response.insert_header((header::CACHE_CONTROL, cache)).insert_header((header::ETAG, keys.etag()));
    if matches {
        return response.finish();
    }
    response
        .insert_header((header::CONTENT_TYPE, HeaderValue::from_static("application/json")))
        .body(keys.jwks().to_vec())
}

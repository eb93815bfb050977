//! The token endpoint (CONTRACT §3): form or JSON bodies, the four grants,
//! revocation (RFC 7009) and the server metadata (RFC 8414).

use actix_web::http::header::{self, HeaderMap};
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{State, request_meta};
use crate::error::OAuthError;
use crate::secret::Secret;
use crate::service::GrantError;
use crate::service::grants::{self, ExchangeRequest, Issued};

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// Every field any grant takes. Unknown fields are ignored (RFC 6749 §3.2);
/// a field given twice is refused by the decoder.
#[derive(Debug, Default, Deserialize)]
pub struct TokenForm {
    grant_type: Option<String>,
    username: Option<String>,
    password: Option<Secret>,
    refresh_token: Option<Secret>,
    client_id: Option<String>,
    client_secret: Option<Secret>,
    organisation_id: Option<String>,
    subject_token: Option<String>,
    subject_token_type: Option<String>,
    actor_token: Option<String>,
    actor_token_type: Option<String>,
    requested_token_type: Option<String>,
    token: Option<Secret>,
}

/// Decodes a token-endpoint body by its Content-Type (form or JSON); public
/// for the fuzz targets.
pub fn decode<T: for<'de> Deserialize<'de>>(headers: &HeaderMap, body: &Bytes) -> Result<T, OAuthError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match mime.as_str() {
        "application/x-www-form-urlencoded" => {
            serde_urlencoded::from_bytes(body).map_err(|_| OAuthError::invalid_request("malformed form body"))
        }
        "application/json" => {
            serde_json::from_slice(body).map_err(|_| OAuthError::invalid_request("malformed JSON body"))
        }
        _ => Err(OAuthError::invalid_request("expected a form or JSON body")),
    }
}

/// HTTP Basic client authentication (RFC 6749 §2.3.1): id and secret are
/// form-urlencoded before base64.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, Secret)>, OAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let bad = || OAuthError::from(GrantError::InvalidClient);
    let value = value.to_str().map_err(|_| bad())?;
    let Some(encoded) = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic ")) else {
        return Ok(None);
    };
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
    let unescape = |s: &str| -> Result<String, OAuthError> {
        url::form_urlencoded::parse(format!("v={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).ok_or_else(bad)
    };
    Ok(Some((unescape(id)?, Secret::new(unescape(secret)?))))
}

fn organisation(raw: Option<&str>) -> Result<Option<Uuid>, OAuthError> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => {
            Uuid::parse_str(s).map(Some).map_err(|_| OAuthError::invalid_request("organisation_id must be a UUID"))
        }
    }
}

fn required<T>(value: Option<T>, message: &'static str) -> Result<T, OAuthError> {
    value.ok_or(OAuthError::invalid_request(message))
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    issued_token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    organisation_id: Option<Uuid>,
}

fn respond(issued: Issued) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(TokenResponse {
            access_token: issued.access_token,
            token_type: "Bearer",
            expires_in: issued.expires_in,
            refresh_token: issued.refresh_token.map(|s| s.expose().to_owned()),
            issued_token_type: issued.issued_token_type,
            organisation_id: issued.organisation_id,
        })
}

/// Reads the body within the token endpoint's own, smaller limit, checked
/// before any parsing or hashing.
async fn read_form(req: &HttpRequest, state: &State, payload: web::Payload) -> Result<TokenForm, OAuthError> {
    let limit = state.ctx.config.settings.server.token_body_limit_bytes;
    let body = super::read_body(payload, limit)
        .await
        .map_err(|_| OAuthError::invalid_request("the request body could not be read"))?
        .ok_or_else(OAuthError::payload_too_large)?;
    decode(req.headers(), &body)
}

#[utoipa::path(post, path = "/api/sts/token/v1", tag = "tokens",
    description = "The token endpoint (CONTRACT §3): grant types password, refresh_token, client_credentials and \
                   urn:ietf:params:oauth:grant-type:token-exchange; form or JSON body.",
    request_body(content_type = "application/x-www-form-urlencoded", description = "RFC 6749 / RFC 8693 parameters"),
    responses((status = 200, body = TokenResponse), (status = 400, body = crate::error::OAuthBody),
        (status = 401, body = crate::error::OAuthBody), (status = 413, body = crate::error::OAuthBody),
        (status = 503, body = crate::error::OAuthBody)))]
pub async fn token(req: HttpRequest, payload: web::Payload, state: State) -> Result<HttpResponse, OAuthError> {
    let form = read_form(&req, &state, payload).await?;
    let meta = request_meta(&req);
    let ctx = &state.ctx;
    let org = organisation(form.organisation_id.as_deref())?;
    let issued = match form.grant_type.as_deref() {
        Some("password") => {
            let username = required(form.username, "username is required")?;
            let password = required(form.password, "password is required")?;
            grants::password(ctx, &meta, username, password, org).await?
        }
        Some("refresh_token") => {
            let token = required(form.refresh_token, "refresh_token is required")?;
            grants::refresh(ctx, &meta, token, org).await?
        }
        Some("client_credentials") => {
            let basic = basic_credentials(req.headers())?;
            let (id, secret) = match (basic, form.client_id, form.client_secret) {
                (Some(_), _, Some(_)) => {
                    return Err(OAuthError::invalid_request("use one client authentication method, not two"));
                }
                (Some((id, secret)), _, None) => (id, secret),
                (None, Some(id), Some(secret)) => (id, secret),
                (None, _, _) => return Err(GrantError::InvalidClient.into()),
            };
            grants::client_credentials(ctx, &meta, id, secret, org).await?
        }
        Some(TOKEN_EXCHANGE) => {
            let request = ExchangeRequest {
                subject_token: form.subject_token,
                subject_token_type: form.subject_token_type,
                actor_token: form.actor_token,
                actor_token_type: form.actor_token_type,
                requested_token_type: form.requested_token_type,
                organisation_id: org,
            };
            grants::exchange(ctx, &meta, request).await?
        }
        Some(_) => return Err(GrantError::UnsupportedGrantType.into()),
        None => return Err(OAuthError::invalid_request("grant_type is required")),
    };
    Ok(respond(issued))
}

/// RFC 7009: always 200 for a well-formed request, whether or not the token
/// was known, so the endpoint cannot be used to probe for tokens.
#[utoipa::path(post, path = "/api/sts/token/v1/revoke", tag = "tokens",
    description = "RFC 7009: revokes a refresh token and its whole family; 200 whether or not the token was known.",
    request_body(content_type = "application/x-www-form-urlencoded", description = "`token`"),
    responses((status = 200), (status = 400, body = crate::error::OAuthBody)))]
pub async fn revoke(req: HttpRequest, payload: web::Payload, state: State) -> Result<HttpResponse, OAuthError> {
    let form = read_form(&req, &state, payload).await?;
    let token = required(form.token, "token is required")?;
    grants::revoke(&state.ctx, &request_meta(&req), token).await?;
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).finish())
}

#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "tokens",
    description = "RFC 8414 server metadata.", responses((status = 200)))]
pub async fn metadata(state: State) -> HttpResponse {
    let issuer = &state.ctx.config.issuer;
    HttpResponse::Ok().json(serde_json::json!({
        "issuer": issuer,
        "token_endpoint": format!("{issuer}/api/sts/token/v1"),
        "revocation_endpoint": format!("{issuer}/api/sts/token/v1/revoke"),
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "grant_types_supported": ["password", "refresh_token", "client_credentials", TOKEN_EXCHANGE],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "response_types_supported": [],
    }))
}

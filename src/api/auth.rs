//! Bearer authentication for the admin API: our own tokens, checked by the
//! one verifier. A refused request (401, 403) leaves an audit event.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest};

use super::{State, request_meta};
use crate::error::ApiError;
use crate::service::audit::{self, AuditEvent, Author, Caller, Outcome, RequestMeta};
use crate::tokens::AccessClaims;

/// The audit subject of a request without a valid token.
pub const ANONYMOUS: &str = "anonymous";

/// A request that carried a valid access token of ours.
#[derive(Debug)]
pub struct Authenticated {
    pub claims: Arc<AccessClaims>,
    pub meta: RequestMeta,
    state: State,
    action: String,
}

impl Authenticated {
    pub fn caller(&self) -> Caller {
        Caller { sub: self.claims.sub, actor: self.claims.act.as_ref().map(|a| a.sub) }
    }

    /// 401 (and an audit event) if the token's subject (or actor) has since
    /// been disabled or deleted; for routes that any valid token may use.
    pub async fn active(&self) -> Result<Caller, ApiError> {
        let caller = self.caller();
        let author = Author::Caller { caller, route: self.action.clone() };
        audit::refuse_inactive(&self.state.ctx, &self.meta, &author).await?;
        Ok(caller)
    }

    /// For reads: 403 (and an audit event) unless the token holds
    /// `permission`; 401 if its subject (or actor) has since been disabled
    /// or deleted: the admin API does not wait for the token to expire.
    pub async fn require(&self, permission: &'static str) -> Result<Caller, ApiError> {
        self.permitted(permission).await?;
        self.active().await
    }

    /// For writes: 403 (and an audit event) unless the token holds
    /// `permission`. Whether the caller is still active is decided by the
    /// write itself, in its transaction (`audit::audited_write`), which
    /// answers 401 as `require` would.
    pub async fn author(&self, permission: &'static str) -> Result<Author, ApiError> {
        self.permitted(permission).await?;
        Ok(Author::Caller { caller: self.caller(), route: self.action.clone() })
    }

    async fn permitted(&self, permission: &'static str) -> Result<(), ApiError> {
        if self.claims.has_permission(permission) {
            return Ok(());
        }
        let event = AuditEvent::new("admin.denied", Outcome::Denied)
            .subject(self.claims.sub)
            .actor(self.claims.act.as_ref().map(|a| a.sub))
            .organisation(self.claims.organisation_id)
            .target(&self.action)
            .reason(format!("403: missing {permission}"));
        record_denial(&self.state, &self.meta, event).await?;
        Err(ApiError::Forbidden(format!("the token lacks the permission {permission}")))
    }
}

/// Writes a refusal; if even that cannot be written the answer is 503, so
/// no refusal goes unrecorded.
async fn record_denial(state: &State, meta: &RequestMeta, event: AuditEvent) -> Result<(), ApiError> {
    audit::record_now(&state.ctx, meta, event).await.map_err(ApiError::from)
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<State>().cloned();
        let meta = request_meta(req);
        let action = format!("{} {}", req.method(), req.match_pattern().unwrap_or_else(|| req.path().to_owned()));
        let verified = state
            .as_ref()
            .map(|s| bearer(req).ok_or(None).and_then(|t| s.ctx.verifier.verify(&s.ctx.keys.ring(), t).map_err(Some)));
        Box::pin(async move {
            let Some(state) = state else {
                return Err(ApiError::Internal);
            };
            match verified {
                Some(Ok(claims)) => Ok(Self { claims, meta, state, action }),
                Some(Err(rejection)) => {
                    let reason = match rejection {
                        Some(r) => format!("401: {r}"),
                        None => "401: no bearer token".to_owned(),
                    };
                    let event = AuditEvent::new("admin.denied", Outcome::Denied)
                        .subject(ANONYMOUS)
                        .target(&action)
                        .reason(reason);
                    record_denial(&state, &meta, event).await?;
                    Err(ApiError::Unauthenticated)
                }
                None => Err(ApiError::Internal),
            }
        })
    }
}

//! `GET /api/sts/role/v1` (both role mappings) and `GET /api/sts/me/v1`
//! (the caller and what a token for each of their organisations holds).

use std::collections::BTreeMap;

use actix_web::HttpResponse;

use super::State;
use super::auth::Authenticated;
use crate::error::ApiError;
use crate::service::me;

#[utoipa::path(get, path = "/api/sts/role/v1", tag = "roles",
    description = "Both role mappings: system roles (grants) and organisation roles (ceilings). Any valid token.",
    security(("bearer" = [])), responses((status = 200, description = "`{systemRoles, organisationRoles}`"),
        (status = 401, body = crate::error::ErrorBody)))]
pub async fn roles(auth: Authenticated, state: State) -> Result<HttpResponse, ApiError> {
    auth.active().await?;
    let catalog = &state.ctx.config.roles;
    let organisation_roles: BTreeMap<&str, _> =
        catalog.organisation_roles().iter().map(|(role, set)| (role.as_str(), set)).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "systemRoles": catalog.system_roles(),
        "organisationRoles": organisation_roles,
    })))
}

#[utoipa::path(get, path = "/api/sts/me/v1", tag = "roles",
    description = "The caller, their system roles and, per organisation, what a token for it would hold. Any valid token.",
    security(("bearer" = [])), responses((status = 200, body = me::MeView), (status = 401, body = crate::error::ErrorBody)))]
pub async fn me(auth: Authenticated, state: State) -> Result<HttpResponse, ApiError> {
    auth.active().await?;
    let me = me::me(&state.ctx, auth.claims.sub).await?;
    Ok(HttpResponse::Ok().json(me))
}

//! `/api/sts/user/v1`: users and technical users.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::Authenticated;
use super::{Ids, ListPage, Page, State, admin_body, query};
use crate::domain::PermissionSet;
use crate::error::{ApiError, ErrorBody};
use crate::secret::Secret;
use crate::service::users::{self, Kind, NewUser, UserChanges, UserView};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateUser {
    username: String,
    /// `USER` (default) or `TECHNICAL`.
    #[serde(rename = "type")]
    kind: Option<String>,
    /// Users only; at least 15 characters. Technical users get a secret.
    #[schema(value_type = Option<String>, format = Password)]
    password: Option<Secret>,
    #[serde(default)]
    system_roles: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedUser {
    id: Uuid,
    /// A technical user's client secret: shown once, never again.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret: Option<String>,
}

/// What the caller may hand out: no more than their own token holds.
fn grantable(auth: &Authenticated) -> PermissionSet {
    auth.claims.permissions.iter().cloned().collect()
}

#[utoipa::path(post, path = "/api/sts/user/v1", tag = "users",
    description = "Creates a user or a technical user. A caller can only assign system roles whose \
                   permissions their own token holds. Permission: STS_USER_CREATE.",
    request_body = CreateUser, security(("bearer" = [])),
    responses((status = 201, body = CreatedUser), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create(
    req: HttpRequest,
    auth: Authenticated,
    state: State,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let author = auth.author("STS_USER_CREATE").await?;
    let body: CreateUser = admin_body(&req, &state, payload).await?;
    let kind = match body.kind.as_deref() {
        None | Some("USER") => Kind::User,
        Some("TECHNICAL") => Kind::Technical,
        Some(_) => return Err(ApiError::BadRequest("type must be USER or TECHNICAL".into())),
    };
    let new = NewUser { username: body.username, kind, password: body.password, system_roles: body.system_roles };
    let created = users::create(&state.ctx, &auth.meta, (author, Some(grantable(&auth))), new).await?;
    let client_secret = created.client_secret.map(|s| s.expose().to_owned());
    Ok(HttpResponse::Created()
        .insert_header(("Cache-Control", "no-store"))
        .json(CreatedUser { id: created.id, client_secret }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    page: Option<i64>,
    page_size: Option<i64>,
}

#[utoipa::path(get, path = "/api/sts/user/v1", tag = "users",
    description = "Lists users by username, paged. Permission: STS_USER_LIST.",
    params(ListParams), security(("bearer" = [])),
    responses((status = 200, body = ListPage<UserView>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list(req: HttpRequest, auth: Authenticated, state: State) -> Result<HttpResponse, ApiError> {
    auth.require("STS_USER_LIST").await?;
    let params: ListParams = query(&req)?;
    let page = Page::new(params.page, params.page_size)?;
    let (values, total) = users::list(&state.ctx, page.page, page.page_size).await?;
    Ok(HttpResponse::Ok().json(ListPage::new(values, total, page)))
}

#[utoipa::path(get, path = "/api/sts/user/v1/{id}", tag = "users",
    description = "One user. Permission: STS_USER_DETAIL.",
    params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = UserView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn detail(auth: Authenticated, state: State, id: Ids<Uuid>) -> Result<HttpResponse, ApiError> {
    auth.require("STS_USER_DETAIL").await?;
    let id = id.get()?;
    Ok(HttpResponse::Ok().json(users::get(&state.ctx, id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateUser {
    system_roles: Option<Vec<String>>,
    #[schema(value_type = Option<String>, format = Password)]
    password: Option<Secret>,
    disabled: Option<bool>,
}

#[utoipa::path(patch, path = "/api/sts/user/v1/{id}", tag = "users",
    description = "Changes system roles, password or disabled state. A new password or disabling ends every \
                   refresh token of the user. Permission: STS_USER_EDIT.",
    params(("id" = Uuid, Path)), request_body = UpdateUser, security(("bearer" = [])),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update(
    req: HttpRequest,
    auth: Authenticated,
    state: State,
    id: Ids<Uuid>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let author = auth.author("STS_USER_EDIT").await?;
    let id = id.get()?;
    let body: UpdateUser = admin_body(&req, &state, payload).await?;
    let changes = UserChanges { system_roles: body.system_roles, password: body.password, disabled: body.disabled };
    users::update(&state.ctx, &auth.meta, (author, Some(grantable(&auth))), id, changes).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(delete, path = "/api/sts/user/v1/{id}", tag = "users",
    description = "Deletes a user, their memberships and refresh tokens. Permission: STS_USER_DELETE.",
    params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn delete(auth: Authenticated, state: State, id: Ids<Uuid>) -> Result<HttpResponse, ApiError> {
    let author = auth.author("STS_USER_DELETE").await?;
    let id = id.get()?;
    users::delete(&state.ctx, &auth.meta, author, id).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotatedSecret {
    /// The new client secret: shown once; the old one stops working now.
    client_secret: String,
}

#[utoipa::path(post, path = "/api/sts/user/v1/{id}/secret", tag = "users",
    description = "Rotates a technical user's client secret. Permission: STS_USER_EDIT.",
    params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = RotatedSecret), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn rotate_secret(auth: Authenticated, state: State, id: Ids<Uuid>) -> Result<HttpResponse, ApiError> {
    let author = auth.author("STS_USER_EDIT").await?;
    let id = id.get()?;
    let secret = users::rotate_secret(&state.ctx, &auth.meta, author, id).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(RotatedSecret { client_secret: secret.expose().to_owned() }))
}

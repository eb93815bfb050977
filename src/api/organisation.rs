//! `/api/sts/organisation/v1`: the organisation lifecycle and memberships.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::Authenticated;
use super::{Created, Ids, ListPage, Page, State, admin_body, query};
use crate::domain::OrganisationRole;
use crate::error::{ApiError, ErrorBody};
use crate::service::organisations::{ExplainView, ListQuery, OrganisationView, SortBy};
use crate::service::users::UserView;
use crate::service::{memberships, organisations};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrganisation {
    /// Trimmed; 1–200 characters; unique case-insensitively.
    name: String,
    /// A non-empty set of organisation roles.
    #[schema(value_type = Vec<String>, example = json!(["ISSUER"]))]
    roles: Vec<OrganisationRole>,
    /// A UUID never used before; generated when absent.
    id: Option<Uuid>,
}

#[utoipa::path(post, path = "/api/sts/organisation/v1", tag = "organisations",
    description = "Creates an active organisation. Permission: STS_ORGANISATION_CREATE.",
    request_body = CreateOrganisation, security(("bearer" = [])),
    responses((status = 201, body = Created), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create(
    req: HttpRequest,
    auth: Authenticated,
    state: State,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let author = auth.author("STS_ORGANISATION_CREATE").await?;
    let body: CreateOrganisation = admin_body(&req, &state, payload).await?;
    let id = organisations::create(&state.ctx, &auth.meta, author, &body.name, &body.roles, body.id).await?;
    Ok(HttpResponse::Created().json(Created { id }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// From 0.
    page: Option<i64>,
    /// 1–1000, default 50.
    page_size: Option<i64>,
    /// Name prefix, case-insensitive.
    name: Option<String>,
    /// `ACTIVE` or `DEACTIVATED`.
    status: Option<String>,
    /// `name` (default) or `createdDate`.
    sort: Option<String>,
    /// `ASC` (default) or `DESC`.
    sort_direction: Option<String>,
}

#[utoipa::path(get, path = "/api/sts/organisation/v1", tag = "organisations",
    description = "Lists organisations, paged, filtered and sorted. Permission: STS_ORGANISATION_LIST.",
    params(ListParams), security(("bearer" = [])),
    responses((status = 200, body = ListPage<OrganisationView>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list(req: HttpRequest, auth: Authenticated, state: State) -> Result<HttpResponse, ApiError> {
    auth.require("STS_ORGANISATION_LIST").await?;
    let params: ListParams = query(&req)?;
    let page = Page::new(params.page, params.page_size)?;
    let deactivated = match params.status.as_deref() {
        None => None,
        Some("ACTIVE") => Some(false),
        Some("DEACTIVATED") => Some(true),
        Some(_) => return Err(ApiError::BadRequest("status must be ACTIVE or DEACTIVATED".into())),
    };
    let sort = match params.sort.as_deref() {
        None | Some("name") => SortBy::Name,
        Some("createdDate") => SortBy::CreatedDate,
        Some(_) => return Err(ApiError::BadRequest("sort must be name or createdDate".into())),
    };
    let descending = match params.sort_direction.as_deref() {
        None | Some("ASC") => false,
        Some("DESC") => true,
        Some(_) => return Err(ApiError::BadRequest("sortDirection must be ASC or DESC".into())),
    };
    let query = ListQuery {
        name_prefix: params.name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()),
        deactivated,
        sort,
        descending,
        page: page.page,
        page_size: page.page_size,
    };
    let (values, total) = organisations::list(&state.ctx, query).await?;
    Ok(HttpResponse::Ok().json(ListPage::new(values, total, page)))
}

#[utoipa::path(get, path = "/api/sts/organisation/v1/{id}", tag = "organisations",
    description = "One organisation, deactivated ones included. Permission: STS_ORGANISATION_DETAIL.",
    params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = OrganisationView), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn detail(auth: Authenticated, state: State, id: Ids<Uuid>) -> Result<HttpResponse, ApiError> {
    auth.require("STS_ORGANISATION_DETAIL").await?;
    let id = id.get()?;
    Ok(HttpResponse::Ok().json(organisations::get(&state.ctx, id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateOrganisation {
    name: Option<String>,
    #[schema(value_type = Option<Vec<String>>)]
    roles: Option<Vec<OrganisationRole>>,
    /// `true` deactivates, `false` reactivates.
    deactivate: Option<bool>,
}

#[utoipa::path(patch, path = "/api/sts/organisation/v1/{id}", tag = "organisations",
    description = "Renames, changes roles, deactivates or reactivates. Permission: STS_ORGANISATION_EDIT.",
    params(("id" = Uuid, Path)), request_body = UpdateOrganisation, security(("bearer" = [])),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn update(
    req: HttpRequest,
    auth: Authenticated,
    state: State,
    id: Ids<Uuid>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let author = auth.author("STS_ORGANISATION_EDIT").await?;
    let id = id.get()?;
    let body: UpdateOrganisation = admin_body(&req, &state, payload).await?;
    let changes = organisations::Changes { name: body.name, roles: body.roles, deactivate: body.deactivate };
    organisations::update(&state.ctx, &auth.meta, author, id, changes).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(delete, path = "/api/sts/organisation/v1/{id}", tag = "organisations",
    description = "Deletes the organisation, its memberships and refresh tokens; the audit trail stays. \
                   Permission: STS_ORGANISATION_DELETE.",
    params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn delete(auth: Authenticated, state: State, id: Ids<Uuid>) -> Result<HttpResponse, ApiError> {
    let author = auth.author("STS_ORGANISATION_DELETE").await?;
    let id = id.get()?;
    organisations::delete(&state.ctx, &auth.meta, author, id).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/api/sts/organisation/v1/{id}/member", tag = "memberships",
    description = "The organisation's members. Permission: STS_ORGANISATION_DETAIL.",
    params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = ListPage<UserView>), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn members(auth: Authenticated, state: State, id: Ids<Uuid>) -> Result<HttpResponse, ApiError> {
    auth.require("STS_ORGANISATION_DETAIL").await?;
    let id = id.get()?;
    let values = memberships::list(&state.ctx, id).await?;
    let total = i64::try_from(values.len()).unwrap_or(i64::MAX);
    Ok(HttpResponse::Ok().json(ListPage { values, total_pages: i64::from(total > 0), total_items: total }))
}

#[utoipa::path(put, path = "/api/sts/organisation/v1/{id}/member/{userId}", tag = "memberships",
    description = "Adds a member (idempotent); refused with 409 while the organisation is deactivated. \
                   Permission: STS_ORGANISATION_EDIT.",
    params(("id" = Uuid, Path), ("userId" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn add_member(auth: Authenticated, state: State, path: Ids<(Uuid, Uuid)>) -> Result<HttpResponse, ApiError> {
    let author = auth.author("STS_ORGANISATION_EDIT").await?;
    let (id, user) = path.get()?;
    memberships::add(&state.ctx, &auth.meta, author, id, user).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(delete, path = "/api/sts/organisation/v1/{id}/member/{userId}", tag = "memberships",
    description = "Removes a member and ends their refresh tokens for this organisation. \
                   Permission: STS_ORGANISATION_EDIT.",
    params(("id" = Uuid, Path), ("userId" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn remove_member(
    auth: Authenticated,
    state: State,
    path: Ids<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let author = auth.author("STS_ORGANISATION_EDIT").await?;
    let (id, user) = path.get()?;
    memberships::remove(&state.ctx, &auth.meta, author, id, user).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/api/sts/organisation/v1/{id}/member/{userId}/permissions", tag = "memberships",
    description = "Why a token for this member holds what it holds: the user's permissions, the ceiling, \
                   what is granted and what the ceiling removed. Permission: STS_ORGANISATION_DETAIL.",
    params(("id" = Uuid, Path), ("userId" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = ExplainView), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn explain(auth: Authenticated, state: State, path: Ids<(Uuid, Uuid)>) -> Result<HttpResponse, ApiError> {
    auth.require("STS_ORGANISATION_DETAIL").await?;
    let (id, user) = path.get()?;
    Ok(HttpResponse::Ok().json(organisations::explain_member(&state.ctx, id, user).await?))
}

//! `/api/sts/organisation/v1`: the organisation lifecycle and memberships.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use uuid::Uuid;

use super::auth::Authenticated;
use super::{ListPage, Page, State};
use crate::domain::OrganisationRole;
use crate::error::ApiError;
use crate::service::{memberships, organisations};
use crate::store::organisations::{ListQuery, SortBy};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    name: String,
    roles: Vec<OrganisationRole>,
    id: Option<Uuid>,
}

pub async fn create(
    auth: Authenticated,
    state: State,
    body: web::Json<CreateBody>,
) -> Result<HttpResponse, ApiError> {
    let caller = auth.require("STS_ORGANISATION_CREATE").await?;
    let body = body.into_inner();
    let id = organisations::create(
        &state.ctx,
        &auth.meta,
        caller,
        &body.name,
        &body.roles,
        body.id,
    )
    .await?;
    Ok(HttpResponse::Created().json(serde_json::json!({ "id": id })))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListParams {
    page: Option<i64>,
    page_size: Option<i64>,
    name: Option<String>,
    status: Option<String>,
    sort: Option<String>,
    sort_direction: Option<String>,
}

pub async fn list(
    auth: Authenticated,
    state: State,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    auth.require("STS_ORGANISATION_LIST").await?;
    let params = params.into_inner();
    let page = Page::new(params.page, params.page_size)?;
    let deactivated = match params.status.as_deref() {
        None => None,
        Some("ACTIVE") => Some(false),
        Some("DEACTIVATED") => Some(true),
        Some(_) => {
            return Err(ApiError::BadRequest(
                "status must be ACTIVE or DEACTIVATED".into(),
            ));
        }
    };
    let sort = match params.sort.as_deref() {
        None | Some("name") => SortBy::Name,
        Some("createdDate") => SortBy::CreatedDate,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "sort must be name or createdDate".into(),
            ));
        }
    };
    let descending = match params.sort_direction.as_deref() {
        None | Some("ASC") => false,
        Some("DESC") => true,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "sortDirection must be ASC or DESC".into(),
            ));
        }
    };
    let query = ListQuery {
        name_prefix: params
            .name
            .filter(|n| !n.trim().is_empty())
            .map(|n| n.trim().to_owned()),
        deactivated,
        sort,
        descending,
        page: page.page,
        page_size: page.page_size,
    };
    let (values, total) = organisations::list(&state.ctx, query).await?;
    Ok(HttpResponse::Ok().json(ListPage::new(values, total, page)))
}

pub async fn detail(
    auth: Authenticated,
    state: State,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    auth.require("STS_ORGANISATION_DETAIL").await?;
    Ok(HttpResponse::Ok().json(organisations::get(&state.ctx, *id).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    name: Option<String>,
    roles: Option<Vec<OrganisationRole>>,
    deactivate: Option<bool>,
}

pub async fn update(
    auth: Authenticated,
    state: State,
    id: web::Path<Uuid>,
    body: web::Json<UpdateBody>,
) -> Result<HttpResponse, ApiError> {
    let caller = auth.require("STS_ORGANISATION_EDIT").await?;
    let body = body.into_inner();
    let changes = organisations::Changes {
        name: body.name,
        roles: body.roles,
        deactivate: body.deactivate,
    };
    organisations::update(&state.ctx, &auth.meta, caller, *id, changes).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn delete(
    auth: Authenticated,
    state: State,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let caller = auth.require("STS_ORGANISATION_DELETE").await?;
    organisations::delete(&state.ctx, &auth.meta, caller, *id).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn members(
    auth: Authenticated,
    state: State,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    auth.require("STS_ORGANISATION_DETAIL").await?;
    let values = memberships::list(&state.ctx, *id).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "values": values })))
}

pub async fn add_member(
    auth: Authenticated,
    state: State,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let caller = auth.require("STS_ORGANISATION_EDIT").await?;
    let (id, user) = path.into_inner();
    memberships::add(&state.ctx, &auth.meta, caller, id, user).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn remove_member(
    auth: Authenticated,
    state: State,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let caller = auth.require("STS_ORGANISATION_EDIT").await?;
    let (id, user) = path.into_inner();
    memberships::remove(&state.ctx, &auth.meta, caller, id, user).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn explain(
    auth: Authenticated,
    state: State,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    auth.require("STS_ORGANISATION_DETAIL").await?;
    let (id, user) = path.into_inner();
    Ok(HttpResponse::Ok().json(organisations::explain_member(&state.ctx, id, user).await?))
}

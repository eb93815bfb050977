//! `/api/sts/user/v1`: users and technical users.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use uuid::Uuid;

use super::auth::Authenticated;
use super::{ListPage, Page, State};
use crate::error::ApiError;
use crate::secret::Secret;
use crate::service::users::{self, Kind, NewUser, UserChanges};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateBody {
    username: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    password: Option<Secret>,
    #[serde(default)]
    system_roles: Vec<String>,
}

pub async fn create(
    auth: Authenticated,
    state: State,
    body: web::Json<CreateBody>,
) -> Result<HttpResponse, ApiError> {
    let caller = auth.require("STS_USER_CREATE").await?;
    let body = body.into_inner();
    let kind = match body.kind.as_deref() {
        None | Some("USER") => Kind::User,
        Some("TECHNICAL") => Kind::Technical,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "type must be USER or TECHNICAL".into(),
            ));
        }
    };
    let new = NewUser {
        username: body.username,
        kind,
        password: body.password,
        system_roles: body.system_roles,
    };
    let created = users::create(&state.ctx, &auth.meta, Some(caller), new).await?;
    let mut answer = serde_json::json!({ "id": created.id });
    if let Some(secret) = created.client_secret {
        answer["clientSecret"] = secret.expose().into();
    }
    Ok(HttpResponse::Created()
        .insert_header(("Cache-Control", "no-store"))
        .json(answer))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListParams {
    page: Option<i64>,
    page_size: Option<i64>,
}

pub async fn list(
    auth: Authenticated,
    state: State,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    auth.require("STS_USER_LIST").await?;
    let page = Page::new(params.page, params.page_size)?;
    let (values, total) = users::list(&state.ctx, page.page, page.page_size).await?;
    Ok(HttpResponse::Ok().json(ListPage::new(values, total, page)))
}

pub async fn detail(
    auth: Authenticated,
    state: State,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    auth.require("STS_USER_DETAIL").await?;
    Ok(HttpResponse::Ok().json(users::get(&state.ctx, *id).await?))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateBody {
    system_roles: Option<Vec<String>>,
    password: Option<Secret>,
    disabled: Option<bool>,
}

pub async fn update(
    auth: Authenticated,
    state: State,
    id: web::Path<Uuid>,
    body: web::Json<UpdateBody>,
) -> Result<HttpResponse, ApiError> {
    let caller = auth.require("STS_USER_EDIT").await?;
    let body = body.into_inner();
    let changes = UserChanges {
        system_roles: body.system_roles,
        password: body.password,
        disabled: body.disabled,
    };
    users::update(&state.ctx, &auth.meta, caller, *id, changes).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn delete(
    auth: Authenticated,
    state: State,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let caller = auth.require("STS_USER_DELETE").await?;
    users::delete(&state.ctx, &auth.meta, caller, *id).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn rotate_secret(
    auth: Authenticated,
    state: State,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let caller = auth.require("STS_USER_EDIT").await?;
    let secret = users::rotate_secret(&state.ctx, &auth.meta, caller, *id).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(serde_json::json!({ "clientSecret": secret.expose() })))
}

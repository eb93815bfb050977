//! `GET /api/sts/audit/v1`: the audit log, newest first, filtered and paged.

use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::auth::Authenticated;
use super::{ListPage, Page, State, query};
use crate::error::{ApiError, ErrorBody};
use crate::service::audit::{self, AuditQuery as Filter, AuditView};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    page: Option<i64>,
    page_size: Option<i64>,
    organisation_id: Option<Uuid>,
    subject: Option<String>,
    action: Option<String>,
    /// RFC 3339, inclusive.
    created_date_from: Option<DateTime<Utc>>,
    /// RFC 3339, inclusive.
    created_date_to: Option<DateTime<Utc>>,
}

#[utoipa::path(get, path = "/api/sts/audit/v1", tag = "audit",
    description = "Audit events, newest first; events of deleted organisations stay. Permission: STS_AUDIT_LIST.",
    params(AuditQuery), security(("bearer" = [])),
    responses((status = 200, body = ListPage<AuditView>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list(req: HttpRequest, auth: Authenticated, state: State) -> Result<HttpResponse, ApiError> {
    auth.require("STS_AUDIT_LIST").await?;
    let query: AuditQuery = query(&req)?;
    let page = Page::new(query.page, query.page_size)?;
    let filter = Filter {
        organisation_id: query.organisation_id,
        subject: query.subject,
        action: query.action,
        from: query.created_date_from,
        to: query.created_date_to,
    };
    let (events, total) = audit::list(&state.ctx, filter, page.page, page.page_size).await?;
    Ok(HttpResponse::Ok().json(ListPage::new(events, total, page)))
}

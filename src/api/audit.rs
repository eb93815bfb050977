//! `GET /api/sts/audit/v1`: the audit log, newest first, filtered and paged.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::auth::Authenticated;
use super::{ListPage, Page, State};
use crate::error::ApiError;
use crate::service::audit::{self, AuditQuery as Filter};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditQuery {
    page: Option<i64>,
    page_size: Option<i64>,
    organisation_id: Option<Uuid>,
    subject: Option<String>,
    action: Option<String>,
    created_date_from: Option<DateTime<Utc>>,
    created_date_to: Option<DateTime<Utc>>,
}

pub async fn list(
    auth: Authenticated,
    state: State,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    auth.require("STS_AUDIT_LIST").await?;
    let query = query.into_inner();
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

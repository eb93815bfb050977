//! Organisation lifecycle: create, list, read, edit (rename, roles,
//! deactivate/reactivate), delete, and the permission explanation.

use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use serde::Serialize;
use uuid::Uuid;

use super::audit::{self, AuditEvent, Author, Outcome, RequestMeta};
use super::grants::ceiling_of;
use super::{Context, ServiceError};
use crate::domain::OrganisationRole;
use crate::domain::names;
use crate::domain::permissions::explain;
use crate::store::memberships::MembershipsOf;
use crate::store::organisations::{self as rows, OrganisationRow};
pub use crate::store::organisations::{ListQuery, SortBy};
use crate::store::refresh_tokens::{self, TokensOf};
use crate::store::types::{DbNames, DbUuid};
use crate::store::{StoreError, memberships, users};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrganisationView {
    pub id: Uuid,
    pub name: String,
    pub roles: Vec<String>,
    pub status: &'static str,
    pub created_date: DateTime<Utc>,
    pub last_modified: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deactivated_at: Option<DateTime<Utc>>,
}

impl From<OrganisationRow> for OrganisationView {
    fn from(row: OrganisationRow) -> Self {
        Self {
            id: row.id.0,
            name: row.name,
            roles: row.roles.0,
            status: if row.deactivated_at.is_some() { "DEACTIVATED" } else { "ACTIVE" },
            created_date: row.created_at.0,
            last_modified: row.last_modified.0,
            deactivated_at: row.deactivated_at.map(|t| t.0),
        }
    }
}

/// Sorted, deduplicated, non-empty role names.
fn role_names(roles: &[OrganisationRole]) -> Result<Vec<String>, ServiceError> {
    if roles.is_empty() {
        return Err(ServiceError::Invalid("roles must name at least one organisation role".into()));
    }
    let mut sorted = roles.to_vec();
    sorted.sort();
    sorted.dedup();
    Ok(sorted.iter().map(|r| r.as_str().to_owned()).collect())
}

fn event(action: &'static str, id: Uuid) -> AuditEvent {
    AuditEvent::new(action, Outcome::Success).organisation(Some(id)).target(id)
}

pub async fn create(
    ctx: &Context,
    meta: &RequestMeta,
    author: Author,
    name: &str,
    roles: &[OrganisationRole],
    id: Option<Uuid>,
) -> Result<Uuid, ServiceError> {
    let id = id.unwrap_or_else(Uuid::new_v4);
    let (name, roles) = (name.to_owned(), roles.to_vec());
    // One statement: sent with its audit row.
    audit::audited_statement(ctx, meta, &author, event("organisation.create", id), move |conn, now| {
        async move {
            let name = names::organisation_name(&name).map_err(|e| ServiceError::Invalid(format!("name {e}")))?;
            let roles = role_names(&roles)?;
            let row = OrganisationRow {
                id: DbUuid(id),
                name: name.display,
                name_key: name.key,
                roles: DbNames(roles),
                created_at: now,
                last_modified: now,
                deactivated_at: None,
            };
            // The unique indexes decide, in the same statement as the insert: no
            // read before it, and a concurrent create of the same name loses.
            rows::insert_on(conn, &row).await.map_err(|error| match StoreError::from(error) {
                StoreError::Conflict(index) if index.contains("name_key") => {
                    ServiceError::Conflict("an organisation with this name exists".into())
                }
                StoreError::Conflict(_) => ServiceError::Conflict("an organisation with this id exists".into()),
                other => other.into(),
            })?;
            Ok(id)
        }
        .boxed()
    })
    .await
}

pub async fn get(ctx: &Context, id: Uuid) -> Result<OrganisationView, ServiceError> {
    let row = ctx
        .store
        .run(move |conn| async move { rows::find(conn, DbUuid(id)).await.map_err(ServiceError::from) }.boxed())
        .await?;
    row.map(Into::into).ok_or(ServiceError::NotFound("organisation"))
}

pub async fn list(ctx: &Context, query: ListQuery) -> Result<(Vec<OrganisationView>, i64), ServiceError> {
    let (rows, total) = ctx
        .store
        .run(move |conn| async move { rows::list(conn, &query).await.map_err(ServiceError::from) }.boxed())
        .await?;
    Ok((rows.into_iter().map(Into::into).collect(), total))
}

#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub name: Option<String>,
    pub roles: Option<Vec<OrganisationRole>>,
    pub deactivate: Option<bool>,
}

pub async fn update(
    ctx: &Context,
    meta: &RequestMeta,
    author: Author,
    id: Uuid,
    changes: Changes,
) -> Result<(), ServiceError> {
    audit::audited_write(ctx, meta, &author, event("organisation.update", id), move |conn, now, event| {
        async move {
            if changes.name.is_none() && changes.roles.is_none() && changes.deactivate.is_none() {
                return Err(ServiceError::Invalid("nothing to change: give name, roles or deactivate".into()));
            }
            let name = changes
                .name
                .as_deref()
                .map(names::organisation_name)
                .transpose()
                .map_err(|e| ServiceError::Invalid(format!("name {e}")))?;
            let roles = changes.roles.as_deref().map(role_names).transpose()?;
            let mut row = rows::find(conn, DbUuid(id)).await?.ok_or(ServiceError::NotFound("organisation"))?;
            let mut what = Vec::new();
            if let Some(name) = name {
                if rows::name_taken(conn, &name.key, Some(row.id)).await? {
                    return Err(ServiceError::Conflict("an organisation with this name exists".into()));
                }
                row.name = name.display;
                row.name_key = name.key;
                what.push("name");
            }
            if let Some(roles) = roles {
                row.roles = DbNames(roles);
                what.push("roles");
            }
            match changes.deactivate {
                Some(true) if row.deactivated_at.is_none() => {
                    row.deactivated_at = Some(now);
                    what.push("deactivated");
                }
                Some(false) if row.deactivated_at.is_some() => {
                    row.deactivated_at = None;
                    what.push("reactivated");
                }
                _ => {}
            }
            row.last_modified = now;
            rows::update(conn, &row).await?;
            event.reason = Some(what.join(","));
            Ok(())
        }
        .boxed()
    })
    .await
}

pub async fn delete(ctx: &Context, meta: &RequestMeta, author: Author, id: Uuid) -> Result<(), ServiceError> {
    audit::audited_write(ctx, meta, &author, event("organisation.delete", id), move |conn, _, _| {
        async move {
            // The lock order of docs/DECISIONS.md: memberships, the
            // organisation row, the token families' anchors, then the tokens and
            // the row itself. The audit log has no foreign key and stays.
            memberships::delete_all_of(conn, MembershipsOf::Organisation(DbUuid(id))).await?;
            if !rows::lock(conn, DbUuid(id)).await? {
                return Err(ServiceError::NotFound("organisation"));
            }
            refresh_tokens::delete_all_of(conn, TokensOf::Organisation(DbUuid(id))).await?;
            rows::delete(conn, DbUuid(id)).await?;
            Ok(())
        }
        .boxed()
    })
    .await
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExplainView {
    pub user_permissions: Vec<String>,
    pub ceiling: Vec<String>,
    pub granted: Vec<String>,
    pub removed_by_ceiling: Vec<String>,
}

/// Why a member's token holds what it holds.
pub async fn explain_member(ctx: &Context, id: Uuid, user: Uuid) -> Result<ExplainView, ServiceError> {
    let ctx2 = ctx.clone();
    ctx.store
        .run(move |conn| {
            async move {
                let org = rows::find(conn, DbUuid(id)).await?.ok_or(ServiceError::NotFound("organisation"))?;
                let user = users::find(conn, DbUuid(user)).await?.ok_or(ServiceError::NotFound("user"))?;
                if !memberships::is_member(conn, org.id, user.id).await? {
                    return Err(ServiceError::NotFound("member"));
                }
                let roles = &ctx2.config.roles;
                let why = explain(&roles.user_permissions(&user.system_roles.0), &ceiling_of(roles, &org.roles.0));
                let mut granted = why.granted.to_vec();
                if org.deactivated_at.is_some() || user.disabled_at.is_some() {
                    granted.clear();
                }
                Ok(ExplainView {
                    user_permissions: why.user_permissions.to_vec(),
                    ceiling: why.ceiling.to_vec(),
                    granted,
                    removed_by_ceiling: why.removed_by_ceiling.to_vec(),
                })
            }
            .boxed()
        })
        .await
}

//! Queries on `audit_events`, the log that outlives what it describes.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::schema::audit_events;
use super::types::{DbTime, DbUuid};
use super::{AnyConnection, Pipelined};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_events)]
// `None` is bound as NULL, not written as DEFAULT: diesel does not cache a
// statement with DEFAULT in it, so every insert would be parsed and planned
// again (docs/PERFORMANCE.md).
#[diesel(treat_none_as_default_value = false)]
pub struct AuditRow {
    pub id: DbUuid,
    pub created_at: DbTime,
    pub action: String,
    pub outcome: String,
    pub subject: Option<String>,
    pub actor: Option<String>,
    pub organisation_id: Option<DbUuid>,
    pub target_id: Option<String>,
    pub request_id: Option<String>,
    pub source_ip: Option<String>,
    pub reason: Option<String>,
}

pub async fn insert(conn: &mut AnyConnection, row: &AuditRow) -> QueryResult<()> {
    insert_on(conn.pipelined(), row).await
}

/// [`insert`] on a connection shared with other statements (`store::Pipelined`).
pub async fn insert_on(conn: Pipelined<'_>, row: &AuditRow) -> QueryResult<()> {
    let insert = diesel::insert_into(audit_events::table).values(row);
    match conn {
        Pipelined::Postgresql(mut pg) => insert.execute(&mut pg).await,
        Pipelined::Sqlite(sqlite) => insert.execute(sqlite).await,
    }
    .map(drop)
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub organisation_id: Option<DbUuid>,
    pub subject: Option<String>,
    pub action: Option<String>,
    pub from: Option<DbTime>,
    pub to: Option<DbTime>,
}

/// Newest first; one page and the total under the same filter.
pub async fn list(
    conn: &mut AnyConnection,
    filter: &AuditFilter,
    page: i64,
    page_size: i64,
) -> QueryResult<(Vec<AuditRow>, i64)> {
    // A boxed query is typed by its backend: one is built per backend.
    on_backend!(conn, c => {
        let filtered = || {
            let mut query = audit_events::table.into_boxed();
            if let Some(org) = filter.organisation_id {
                query = query.filter(audit_events::organisation_id.eq(org));
            }
            if let Some(subject) = &filter.subject {
                query = query.filter(audit_events::subject.eq(subject.clone()));
            }
            if let Some(action) = &filter.action {
                query = query.filter(audit_events::action.eq(action.clone()));
            }
            if let Some(from) = filter.from {
                query = query.filter(audit_events::created_at.ge(from));
            }
            if let Some(to) = filter.to {
                query = query.filter(audit_events::created_at.le(to));
            }
            query
        };
        let total = filtered().count().get_result(c).await?;
        let rows = filtered()
            .order((audit_events::created_at.desc(), audit_events::id.desc()))
            .select(AuditRow::as_select())
            .limit(page_size)
            .offset(page * page_size)
            .load(c)
            .await?;
        Ok((rows, total))
    })
}

/// Deletes events older than `before` (retention); returns how many.
pub async fn delete_older_than(conn: &mut AnyConnection, before: DbTime) -> QueryResult<usize> {
    on_backend!(conn, c => diesel::delete(audit_events::table.filter(audit_events::created_at.lt(before))).execute(c).await)
}

//! Queries on `organisations`.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::schema::organisations;
use super::types::{DbNames, DbTime, DbUuid};
use super::{AnyConnection, Pipelined};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = organisations)]
// `None` is bound as NULL, not written as DEFAULT: diesel does not cache a
// statement with DEFAULT in it, so every insert would be parsed and planned
// again (docs/PERFORMANCE.md).
#[diesel(treat_none_as_default_value = false)]
pub struct OrganisationRow {
    pub id: DbUuid,
    pub name: String,
    pub name_key: String,
    pub roles: DbNames,
    pub created_at: DbTime,
    pub last_modified: DbTime,
    pub deactivated_at: Option<DbTime>,
}

pub async fn insert(conn: &mut AnyConnection, row: &OrganisationRow) -> QueryResult<()> {
    insert_on(conn.pipelined(), row).await
}

/// [`insert`] on a connection shared with other statements (`store::Pipelined`).
pub async fn insert_on(conn: Pipelined<'_>, row: &OrganisationRow) -> QueryResult<()> {
    let insert = diesel::insert_into(organisations::table).values(row);
    match conn {
        Pipelined::Postgresql(mut pg) => insert.execute(&mut pg).await,
        Pipelined::Sqlite(sqlite) => insert.execute(sqlite).await,
    }
    .map(drop)
}

pub async fn find(conn: &mut AnyConnection, id: DbUuid) -> QueryResult<Option<OrganisationRow>> {
    find_on(conn.pipelined(), id).await
}

/// [`find`] on a connection shared with other statements (`store::Pipelined`).
pub async fn find_on(conn: Pipelined<'_>, id: DbUuid) -> QueryResult<Option<OrganisationRow>> {
    // Typed by its backend (`as_select`): written out for each.
    macro_rules! query {
        () => {
            organisations::table.find(id).select(OrganisationRow::as_select())
        };
    }
    match conn {
        Pipelined::Postgresql(mut pg) => query!().first(&mut pg).await,
        Pipelined::Sqlite(sqlite) => query!().first(sqlite).await,
    }
    .optional()
}

pub async fn exists(conn: &mut AnyConnection, id: DbUuid) -> QueryResult<bool> {
    on_backend!(conn, c => diesel::select(diesel::dsl::exists(organisations::table.find(id))).get_result(c).await)
}

pub async fn name_taken(conn: &mut AnyConnection, name_key: &str, except: Option<DbUuid>) -> QueryResult<bool> {
    let same_name = organisations::table.filter(organisations::name_key.eq(name_key));
    let count = match except {
        Some(id) => {
            on_backend!(conn, c => same_name.filter(organisations::id.ne(id)).count().get_result::<i64>(c).await)
        }
        None => on_backend!(conn, c => same_name.count().get_result::<i64>(c).await),
    };
    count.map(|n| n > 0)
}

/// Writes every mutable column; returns whether the row existed.
pub async fn update(conn: &mut AnyConnection, row: &OrganisationRow) -> QueryResult<bool> {
    let changes = (
        organisations::name.eq(&row.name),
        organisations::name_key.eq(&row.name_key),
        organisations::roles.eq(&row.roles),
        organisations::last_modified.eq(row.last_modified),
        organisations::deactivated_at.eq(row.deactivated_at),
    );
    on_backend!(conn, c => diesel::update(organisations::table.find(row.id)).set(changes).execute(c).await)
        .map(|n| n == 1)
}

/// Locks the organisation's row until the transaction ends (PostgreSQL;
/// SQLite has one writer already). Returns whether it exists.
pub async fn lock(conn: &mut AnyConnection, id: DbUuid) -> QueryResult<bool> {
    match conn {
        AnyConnection::Postgresql(pg) => organisations::table
            .find(id)
            .select(organisations::id)
            .for_update()
            .first::<DbUuid>(pg)
            .await
            .optional()
            .map(|r| r.is_some()),
        AnyConnection::Sqlite(_) => exists(conn, id).await,
    }
}

/// Deletes the organisation; memberships and refresh tokens would go with it
/// (ON DELETE CASCADE), but `service::organisations::delete` deletes them
/// first, in the lock order. Returns whether it existed.
pub async fn delete(conn: &mut AnyConnection, id: DbUuid) -> QueryResult<bool> {
    on_backend!(conn, c => diesel::delete(organisations::table.find(id)).execute(c).await).map(|n| n == 1)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    Name,
    CreatedDate,
}

#[derive(Debug, Clone)]
pub struct ListQuery {
    pub name_prefix: Option<String>,
    pub deactivated: Option<bool>,
    pub sort: SortBy,
    pub descending: bool,
    pub page: i64,
    pub page_size: i64,
}

/// Escapes LIKE wildcards so a name filter is a plain prefix.
pub fn like_prefix(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// One page and the total count under the same filters.
pub async fn list(conn: &mut AnyConnection, q: &ListQuery) -> QueryResult<(Vec<OrganisationRow>, i64)> {
    // A boxed query is typed by its backend: one is built per backend.
    on_backend!(conn, c => {
        let filtered = || {
            let mut query = organisations::table.into_boxed();
            if let Some(prefix) = &q.name_prefix {
                query = query.filter(organisations::name_key.like(like_prefix(&prefix.to_lowercase())).escape('\\'));
            }
            match q.deactivated {
                Some(true) => query = query.filter(organisations::deactivated_at.is_not_null()),
                Some(false) => query = query.filter(organisations::deactivated_at.is_null()),
                None => {}
            }
            query
        };
        let total: i64 = filtered().count().get_result(c).await?;
        let page = || {
            let query = filtered();
            let query = match (q.sort, q.descending) {
                (SortBy::Name, false) => query.order((organisations::name_key.asc(), organisations::id.asc())),
                (SortBy::Name, true) => query.order((organisations::name_key.desc(), organisations::id.desc())),
                (SortBy::CreatedDate, false) => query.order((organisations::created_at.asc(), organisations::id.asc())),
                (SortBy::CreatedDate, true) => query.order((organisations::created_at.desc(), organisations::id.desc())),
            };
            query.select(OrganisationRow::as_select()).limit(q.page_size).offset(q.page * q.page_size)
        };
        let rows = page().load(c).await?;
        Ok((rows, total))
    })
}

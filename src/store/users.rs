//! Queries on `users` (people and technical users).

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::schema::users;
use super::types::{DbNames, DbTime, DbUuid};
use super::{AnyConnection, Pipelined};

#[derive(Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = users)]
// `None` is bound as NULL, not written as DEFAULT: diesel does not cache a
// statement with DEFAULT in it, so every insert would be parsed and planned
// again (docs/PERFORMANCE.md).
#[diesel(treat_none_as_default_value = false)]
pub struct UserRow {
    pub id: DbUuid,
    pub username: String,
    pub username_key: String,
    pub kind: String,
    pub password_hash: Option<String>,
    pub secret_digest: Option<String>,
    pub system_roles: DbNames,
    pub created_at: DbTime,
    pub last_modified: DbTime,
    pub disabled_at: Option<DbTime>,
}

impl std::fmt::Debug for UserRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRow")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("kind", &self.kind)
            .field("disabled_at", &self.disabled_at)
            .finish_non_exhaustive()
    }
}

pub async fn insert(conn: &mut AnyConnection, row: &UserRow) -> QueryResult<()> {
    on_backend!(conn, c => diesel::insert_into(users::table).values(row).execute(c).await).map(drop)
}

pub async fn find(conn: &mut AnyConnection, id: DbUuid) -> QueryResult<Option<UserRow>> {
    on_backend!(conn, c => users::table.find(id).select(UserRow::as_select()).first(c).await).optional()
}

/// Whether the user exists and is not disabled.
pub async fn is_active(conn: &mut AnyConnection, id: DbUuid) -> QueryResult<bool> {
    is_active_on(conn.pipelined(), id).await
}

/// [`is_active`] as the first statement of a transaction
/// (`store::transaction_from`).
pub async fn is_active_on(conn: Pipelined<'_>, id: DbUuid) -> QueryResult<bool> {
    let query = users::table.find(id).select(users::disabled_at);
    let disabled_at: Option<Option<DbTime>> = match conn {
        Pipelined::Postgresql(mut pg) => query.first(&mut pg).await,
        Pipelined::Sqlite(sqlite) => query.first(sqlite).await,
    }
    .optional()?;
    Ok(matches!(disabled_at, Some(None)))
}

/// The user, share-locked on PostgreSQL until the transaction ends (see
/// `memberships::member_for_grant`), for a grant without an organisation.
pub async fn find_for_grant(conn: &mut AnyConnection, id: DbUuid) -> QueryResult<Option<UserRow>> {
    find_for_grant_on(conn.pipelined(), id).await
}

/// [`find_for_grant`] on a connection shared with other statements
/// (`store::Pipelined`).
pub async fn find_for_grant_on(conn: Pipelined<'_>, id: DbUuid) -> QueryResult<Option<UserRow>> {
    match conn {
        Pipelined::Postgresql(mut pg) => {
            users::table.find(id).select(UserRow::as_select()).for_share().first(&mut pg).await.optional()
        }
        Pipelined::Sqlite(sqlite) => users::table.find(id).select(UserRow::as_select()).first(sqlite).await.optional(),
    }
}

pub async fn find_by_username(conn: &mut AnyConnection, username_key: &str) -> QueryResult<Option<UserRow>> {
    on_backend!(conn, c => {
        users::table.filter(users::username_key.eq(username_key)).select(UserRow::as_select()).first(c).await
    })
    .optional()
}

pub async fn count(conn: &mut AnyConnection) -> QueryResult<i64> {
    on_backend!(conn, c => users::table.count().get_result(c).await)
}

pub async fn update(conn: &mut AnyConnection, row: &UserRow) -> QueryResult<bool> {
    let changes = (
        users::password_hash.eq(&row.password_hash),
        users::secret_digest.eq(&row.secret_digest),
        users::system_roles.eq(&row.system_roles),
        users::last_modified.eq(row.last_modified),
        users::disabled_at.eq(row.disabled_at),
    );
    on_backend!(conn, c => diesel::update(users::table.find(row.id)).set(changes).execute(c).await).map(|n| n == 1)
}

pub async fn set_password_hash(conn: &mut AnyConnection, id: DbUuid, hash: &str) -> QueryResult<()> {
    on_backend!(conn, c => diesel::update(users::table.find(id)).set(users::password_hash.eq(hash)).execute(c).await)
        .map(drop)
}

pub async fn exists(conn: &mut AnyConnection, id: DbUuid) -> QueryResult<bool> {
    on_backend!(conn, c => diesel::select(diesel::dsl::exists(users::table.find(id))).get_result(c).await)
}

/// Locks the user's row until the transaction ends (PostgreSQL; SQLite has
/// one writer already). Returns whether it exists.
pub async fn lock(conn: &mut AnyConnection, id: DbUuid) -> QueryResult<bool> {
    match conn {
        AnyConnection::Postgresql(pg) => users::table
            .find(id)
            .select(users::id)
            .for_update()
            .first::<DbUuid>(pg)
            .await
            .optional()
            .map(|r| r.is_some()),
        AnyConnection::Sqlite(_) => exists(conn, id).await,
    }
}

pub async fn delete(conn: &mut AnyConnection, id: DbUuid) -> QueryResult<bool> {
    on_backend!(conn, c => diesel::delete(users::table.find(id)).execute(c).await).map(|n| n == 1)
}

pub async fn list(conn: &mut AnyConnection, page: i64, page_size: i64) -> QueryResult<(Vec<UserRow>, i64)> {
    let total = count(conn).await?;
    let rows = on_backend!(conn, c => users::table
        .order((users::username_key.asc(), users::id.asc()))
        .select(UserRow::as_select())
        .limit(page_size)
        .offset(page * page_size)
        .load(c)
        .await)?;
    Ok((rows, total))
}

/// The login-throttling columns of one user (default: a clean slate).
#[derive(Debug, Clone, Default, Queryable, Selectable)]
#[diesel(table_name = users)]
pub struct LoginRow {
    pub failed_logins: i32,
    pub last_failed_at: Option<DbTime>,
    pub throttled_until: Option<DbTime>,
}

/// Reads the throttling state, holding the row lock on PostgreSQL until the
/// transaction ends, so parallel attempts on one account are counted one
/// after the other by every instance. (SQLite has one writer already.)
pub async fn login_state_for_update(conn: &mut AnyConnection, id: DbUuid) -> QueryResult<Option<LoginRow>> {
    match conn {
        AnyConnection::Postgresql(pg) => users::table
            .find(id)
            .select((users::failed_logins, users::last_failed_at, users::throttled_until))
            .for_update()
            .first::<(i32, Option<DbTime>, Option<DbTime>)>(pg)
            .await
            .optional()
            .map(|row| {
                row.map(|(failed_logins, last_failed_at, throttled_until)| LoginRow {
                    failed_logins,
                    last_failed_at,
                    throttled_until,
                })
            }),
        AnyConnection::Sqlite(sqlite) => {
            users::table.find(id).select(LoginRow::as_select()).first(sqlite).await.optional()
        }
    }
}

pub async fn set_login_state(conn: &mut AnyConnection, id: DbUuid, row: &LoginRow) -> QueryResult<()> {
    let changes = (
        users::failed_logins.eq(row.failed_logins),
        users::last_failed_at.eq(row.last_failed_at),
        users::throttled_until.eq(row.throttled_until),
    );
    on_backend!(conn, c => diesel::update(users::table.find(id)).set(changes).execute(c).await).map(drop)
}

//! Queries on `refresh_tokens`. Only SHA-256 digests are stored; rotation is
//! a conditional UPDATE so that exactly one of any number of concurrent uses
//! of one token wins.

use diesel::prelude::*;

use super::AnyConnection;
use super::schema::refresh_tokens;
use super::types::{DbTime, DbUuid};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = refresh_tokens)]
pub struct RefreshTokenRow {
    pub id: DbUuid,
    pub digest: String,
    pub family_id: DbUuid,
    pub user_id: DbUuid,
    pub organisation_id: Option<DbUuid>,
    pub issued_at: DbTime,
    pub expires_at: DbTime,
    pub family_expires_at: DbTime,
    pub consumed_at: Option<DbTime>,
    pub revoked_at: Option<DbTime>,
}

pub fn insert(conn: &mut AnyConnection, row: &RefreshTokenRow) -> QueryResult<()> {
    diesel::insert_into(refresh_tokens::table).values(row).execute(conn).map(drop)
}

pub fn find_by_digest(conn: &mut AnyConnection, digest: &str) -> QueryResult<Option<RefreshTokenRow>> {
    refresh_tokens::table
        .filter(refresh_tokens::digest.eq(digest))
        .select(RefreshTokenRow::as_select())
        .first(conn)
        .optional()
}

/// Marks the token used if, and only if, nobody used or revoked it first.
pub fn consume(conn: &mut AnyConnection, id: DbUuid, now: DbTime) -> QueryResult<bool> {
    diesel::update(
        refresh_tokens::table
            .find(id)
            .filter(refresh_tokens::consumed_at.is_null())
            .filter(refresh_tokens::revoked_at.is_null()),
    )
    .set(refresh_tokens::consumed_at.eq(now))
    .execute(conn)
    .map(|n| n == 1)
}

pub fn revoke_family(conn: &mut AnyConnection, family: DbUuid, now: DbTime) -> QueryResult<usize> {
    diesel::update(
        refresh_tokens::table.filter(refresh_tokens::family_id.eq(family)).filter(refresh_tokens::revoked_at.is_null()),
    )
    .set(refresh_tokens::revoked_at.eq(now))
    .execute(conn)
}

pub fn revoke_user(conn: &mut AnyConnection, user: DbUuid, now: DbTime) -> QueryResult<usize> {
    diesel::update(
        refresh_tokens::table.filter(refresh_tokens::user_id.eq(user)).filter(refresh_tokens::revoked_at.is_null()),
    )
    .set(refresh_tokens::revoked_at.eq(now))
    .execute(conn)
}

pub fn revoke_user_in_organisation(
    conn: &mut AnyConnection,
    user: DbUuid,
    organisation: DbUuid,
    now: DbTime,
) -> QueryResult<usize> {
    diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::user_id.eq(user))
            .filter(refresh_tokens::organisation_id.eq(organisation))
            .filter(refresh_tokens::revoked_at.is_null()),
    )
    .set(refresh_tokens::revoked_at.eq(now))
    .execute(conn)
}

/// On PostgreSQL, locks the family's first token — its id is the family id,
/// so every rotation and revocation of the family locks the same row first —
/// until the transaction ends. They then run one after the other: a
/// revocation that follows a rotation sees, and revokes, the token that
/// rotation created. One lock row, always the same and always taken first,
/// means two of them cannot deadlock. (Choosing "the oldest token" instead
/// is not stable: tokens issued in the same microsecond tie.) SQLite has one
/// writer already.
pub fn lock_family(conn: &mut AnyConnection, family: DbUuid) -> QueryResult<()> {
    if let AnyConnection::Postgresql(pg) = conn {
        refresh_tokens::table.find(family).select(refresh_tokens::id).for_update().load::<DbUuid>(pg)?;
    }
    Ok(())
}

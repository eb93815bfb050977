//! Queries on `refresh_tokens`. Only SHA-256 digests are stored; rotation is
//! a conditional UPDATE so that exactly one of any number of concurrent uses
//! of one token wins.

use diesel::backend::Backend;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::HasSqlType;
use diesel_async::RunQueryDsl;

use super::schema::refresh_tokens;
use super::types::{DbTime, DbUuid, SqlTime, SqlUuid};
use super::{AnyConnection, Pipelined};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = refresh_tokens)]
// `None` is bound as NULL, not written as DEFAULT: diesel does not cache a
// statement with DEFAULT in it, so every insert would be parsed and planned
// again (docs/PERFORMANCE.md).
#[diesel(treat_none_as_default_value = false)]
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

pub async fn insert(conn: &mut AnyConnection, row: &RefreshTokenRow) -> QueryResult<()> {
    insert_on(conn.pipelined(), row).await
}

/// [`insert`] on a connection shared with other statements (`store::Pipelined`).
pub async fn insert_on(conn: Pipelined<'_>, row: &RefreshTokenRow) -> QueryResult<()> {
    let insert = diesel::insert_into(refresh_tokens::table).values(row);
    match conn {
        Pipelined::Postgresql(mut pg) => insert.execute(&mut pg).await,
        Pipelined::Sqlite(sqlite) => insert.execute(sqlite).await,
    }
    .map(drop)
}

pub async fn find_by_digest(conn: &mut AnyConnection, digest: &str) -> QueryResult<Option<RefreshTokenRow>> {
    find_by_digest_on(conn.pipelined(), digest).await
}

/// [`find_by_digest`] as the first statement of a transaction
/// (`store::transaction_from`).
pub async fn find_by_digest_on(conn: Pipelined<'_>, digest: &str) -> QueryResult<Option<RefreshTokenRow>> {
    // Typed by its backend (`as_select`): written out for each.
    macro_rules! query {
        () => {
            refresh_tokens::table.filter(refresh_tokens::digest.eq(digest)).select(RefreshTokenRow::as_select())
        };
    }
    match conn {
        Pipelined::Postgresql(mut pg) => query!().first(&mut pg).await,
        Pipelined::Sqlite(sqlite) => query!().first(sqlite).await,
    }
    .optional()
}

/// Marks the token used if, and only if, nobody used or revoked it first:
/// the conditional update, written out: diesel never caches
/// an `UPDATE` it builds (a changeset's SQL may vary with its values), so the
/// one sent on every refresh grant would be parsed and planned every time.
/// A statement of our own with a static query id is prepared once per
/// connection.
#[derive(Debug, Clone, Copy, QueryId)]
struct Consume {
    id: DbUuid,
    now: DbTime,
}

impl<DB> QueryFragment<DB> for Consume
where
    DB: Backend + HasSqlType<SqlUuid> + HasSqlType<SqlTime>,
    DbUuid: ToSql<SqlUuid, DB>,
    DbTime: ToSql<SqlTime, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql("UPDATE refresh_tokens SET consumed_at = ");
        out.push_bind_param::<SqlTime, _>(&self.now)?;
        out.push_sql(" WHERE id = ");
        out.push_bind_param::<SqlUuid, _>(&self.id)?;
        out.push_sql(" AND consumed_at IS NULL AND revoked_at IS NULL");
        Ok(())
    }
}

pub async fn revoke_family(conn: &mut AnyConnection, family: DbUuid, now: DbTime) -> QueryResult<usize> {
    let live =
        refresh_tokens::table.filter(refresh_tokens::family_id.eq(family)).filter(refresh_tokens::revoked_at.is_null());
    on_backend!(conn, c => diesel::update(live).set(refresh_tokens::revoked_at.eq(now)).execute(c).await)
}

/// Whose tokens a write over many families touches.
#[derive(Debug, Clone, Copy)]
pub enum TokensOf {
    /// Every token of a user (disabled, password reset, deleted).
    User(DbUuid),
    /// A user's tokens for one organisation (membership removed).
    Member { user: DbUuid, organisation: DbUuid },
    /// Every token for one organisation (deleted).
    Organisation(DbUuid),
}

/// `$query` narrowed to the tokens of `$owner`, boxed (each arm has a type
/// of its own otherwise).
macro_rules! owned_by {
    ($query:expr, $owner:expr) => {
        match $owner {
            TokensOf::User(user) => $query.filter(refresh_tokens::user_id.eq(user)).into_boxed(),
            TokensOf::Member { user, organisation } => $query
                .filter(refresh_tokens::user_id.eq(user))
                .filter(refresh_tokens::organisation_id.eq(organisation))
                .into_boxed(),
            TokensOf::Organisation(organisation) => {
                $query.filter(refresh_tokens::organisation_id.eq(organisation)).into_boxed()
            }
        }
    };
}

/// Revokes every live token of `owner`, the families' anchors locked first
/// (`lock_families`).
pub async fn revoke_all_of(conn: &mut AnyConnection, owner: TokensOf, now: DbTime) -> QueryResult<usize> {
    lock_families(conn, owner, Tokens::Live).await?;
    on_backend!(conn, c => {
        owned_by!(diesel::update(refresh_tokens::table.filter(refresh_tokens::revoked_at.is_null())), owner)
            .set(refresh_tokens::revoked_at.eq(now))
            .execute(c)
            .await
    })
}

/// Deletes every token of `owner`, the families' anchors locked first:
/// called before the user or organisation row is deleted, so that its
/// cascade finds nothing left to take in an order of its own.
pub async fn delete_all_of(conn: &mut AnyConnection, owner: TokensOf) -> QueryResult<usize> {
    lock_families(conn, owner, Tokens::All).await?;
    on_backend!(conn, c => owned_by!(diesel::delete(refresh_tokens::table), owner).execute(c).await)
}

/// Which of an owner's tokens a write touches, and so whose families it locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tokens {
    /// Not revoked yet (revocation): families long revoked are left alone.
    Live,
    All,
}

/// On PostgreSQL, locks the anchor of every family in which the write
/// touches a token of `owner`, in id order, before the write. A single
/// UPDATE or DELETE over many families would lock their token rows in table
/// order, and could take a token of a family whose anchor a replay holds
/// while that replay waits for the very token (a cycle PostgreSQL breaks
/// after `deadlock_timeout`, with a 503 for one side). Anchors first, in one
/// order, is the order every single-family writer follows (`lock_family`):
/// the write waits for the replay instead, and two such writes cannot wait
/// for each other. The caller has already locked the user, membership or
/// organisation row the change is about (docs/DECISIONS.md).
async fn lock_families(conn: &mut AnyConnection, owner: TokensOf, tokens: Tokens) -> QueryResult<()> {
    let AnyConnection::Postgresql(pg) = conn else { return Ok(()) };
    let mut families = owned_by!(refresh_tokens::table.select(refresh_tokens::family_id), owner);
    if tokens == Tokens::Live {
        families = families.filter(refresh_tokens::revoked_at.is_null());
    }
    refresh_tokens::table
        .filter(refresh_tokens::id.eq_any(families))
        .select(refresh_tokens::id)
        .order(refresh_tokens::id)
        .for_update()
        .load::<DbUuid>(pg)
        .await?;
    Ok(())
}

/// On PostgreSQL, locks the family's first token — its id is the family id,
/// so every rotation and revocation of the family locks the same row first —
/// until the transaction ends. They then run one after the other: a
/// revocation that follows a rotation sees, and revokes, the token that
/// rotation created. One lock row, always the same and always taken first,
/// means two of them cannot deadlock. (Choosing "the oldest token" instead
/// is not stable: tokens issued in the same microsecond tie.) SQLite has one
/// writer already.
pub async fn lock_family(conn: &mut AnyConnection, family: DbUuid) -> QueryResult<()> {
    match conn {
        AnyConnection::Postgresql(pg) => lock_anchor(pg, family).await,
        AnyConnection::Sqlite(_) => Ok(()),
    }
}

/// The lock of [`lock_family`], on a shared connection (so that a statement
/// polled after it is sent with it).
async fn lock_anchor(mut pg: &diesel_async::AsyncPgConnection, family: DbUuid) -> QueryResult<()> {
    refresh_tokens::table.find(family).select(refresh_tokens::id).for_update().load::<DbUuid>(&mut pg).await?;
    Ok(())
}

/// [`lock_family`], then [`Consume`]: a rotation, on a connection shared
/// with other statements (`store::Pipelined`). On PostgreSQL the update is
/// sent without waiting for the lock's answer (one round trip instead of
/// two); PostgreSQL runs it after the lock is granted all the same.
pub async fn lock_family_and_consume(
    conn: Pipelined<'_>,
    family: DbUuid,
    id: DbUuid,
    now: DbTime,
) -> QueryResult<bool> {
    let consumed = match conn {
        Pipelined::Postgresql(pg) => {
            let mut update = pg;
            let (locked, consumed) =
                futures_util::future::join(lock_anchor(pg, family), Consume { id, now }.execute(&mut update)).await;
            locked?;
            consumed?
        }
        Pipelined::Sqlite(sqlite) => Consume { id, now }.execute(sqlite).await?,
    };
    Ok(consumed == 1)
}

/// Takes back this transaction's own [`Consume`] of token `id`: a rotation
/// whose grant was refused after the update was sent with the reads it
/// depended on. The caller holds the family's lock.
pub async fn unconsume(conn: &mut AnyConnection, id: DbUuid) -> QueryResult<()> {
    let consumed_at: Option<DbTime> = None;
    on_backend!(conn, c => {
        diesel::update(refresh_tokens::table.find(id)).set(refresh_tokens::consumed_at.eq(consumed_at)).execute(c).await
    })
    .map(drop)
}

//! Queries on `memberships` (user ↔ organisation).

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::organisations::OrganisationRow;
use super::schema::{memberships, organisations, users};
use super::types::{DbTime, DbUuid};
use super::users::UserRow;
use super::{AnyConnection, Pipelined};

pub async fn is_member(conn: &mut AnyConnection, organisation: DbUuid, user: DbUuid) -> QueryResult<bool> {
    on_backend!(conn, c => diesel::select(diesel::dsl::exists(memberships::table.find((organisation, user)))).get_result(c).await)
}

pub async fn insert(conn: &mut AnyConnection, organisation: DbUuid, user: DbUuid, now: DbTime) -> QueryResult<()> {
    let values =
        (memberships::organisation_id.eq(organisation), memberships::user_id.eq(user), memberships::created_at.eq(now));
    on_backend!(conn, c => diesel::insert_into(memberships::table).values(values).execute(c).await).map(drop)
}

pub async fn delete(conn: &mut AnyConnection, organisation: DbUuid, user: DbUuid) -> QueryResult<bool> {
    on_backend!(conn, c => diesel::delete(memberships::table.find((organisation, user))).execute(c).await)
        .map(|n| n == 1)
}

/// Deletes every membership of a user or of an organisation, before the
/// user or organisation itself: a grant share-locks the membership row
/// first, then the user and the organisation (`member_for_grant`), so a
/// delete must take the membership rows before the parent row too, or the
/// two wait for each other (the cascade would take them last).
///
/// On PostgreSQL the rows are locked in key order first: a DELETE alone
/// takes them in table order, and deletes of users and organisations whose
/// memberships cross (user X, organisation B, user Y, organisation A, all at
/// once) could each hold one row the next one needs. In one order they
/// wait for each other in a line, never in a circle.
pub async fn delete_all_of(conn: &mut AnyConnection, owner: MembershipsOf) -> QueryResult<usize> {
    if let AnyConnection::Postgresql(pg) = conn {
        let keys = memberships::table
            .select((memberships::organisation_id, memberships::user_id))
            .order((memberships::organisation_id, memberships::user_id));
        match owner {
            MembershipsOf::User(user) => {
                keys.filter(memberships::user_id.eq(user)).for_update().load::<(DbUuid, DbUuid)>(pg).await?
            }
            MembershipsOf::Organisation(organisation) => {
                keys.filter(memberships::organisation_id.eq(organisation))
                    .for_update()
                    .load::<(DbUuid, DbUuid)>(pg)
                    .await?
            }
        };
    }
    match owner {
        MembershipsOf::User(user) => {
            on_backend!(conn, c => diesel::delete(memberships::table.filter(memberships::user_id.eq(user))).execute(c).await)
        }
        MembershipsOf::Organisation(organisation) => {
            on_backend!(conn, c => {
                diesel::delete(memberships::table.filter(memberships::organisation_id.eq(organisation))).execute(c).await
            })
        }
    }
}

/// Whose memberships [`delete_all_of`] deletes.
#[derive(Debug, Clone, Copy)]
pub enum MembershipsOf {
    User(DbUuid),
    Organisation(DbUuid),
}

/// The user and the organisation, if `user` is a member of it: user,
/// membership, existence and state in one query, for the grant choke point.
///
/// On PostgreSQL the three rows are share-locked until the grant's
/// transaction ends (membership, then user, then organisation), so a
/// concurrent disable, member removal, deactivation or delete waits for the
/// grant and then revokes the refresh token it issued (its statement starts
/// after the grant committed and sees it). A grant takes these locks before
/// any refresh-token lock; every admin write locks its row before it
/// revokes tokens, and a delete of a user or organisation removes the
/// memberships before the parent row ([`delete_all_of`]): one order, no
/// deadlock. SQLite's single writer serialises them already.
pub async fn member_for_grant(
    conn: &mut AnyConnection,
    organisation: DbUuid,
    user: DbUuid,
) -> QueryResult<Option<(UserRow, OrganisationRow)>> {
    member_for_grant_on(conn.pipelined(), organisation, user).await
}

/// [`member_for_grant`] on a connection shared with other statements
/// (`store::Pipelined`).
pub async fn member_for_grant_on(
    conn: Pipelined<'_>,
    organisation: DbUuid,
    user: DbUuid,
) -> QueryResult<Option<(UserRow, OrganisationRow)>> {
    // A macro, not a value: `as_select` is typed per backend.
    macro_rules! query {
        () => {
            memberships::table
                .inner_join(users::table)
                .inner_join(organisations::table)
                .filter(memberships::organisation_id.eq(organisation))
                .filter(memberships::user_id.eq(user))
                .select((UserRow::as_select(), OrganisationRow::as_select()))
        };
    }
    match conn {
        Pipelined::Postgresql(mut pg) => query!().for_share().first(&mut pg).await.optional(),
        Pipelined::Sqlite(sqlite) => query!().first(sqlite).await.optional(),
    }
}

/// Every organisation `user` belongs to, by name.
pub async fn organisations_of(conn: &mut AnyConnection, user: DbUuid) -> QueryResult<Vec<OrganisationRow>> {
    on_backend!(conn, c => memberships::table
        .inner_join(organisations::table)
        .filter(memberships::user_id.eq(user))
        .order(organisations::name_key.asc())
        .select(OrganisationRow::as_select())
        .load(c)
        .await)
}

/// Members of an organisation, by username.
pub async fn members_of(conn: &mut AnyConnection, organisation: DbUuid) -> QueryResult<Vec<UserRow>> {
    on_backend!(conn, c => memberships::table
        .inner_join(users::table)
        .filter(memberships::organisation_id.eq(organisation))
        .order(users::username_key.asc())
        .select(UserRow::as_select())
        .load(c)
        .await)
}

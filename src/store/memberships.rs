//! Queries on `memberships` (user ↔ organisation).

use diesel::prelude::*;

use super::AnyConnection;
use super::organisations::OrganisationRow;
use super::schema::{memberships, organisations, users};
use super::types::{DbTime, DbUuid};
use super::users::UserRow;

pub fn is_member(conn: &mut AnyConnection, organisation: DbUuid, user: DbUuid) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(memberships::table.find((organisation, user)))).get_result(conn)
}

pub fn insert(conn: &mut AnyConnection, organisation: DbUuid, user: DbUuid, now: DbTime) -> QueryResult<()> {
    diesel::insert_into(memberships::table)
        .values((
            memberships::organisation_id.eq(organisation),
            memberships::user_id.eq(user),
            memberships::created_at.eq(now),
        ))
        .execute(conn)
        .map(drop)
}

pub fn delete(conn: &mut AnyConnection, organisation: DbUuid, user: DbUuid) -> QueryResult<bool> {
    diesel::delete(memberships::table.find((organisation, user))).execute(conn).map(|n| n == 1)
}

/// The organisation, if `user` is a member of it: membership, existence and
/// state in one query, for the grant choke point.
pub fn organisation_of_member(
    conn: &mut AnyConnection,
    organisation: DbUuid,
    user: DbUuid,
) -> QueryResult<Option<OrganisationRow>> {
    memberships::table
        .inner_join(organisations::table)
        .filter(memberships::organisation_id.eq(organisation))
        .filter(memberships::user_id.eq(user))
        .select(OrganisationRow::as_select())
        .first(conn)
        .optional()
}

/// Every organisation `user` belongs to, by name.
pub fn organisations_of(conn: &mut AnyConnection, user: DbUuid) -> QueryResult<Vec<OrganisationRow>> {
    memberships::table
        .inner_join(organisations::table)
        .filter(memberships::user_id.eq(user))
        .order(organisations::name_key.asc())
        .select(OrganisationRow::as_select())
        .load(conn)
}

/// Members of an organisation, by username.
pub fn members_of(conn: &mut AnyConnection, organisation: DbUuid) -> QueryResult<Vec<UserRow>> {
    memberships::table
        .inner_join(users::table)
        .filter(memberships::organisation_id.eq(organisation))
        .order(users::username_key.asc())
        .select(UserRow::as_select())
        .load(conn)
}

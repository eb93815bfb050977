//! Memberships: which users may obtain tokens for an organisation.

use futures_util::FutureExt;
use uuid::Uuid;

use super::audit::{self, AuditEvent, Author, Outcome, RequestMeta};
use super::users::UserView;
use super::{Context, ServiceError};
use crate::store::refresh_tokens::{self, TokensOf};
use crate::store::types::DbUuid;
use crate::store::{memberships, organisations, users};

fn event(action: &'static str, organisation: Uuid, user: Uuid) -> AuditEvent {
    AuditEvent::new(action, Outcome::Success).organisation(Some(organisation)).target(user)
}

pub async fn list(ctx: &Context, organisation: Uuid) -> Result<Vec<UserView>, ServiceError> {
    ctx.store
        .run(move |conn| {
            async move {
                if !organisations::exists(conn, DbUuid(organisation)).await? {
                    return Err(ServiceError::NotFound("organisation"));
                }
                Ok(memberships::members_of(conn, DbUuid(organisation)).await?.into_iter().map(UserView::from).collect())
            }
            .boxed()
        })
        .await
}

/// Idempotent: adding a member twice is not an error. A deactivated
/// organisation takes no new members (409).
pub async fn add(
    ctx: &Context,
    meta: &RequestMeta,
    author: Author,
    organisation: Uuid,
    user: Uuid,
) -> Result<(), ServiceError> {
    audit::audited_write(ctx, meta, &author, event("membership.add", organisation, user), move |conn, now, _| {
        async move {
            let org =
                organisations::find(conn, DbUuid(organisation)).await?.ok_or(ServiceError::NotFound("organisation"))?;
            if users::find(conn, DbUuid(user)).await?.is_none() {
                return Err(ServiceError::NotFound("user"));
            }
            if org.deactivated_at.is_some() {
                return Err(ServiceError::Conflict("the organisation is deactivated".into()));
            }
            if !memberships::is_member(conn, org.id, DbUuid(user)).await? {
                memberships::insert(conn, org.id, DbUuid(user), now).await?;
            }
            Ok(())
        }
        .boxed()
    })
    .await
}

/// Removes a member and ends their refresh tokens for this organisation.
pub async fn remove(
    ctx: &Context,
    meta: &RequestMeta,
    author: Author,
    organisation: Uuid,
    user: Uuid,
) -> Result<(), ServiceError> {
    audit::audited_write(ctx, meta, &author, event("membership.remove", organisation, user), move |conn, now, _| {
        async move {
            if !organisations::exists(conn, DbUuid(organisation)).await? {
                return Err(ServiceError::NotFound("organisation"));
            }
            if !memberships::delete(conn, DbUuid(organisation), DbUuid(user)).await? {
                return Err(ServiceError::NotFound("member"));
            }
            let owner = TokensOf::Member { user: DbUuid(user), organisation: DbUuid(organisation) };
            refresh_tokens::revoke_all_of(conn, owner, now).await?;
            Ok(())
        }
        .boxed()
    })
    .await
}

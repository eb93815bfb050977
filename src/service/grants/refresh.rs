//! `grant_type=refresh_token` and revocation (RFC 7009). A refresh token is
//! used once: each use rotates it within its family; presenting a used one
//! revokes the whole family (RFC 9700 §4.14), committed even though the
//! request fails.

use chrono::{DateTime, Duration, Utc};
use futures_util::FutureExt;
use uuid::Uuid;

use super::{GrantRows, Issued, Mint};
use crate::config::Config;
use crate::secret::Secret;
use crate::service::audit::{self, AuditEvent, Outcome, RequestMeta};
use crate::service::{Context, GrantError};
use crate::store;
use crate::store::AnyConnection;
use crate::store::refresh_tokens::{self, RefreshTokenRow};
use crate::store::types::{DbTime, DbUuid};
use crate::tokens::opaque;

const ACTION: &str = "token.refresh";

fn secs(value: u64) -> Duration {
    Duration::seconds(i64::try_from(value).unwrap_or(i64::MAX))
}

/// A new token of `family` (with id `id`): its secret, shown only now, and
/// the row to store.
fn new_token(
    config: &Config,
    now: DateTime<Utc>,
    (id, family): (Uuid, (Uuid, DateTime<Utc>)),
    user: Uuid,
    organisation: Option<Uuid>,
) -> Result<(Secret, RefreshTokenRow), GrantError> {
    let secret = opaque::generate().map_err(|_| GrantError::Internal(anyhow::anyhow!("no randomness")))?;
    let (family_id, family_expires_at) = family;
    let expires_at = (now + secs(config.settings.tokens.refresh_ttl_secs)).min(family_expires_at);
    let row = RefreshTokenRow {
        id: DbUuid(id),
        digest: opaque::digest(secret.expose()),
        family_id: DbUuid(family_id),
        user_id: DbUuid(user),
        organisation_id: organisation.map(DbUuid),
        issued_at: DbTime::from(now),
        expires_at: DbTime::from(expires_at),
        family_expires_at: DbTime::from(family_expires_at),
        consumed_at: None,
        revoked_at: None,
    };
    Ok((secret, row))
}

/// Starts a family (one per login) and returns its first token.
pub(super) async fn new_family(
    conn: &mut AnyConnection,
    config: &Config,
    now: DateTime<Utc>,
    user: Uuid,
    organisation: Option<Uuid>,
) -> Result<Secret, GrantError> {
    let family = (Uuid::new_v4(), now + secs(config.settings.tokens.refresh_family_ttl_secs));
    // The family's first token carries the family id: the row every later
    // use of the family locks first (`refresh_tokens::lock_family`).
    let (secret, row) = new_token(config, now, (family.0, family), user, organisation)?;
    refresh_tokens::insert(conn, &row).await?;
    Ok(secret)
}

pub async fn refresh(
    ctx: &Context,
    meta: &RequestMeta,
    presented: Secret,
    requested_organisation: Option<Uuid>,
) -> Result<Issued, GrantError> {
    let ctx2 = ctx.clone();
    let meta = meta.clone();
    let digest = opaque::digest(presented.expose());
    ctx.store
        .run(move |conn| {
            async move {
                // The token is read by the statement that opens the transaction.
                let find = async |c: store::Pipelined<'_>| Ok(refresh_tokens::find_by_digest_on(c, &digest).await?);
                store::transaction_from::<_, _, GrantError, _, _>(conn, find, async |conn, found| {
                    let now = ctx2.now();
                    let event = |outcome, row: Option<&RefreshTokenRow>, reason: Option<&str>| {
                        let mut event = AuditEvent::new(ACTION, outcome)
                            .organisation(requested_organisation.or(row.and_then(|r| r.organisation_id.map(|o| o.0))));
                        if let Some(row) = row {
                            event = event.subject(row.user_id.0).target(row.family_id.0);
                        }
                        if let Some(reason) = reason {
                            event = event.reason(reason);
                        }
                        event
                    };
                    let record = async |conn: &mut _, outcome, row: Option<&RefreshTokenRow>, reason: Option<&str>| {
                        audit::record(conn, now, &meta, event(outcome, row, reason)).await
                    };
                    let Some(row) = found else {
                        record(conn, Outcome::Failure, None, Some("unknown refresh token")).await?;
                        return Ok(Err("unknown refresh token".to_owned()));
                    };
                    // Revoked, expired and used never turn back: this read decides
                    // them; the conditional update below decides any race.
                    if row.revoked_at.is_some() {
                        record(conn, Outcome::Failure, Some(&row), Some("revoked refresh token")).await?;
                        return Ok(Err("revoked refresh token".into()));
                    }
                    if row.expires_at.0 <= now || row.family_expires_at.0 <= now {
                        record(conn, Outcome::Failure, Some(&row), Some("expired refresh token")).await?;
                        return Ok(Err("expired refresh token".into()));
                    }
                    let replay = async |conn: &mut AnyConnection, row: &RefreshTokenRow| {
                        refresh_tokens::lock_family(conn, row.family_id).await?;
                        refresh_tokens::revoke_family(conn, row.family_id, DbTime::from(now)).await?;
                        let reason = "refresh token reused: family revoked";
                        record(conn, Outcome::Denied, Some(row), Some(reason)).await?;
                        Ok(Err(reason.to_owned()))
                    };
                    if row.consumed_at.is_some() {
                        return replay(conn, &row).await;
                    }
                    let organisation = requested_organisation.or(row.organisation_id.map(|o| o.0));
                    // The user, membership and organisation (share-locked),
                    // then the family's lock (so a revocation after us sees
                    // the token we add) and the conditional update that picks
                    // one winner among concurrent uses: sent together, run
                    // in that order (the lock order of
                    // `memberships::member_for_grant`).
                    let read = async |c: store::Pipelined<'_>| GrantRows::read(c, row.user_id.0, organisation).await;
                    let rotate = async |c: store::Pipelined<'_>| {
                        refresh_tokens::lock_family_and_consume(c, row.family_id, row.id, DbTime::from(now)).await
                    };
                    let (rows, consumed) = conn.pipelined().both(read, rotate).await?;
                    let authorised = match rows.authorise(conn, &ctx2.config.roles).await? {
                        Ok(a) => a,
                        Err(reason) => {
                            // Refused: the token stays as it was.
                            if consumed {
                                refresh_tokens::unconsume(conn, row.id).await?;
                            }
                            record(conn, Outcome::Failure, Some(&row), Some(&reason)).await?;
                            return Ok(Err(reason));
                        }
                    };
                    if !consumed {
                        // Used or revoked since the read above: the slow path.
                        let current =
                            refresh_tokens::find_by_digest(conn, &digest).await?.unwrap_or_else(|| row.clone());
                        if current.revoked_at.is_some() {
                            record(conn, Outcome::Failure, Some(&current), Some("revoked refresh token")).await?;
                            return Ok(Err("revoked refresh token".into()));
                        }
                        return replay(conn, &current).await;
                    }
                    let user = row.user_id.0;
                    let family = (row.family_id.0, row.family_expires_at.0);
                    let (refresh_token, token) =
                        new_token(&ctx2.config, now, (Uuid::new_v4(), family), user, organisation)?;
                    let issued = Mint::new(&ctx2, now).issue(
                        user,
                        organisation,
                        &authorised.permissions,
                        Some(refresh_token),
                    )?;
                    // The new token's insert goes with the audit row's.
                    let insert = async |c: store::Pipelined<'_>| Ok(refresh_tokens::insert_on(c, &token).await?);
                    let success = event(Outcome::Success, Some(&row), None);
                    audit::record_with::<_, GrantError>(conn, now, &meta, success, insert).await?;
                    Ok(Ok(issued))
                })
                .await
            }
            .boxed()
        })
        .await?
        .map_err(GrantError::InvalidGrant)
}

/// RFC 7009: revoking a refresh token ends its family. Unknown tokens are
/// not an error (the answer must not reveal which tokens exist).
pub async fn revoke(ctx: &Context, meta: &RequestMeta, presented: Secret) -> Result<(), GrantError> {
    let ctx2 = ctx.clone();
    let meta = meta.clone();
    let digest = opaque::digest(presented.expose());
    ctx.store
        .run(move |conn| {
            async move {
                store::transaction::<_, GrantError, _>(conn, async |conn| {
                    let now = ctx2.now();
                    if let Some(row) = refresh_tokens::find_by_digest(conn, &digest).await? {
                        refresh_tokens::lock_family(conn, row.family_id).await?;
                        refresh_tokens::revoke_family(conn, row.family_id, DbTime::from(now)).await?;
                        let event = AuditEvent::new("token.revoke", Outcome::Success)
                            .subject(row.user_id.0)
                            .target(row.family_id.0)
                            .organisation(row.organisation_id.map(|o| o.0));
                        audit::record(conn, now, &meta, event).await?;
                    }
                    Ok::<_, GrantError>(())
                })
                .await
            }
            .boxed()
        })
        .await
}

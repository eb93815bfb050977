//! `grant_type=password`: username and password for a token and a new
//! refresh-token family. Every attempt on an existing account is counted in
//! the database before any comparison (see `domain::throttle`), so parallel
//! guesses on one account are throttled exactly, on every instance.

use futures_util::FutureExt;
use uuid::Uuid;

use super::refresh::new_family;
use super::{Issued, Mint, USER_KIND, authorise};
use crate::domain::throttle::{Gate, LoginState};
use crate::secret::Secret;
use crate::service::audit::{self, AuditEvent, Outcome, RequestMeta};
use crate::service::{Context, GrantError};
use crate::store;
use crate::store::AnyConnection;
use crate::store::types::{DbTime, DbUuid};
use crate::store::users::{self, LoginRow, UserRow};

const ACTION: &str = "token.password";

/// Counts this attempt against the account and returns whether it may
/// compare the password. Unknown users and technical users have no counter.
async fn gate(conn: &mut AnyConnection, ctx: &Context, user: &UserRow) -> Result<Gate, GrantError> {
    if user.kind != USER_KIND {
        return Ok(Gate::Compare);
    }
    let Some(row) = users::login_state_for_update(conn, user.id).await? else { return Ok(Gate::Compare) };
    let state = LoginState {
        failures: u32::try_from(row.failed_logins).unwrap_or(0),
        last_failed_at: row.last_failed_at.map(|t| t.0),
        throttled_until: row.throttled_until.map(|t| t.0),
    };
    let (next, gate) = ctx.config.throttle.attempt(&state, ctx.now());
    let next = LoginRow {
        failed_logins: i32::try_from(next.failures).unwrap_or(i32::MAX),
        last_failed_at: next.last_failed_at.map(DbTime::from),
        throttled_until: next.throttled_until.map(DbTime::from),
    };
    users::set_login_state(conn, user.id, &next).await?;
    Ok(gate)
}

pub async fn password(
    ctx: &Context,
    meta: &RequestMeta,
    username: String,
    password: Secret,
    organisation: Option<Uuid>,
) -> Result<Issued, GrantError> {
    // Caps come before any hashing.
    if password.expose().len() > ctx.passwords.policy.max_bytes {
        return Err(GrantError::InvalidRequest("password too long"));
    }
    let source = meta.source();
    ctx.sources.check(source).map_err(GrantError::TooManyRequests)?;
    let key = username.trim().to_lowercase();
    let ctx1 = ctx.clone();
    let (user, gate) = ctx
        .store
        .run(move |conn| {
            async move {
                store::transaction::<_, GrantError, _>(conn, async |conn| {
                    let Some(user) = users::find_by_username(conn, &key).await? else {
                        return Ok((None, Gate::Compare));
                    };
                    let gate = gate(conn, &ctx1, &user).await?;
                    Ok((Some(user), gate))
                })
                .await
            }
            .boxed()
        })
        .await?;
    let stored = match gate {
        Gate::Compare => user.as_ref().filter(|u| u.kind == USER_KIND).and_then(|u| u.password_hash.clone()),
        Gate::Throttled { .. } => None,
    };
    // Always one argon2 verification: against a dummy hash for unknown or
    // throttled accounts, so neither is told apart by time.
    let verified = ctx.passwords.verify(&password, stored).await?;
    if !verified.matches {
        ctx.sources.record_failure(source);
    }

    let ctx2 = ctx.clone();
    let meta = meta.clone();
    let user_id = user.as_ref().map(|u| u.id.0);
    ctx.store
        .run(move |conn| {
            async move {
                store::transaction::<_, GrantError, _>(conn, async |conn| {
                    let now = ctx2.now();
                    let fail = async |conn: &mut _, reason: &str| -> Result<Result<Issued, String>, GrantError> {
                        let subject = user_id.map_or_else(|| username.clone(), |id| id.to_string());
                        let event = AuditEvent::new(ACTION, Outcome::Failure)
                            .subject(subject)
                            .organisation(organisation)
                            .reason(reason);
                        audit::record(conn, now, &meta, event).await?;
                        Ok(Err(reason.to_owned()))
                    };
                    if let Gate::Throttled { until } = gate {
                        return fail(conn, &format!("account throttled until {}", until.to_rfc3339())).await;
                    }
                    let Some(user_id) = user_id.filter(|_| verified.matches) else {
                        return fail(conn, "invalid username or password").await;
                    };
                    users::set_login_state(conn, DbUuid(user_id), &LoginRow::default()).await?;
                    let authorised = match authorise(conn, &ctx2.config.roles, user_id, organisation).await? {
                        Ok(a) => a,
                        Err(reason) => return fail(conn, &reason).await,
                    };
                    if let Some(hash) = &verified.rehash {
                        users::set_password_hash(conn, DbUuid(user_id), hash).await?;
                    }
                    let refresh_token = new_family(conn, &ctx2.config, now, user_id, organisation).await?;
                    let issued = Mint::new(&ctx2, now).issue(
                        user_id,
                        organisation,
                        &authorised.permissions,
                        Some(refresh_token),
                    )?;
                    let event = AuditEvent::new(ACTION, Outcome::Success).subject(user_id).organisation(organisation);
                    audit::record(conn, now, &meta, event).await?;
                    Ok(Ok(issued))
                })
                .await
            }
            .boxed()
        })
        .await?
        .map_err(GrantError::InvalidGrant)
}

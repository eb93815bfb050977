//! `grant_type=password`: username and password for a token and a new
//! refresh-token family.

use uuid::Uuid;

use super::refresh::new_family;
use super::{Issued, Mint, USER_KIND, authorise};
use crate::secret::Secret;
use crate::service::audit::{self, AuditEvent, Outcome, RequestMeta};
use crate::service::{Context, GrantError};
use crate::store::types::DbUuid;
use crate::store::users;
use diesel::Connection;

const ACTION: &str = "token.password";

pub async fn password(
    ctx: &Context,
    meta: &RequestMeta,
    username: String,
    password: Secret,
    organisation: Option<Uuid>,
) -> Result<Issued, GrantError> {
    if password.expose().len() > ctx.passwords.policy.max_bytes {
        return Err(GrantError::InvalidRequest("password too long"));
    }
    let key = username.trim().to_lowercase();
    let user = ctx.store.run(move |conn| users::find_by_username(conn, &key).map_err(GrantError::from)).await?;
    let stored = user.as_ref().filter(|u| u.kind == USER_KIND).and_then(|u| u.password_hash.clone());
    // Always one argon2 verification, against a dummy hash for unknown users.
    let verified = ctx.passwords.verify(&password, stored).await?;

    let ctx2 = ctx.clone();
    let meta = meta.clone();
    let user_id = user.as_ref().map(|u| u.id.0);
    ctx.store
        .run(move |conn| {
            conn.transaction::<_, GrantError, _>(|conn| {
                let now = ctx2.now();
                let fail = |conn: &mut _, reason: &str| -> Result<Result<Issued, String>, GrantError> {
                    let subject = user_id.map_or_else(|| username.clone(), |id| id.to_string());
                    let event = AuditEvent::new(ACTION, Outcome::Failure)
                        .subject(subject)
                        .organisation(organisation)
                        .reason(reason);
                    audit::record(conn, now, &meta, event)?;
                    Ok(Err(reason.to_owned()))
                };
                let Some(user_id) = user_id.filter(|_| verified.matches) else {
                    return fail(conn, "invalid username or password");
                };
                let authorised = match authorise(conn, &ctx2.config.roles, user_id, organisation)? {
                    Ok(a) => a,
                    Err(reason) => return fail(conn, &reason),
                };
                if let Some(hash) = &verified.rehash {
                    users::set_password_hash(conn, DbUuid(user_id), hash)?;
                }
                let refresh_token = new_family(conn, &ctx2.config, now, user_id, organisation)?;
                let (access_token, expires_in) =
                    Mint::new(&ctx2, now).sign(user_id, organisation, &authorised.permissions, None, None)?;
                let event = AuditEvent::new(ACTION, Outcome::Success).subject(user_id).organisation(organisation);
                audit::record(conn, now, &meta, event)?;
                Ok(Ok(Issued {
                    access_token,
                    expires_in,
                    refresh_token: Some(refresh_token),
                    organisation_id: organisation,
                    issued_token_type: None,
                }))
            })
        })
        .await?
        .map_err(GrantError::InvalidGrant)
}

//! `grant_type=client_credentials`: a technical user's id and secret for an
//! access token. Never a refresh token (RFC 6749 §4.4.3): it can always
//! authenticate again.

use futures_util::FutureExt;
use uuid::Uuid;

use super::{Issued, Mint, TECHNICAL_KIND, authorise};
use crate::secret::Secret;
use crate::service::audit::{self, AuditEvent, Outcome, RequestMeta};
use crate::service::{Context, GrantError};
use crate::store;
use crate::store::types::DbUuid;
use crate::store::users;
use crate::tokens::opaque;

const ACTION: &str = "token.client_credentials";

/// Longest client secret worth hashing; ours are 43 characters.
const MAX_SECRET_BYTES: usize = 256;

pub async fn client_credentials(
    ctx: &Context,
    meta: &RequestMeta,
    client_id: String,
    secret: Secret,
    organisation: Option<Uuid>,
) -> Result<Issued, GrantError> {
    let source = meta.source();
    ctx.sources.check(source).map_err(GrantError::TooManyRequests)?;
    let ctx2 = ctx.clone();
    let meta = meta.clone();
    let outcome = ctx
        .store
        .run(move |conn| {
            async move {
                store::transaction::<_, GrantError, _>(conn, async |conn| {
                    let now = ctx2.now();
                    let id = Uuid::parse_str(client_id.trim()).ok();
                    // The secret is judged first, on an unlocked read of its own:
                    // a wrong secret then costs the same one read whatever the
                    // client's membership or state, and takes no lock. Checking
                    // it against the row `authorise` reads would save that read
                    // on success but let the number of reads (the answer's time)
                    // tell a stranger whether the client is a member or disabled
                    // (docs/PERFORMANCE.md).
                    let user = match id {
                        Some(id) => users::find(conn, DbUuid(id)).await?,
                        None => None,
                    };
                    let authenticated = user.as_ref().is_some_and(|u| {
                        u.kind == TECHNICAL_KIND
                            && secret.expose().len() <= MAX_SECRET_BYTES
                            && u.secret_digest.as_deref().is_some_and(|d| opaque::matches(secret.expose(), d))
                    });
                    let fail = async |conn: &mut _, reason: &str, client: bool| -> Result<_, GrantError> {
                        let event = AuditEvent::new(ACTION, Outcome::Failure)
                            .subject(id.map_or_else(|| client_id.clone(), |i| i.to_string()))
                            .organisation(organisation)
                            .reason(reason);
                        audit::record(conn, now, &meta, event).await?;
                        Ok(Err((client, reason.to_owned())))
                    };
                    let Some(id) = id.filter(|_| authenticated) else {
                        return fail(conn, "invalid client credentials", true).await;
                    };
                    let authorised = match authorise(conn, &ctx2.config.roles, id, organisation).await? {
                        Ok(a) => a,
                        Err(reason) => return fail(conn, &reason, false).await,
                    };
                    let issued = Mint::new(&ctx2, now).issue(id, organisation, &authorised.permissions, None)?;
                    let event = AuditEvent::new(ACTION, Outcome::Success).subject(id).organisation(organisation);
                    audit::record(conn, now, &meta, event).await?;
                    Ok(Ok(issued))
                })
                .await
            }
            .boxed()
        })
        .await?;
    outcome.map_err(|(client, reason)| {
        if client {
            ctx.sources.record_failure(source);
            GrantError::InvalidClient
        } else {
            GrantError::InvalidGrant(reason)
        }
    })
}

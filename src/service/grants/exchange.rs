//! Token exchange (RFC 8693): an access token of ours for one scoped to
//! another organisation, optionally on behalf of the subject by an actor (a
//! technical user holding `STS_TOKEN_DELEGATE`). Without an actor the
//! subject switches organisation; with one, the token holds
//! subject ∩ ceiling ∩ the actor's own permissions there, and `act.sub`.

use std::sync::Arc;

use futures_util::FutureExt;
use uuid::Uuid;

use super::{ACCESS_TOKEN_TYPE, GrantRows, Issued, Mint, TECHNICAL_KIND, authorise, organisation_active_on};
use crate::service::audit::{self, AuditEvent, Outcome, RequestMeta};
use crate::service::{Context, GrantError};
use crate::store;
use crate::tokens::AccessClaims;

const ACTION: &str = "token.exchange";
pub const DELEGATE_PERMISSION: &str = "STS_TOKEN_DELEGATE";

#[derive(Debug, Default)]
pub struct ExchangeRequest {
    pub subject_token: Option<String>,
    pub subject_token_type: Option<String>,
    pub actor_token: Option<String>,
    pub actor_token_type: Option<String>,
    pub requested_token_type: Option<String>,
    pub organisation_id: Option<Uuid>,
}

/// Input checks of RFC 8693 §2.1: anything wrong here is `invalid_request`.
fn verify_input(
    ctx: &Context,
    request: &ExchangeRequest,
) -> Result<(Arc<AccessClaims>, Option<Arc<AccessClaims>>), GrantError> {
    let subject_token = request.subject_token.as_deref().filter(|t| !t.is_empty());
    let subject_token = subject_token.ok_or(GrantError::InvalidRequest("subject_token is required"))?;
    if request.subject_token_type.as_deref() != Some(ACCESS_TOKEN_TYPE) {
        return Err(GrantError::InvalidRequest("subject_token_type must be an access token type"));
    }
    if request.requested_token_type.as_deref().is_some_and(|t| t != ACCESS_TOKEN_TYPE) {
        return Err(GrantError::InvalidRequest("only access tokens can be requested"));
    }
    let subject = ctx
        .verifier
        .verify(&ctx.keys.ring(), subject_token)
        .map_err(|_| GrantError::InvalidRequest("subject_token is not a valid access token"))?;
    if subject.act.is_some() {
        return Err(GrantError::InvalidRequest("a delegated token cannot be exchanged again"));
    }
    let actor = match (&request.actor_token, &request.actor_token_type) {
        (None, None) => None,
        (Some(token), Some(kind)) if kind == ACCESS_TOKEN_TYPE => {
            let actor = ctx
                .verifier
                .verify(&ctx.keys.ring(), token)
                .map_err(|_| GrantError::InvalidRequest("actor_token is not a valid access token"))?;
            if actor.act.is_some() || !actor.has_permission(DELEGATE_PERMISSION) {
                return Err(GrantError::InvalidRequest("the actor may not act on behalf of others"));
            }
            Some(actor)
        }
        (Some(_), _) => {
            return Err(GrantError::InvalidRequest("actor_token_type is missing or unsupported"));
        }
        (None, Some(_)) => {
            return Err(GrantError::InvalidRequest("actor_token_type without actor_token"));
        }
    };
    Ok((subject, actor))
}

pub async fn exchange(ctx: &Context, meta: &RequestMeta, request: ExchangeRequest) -> Result<Issued, GrantError> {
    let organisation = request.organisation_id.ok_or(GrantError::InvalidRequest("organisation_id is required"))?;
    let (subject, actor) = verify_input(ctx, &request)?;
    let ctx2 = ctx.clone();
    let meta = meta.clone();
    ctx.store
        .run(move |conn| {
            async move {
                // The transaction opens with the reads of the subject's
                // organisation (leaving a deactivated or deleted one is
                // refused too) and of the target's rows for the subject.
                let first = async |c: store::Pipelined<'_>| {
                    let source_active = async |c: store::Pipelined<'_>| match subject.organisation_id {
                        Some(source) => organisation_active_on(c, source).await,
                        None => Ok(true),
                    };
                    let target =
                        async |c: store::Pipelined<'_>| GrantRows::read(c, subject.sub, Some(organisation)).await;
                    Ok(c.both(source_active, target).await?)
                };
                store::transaction_from::<_, _, GrantError, _, _>(conn, first, async |conn, (source_active, target)| {
                    let now = ctx2.now();
                    let actor_id = actor.as_ref().map(|a| a.sub);
                    let fail = async |conn: &mut _, reason: &str| -> Result<Result<Issued, String>, GrantError> {
                        let event = AuditEvent::new(ACTION, Outcome::Failure)
                            .subject(subject.sub)
                            .actor(actor_id)
                            .organisation(Some(organisation))
                            .reason(reason);
                        audit::record(conn, now, &meta, event).await?;
                        Ok(Err(reason.to_owned()))
                    };
                    if !source_active {
                        return fail(conn, "subject token's organisation is not active").await;
                    }
                    let mut permissions = match target.authorise(conn, &ctx2.config.roles).await? {
                        Ok(a) => a.permissions,
                        Err(reason) => return fail(conn, &reason).await,
                    };
                    if let Some(actor_id) = actor_id {
                        let acting = match authorise(conn, &ctx2.config.roles, actor_id, Some(organisation)).await? {
                            Ok(a) if a.user.kind == TECHNICAL_KIND => a,
                            Ok(_) => return fail(conn, "actor is not a technical user").await,
                            Err(reason) => return fail(conn, &format!("actor: {reason}")).await,
                        };
                        permissions = permissions.intersection(&acting.permissions);
                    }
                    let (access_token, expires_in) = Mint::new(&ctx2, now).sign(
                        subject.sub,
                        Some(organisation),
                        &permissions,
                        actor_id,
                        Some(subject.exp),
                    )?;
                    let event = AuditEvent::new(ACTION, Outcome::Success)
                        .subject(subject.sub)
                        .actor(actor_id)
                        .organisation(Some(organisation));
                    audit::record(conn, now, &meta, event).await?;
                    Ok(Ok(Issued {
                        access_token,
                        expires_in,
                        refresh_token: None,
                        organisation_id: Some(organisation),
                        issued_token_type: Some(ACCESS_TOKEN_TYPE),
                    }))
                })
                .await
            }
            .boxed()
        })
        .await?
        .map_err(GrantError::InvalidGrant)
}

//! The four grants of the token endpoint and revocation. Every grant passes
//! through [`authorise`], the one place that decides whether a subject may
//! have a token for an organisation and what that token holds.

mod client;
mod exchange;
mod password;
mod refresh;

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use diesel::QueryResult;
use uuid::Uuid;

pub use client::client_credentials;
pub use exchange::{ExchangeRequest, exchange};
pub use password::password;
pub use refresh::{refresh, revoke};

use super::GrantError;
use crate::domain::permissions::{Ceiling, organisation_token_permissions, system_token_permissions};
use crate::domain::{OrganisationRole, PermissionSet, RoleCatalog};
use crate::secret::Secret;
use crate::store::organisations::OrganisationRow;
use crate::store::types::DbUuid;
use crate::store::users::UserRow;
use crate::store::{AnyConnection, Pipelined, memberships, organisations, users};
use crate::tokens::{AccessClaims, Actor, KeyRing, claims::Audience};

/// `requested_token_type`/`issued_token_type` of an access token (RFC 8693).
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const USER_KIND: &str = "USER";
pub const TECHNICAL_KIND: &str = "TECHNICAL";

/// What the token endpoint answers on success.
#[derive(Debug)]
pub struct Issued {
    pub access_token: String,
    pub expires_in: i64,
    pub refresh_token: Option<Secret>,
    pub organisation_id: Option<Uuid>,
    pub issued_token_type: Option<&'static str>,
}

/// A subject cleared for a token.
#[derive(Debug)]
pub struct Authorised {
    pub user: UserRow,
    pub permissions: PermissionSet,
}

/// The choke point: the user exists and is active; for an organisation, it
/// exists, is active and the user is a member. Returns the permissions the
/// token carries, or the reason (for the audit log) why there is no token.
///
/// One query reads (and on PostgreSQL share-locks) the user, the membership
/// and the organisation; call it before taking any refresh-token lock (the
/// lock order is explained at `memberships::member_for_grant`).
pub async fn authorise(
    conn: &mut AnyConnection,
    roles: &RoleCatalog,
    user: Uuid,
    organisation: Option<Uuid>,
) -> Result<Result<Authorised, String>, GrantError> {
    GrantRows::read(conn.pipelined(), user, organisation).await?.authorise(conn, roles).await
}

/// What [`authorise`] decides on: the subject's rows as its one query read
/// them. Read on their own ([`GrantRows::read`]), they can be sent together
/// with other statements of the grant (`store::Pipelined`).
#[derive(Debug)]
pub struct GrantRows {
    user: Uuid,
    organisation: Option<Uuid>,
    /// The user, and the organisation if one was asked for and the user is
    /// a member of it.
    found: Option<(UserRow, Option<OrganisationRow>)>,
}

impl GrantRows {
    pub async fn read(conn: Pipelined<'_>, user: Uuid, organisation: Option<Uuid>) -> QueryResult<Self> {
        let found = match organisation {
            None => users::find_for_grant_on(conn, DbUuid(user)).await?.map(|user| (user, None)),
            Some(id) => memberships::member_for_grant_on(conn, DbUuid(id), DbUuid(user))
                .await?
                .map(|(user, organisation)| (user, Some(organisation))),
        };
        Ok(Self { user, organisation, found })
    }

    /// [`authorise`]'s decision on these rows.
    pub async fn authorise(
        self,
        conn: &mut AnyConnection,
        roles: &RoleCatalog,
    ) -> Result<Result<Authorised, String>, GrantError> {
        let Some((user, organisation)) = self.found else {
            // The slow path only tells the audit log which one it was.
            if self.organisation.is_none() || users::find(conn, DbUuid(self.user)).await?.is_none() {
                return Ok(Err("unknown user".into()));
            }
            return Ok(Err("not a member of the organisation, or no such organisation".into()));
        };
        if user.disabled_at.is_some() {
            return Ok(Err("user disabled".into()));
        }
        let user_permissions = roles.user_permissions(&user.system_roles.0);
        let permissions = match organisation {
            None => system_token_permissions(&user_permissions),
            Some(org) if org.deactivated_at.is_some() => return Ok(Err("organisation deactivated".into())),
            Some(org) => organisation_token_permissions(&user_permissions, &ceiling_of(roles, &org.roles.0)),
        };
        Ok(Ok(Authorised { user, permissions }))
    }
}

/// Whether an organisation exists and is active (for tokens scoped to it).
pub async fn organisation_active_on(conn: Pipelined<'_>, id: Uuid) -> QueryResult<bool> {
    Ok(organisations::find_on(conn, DbUuid(id)).await?.is_some_and(|o| o.deactivated_at.is_none()))
}

/// The ceiling of stored role names; names no longer known grant nothing.
pub fn ceiling_of(roles: &RoleCatalog, names: &[String]) -> Ceiling {
    let parsed: Vec<OrganisationRole> = names.iter().filter_map(|n| n.parse().ok()).collect();
    roles.ceiling(&parsed)
}

/// Everything needed to sign one access token.
pub struct Mint<'a> {
    /// Held for this one token: a rotation swaps the ring, not this copy.
    pub keys: Arc<KeyRing>,
    pub issuer: &'a str,
    pub audience: &'a str,
    pub now: DateTime<Utc>,
    pub lifetime: Duration,
}

impl<'a> Mint<'a> {
    pub fn new(ctx: &'a super::Context, now: DateTime<Utc>) -> Self {
        let ttl = i64::try_from(ctx.config.settings.tokens.access_ttl_secs).unwrap_or(i64::MAX);
        Self {
            keys: ctx.keys.ring(),
            issuer: &ctx.config.issuer,
            audience: &ctx.config.settings.tokens.audience,
            now,
            lifetime: Duration::seconds(ttl),
        }
    }

    /// Signs a token for `sub`; `not_after` caps its expiry (token exchange
    /// never outlives the subject token). Returns the token and `expires_in`.
    pub fn sign(
        &self,
        sub: Uuid,
        organisation: Option<Uuid>,
        permissions: &PermissionSet,
        actor: Option<Uuid>,
        not_after: Option<i64>,
    ) -> Result<(String, i64), GrantError> {
        let iat = self.now.timestamp();
        let mut exp = iat + self.lifetime.num_seconds();
        if let Some(cap) = not_after {
            exp = exp.min(cap);
        }
        let claims = AccessClaims {
            iss: self.issuer.to_owned(),
            sub,
            aud: Audience::One(self.audience.to_owned()),
            exp,
            iat,
            nbf: iat,
            jti: Uuid::new_v4(),
            organisation_id: organisation,
            permissions: permissions.to_vec(),
            act: actor.map(|sub| Actor { sub }),
        };
        let token = self.keys.sign(&claims).map_err(|e| GrantError::Internal(e.into()))?;
        Ok((token, exp - iat))
    }

    /// The answer of a grant made for `sub` itself (password, refresh,
    /// client credentials): its access token, with `refresh_token` if the
    /// grant gives one.
    pub fn issue(
        &self,
        sub: Uuid,
        organisation: Option<Uuid>,
        permissions: &PermissionSet,
        refresh_token: Option<Secret>,
    ) -> Result<Issued, GrantError> {
        let (access_token, expires_in) = self.sign(sub, organisation, permissions, None, None)?;
        Ok(Issued { access_token, expires_in, refresh_token, organisation_id: organisation, issued_token_type: None })
    }
}

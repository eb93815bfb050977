//! Users and technical users: create, list, read, edit, delete, rotate a
//! technical user's secret, and the bootstrap admin.

use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use serde::Serialize;
use uuid::Uuid;

use super::audit::{self, AuditEvent, Author, Outcome, RequestMeta};
use super::grants::{TECHNICAL_KIND, USER_KIND};
use super::{Context, ServiceError};
use crate::domain::roles::validate_system_roles;
use crate::domain::{PermissionSet, names};
use crate::secret::Secret;
use crate::store::memberships::{self, MembershipsOf};
use crate::store::refresh_tokens::{self, TokensOf};
use crate::store::types::{DbNames, DbUuid};
use crate::store::users::{self as rows, UserRow};
use crate::tokens::opaque;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub id: Uuid,
    pub username: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub system_roles: Vec<String>,
    pub disabled: bool,
    pub created_date: DateTime<Utc>,
    pub last_modified: DateTime<Utc>,
}

impl From<UserRow> for UserView {
    fn from(row: UserRow) -> Self {
        Self {
            id: row.id.0,
            username: row.username,
            kind: row.kind,
            system_roles: row.system_roles.0,
            disabled: row.disabled_at.is_some(),
            created_date: row.created_at.0,
            last_modified: row.last_modified.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    User,
    Technical,
}

#[derive(Debug)]
pub struct NewUser {
    pub username: String,
    pub kind: Kind,
    pub password: Option<Secret>,
    pub system_roles: Vec<String>,
}

/// The created user's id, and a technical user's secret (shown only now).
#[derive(Debug)]
pub struct Created {
    pub id: Uuid,
    pub client_secret: Option<Secret>,
}

/// An admin acting on users: who they are, and the permissions their token
/// holds, which bound what they may hand out (`None`: the service itself).
pub type Granter = (Author, Option<PermissionSet>);

/// No one hands out system-scoped permissions (STS_*, SYSTEM_*) their own
/// token does not hold: an identity administrator cannot make anyone, or
/// themselves, an ADMIN. Organisation-scoped permissions stay bounded by
/// each organisation's ceiling.
fn check_grantable(ctx: &Context, roles: &[String], grantable: Option<&PermissionSet>) -> Result<(), ServiceError> {
    let Some(grantable) = grantable else { return Ok(()) };
    let wanted = ctx.config.roles.user_permissions(roles).system_scoped();
    let beyond = wanted.difference(grantable);
    if let Some(permission) = beyond.iter().next() {
        return Err(ServiceError::Forbidden(format!("cannot grant {permission}, which the caller does not hold")));
    }
    Ok(())
}

fn event(action: &'static str, target: Uuid) -> AuditEvent {
    AuditEvent::new(action, Outcome::Success).target(target)
}

fn new_secret() -> Result<Secret, ServiceError> {
    opaque::generate().map_err(|_| ServiceError::Internal(anyhow::anyhow!("no randomness")))
}

pub async fn create(
    ctx: &Context,
    meta: &RequestMeta,
    (author, grantable): Granter,
    new: NewUser,
) -> Result<Created, ServiceError> {
    let id = Uuid::new_v4();
    let event = event("user.create", id);
    // A caller disabled since their token was issued gets no hash computed
    // and no judgement of their input.
    audit::refuse_inactive(ctx, meta, &author).await?;
    // Checks and the (slow, async) password hash come before the write; a
    // refusal there is audited like one inside it.
    let prepared = async {
        let name = names::username(&new.username).map_err(|e| ServiceError::Invalid(format!("username {e}")))?;
        let system_roles =
            validate_system_roles(&ctx.config.roles, &new.system_roles).map_err(ServiceError::Invalid)?;
        check_grantable(ctx, &system_roles, grantable.as_ref())?;
        let credentials = match (new.kind, &new.password) {
            (Kind::User, Some(password)) => {
                ctx.passwords.policy.check(password).map_err(ServiceError::Invalid)?;
                (Some(ctx.passwords.hash(password).await?), None, None)
            }
            (Kind::User, None) => return Err(ServiceError::Invalid("a user needs a password".into())),
            (Kind::Technical, None) => {
                let secret = new_secret()?;
                (None, Some(opaque::digest(secret.expose())), Some(secret))
            }
            (Kind::Technical, Some(_)) => {
                return Err(ServiceError::Invalid("a technical user gets a generated secret, not a password".into()));
            }
        };
        Ok((name, system_roles, credentials))
    };
    let (name, system_roles, (password_hash, secret_digest, client_secret)) = match prepared.await {
        Ok(prepared) => prepared,
        Err(e) => return audit::or_failure(ctx, meta, author.stamp(event), Err(e)).await,
    };
    let kind = if new.kind == Kind::User { USER_KIND } else { TECHNICAL_KIND };
    audit::audited_write(ctx, meta, &author, event, move |conn, now, _| {
        async move {
            if rows::find_by_username(conn, &name.key).await?.is_some() {
                return Err(ServiceError::Conflict("a user with this username exists".into()));
            }
            let row = UserRow {
                id: DbUuid(id),
                username: name.display,
                username_key: name.key,
                kind: kind.to_owned(),
                password_hash,
                secret_digest,
                system_roles: DbNames(system_roles),
                created_at: now,
                last_modified: now,
                disabled_at: None,
            };
            rows::insert(conn, &row).await?;
            Ok(())
        }
        .boxed()
    })
    .await?;
    Ok(Created { id, client_secret })
}

pub async fn get(ctx: &Context, id: Uuid) -> Result<UserView, ServiceError> {
    let row = ctx
        .store
        .run(move |conn| async move { rows::find(conn, DbUuid(id)).await.map_err(ServiceError::from) }.boxed())
        .await?;
    row.map(Into::into).ok_or(ServiceError::NotFound("user"))
}

pub async fn list(ctx: &Context, page: i64, page_size: i64) -> Result<(Vec<UserView>, i64), ServiceError> {
    let (rows, total) = ctx
        .store
        .run(move |conn| async move { rows::list(conn, page, page_size).await.map_err(ServiceError::from) }.boxed())
        .await?;
    Ok((rows.into_iter().map(Into::into).collect(), total))
}

#[derive(Debug, Default)]
pub struct UserChanges {
    pub system_roles: Option<Vec<String>>,
    pub password: Option<Secret>,
    pub disabled: Option<bool>,
}

/// Edits a user. A new password or disabling ends every refresh token of
/// the user at once: both are security events.
pub async fn update(
    ctx: &Context,
    meta: &RequestMeta,
    (author, grantable): Granter,
    id: Uuid,
    changes: UserChanges,
) -> Result<(), ServiceError> {
    let event = event("user.update", id);
    audit::refuse_inactive(ctx, meta, &author).await?;
    let prepared = async {
        if changes.system_roles.is_none() && changes.password.is_none() && changes.disabled.is_none() {
            return Err(ServiceError::Invalid("nothing to change: give systemRoles, password or disabled".into()));
        }
        let roles = changes
            .system_roles
            .as_deref()
            .map(|r| validate_system_roles(&ctx.config.roles, r))
            .transpose()
            .map_err(ServiceError::Invalid)?;
        if let Some(roles) = &roles {
            check_grantable(ctx, roles, grantable.as_ref())?;
        }
        let hash = match &changes.password {
            Some(password) => {
                ctx.passwords.policy.check(password).map_err(ServiceError::Invalid)?;
                Some(ctx.passwords.hash(password).await?)
            }
            None => None,
        };
        Ok((roles, hash))
    };
    let (roles, hash) = match prepared.await {
        Ok(prepared) => prepared,
        Err(e) => return audit::or_failure(ctx, meta, author.stamp(event), Err(e)).await,
    };
    let disabled = changes.disabled;
    audit::audited_write(ctx, meta, &author, event, move |conn, now, _| {
        async move {
            let mut row = rows::find(conn, DbUuid(id)).await?.ok_or(ServiceError::NotFound("user"))?;
            // A new password and disabling are security events: every refresh
            // token of the user ends with them.
            let mut revoke = false;
            let new_password = hash.is_some();
            if let Some(hash) = hash {
                if row.kind != USER_KIND {
                    return Err(ServiceError::Invalid("a technical user has no password".into()));
                }
                row.password_hash = Some(hash);
                revoke = true;
            }
            if let Some(roles) = roles {
                row.system_roles = DbNames(roles);
            }
            match disabled {
                Some(true) if row.disabled_at.is_none() => {
                    row.disabled_at = Some(now);
                    revoke = true;
                }
                Some(false) => row.disabled_at = None,
                _ => {}
            }
            row.last_modified = now;
            rows::update(conn, &row).await?;
            if revoke {
                refresh_tokens::revoke_all_of(conn, TokensOf::User(row.id), now).await?;
            }
            if new_password {
                // An administrator's password reset also lifts a lock.
                rows::set_login_state(conn, row.id, &rows::LoginRow::default()).await?;
            }
            Ok(())
        }
        .boxed()
    })
    .await
}

pub async fn delete(ctx: &Context, meta: &RequestMeta, author: Author, id: Uuid) -> Result<(), ServiceError> {
    audit::audited_write(ctx, meta, &author, event("user.delete", id), move |conn, _, _| {
        async move {
            // The lock order of docs/DECISIONS.md: memberships, the user row,
            // the token families' anchors, then the tokens and the row itself.
            memberships::delete_all_of(conn, MembershipsOf::User(DbUuid(id))).await?;
            if !rows::lock(conn, DbUuid(id)).await? {
                return Err(ServiceError::NotFound("user"));
            }
            refresh_tokens::delete_all_of(conn, TokensOf::User(DbUuid(id))).await?;
            rows::delete(conn, DbUuid(id)).await?;
            Ok(())
        }
        .boxed()
    })
    .await
}

/// Issues a new secret for a technical user; the old one stops working.
pub async fn rotate_secret(
    ctx: &Context,
    meta: &RequestMeta,
    author: Author,
    id: Uuid,
) -> Result<Secret, ServiceError> {
    let secret = new_secret()?;
    let digest = opaque::digest(secret.expose());
    audit::audited_write(ctx, meta, &author, event("user.secret_rotate", id), move |conn, now, _| {
        async move {
            let mut row = rows::find(conn, DbUuid(id)).await?.ok_or(ServiceError::NotFound("user"))?;
            if row.kind != TECHNICAL_KIND {
                return Err(ServiceError::Invalid("only a technical user has a client secret".into()));
            }
            row.secret_digest = Some(digest);
            row.last_modified = now;
            rows::update(conn, &row).await?;
            Ok(())
        }
        .boxed()
    })
    .await?;
    Ok(secret)
}

/// At start: the bootstrap admin from the settings, or — with no settings and
/// no users at all — `admin` with a random password, returned to be printed once.
pub async fn bootstrap(ctx: &Context) -> Result<Option<(String, Secret)>, ServiceError> {
    let settings = ctx.config.settings.bootstrap.clone();
    let (username, password, generated) = match (settings.admin_username, settings.admin_password) {
        (Some(username), Some(password)) => (username, password, false),
        _ => {
            let count = ctx
                .store
                .run(move |conn| async move { rows::count(conn).await.map_err(ServiceError::from) }.boxed())
                .await?;
            if count > 0 {
                return Ok(None);
            }
            ("admin".to_owned(), new_secret()?, true)
        }
    };
    let key = username.trim().to_lowercase();
    let exists = ctx
        .store
        .run(move |conn| async move { rows::find_by_username(conn, &key).await.map_err(ServiceError::from) }.boxed())
        .await?;
    if exists.is_some() {
        return Ok(None);
    }
    let new = NewUser {
        username: username.clone(),
        kind: Kind::User,
        password: Some(password.clone()),
        system_roles: vec![crate::domain::roles::ADMIN_ROLE.to_owned()],
    };
    create(ctx, &RequestMeta::default(), (Author::System, None), new).await?;
    Ok(generated.then_some((username, password)))
}

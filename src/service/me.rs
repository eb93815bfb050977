//! `me`: the caller and, for each organisation they belong to, what a token
//! for it would hold right now.

use futures_util::FutureExt;
use serde::Serialize;
use uuid::Uuid;

use super::grants::ceiling_of;
use super::users::UserView;
use super::{Context, ServiceError};
use crate::domain::PermissionSet;
use crate::domain::permissions::organisation_token_permissions;
use crate::store::memberships;
use crate::store::types::DbUuid;
use crate::store::users as rows;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MeOrganisation {
    pub id: Uuid,
    pub name: String,
    pub status: &'static str,
    #[schema(value_type = Vec<String>)]
    pub permissions: PermissionSet,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeView {
    #[serde(flatten)]
    pub user: UserView,
    pub organisations: Vec<MeOrganisation>,
}

/// The caller, and for each organisation they belong to what a token for it
/// would hold (nothing while it is deactivated).
pub async fn me(ctx: &Context, id: Uuid) -> Result<MeView, ServiceError> {
    let ctx2 = ctx.clone();
    ctx.store
        .run(move |conn| {
            async move {
                let user = rows::find(conn, DbUuid(id)).await?.ok_or(ServiceError::NotFound("user"))?;
                let roles = &ctx2.config.roles;
                let granted = roles.user_permissions(&user.system_roles.0);
                let active = user.disabled_at.is_none();
                let organisations = memberships::organisations_of(conn, user.id)
                    .await?
                    .into_iter()
                    .map(|org| {
                        let usable = active && org.deactivated_at.is_none();
                        MeOrganisation {
                            id: org.id.0,
                            status: if org.deactivated_at.is_some() { "DEACTIVATED" } else { "ACTIVE" },
                            permissions: if usable {
                                organisation_token_permissions(&granted, &ceiling_of(roles, &org.roles.0))
                            } else {
                                PermissionSet::new()
                            },
                            name: org.name,
                        }
                    })
                    .collect();
                Ok(MeView { user: user.into(), organisations })
            }
            .boxed()
        })
        .await
}

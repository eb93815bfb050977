//! The claims of an access token (CONTRACT §1).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The header `typ` of our access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub sub: Uuid,
}

/// `aud` may arrive as a string or an array (RFC 7519 §4.1.3); we issue a string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn contains(&self, audience: &str) -> bool {
        match self {
            Self::One(a) => a == audience,
            Self::Many(all) => all.iter().any(|a| a == audience),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: Uuid,
    pub aud: Audience,
    /// NumericDate seconds. Integers only: a string or float is refused when
    /// the token is decoded (the CVE-2026-25537 class of type confusion).
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: Uuid,
    #[serde(rename = "organisationId", default, skip_serializing_if = "Option::is_none")]
    pub organisation_id: Option<Uuid>,
    pub permissions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
}

impl AccessClaims {
    pub fn has_permission(&self, permission: &str) -> bool {
        self.permissions.iter().any(|p| p == permission)
    }

    pub fn is_system_token(&self) -> bool {
        self.organisation_id.is_none()
    }
}

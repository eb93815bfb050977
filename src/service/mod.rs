//! Use cases: token grants, organisation lifecycle, users and memberships,
//! the audit trail. Owns transactions; knows nothing of HTTP.

pub mod audit;
pub mod grants;
pub mod keys;
pub mod me;
pub mod memberships;
pub mod organisations;
pub mod passwords;
pub mod throttle;
pub mod users;

use crate::store::StoreError;

/// Errors of the admin use cases.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    /// Allowed to call, but not to do this (e.g. grant more than one holds).
    #[error("{0}")]
    Forbidden(String),
    /// The caller's account (or their actor's) was disabled or deleted
    /// after their token was issued (401).
    #[error("the caller's account is disabled or deleted")]
    CallerInactive,
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Every password-hashing slot stayed busy for the whole queue timeout.
    #[error("password hashing is saturated")]
    Busy,
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl From<StoreError> for ServiceError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(cause) => Self::Unavailable(cause),
            StoreError::Conflict(_) => Self::Conflict("already exists".into()),
            StoreError::Query(e) => Self::Internal(e.into()),
        }
    }
}

impl From<diesel::result::Error> for ServiceError {
    fn from(error: diesel::result::Error) -> Self {
        StoreError::from(error).into()
    }
}

/// Errors of the token endpoint. `InvalidGrant` carries the reason for the
/// audit log only; the client sees one generic description.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    #[error("invalid grant: {0}")]
    InvalidGrant(String),
    #[error("invalid client")]
    InvalidClient,
    #[error("unsupported grant type")]
    UnsupportedGrantType,
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("password hashing is saturated")]
    Busy,
    /// The source address used up its failed authentications; retry after.
    #[error("too many failed attempts from this address")]
    TooManyRequests(u64),
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl From<StoreError> for GrantError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(cause) => Self::Unavailable(cause),
            other => Self::Internal(other.into()),
        }
    }
}

impl From<diesel::result::Error> for GrantError {
    fn from(error: diesel::result::Error) -> Self {
        StoreError::from(error).into()
    }
}

impl From<ServiceError> for GrantError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::Unavailable(cause) => Self::Unavailable(cause),
            ServiceError::Busy => Self::Busy,
            other => Self::Internal(other.into()),
        }
    }
}

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::Config;
use crate::store::Store;
use crate::tokens::{LiveKeys, Verifier};

/// Everything a use case needs, built once at start and shared.
#[derive(Debug, Clone)]
pub struct Context {
    pub config: Arc<Config>,
    pub store: Store,
    /// The signing keys, swapped whole when the keys directory changes.
    pub keys: Arc<LiveKeys>,
    pub verifier: Verifier,
    pub clock: Arc<dyn Clock>,
    pub passwords: passwords::Passwords,
    pub sources: Arc<throttle::SourceLimiter>,
}

impl Context {
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }
}

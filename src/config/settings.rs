//! The settings tree as written in `config/default.toml`: one struct per
//! section, each with the defaults the file documents.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::DEFAULT_ROLES_FILE;
use crate::secret::Secret;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub tokens: TokenSettings,
    pub keys: KeySettings,
    pub passwords: PasswordSettings,
    pub roles: RoleSettings,
    pub bootstrap: BootstrapSettings,
    pub audit: AuditSettings,
    pub login: LoginSettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginSettings {
    pub free_failures: u32,
    pub backoff_initial_secs: u64,
    pub backoff_max_secs: u64,
    pub lock_after_failures: u32,
    pub lock_secs: u64,
    pub reset_after_secs: u64,
    pub source_failures_per_minute: u32,
}

impl Default for LoginSettings {
    fn default() -> Self {
        Self {
            free_failures: 5,
            backoff_initial_secs: 1,
            backoff_max_secs: 60,
            lock_after_failures: 20,
            lock_secs: 900,
            reset_after_secs: 43_200,
            source_failures_per_minute: 20,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// Days an audit event is kept; 0 keeps every event forever.
    pub retention_days: u64,
    /// How often the retention job looks for expired events.
    pub purge_interval_secs: u64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self { retention_days: 0, purge_interval_secs: 3_600 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    pub listen: String,
    pub workers: usize,
    pub body_limit_bytes: usize,
    pub token_body_limit_bytes: usize,
    pub max_header_bytes: usize,
    pub shutdown_grace_secs: u64,
    pub shutdown_delay_secs: u64,
    pub trusted_proxies: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    pub url: Option<String>,
    pub pool_size: u32,
    pub acquire_timeout_ms: u64,
    pub statement_timeout_ms: u64,
    pub sqlite_busy_timeout_ms: u64,
    pub wait_at_start: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenSettings {
    pub issuer: Option<String>,
    pub audience: String,
    pub access_ttl_secs: u64,
    pub refresh_ttl_secs: u64,
    pub refresh_family_ttl_secs: u64,
    pub leeway_secs: u64,
    pub jwks_max_age_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeySettings {
    pub dir: PathBuf,
    /// How long verifiers keep our JWKS (Core's `ttlJwks`); a key is
    /// published this long (and more, see `Timing`) before it signs.
    pub verifier_cache_ttl_secs: u64,
    /// How long a key signs before its successor takes over.
    pub rotation_period_days: u64,
    /// How often an instance re-reads the keys directory and rotates when due.
    pub reload_interval_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordSettings {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    pub min_chars: usize,
    pub max_bytes: usize,
    pub hashing_threads: usize,
    pub queue_timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoleSettings {
    pub file: PathBuf,
}

#[derive(Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct BootstrapSettings {
    pub admin_username: Option<String>,
    #[serde(skip_serializing)]
    pub admin_password: Option<Secret>,
}

impl std::fmt::Debug for BootstrapSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapSettings")
            .field("admin_username", &self.admin_username)
            .field("admin_password", &self.admin_password.as_ref().map(|_| "***"))
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON lines when stdout is not a terminal, human-readable otherwise.
    Auto,
    Json,
    Text,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub level: String,
    pub format: LogFormat,
}

impl Default for KeySettings {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("keys"),
            verifier_cache_ttl_secs: 600,
            rotation_period_days: 90,
            reload_interval_secs: 2,
        }
    }
}

impl Default for RoleSettings {
    fn default() -> Self {
        Self { file: PathBuf::from(DEFAULT_ROLES_FILE) }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self { level: "info".into(), format: LogFormat::Auto }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            workers: 0,
            body_limit_bytes: 64 * 1024,
            token_body_limit_bytes: 16 * 1024,
            max_header_bytes: 8 * 1024,
            shutdown_grace_secs: 25,
            shutdown_delay_secs: 0,
            trusted_proxies: Vec::new(),
        }
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: None,
            pool_size: 10,
            acquire_timeout_ms: 2_000,
            statement_timeout_ms: 5_000,
            sqlite_busy_timeout_ms: 5_000,
            wait_at_start: false,
        }
    }
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            issuer: None,
            audience: "one-core".into(),
            access_ttl_secs: 300,
            refresh_ttl_secs: 28_800,
            refresh_family_ttl_secs: 86_400,
            leeway_secs: 5,
            jwks_max_age_secs: 300,
        }
    }
}

impl Default for PasswordSettings {
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
            min_chars: 15,
            max_bytes: 1024,
            hashing_threads: 0,
            queue_timeout_ms: 2_000,
        }
    }
}

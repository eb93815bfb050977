//! One typed settings tree, loaded once at start from `config/default.toml`
//! and the environment variables of CONTRACT §5, validated, then passed down.
//! A bad setting is reported as one line naming it, and the process exits 2.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};

use crate::domain::roles::{RoleCatalog, vocabulary};
use crate::domain::throttle::ThrottlePolicy;
use crate::store::DatabaseUrl;
use crate::tokens::Timing;

mod settings;

pub use settings::*;

/// Core's permission vocabulary, embedded so the binary reads nothing outside
/// its own configuration.
pub const CORE_PERMISSIONS: &str = crate::domain::permissions::CORE_VOCABULARY;
/// The shipped role mapping, used when the configured file is the default
/// path and does not exist (a binary run outside the repository).
pub const DEFAULT_ROLES: &str = include_str!("../../config/roles.toml");
pub const DEFAULT_CONFIG_FILE: &str = "config/default.toml";
pub(crate) const DEFAULT_ROLES_FILE: &str = "config/roles.toml";

/// Environment variables and the setting each one overrides (CONTRACT §5).
pub const ENVIRONMENT: [(&str, &str); 11] = [
    ("DATABASE_URL", "database.url"),
    ("STS_LISTEN", "server.listen"),
    ("STS_ISSUER", "tokens.issuer"),
    ("STS_AUDIENCE", "tokens.audience"),
    ("STS_KEYS_DIR", "keys.dir"),
    ("STS_ACCESS_TOKEN_TTL", "tokens.access_ttl_secs"),
    ("STS_REFRESH_TOKEN_TTL", "tokens.refresh_ttl_secs"),
    ("STS_BOOTSTRAP_ADMIN_USERNAME", "bootstrap.admin_username"),
    ("STS_BOOTSTRAP_ADMIN_PASSWORD", "bootstrap.admin_password"),
    ("STS_ROLES_FILE", "roles.file"),
    ("STS_LOG_FORMAT", "log.format"),
];

/// A setting that cannot be used, named as the operator wrote it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {setting}: {reason}")]
pub struct ConfigError {
    pub setting: String,
    pub reason: String,
}

fn invalid(setting: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError { setting: setting.to_owned(), reason: reason.into() }
}

/// The variable that overrides a setting, for error messages.
fn variable_for(setting: &str) -> Option<&'static str> {
    ENVIRONMENT.iter().find(|(_, key)| *key == setting).map(|(var, _)| *var)
}

fn named(setting: &str) -> String {
    match variable_for(setting) {
        Some(var) => format!("`{setting}` ({var})"),
        None => format!("`{setting}`"),
    }
}

impl Settings {
    /// Defaults, then the settings file, then the environment.
    pub fn load(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let (path, explicit) = match env("STS_CONFIG") {
            Some(path) => (PathBuf::from(path), true),
            None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
        };
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if path.exists() {
            figment = figment.merge(Toml::file_exact(&path));
        } else if explicit {
            return Err(invalid("STS_CONFIG", format!("file {} does not exist", path.display())));
        }
        for (var, key) in ENVIRONMENT {
            let Some(value) = env(var) else { continue };
            if key.ends_with("_secs") {
                let number: u64 = value
                    .trim()
                    .parse()
                    .map_err(|_| invalid(&named(key), format!("`{value}` is not a whole number")))?;
                figment = figment.merge((key, number));
            } else {
                figment = figment.merge((key, value));
            }
        }
        figment.extract().map_err(|e| {
            let key = e.path.join(".");
            let setting = if key.is_empty() { path.display().to_string() } else { named(&key) };
            invalid(&setting, e.kind.to_string())
        })
    }

    /// Checks every value and derives the typed configuration the app runs on.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let listen: SocketAddr = self
            .server
            .listen
            .parse()
            .map_err(|_| invalid(&named("server.listen"), "expected HOST:PORT, e.g. 127.0.0.1:8080"))?;
        let database = DatabaseUrl::parse(self.database.url.as_deref())
            .map_err(|reason| invalid(&named("database.url"), reason))?;
        let issuer = match &self.tokens.issuer {
            Some(issuer) => {
                url::Url::parse(issuer).map_err(|_| invalid(&named("tokens.issuer"), "must be an absolute URL"))?;
                issuer.trim_end_matches('/').to_owned()
            }
            None => format!("http://{listen}"),
        };
        if self.tokens.audience.trim().is_empty() {
            return Err(invalid(&named("tokens.audience"), "must not be empty"));
        }
        let positive = [
            ("tokens.access_ttl_secs", self.tokens.access_ttl_secs),
            ("tokens.refresh_ttl_secs", self.tokens.refresh_ttl_secs),
            ("tokens.refresh_family_ttl_secs", self.tokens.refresh_family_ttl_secs),
            ("server.body_limit_bytes", self.server.body_limit_bytes as u64),
            ("server.token_body_limit_bytes", self.server.token_body_limit_bytes as u64),
            ("database.pool_size", u64::from(self.database.pool_size)),
            ("database.acquire_timeout_ms", self.database.acquire_timeout_ms),
            ("passwords.max_bytes", self.passwords.max_bytes as u64),
            ("audit.purge_interval_secs", self.audit.purge_interval_secs),
            ("login.backoff_initial_secs", self.login.backoff_initial_secs),
            ("login.lock_secs", self.login.lock_secs),
            ("login.source_failures_per_minute", u64::from(self.login.source_failures_per_minute)),
            ("server.max_header_bytes", self.server.max_header_bytes as u64),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(invalid(&named(key), "must be greater than 0"));
        }
        if self.tokens.leeway_secs > 60 {
            return Err(invalid(&named("tokens.leeway_secs"), "at most 60 seconds (RFC 7519 §4.1.4)"));
        }
        self.check_key_timing()?;
        let argon2 =
            argon2::Params::new(self.passwords.memory_kib, self.passwords.iterations, self.passwords.parallelism, None)
                .map_err(|e| invalid("`passwords.memory_kib/iterations/parallelism`", e.to_string()))?;
        let roles = self.load_roles()?;
        if let Some(name) = &self.bootstrap.admin_username {
            crate::domain::names::username(name)
                .map_err(|e| invalid(&named("bootstrap.admin_username"), e.to_string()))?;
            if self.bootstrap.admin_password.is_none() {
                return Err(invalid(
                    &named("bootstrap.admin_password"),
                    "must be set together with the bootstrap admin username",
                ));
            }
        }
        let trusted_proxies = self
            .server
            .trusted_proxies
            .iter()
            .map(|p| p.parse().map_err(|_| invalid("`server.trusted_proxies`", format!("`{p}` is not an IP address"))))
            .collect::<Result<Vec<std::net::IpAddr>, _>>()?;
        let secs = |v: u64| chrono::Duration::seconds(i64::try_from(v).unwrap_or(i64::MAX / 1000));
        let login = &self.login;
        let throttle = ThrottlePolicy {
            free_failures: login.free_failures,
            backoff_initial: secs(login.backoff_initial_secs),
            backoff_max: secs(login.backoff_max_secs.max(login.backoff_initial_secs)),
            lock_after: login.lock_after_failures.max(login.free_failures),
            lock_for: secs(login.lock_secs),
            reset_after: secs(login.reset_after_secs),
        };
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Ok(Config {
            trusted_proxies,
            throttle,
            listen,
            workers: if self.server.workers == 0 { cores } else { self.server.workers },
            database,
            issuer,
            argon2,
            // One core is left to everything else: with every core hashing, a
            // login flood delayed every other request behind the hashes
            // (docs/DECISIONS.md, R8).
            hashing_threads: match self.passwords.hashing_threads {
                0 => cores.saturating_sub(1).max(1),
                n => n,
            },
            roles,
            settings: self,
        })
    }

    /// The key lifecycle's durations must be usable: a reload that takes
    /// long would stretch every rule, and a rotation period not longer than
    /// the pre-publication lead would never let a key sign for long.
    fn check_key_timing(&self) -> Result<(), ConfigError> {
        let keys = &self.keys;
        if !(1..=60).contains(&keys.reload_interval_secs) {
            return Err(invalid(&named("keys.reload_interval_secs"), "between 1 and 60 seconds"));
        }
        const MAX_CACHE_SECS: u64 = 7 * 86_400;
        if keys.verifier_cache_ttl_secs > MAX_CACHE_SECS || self.tokens.jwks_max_age_secs > MAX_CACHE_SECS {
            return Err(invalid(
                "`keys.verifier_cache_ttl_secs` / `tokens.jwks_max_age_secs`",
                "at most 604800 seconds (7 days) each",
            ));
        }
        if !(1..=3_650).contains(&keys.rotation_period_days) {
            return Err(invalid(&named("keys.rotation_period_days"), "between 1 and 3650 days"));
        }
        let timing = key_timing(self);
        if timing.rotation_period <= timing.pre_publication_lead() {
            return Err(invalid(
                &named("keys.rotation_period_days"),
                format!(
                    "must be longer than the pre-publication lead ({} s: verifier cache + JWKS max-age + leeway + reload interval)",
                    timing.pre_publication_lead().num_seconds()
                ),
            ));
        }
        Ok(())
    }

    fn load_roles(&self) -> Result<RoleCatalog, ConfigError> {
        let file = &self.roles.file;
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(_) if file == Path::new(DEFAULT_ROLES_FILE) => DEFAULT_ROLES.to_owned(),
            Err(e) => {
                return Err(invalid(&named("roles.file"), format!("{}: {e}", file.display())));
            }
        };
        RoleCatalog::from_toml(&text, vocabulary(CORE_PERMISSIONS))
            .map_err(|e| invalid(&named("roles.file"), e.to_string()))
    }
}

/// The validated configuration the application runs on.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Peers whose `X-Forwarded-For` is believed (the trusted proxy hop).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    pub throttle: ThrottlePolicy,
    pub workers: usize,
    pub database: DatabaseUrl,
    /// `iss` of every token, without a trailing slash.
    pub issuer: String,
    pub argon2: argon2::Params,
    pub hashing_threads: usize,
    pub roles: RoleCatalog,
    pub settings: Settings,
}

/// The durations of the key lifecycle, from `[keys]` and `[tokens]`.
fn key_timing(settings: &Settings) -> Timing {
    // Clamped to a century so that sums of durations cannot overflow.
    let seconds = |s: u64| chrono::Duration::seconds(i64::try_from(s.min(100 * 365 * 86_400)).unwrap_or(0));
    Timing {
        verifier_cache_ttl: seconds(settings.keys.verifier_cache_ttl_secs),
        jwks_max_age: seconds(settings.tokens.jwks_max_age_secs),
        leeway: seconds(settings.tokens.leeway_secs),
        access_ttl: seconds(settings.tokens.access_ttl_secs),
        rotation_period: chrono::Duration::days(i64::try_from(settings.keys.rotation_period_days).unwrap_or(3_650)),
        reload_interval: seconds(settings.keys.reload_interval_secs),
    }
}

impl Config {
    pub fn key_timing(&self) -> Timing {
        key_timing(&self.settings)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Settings::load(&|k| vars.get(k).cloned())?.resolve()
    }

    #[test]
    fn defaults_select_sqlite_and_derive_the_issuer_from_the_listen_address() {
        let config = load(&[]).map_err(|e| e.to_string());
        let Ok(config) = config else { panic!("{config:?}") };
        assert_eq!(config.database, DatabaseUrl::Sqlite(PathBuf::from("data/sts.db")));
        assert_eq!(config.issuer, "http://127.0.0.1:8080");
        assert_eq!(config.settings.tokens.access_ttl_secs, 300);
    }

    #[test]
    fn by_default_hashing_leaves_a_core_to_everything_else() {
        let Ok(config) = load(&[]) else { panic!("defaults load") };
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert!(config.hashing_threads >= 1, "at least one hashing thread");
        if cores > 1 {
            assert_eq!(config.hashing_threads, cores - 1);
        }
    }

    #[test]
    fn environment_variables_override_the_file() {
        let config = load(&[
            ("DATABASE_URL", "postgres://u:p@db/sts"),
            ("STS_ACCESS_TOKEN_TTL", "120"),
            ("STS_LISTEN", "0.0.0.0:9000"),
        ]);
        let Ok(config) = config else { panic!("{config:?}") };
        assert!(config.database.is_postgres());
        assert_eq!(config.settings.tokens.access_ttl_secs, 120);
        assert_eq!(config.issuer, "http://0.0.0.0:9000");
    }

    #[test]
    fn a_bad_setting_is_named_with_its_variable() {
        let err = load(&[("STS_ACCESS_TOKEN_TTL", "five")]).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("invalid setting `tokens.access_ttl_secs` (STS_ACCESS_TOKEN_TTL): `five` is not a whole number")
        );
        let err = load(&[("DATABASE_URL", "mysql://x")]).err().map(|e| e.setting);
        assert_eq!(err.as_deref(), Some("`database.url` (DATABASE_URL)"));
        let err = load(&[("STS_ACCESS_TOKEN_TTL", "0")]).err().map(|e| e.setting);
        assert_eq!(err.as_deref(), Some("`tokens.access_ttl_secs` (STS_ACCESS_TOKEN_TTL)"));
    }

    #[test]
    fn key_timing_defaults_to_cores_cache_and_a_90_day_period() {
        let Ok(config) = load(&[]) else { panic!("defaults load") };
        let timing = config.key_timing();
        assert_eq!(timing.verifier_cache_ttl, chrono::Duration::seconds(600));
        assert_eq!(timing.rotation_period, chrono::Duration::days(90));
        assert_eq!(timing.pre_publication_lead(), chrono::Duration::seconds(600 + 300 + 5 + 2));
    }

    #[test]
    fn a_rotation_period_within_the_lead_is_refused() {
        let mut settings = Settings::default();
        settings.keys.verifier_cache_ttl_secs = 7 * 86_400;
        settings.tokens.jwks_max_age_secs = 7 * 86_400;
        settings.keys.rotation_period_days = 14;
        let err = settings.resolve().err().map(|e| e.setting);
        assert_eq!(err.as_deref(), Some("`keys.rotation_period_days`"));
        let mut settings = Settings::default();
        settings.keys.reload_interval_secs = 0;
        assert!(settings.resolve().is_err(), "a reload interval of 0 is refused");
    }

    #[test]
    fn a_missing_explicit_config_file_is_an_error() {
        assert!(load(&[("STS_CONFIG", "/nonexistent.toml")]).is_err());
    }
}

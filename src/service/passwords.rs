//! Password hashing with argon2id behind a semaphore of one permit per
//! hashing thread: a flood of logins waits (then gets 503) instead of
//! starving refresh grants, JWKS and health of CPU and memory.

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use super::ServiceError;
use crate::secret::Secret;

/// Bounds on parameters read back from stored hashes: a hash planted with
/// absurd parameters must not become a denial of service (ZITADEL's limits).
const MAX_MEMORY_KIB: u32 = 512 * 1024;
const MAX_ITERATIONS: u32 = 10;
const MAX_PARALLELISM: u32 = 16;

#[derive(Debug, Clone)]
pub struct PasswordPolicy {
    pub min_chars: usize,
    pub max_bytes: usize,
}

impl PasswordPolicy {
    /// Length rules only (NIST SP 800-63B-4): no composition rules.
    pub fn check(&self, password: &Secret) -> Result<(), String> {
        let value = password.expose();
        if value.len() > self.max_bytes {
            return Err(format!("password must be at most {} bytes", self.max_bytes));
        }
        if value.chars().count() < self.min_chars {
            return Err(format!("password must be at least {} characters", self.min_chars));
        }
        Ok(())
    }
}

/// Result of a verification: whether it matched, and a fresh hash when the
/// stored one used other parameters than the current ones.
#[derive(Debug)]
pub struct Verified {
    pub matches: bool,
    pub rehash: Option<String>,
}

#[derive(Clone)]
pub struct Passwords {
    params: Params,
    permits: Arc<Semaphore>,
    queue_timeout: Duration,
    /// Verified against when the user does not exist, so that an unknown
    /// user costs the same time as a wrong password.
    dummy_hash: Arc<str>,
    /// Comparisons against a real stored hash (not the dummy), for metrics
    /// and for proving that throttling holds.
    comparisons: Arc<std::sync::atomic::AtomicU64>,
    pub policy: PasswordPolicy,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords").field("params", &self.params).finish_non_exhaustive()
    }
}

fn argon2(params: Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn hash_now(params: &Params, password: &str) -> Result<String, ServiceError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2(params.clone())
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ServiceError::Internal(anyhow::anyhow!("argon2 hashing failed: {e}")))
}

fn within_bounds(hash: &PasswordHash<'_>) -> bool {
    let Ok(params) = Params::try_from(hash) else {
        return false;
    };
    hash.algorithm == Algorithm::Argon2id.ident()
        && params.m_cost() <= MAX_MEMORY_KIB
        && params.t_cost() <= MAX_ITERATIONS
        && params.p_cost() <= MAX_PARALLELISM
}

fn verify_now(params: &Params, password: &str, stored: &str, dummy: &str) -> Verified {
    let (candidate, real) = match PasswordHash::new(stored) {
        Ok(hash) if within_bounds(&hash) => (hash, true),
        _ => match PasswordHash::new(dummy) {
            Ok(hash) => (hash, false),
            Err(_) => {
                return Verified { matches: false, rehash: None };
            }
        },
    };
    let matches = argon2(params.clone()).verify_password(password.as_bytes(), &candidate).is_ok() && real;
    let stale = Params::try_from(&candidate)
        .map(|p| p.m_cost() != params.m_cost() || p.t_cost() != params.t_cost() || p.p_cost() != params.p_cost());
    let rehash = if matches && stale.unwrap_or(true) { hash_now(params, password).ok() } else { None };
    Verified { matches, rehash }
}

impl Passwords {
    pub fn new(
        params: Params,
        threads: usize,
        queue_timeout: Duration,
        policy: PasswordPolicy,
    ) -> Result<Self, ServiceError> {
        let dummy_hash = hash_now(&params, "dummy password that never matches")?;
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(threads.max(1))),
            queue_timeout,
            dummy_hash: dummy_hash.into(),
            comparisons: Arc::default(),
            policy,
        })
    }

    async fn on_hashing_pool<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ServiceError> {
        let permit = tokio::time::timeout(self.queue_timeout, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| ServiceError::Busy)?
            .map_err(|_| ServiceError::Busy)?;
        let span = tracing::Span::current();
        let result = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            span.in_scope(work)
        })
        .await
        .map_err(|e| ServiceError::Internal(anyhow::anyhow!("hashing task failed: {e}")))?;
        Ok(result)
    }

    /// How many comparisons against real stored hashes ran so far.
    pub fn comparisons(&self) -> u64 {
        self.comparisons.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub async fn hash(&self, password: &Secret) -> Result<String, ServiceError> {
        let params = self.params.clone();
        let password = password.clone();
        self.on_hashing_pool(move || hash_now(&params, password.expose())).await?
    }

    /// Verifies against `stored`, or against the dummy hash when there is no
    /// user, so both paths cost one argon2 verification.
    pub async fn verify(&self, password: &Secret, stored: Option<String>) -> Result<Verified, ServiceError> {
        let params = self.params.clone();
        let password = password.clone();
        let dummy = self.dummy_hash.clone();
        let comparisons = self.comparisons.clone();
        self.on_hashing_pool(move || match stored {
            Some(stored) => {
                comparisons.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                verify_now(&params, password.expose(), &stored, &dummy)
            }
            None => {
                let _ = verify_now(&params, password.expose(), &dummy, &dummy);
                Verified { matches: false, rehash: None }
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> Params {
        Params::new(1024, 1, 1, None).unwrap_or_default()
    }

    #[test]
    fn a_hash_verifies_and_a_wrong_password_does_not() {
        let Ok(hash) = hash_now(&fast(), "correct horse battery") else { panic!("hash") };
        assert!(hash.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        assert!(verify_now(&fast(), "correct horse battery", &hash, &hash).matches);
        assert!(!verify_now(&fast(), "wrong horse battery", &hash, &hash).matches);
    }

    #[test]
    fn a_hash_with_old_parameters_is_upgraded_on_success() {
        let old = Params::new(512, 1, 1, None).unwrap_or_default();
        let Ok(hash) = hash_now(&old, "correct horse battery") else { panic!("hash") };
        let verified = verify_now(&fast(), "correct horse battery", &hash, &hash);
        assert!(verified.matches);
        assert!(verified.rehash.is_some_and(|h| h.contains("m=1024,t=1,p=1")));
    }

    #[test]
    fn the_policy_checks_length_only() {
        let policy = PasswordPolicy { min_chars: 15, max_bytes: 1024 };
        assert!(policy.check(&Secret::new("aaaaaaaaaaaaaaa")).is_ok());
        assert!(policy.check(&Secret::new("short")).is_err());
        assert!(policy.check(&Secret::new("x".repeat(1025))).is_err());
    }
}

//! Password hashing with argon2id behind a semaphore of one permit per
//! hashing thread: a flood of logins waits (then gets 503) instead of
//! starving refresh grants, JWKS and health of CPU and memory.
//!
//! Each permit owns an argon2 memory buffer allocated once at start, so the
//! memory spent on hashing is exactly `threads × m_cost`, whatever the load:
//! allocating 19 MiB per hash lets the allocator keep freed blocks in
//! per-thread arenas, and a flood then grows the process by gigabytes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
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
    /// One argon2 memory buffer per permit; a permit holder takes one.
    buffers: Arc<Mutex<Vec<Vec<Block>>>>,
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

fn internal(what: &str, error: impl std::fmt::Display) -> ServiceError {
    ServiceError::Internal(anyhow::anyhow!("{what}: {error}"))
}

/// Runs `work` with an argon2 buffer of at least `blocks` blocks: a pooled
/// one, or (for a legacy hash with larger parameters) a temporary one.
fn with_memory<T>(buffers: &Mutex<Vec<Vec<Block>>>, blocks: usize, work: impl FnOnce(&mut [Block]) -> T) -> T {
    let pooled = buffers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
    match pooled {
        Some(mut buffer) if buffer.len() >= blocks => {
            let result = work(&mut buffer[..blocks]);
            buffers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(buffer);
            result
        }
        other => {
            if let Some(buffer) = other {
                buffers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(buffer);
            }
            work(&mut vec![Block::default(); blocks])
        }
    }
}

/// A new PHC string for `password` with `params`.
fn hash_now(params: &Params, password: &str, memory: &mut [Block]) -> Result<String, ServiceError> {
    let mut salt = [0u8; 16];
    OsRng.fill_bytes(&mut salt);
    let salt_string = SaltString::encode_b64(&salt).map_err(|e| internal("salt", e))?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let output = Output::init_with(params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN), |out| {
        argon.hash_password_into_with_memory(password.as_bytes(), &salt, out, &mut *memory).map_err(Into::into)
    })
    .map_err(|e| internal("argon2 hashing failed", e))?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| internal("argon2 parameters", e))?,
        salt: Some(salt_string.as_salt()),
        hash: Some(output),
    };
    Ok(hash.to_string())
}

fn within_bounds(hash: &PasswordHash<'_>) -> bool {
    let Ok(params) = Params::try_from(hash) else { return false };
    hash.algorithm == Algorithm::Argon2id.ident()
        && params.m_cost() <= MAX_MEMORY_KIB
        && params.t_cost() <= MAX_ITERATIONS
        && params.p_cost() <= MAX_PARALLELISM
}

/// Whether `password` matches the PHC string, compared in constant time.
fn matches(hash: &PasswordHash<'_>, password: &str, buffers: &Mutex<Vec<Vec<Block>>>) -> Option<bool> {
    let params = Params::try_from(hash).ok()?;
    let version = Version::try_from(hash.version.unwrap_or(0x13)).ok()?;
    let expected = hash.hash?;
    let mut salt = [0u8; 64];
    let salt = hash.salt?.decode_b64(&mut salt).ok()?;
    let argon = Argon2::new(Algorithm::Argon2id, version, params.clone());
    let mut out = vec![0u8; expected.len()];
    with_memory(buffers, params.block_count(), |memory| {
        argon.hash_password_into_with_memory(password.as_bytes(), salt, &mut out, memory)
    })
    .ok()?;
    // `Output`'s equality is constant-time.
    Some(Output::new(&out).ok()? == expected)
}

fn verify_now(
    params: &Params,
    password: &str,
    stored: &str,
    dummy: &str,
    buffers: &Mutex<Vec<Vec<Block>>>,
) -> Verified {
    let (candidate, real) = match PasswordHash::new(stored) {
        Ok(hash) if within_bounds(&hash) => (hash, true),
        _ => match PasswordHash::new(dummy) {
            Ok(hash) => (hash, false),
            Err(_) => return Verified { matches: false, rehash: None },
        },
    };
    let matches = matches(&candidate, password, buffers).unwrap_or(false) && real;
    let stale = Params::try_from(&candidate)
        .map(|p| p.m_cost() != params.m_cost() || p.t_cost() != params.t_cost() || p.p_cost() != params.p_cost());
    let rehash = if matches && stale.unwrap_or(true) {
        with_memory(buffers, params.block_count(), |memory| hash_now(params, password, memory)).ok()
    } else {
        None
    };
    Verified { matches, rehash }
}

impl Passwords {
    pub fn new(
        params: Params,
        threads: usize,
        queue_timeout: Duration,
        policy: PasswordPolicy,
    ) -> Result<Self, ServiceError> {
        let threads = threads.max(1);
        let buffers: Vec<Vec<Block>> = (0..threads).map(|_| vec![Block::default(); params.block_count()]).collect();
        let buffers = Arc::new(Mutex::new(buffers));
        let dummy_hash = with_memory(&buffers, params.block_count(), |memory| {
            hash_now(&params, "dummy password that never matches", memory)
        })?;
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(threads)),
            buffers,
            queue_timeout,
            dummy_hash: dummy_hash.into(),
            comparisons: Arc::default(),
            policy,
        })
    }

    async fn on_hashing_pool<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Mutex<Vec<Vec<Block>>>) -> T + Send + 'static,
    ) -> Result<T, ServiceError> {
        let permit = tokio::time::timeout(self.queue_timeout, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| ServiceError::Busy)?
            .map_err(|_| ServiceError::Busy)?;
        let span = tracing::Span::current();
        let buffers = self.buffers.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            span.in_scope(|| work(&buffers))
        })
        .await
        .map_err(|e| internal("hashing task failed", e))
    }

    /// How many comparisons against real stored hashes ran so far.
    pub fn comparisons(&self) -> u64 {
        self.comparisons.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub async fn hash(&self, password: &Secret) -> Result<String, ServiceError> {
        let params = self.params.clone();
        let password = password.clone();
        self.on_hashing_pool(move |buffers| {
            with_memory(buffers, params.block_count(), |memory| hash_now(&params, password.expose(), memory))
        })
        .await?
    }

    /// Verifies against `stored`, or against the dummy hash when there is no
    /// user, so both paths cost one argon2 verification.
    pub async fn verify(&self, password: &Secret, stored: Option<String>) -> Result<Verified, ServiceError> {
        let params = self.params.clone();
        let password = password.clone();
        let dummy = self.dummy_hash.clone();
        let comparisons = self.comparisons.clone();
        self.on_hashing_pool(move |buffers| match stored {
            Some(stored) => {
                comparisons.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                verify_now(&params, password.expose(), &stored, &dummy, buffers)
            }
            None => {
                let _ = verify_now(&params, password.expose(), &dummy, &dummy, buffers);
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

    fn pool(params: &Params) -> Mutex<Vec<Vec<Block>>> {
        Mutex::new(vec![vec![Block::default(); params.block_count()]])
    }

    fn hash(params: &Params, password: &str) -> String {
        let Ok(hash) = with_memory(&pool(params), params.block_count(), |m| hash_now(params, password, m)) else {
            panic!("hash")
        };
        hash
    }

    #[test]
    fn a_hash_verifies_and_a_wrong_password_does_not() {
        let hash = hash(&fast(), "correct horse battery");
        assert!(hash.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        assert!(verify_now(&fast(), "correct horse battery", &hash, &hash, &pool(&fast())).matches);
        assert!(!verify_now(&fast(), "wrong horse battery", &hash, &hash, &pool(&fast())).matches);
    }

    #[test]
    fn hashes_agree_with_the_argon2_crates_own_verifier() {
        use argon2::password_hash::PasswordVerifier;
        let hash = hash(&fast(), "correct horse battery");
        let Ok(parsed) = PasswordHash::new(&hash) else { panic!("phc") };
        assert!(Argon2::default().verify_password(b"correct horse battery", &parsed).is_ok());
    }

    #[test]
    fn a_hash_with_old_parameters_is_upgraded_on_success() {
        let old = Params::new(512, 1, 1, None).unwrap_or_default();
        let hash = hash(&old, "correct horse battery");
        let verified = verify_now(&fast(), "correct horse battery", &hash, &hash, &pool(&fast()));
        assert!(verified.matches);
        assert!(verified.rehash.is_some_and(|h| h.contains("m=1024,t=1,p=1")));
    }

    #[test]
    fn a_legacy_hash_with_more_memory_than_the_pool_still_verifies() {
        let bigger = Params::new(2048, 1, 1, None).unwrap_or_default();
        let hash = hash(&bigger, "correct horse battery");
        assert!(verify_now(&fast(), "correct horse battery", &hash, &hash, &pool(&fast())).matches);
    }

    #[test]
    fn the_policy_checks_length_only() {
        let policy = PasswordPolicy { min_chars: 15, max_bytes: 1024 };
        assert!(policy.check(&Secret::new("aaaaaaaaaaaaaaa")).is_ok());
        assert!(policy.check(&Secret::new("short")).is_err());
        assert!(policy.check(&Secret::new("x".repeat(1025))).is_err());
    }
}

//! Password hashing with argon2id behind a semaphore of one permit per
//! hashing thread: a flood of logins waits (then gets 503) instead of
//! starving refresh grants, JWKS and health of CPU and memory.
//!
//! argon2 memory buffers are pooled: at most one per permit exists, so the
//! memory spent on hashing is at most `threads × m_cost`, whatever the load
//! (allocating 19 MiB per hash let glibc keep freed blocks in per-thread
//! arenas, and a flood grew the process by gigabytes). A buffer is allocated
//! at the first hash that needs it and released once hashing has been idle
//! for a while, so an idle service does not hold them.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

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

/// How long hashing must be idle before its buffers are freed: long enough
/// that a steady trickle of logins reuses them, short enough that a service
/// at rest holds none.
pub const RELEASE_AFTER: Duration = Duration::from_secs(30);

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
    /// One per hashing thread: holding one is the right to queue a hash.
    permits: Arc<Semaphore>,
    /// The hashing threads, below the process's CPU priority (`blocking`).
    threads: Arc<crate::blocking::Threads>,
    /// argon2 buffers; a permit holder takes one.
    memory: Arc<Memory>,
    queue_timeout: Duration,
    /// Verified against when the user does not exist, so that an unknown
    /// user costs the same time as a wrong password.
    dummy_hash: Arc<str>,
    /// Comparisons against a real stored hash (not the dummy), for metrics
    /// and for proving that throttling holds.
    comparisons: Arc<std::sync::atomic::AtomicU64>,
    /// argon2 runs and the time they took, for metrics (tuning the
    /// parameters, and telling a slow hash from a long queue).
    hashing: Arc<HashingTime>,
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

/// glibc serves allocations above its mmap threshold with a private mapping
/// and unmaps it on free; but after such a free it raises the threshold to
/// that size (up to 32 MiB), so the next 19 MiB buffer would come from a
/// heap arena, which keeps it after free. A capacity above 32 MiB always
/// gets its own mapping; only the pages argon2 touches become resident.
const ALWAYS_MAPPED_BLOCKS: usize = 33 * 1024 * 1024 / std::mem::size_of::<Block>();

/// A zeroed buffer of `blocks` blocks that, once dropped, goes back to the
/// system (see [`ALWAYS_MAPPED_BLOCKS`]).
fn allocate(blocks: usize) -> Vec<Block> {
    let mut buffer = Vec::with_capacity(blocks.max(ALWAYS_MAPPED_BLOCKS));
    buffer.resize(blocks, Block::default());
    buffer
}

/// How many argon2 runs finished and how long they took in all.
#[derive(Debug, Default)]
pub struct HashingTime {
    runs: std::sync::atomic::AtomicU64,
    nanos: std::sync::atomic::AtomicU64,
}

impl HashingTime {
    fn record(&self, took: Duration) {
        self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, std::sync::atomic::Ordering::Relaxed);
    }

    /// (runs, seconds) so far.
    pub fn totals(&self) -> (u64, f64) {
        let nanos = self.nanos.load(std::sync::atomic::Ordering::Relaxed);
        (self.runs.load(std::sync::atomic::Ordering::Relaxed), Duration::from_nanos(nanos).as_secs_f64())
    }
}

/// The pool of argon2 buffers, each of the current parameters' size.
#[derive(Debug)]
pub struct Memory {
    blocks: usize,
    idle: Mutex<(Vec<Vec<Block>>, Instant)>,
}

impl Memory {
    pub fn new(params: &Params) -> Self {
        Self { blocks: params.block_count(), idle: Mutex::new((Vec::new(), Instant::now())) }
    }

    /// Runs `work` with a buffer of `blocks` blocks: a pooled one when the
    /// size is the current one (a new one if none is idle, kept afterwards),
    /// a temporary one for a legacy hash with other parameters.
    fn with<T>(&self, blocks: usize, work: impl FnOnce(&mut [Block]) -> T) -> T {
        if blocks != self.blocks {
            return work(&mut allocate(blocks));
        }
        let pooled = self.idle.lock().unwrap_or_else(PoisonError::into_inner).0.pop();
        let mut buffer = pooled.unwrap_or_else(|| allocate(blocks));
        let result = work(&mut buffer);
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.0.push(buffer);
        idle.1 = Instant::now();
        result
    }

    /// Frees the idle buffers if no hash finished within `quiet`; returns
    /// how many were freed.
    pub fn release_if_quiet(&self, quiet: Duration) -> usize {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.1.elapsed() < quiet {
            return 0;
        }
        std::mem::take(&mut idle.0).len()
    }

    /// Buffers currently held while idle (for tests and metrics).
    pub fn held(&self) -> usize {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).0.len()
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
fn matches(hash: &PasswordHash<'_>, password: &str, memory: &Memory) -> Option<bool> {
    let params = Params::try_from(hash).ok()?;
    let version = Version::try_from(hash.version.unwrap_or(0x13)).ok()?;
    let expected = hash.hash?;
    let mut salt = [0u8; 64];
    let salt = hash.salt?.decode_b64(&mut salt).ok()?;
    let argon = Argon2::new(Algorithm::Argon2id, version, params.clone());
    let mut out = vec![0u8; expected.len()];
    memory
        .with(params.block_count(), |memory| {
            argon.hash_password_into_with_memory(password.as_bytes(), salt, &mut out, memory)
        })
        .ok()?;
    // `Output`'s equality is constant-time.
    Some(Output::new(&out).ok()? == expected)
}

fn verify_now(params: &Params, password: &str, stored: &str, dummy: &str, memory: &Memory) -> Verified {
    let (candidate, real) = match PasswordHash::new(stored) {
        Ok(hash) if within_bounds(&hash) => (hash, true),
        _ => match PasswordHash::new(dummy) {
            Ok(hash) => (hash, false),
            Err(_) => return Verified { matches: false, rehash: None },
        },
    };
    let matches = matches(&candidate, password, memory).unwrap_or(false) && real;
    let stale = Params::try_from(&candidate)
        .map(|p| p.m_cost() != params.m_cost() || p.t_cost() != params.t_cost() || p.p_cost() != params.p_cost());
    let rehash = if matches && stale.unwrap_or(true) {
        memory.with(params.block_count(), |memory| hash_now(params, password, memory)).ok()
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
        let memory = Arc::new(Memory::new(&params));
        let dummy_hash = memory
            .with(params.block_count(), |buffer| hash_now(&params, "dummy password that never matches", buffer))?;
        // Nothing is hashed until the first login: hold no buffer till then.
        memory.release_if_quiet(Duration::ZERO);
        let hashing_threads = crate::blocking::Threads::start("sts-hash", threads)
            .map_err(|e| internal("cannot start hashing threads", e))?;
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(threads)),
            threads: Arc::new(hashing_threads),
            memory,
            queue_timeout,
            dummy_hash: dummy_hash.into(),
            comparisons: Arc::default(),
            hashing: Arc::default(),
            policy,
        })
    }

    async fn on_hashing_pool<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Memory) -> T + Send + 'static,
    ) -> Result<T, ServiceError> {
        let permit = tokio::time::timeout(self.queue_timeout, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| ServiceError::Busy)?
            .map_err(|_| ServiceError::Busy)?;
        let span = tracing::Span::current();
        let (memory, hashing) = (self.memory.clone(), self.hashing.clone());
        // The permit goes with the work and comes back with its answer: a
        // caller that gives up does not free its place while its hash still
        // runs, so the queue in front of the threads stays one per permit.
        let (result, permit) = self
            .threads
            .run(move || {
                let started = Instant::now();
                let result = span.in_scope(|| work(&memory));
                hashing.record(started.elapsed());
                (result, permit)
            })
            .await
            .map_err(|e| internal("hashing task failed", e))?;
        drop(permit);
        Ok(result)
    }

    /// Frees the argon2 buffers every time hashing has been quiet for
    /// [`RELEASE_AFTER`], for as long as the runtime lives.
    pub fn spawn_release(&self) {
        let memory = self.memory.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(RELEASE_AFTER / 6);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let freed = memory.release_if_quiet(RELEASE_AFTER);
                if freed > 0 {
                    tracing::debug!(buffers = freed, "hashing idle: argon2 memory released");
                }
            }
        });
    }

    /// argon2 buffers held while no hash runs.
    pub fn buffers_held(&self) -> usize {
        self.memory.held()
    }

    /// argon2 runs on the hashing pool so far and their total time.
    pub fn hashing_totals(&self) -> (u64, f64) {
        self.hashing.totals()
    }

    /// How many comparisons against real stored hashes ran so far.
    pub fn comparisons(&self) -> u64 {
        self.comparisons.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub async fn hash(&self, password: &Secret) -> Result<String, ServiceError> {
        let params = self.params.clone();
        let password = password.clone();
        self.on_hashing_pool(move |memory| {
            memory.with(params.block_count(), |memory| hash_now(&params, password.expose(), memory))
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
        self.on_hashing_pool(move |memory| match stored {
            Some(stored) => {
                comparisons.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                verify_now(&params, password.expose(), &stored, &dummy, memory)
            }
            None => {
                let _ = verify_now(&params, password.expose(), &dummy, &dummy, memory);
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

    fn pool(params: &Params) -> Memory {
        Memory::new(params)
    }

    fn hash(params: &Params, password: &str) -> String {
        let Ok(hash) = pool(params).with(params.block_count(), |m| hash_now(params, password, m)) else {
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
    fn buffers_are_reused_while_busy_and_released_when_quiet() {
        let memory = pool(&fast());
        assert_eq!(memory.held(), 0, "nothing is allocated before the first hash");
        for _ in 0..3 {
            memory.with(fast().block_count(), |m| m.len());
        }
        assert_eq!(memory.held(), 1, "one hash at a time needs one buffer, reused");
        assert_eq!(memory.release_if_quiet(Duration::from_secs(60)), 0, "just used: kept");
        assert_eq!(memory.release_if_quiet(Duration::ZERO), 1);
        assert_eq!(memory.held(), 0);
        memory.with(2 * fast().block_count(), |m| m.len());
        assert_eq!(memory.held(), 0, "a legacy size is not pooled");
    }

    #[test]
    fn the_policy_checks_length_only() {
        let policy = PasswordPolicy { min_chars: 15, max_bytes: 1024 };
        assert!(policy.check(&Secret::new("aaaaaaaaaaaaaaa")).is_ok());
        assert!(policy.check(&Secret::new("short")).is_err());
        assert!(policy.check(&Secret::new("x".repeat(1025))).is_err());
    }
}

//! diesel storage: the connection enum and pool, embedded migrations, and one
//! file of queries per table. Never imports actix. Queries take a
//! `&mut AnyConnection`; transactions are opened by the service layer.

pub mod audit;
pub mod connection;
pub mod memberships;
pub mod migrations;
pub mod organisations;
pub mod refresh_tokens;
pub mod schema;
pub mod types;
pub mod users;

use std::time::Duration;

pub use connection::{AnyConnection, ConnectionSettings, DatabaseUrl};
use diesel::result::{DatabaseErrorKind, Error as DieselError};

pub type Pool = r2d2::Pool<connection::Manager>;

/// What can go wrong below the service layer, reduced to what callers act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached, the pool is exhausted or a statement
    /// timed out: worth retrying later (503).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A unique constraint refused the write.
    #[error("unique constraint violated: {0}")]
    Conflict(String),
    #[error("database error")]
    Query(#[source] DieselError),
}

impl From<DieselError> for StoreError {
    fn from(error: DieselError) -> Self {
        match &error {
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
                Self::Conflict(info.constraint_name().unwrap_or(info.message()).to_owned())
            }
            DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
            | DieselError::BrokenTransactionManager => Self::Unavailable(error.to_string()),
            DieselError::DatabaseError(_, info) if is_transient(info.message()) => Self::Unavailable(error.to_string()),
            _ => Self::Query(error),
        }
    }
}

/// Messages of errors that say "try again later" rather than "this is wrong":
/// PostgreSQL's statement timeout and lost connections, SQLite's lock timeout.
fn is_transient(message: &str) -> bool {
    // "permission denied" and a full disk are the database refusing every
    // write (the audit insert first of all): the change rolls back and the
    // client is told to come back, not that it erred.
    const TRANSIENT: [&str; 12] = [
        "statement timeout",
        "deadlock detected",
        "could not serialize access",
        "database is locked",
        "server closed the connection",
        "terminating connection",
        "connection to server",
        "no connection to the server",
        "permission denied",
        "No space left on device",
        "database or disk is full",
        "could not extend file",
    ];
    TRANSIENT.iter().any(|t| message.contains(t))
}

/// The pool plus the one way to use it from async code.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    /// One permit per pooled connection, taken before the work leaves the
    /// async workers: requests wait for a connection as futures, not as
    /// blocking threads parked in the pool, so a flood of requests keeps at
    /// most pool-size database threads busy (each actix worker has its own
    /// runtime and blocking pool, so idle ones are not shared: about
    /// workers × (pool + hashing) threads at most, instead of one per
    /// waiting request).
    connections: std::sync::Arc<tokio::sync::Semaphore>,
    acquire_timeout: Duration,
    url: DatabaseUrl,
    /// False while the schema could not be migrated yet (a start without
    /// the database): every query answers "unavailable" until then.
    schema_ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("url", &self.url).finish_non_exhaustive()
    }
}

/// Pool sizing and timeouts.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_size: u32,
    pub acquire_timeout: Duration,
}

impl Store {
    /// Builds the pool without connecting: the caller has already proven the
    /// database reachable by migrating it, and later outages must not stop
    /// the process (readiness reports them instead).
    pub fn new(settings: ConnectionSettings, sizing: &PoolSettings) -> Self {
        let url = settings.url.clone();
        // SQLite has one writer; a single connection serialises writes in the
        // pool instead of in SQLite's busy handler, where a deferred
        // transaction that upgrades to a write can fail without waiting.
        let max_size = if url.is_postgres() { sizing.max_size } else { 1 };
        let pool = r2d2::Pool::builder()
            .max_size(max_size)
            .min_idle(Some(0))
            .connection_timeout(sizing.acquire_timeout)
            .test_on_check_out(false)
            .error_handler(Box::new(TracingErrorHandler))
            .build_unchecked(connection::Manager(settings));
        Self {
            pool,
            connections: std::sync::Arc::new(tokio::sync::Semaphore::new(max_size as usize)),
            acquire_timeout: sizing.acquire_timeout,
            url,
            schema_ready: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
        }
    }

    pub fn set_schema_ready(&self, ready: bool) {
        self.schema_ready.store(ready, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn schema_ready(&self) -> bool {
        self.schema_ready.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// Runs blocking database work off the async workers, on tokio's blocking
    /// pool, keeping the caller's tracing span (and so its request id).
    pub async fn run<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut AnyConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        if !self.schema_ready() {
            return Err(E::from(StoreError::Unavailable("the schema is not migrated yet".into())));
        }
        // The wait for a connection, permit and pool together, is bounded by
        // the acquire timeout.
        let started = std::time::Instant::now();
        let permit = tokio::time::timeout(self.acquire_timeout, self.connections.clone().acquire_owned())
            .await
            .map_err(|_| E::from(StoreError::Unavailable("timed out waiting for a database connection".into())))?
            .map_err(|closed| E::from(StoreError::Unavailable(closed.to_string())))?;
        let (pool, left) = (self.pool.clone(), self.acquire_timeout.saturating_sub(started.elapsed()));
        let span = tracing::Span::current();
        let joined = crate::blocking::run(permit, move || {
            span.in_scope(|| {
                // An idle connection is taken at once even when no time is left.
                let mut pooled = pool.get_timeout(left).map_err(|e| E::from(StoreError::Unavailable(e.to_string())))?;
                let result = work(&mut pooled.conn);
                // Checked when it returns to the pool (`Manager::has_broken`).
                pooled.suspect = result.is_err();
                result
            })
        })
        .await;
        match joined {
            Ok(result) => result,
            Err(join_error) => {
                Err(E::from(StoreError::Unavailable(format!("database task ended abnormally: {join_error}"))))
            }
        }
    }

    /// A cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        use diesel::r2d2::R2D2Connection;
        self.run(|conn| conn.ping().map_err(StoreError::from)).await
    }

    /// Connections currently open and idle (for leak checks and metrics).
    pub fn pool_state(&self) -> (u32, u32) {
        let state = self.pool.state();
        (state.connections, state.idle_connections)
    }
}

#[derive(Debug)]
struct TracingErrorHandler;

impl r2d2::HandleError<diesel::r2d2::Error> for TracingErrorHandler {
    fn handle_error(&self, error: diesel::r2d2::Error) {
        tracing::warn!(error = %error, "database connection failed");
    }
}

/// Runs `work` in one transaction: the one way services open transactions.
///
/// On SQLite it begins with `BEGIN IMMEDIATE`, taking the write lock up
/// front: a deferred transaction that reads first and writes later fails at
/// once (without waiting for the busy timeout) when another process — a
/// second instance, or `sts user create` — holds the lock at that moment.
pub fn transaction<T, E, F>(conn: &mut AnyConnection, work: F) -> Result<T, E>
where
    F: FnOnce(&mut AnyConnection) -> Result<T, E>,
    E: From<DieselError>,
{
    use diesel::Connection;
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    let AnyConnection::Sqlite(sqlite) = conn else { return conn.transaction(work) };
    AnsiTransactionManager::begin_transaction_sql(&mut *sqlite, "BEGIN IMMEDIATE")?;
    let result = work(conn);
    let AnyConnection::Sqlite(sqlite) = conn else { return result };
    match result {
        Ok(value) => {
            AnsiTransactionManager::commit_transaction(&mut *sqlite)?;
            Ok(value)
        }
        Err(error) => {
            AnsiTransactionManager::rollback_transaction(&mut *sqlite)?;
            Err(error)
        }
    }
}

//! diesel storage: the connection enum and pool, embedded migrations, and one
//! file of queries per table. Never imports actix. Queries take a
//! `&mut AnyConnection`; transactions are opened by the service layer.

/// Runs the same diesel query on whichever backend `$conn` is: the query is
/// written once and compiled for each (diesel-async has no `MultiConnection`).
macro_rules! on_backend {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            $crate::store::AnyConnection::Postgresql($c) => $body,
            $crate::store::AnyConnection::Sqlite($c) => $body,
        }
    };
}

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

pub use connection::{AnyConnection, ConnectionSettings, DatabaseUrl, SyncConnection};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;

pub type Pool = deadpool::managed::Pool<connection::Manager>;

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
            // The asynchronous driver reports a connection lost halfway as a
            // command it could not send.
            DieselError::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                _,
            )
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

/// A pool plus the one way to use it from async code.
///
/// On PostgreSQL each actix worker has a store of its own, with its share of
/// the connections (`Store::for_worker`). A worker is a single-threaded
/// runtime, and a connection's socket belongs to the runtime that opened it:
/// one worker using another's connection wakes a second thread on every
/// round trip (docs/DECISIONS.md). The store built at start (`Store::new`)
/// serves the rest: start-up, background jobs and commands.
#[derive(Clone)]
pub struct Store {
    /// Requests wait for a connection as futures, for at most the acquire
    /// timeout; connecting is bounded by it too.
    pool: Pool,
    /// Every pool of the process (the start-up store's and each worker's),
    /// for the connection counts `/metrics` reports.
    all_pools: std::sync::Arc<std::sync::Mutex<Vec<Pool>>>,
    acquire_timeout: Duration,
    /// PostgreSQL only: how long one unit of work may wait for the database
    /// in all (`ANSWER_DEADLINE_STATEMENTS` statement timeouts).
    answer_deadline: Option<Duration>,
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

/// A PostgreSQL that stops answering altogether (a network partition, a
/// frozen server) is beyond `statement_timeout`, which the server enforces:
/// the client gives up on a unit of work after this many statement
/// timeouts. It is longer than any one statement the server lets run, with
/// room for the others of a transaction.
const ANSWER_DEADLINE_STATEMENTS: u32 = 3;

/// PostgreSQL's answer deadline; none on SQLite, and none when the
/// statement timeout is off (0, as PostgreSQL reads it).
fn answer_deadline(settings: &ConnectionSettings) -> Option<Duration> {
    let timeout = settings.statement_timeout;
    (settings.url.is_postgres() && !timeout.is_zero()).then(|| timeout * ANSWER_DEADLINE_STATEMENTS)
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
        let answer_deadline = answer_deadline(&settings);
        let pool = build_pool(settings, max_size, sizing.acquire_timeout);
        Self {
            all_pools: std::sync::Arc::new(std::sync::Mutex::new(vec![pool.clone()])),
            pool,
            acquire_timeout: sizing.acquire_timeout,
            answer_deadline,
            url,
            schema_ready: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
        }
    }

    /// The store of one HTTP worker: a pool of `max_size` connections of its
    /// own on PostgreSQL, everything else shared. SQLite keeps its one
    /// shared connection (one writer).
    pub fn for_worker(&self, max_size: u32) -> Self {
        if !self.url.is_postgres() {
            return self.clone();
        }
        let pool = build_pool(self.pool.manager().0.clone(), max_size.max(1), self.acquire_timeout);
        self.all_pools.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(pool.clone());
        Self { pool, ..self.clone() }
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

    /// Runs database work with a pooled connection, to its end even if the
    /// caller goes away halfway (a client that gave up): what a request did
    /// is committed and audited whether or not its answer was read, on both
    /// backends. (Only a runtime shutting down stops PostgreSQL work
    /// halfway; the server then rolls the transaction back.)
    ///
    /// On PostgreSQL the work is a task on the caller's runtime: the driver
    /// is asynchronous, so a round trip costs no thread. If the database
    /// stops answering altogether, the work is abandoned after the answer
    /// deadline (`ANSWER_DEADLINE_STATEMENTS`) as unavailable, and its
    /// connection is discarded: the server rolls the transaction back once it
    /// sees the connection closed (unless `COMMIT` was already sent). On SQLite, whose driver blocks, the whole of it runs on one
    /// thread of tokio's blocking pool (SQLite's busy timeout bounds the
    /// waits). Either way it keeps the caller's tracing span (and so its
    /// request id).
    pub async fn run<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        if !self.schema_ready() {
            return Err(E::from(StoreError::Unavailable("the schema is not migrated yet".into())));
        }
        // deadpool bounds the wait for a slot, each check of an idle
        // connection and the opening of a new one separately; this bounds the
        // whole of it.
        let mut pooled = tokio::time::timeout(self.acquire_timeout, self.pool.get())
            .await
            .map_err(|_| E::from(StoreError::Unavailable("timed out waiting for a database connection".into())))?
            .map_err(|e| E::from(StoreError::Unavailable(pool_error(&e))))?;
        let span = tracing::Span::current();
        let deadline = self.answer_deadline;
        let task = async move {
            let answered = {
                let connection::Pooled { conn, driver, suspect } = &mut *pooled;
                let work = connection::drive(work(conn), driver);
                let answered = match deadline {
                    Some(deadline) => tokio::time::timeout(deadline, work).await.ok(),
                    None => Some(work.await),
                };
                if let Some(result) = &answered {
                    *suspect = result.is_err();
                }
                answered
            };
            answered.unwrap_or_else(|| {
                // Where the conversation stands is unknown: the connection
                // leaves the pool and is closed. (`recycle` would drop one
                // left inside a transaction anyway, not one caught outside.)
                drop(deadpool::managed::Object::take(pooled));
                tracing::warn!(deadline = ?deadline, "the database did not answer in time; connection discarded");
                Err(E::from(StoreError::Unavailable("the database did not answer in time".into())))
            })
        };
        let joined = if self.url.is_postgres() {
            tokio::spawn(tracing::Instrument::instrument(task, span)).await
        } else {
            tokio::task::spawn_blocking(move || span.in_scope(|| tokio::runtime::Handle::current().block_on(task)))
                .await
        };
        joined.unwrap_or_else(|join_error| {
            Err(E::from(StoreError::Unavailable(format!("database task ended abnormally: {join_error}"))))
        })
    }

    /// A cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run(|conn| async move { conn.ping().await.map_err(StoreError::from) }.boxed()).await
    }

    /// Connections currently open and idle in all the process's pools (for
    /// leak checks and metrics).
    pub fn pool_state(&self) -> (u32, u32) {
        let pools = self.all_pools.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (open, idle) = pools.iter().map(Pool::status).fold((0, 0), |(o, i), s| (o + s.size, i + s.available));
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        (count(open), count(idle))
    }
}

fn build_pool(settings: ConnectionSettings, max_size: u32, acquire_timeout: Duration) -> Pool {
    let timeout = Some(acquire_timeout);
    let pool = deadpool::managed::Pool::builder(connection::Manager(settings))
        .max_size(max_size as usize)
        .runtime(deadpool::Runtime::Tokio1)
        .timeouts(deadpool::managed::Timeouts { wait: timeout, create: timeout, recycle: timeout })
        .build();
    let Ok(pool) = pool else { unreachable!("a runtime is given, so the timeouts can be kept") };
    pool
}

/// Why no connection was handed out, without the URL.
fn pool_error(error: &deadpool::managed::PoolError<diesel::ConnectionError>) -> String {
    use deadpool::managed::PoolError;
    match error {
        PoolError::Timeout(_) => "timed out waiting for a database connection".into(),
        PoolError::Backend(e) => e.to_string(),
        other => other.to_string(),
    }
}

/// Runs `work` in one transaction: the one way services open transactions.
///
/// On SQLite it begins with `BEGIN IMMEDIATE`, taking the write lock up
/// front: a deferred transaction that reads first and writes later fails at
/// once (without waiting for the busy timeout) when another process — a
/// second instance, or `sts user create` — holds the lock at that moment.
pub async fn transaction<T, E, F>(conn: &mut AnyConnection, work: F) -> Result<T, E>
where
    F: AsyncFnOnce(&mut AnyConnection) -> Result<T, E>,
    E: From<DieselError>,
{
    use diesel_async::TransactionManager;
    match conn {
        AnyConnection::Postgresql(pg) => diesel_async::AnsiTransactionManager::begin_transaction(pg).await?,
        AnyConnection::Sqlite(sqlite) => begin_immediate(sqlite).await?,
    }
    let result = work(conn).await;
    finish(conn, result).await
}

/// [`transaction`], opened by `first`'s statements: on PostgreSQL they are
/// sent together with the `BEGIN` (pipelined: one round trip instead of
/// two), and run inside the transaction all the same. `work` gets what
/// `first` returns.
pub async fn transaction_from<A, T, E, F, W>(conn: &mut AnyConnection, first: F, work: W) -> Result<T, E>
where
    F: AsyncFnOnce(Pipelined<'_>) -> Result<A, E>,
    W: AsyncFnOnce(&mut AnyConnection, A) -> Result<T, E>,
    E: From<DieselError>,
{
    use diesel::connection::{TransactionDepthChange, TransactionManagerStatus};
    use diesel_async::{SimpleAsyncConnection, TransactionManager};
    let opened = match conn {
        AnyConnection::Postgresql(pg) => {
            // Counted open before `BEGIN` is sent: a request dropped halfway
            // leaves a connection the pool sees inside a transaction, and
            // drops (`AnyConnection::is_broken`).
            match diesel_async::AnsiTransactionManager::transaction_manager_status_mut(pg) {
                TransactionManagerStatus::Valid(status) if status.transaction_depth().is_some() => {
                    return Err(DieselError::AlreadyInTransaction.into());
                }
                TransactionManagerStatus::Valid(status) => {
                    status.change_transaction_depth(TransactionDepthChange::IncreaseDepth)?;
                }
                TransactionManagerStatus::InError => return Err(DieselError::BrokenTransactionManager.into()),
            }
            // Polled first, so queued first: tokio-postgres queues a request
            // when its future is first polled.
            let (shared, mut begin) = (&*pg, &*pg);
            let (begun, opened) =
                futures_util::future::join(begin.batch_execute("BEGIN"), first(Pipelined::Postgresql(shared))).await;
            // A `BEGIN` that fails means a lost connection: it stays counted
            // inside a transaction, so the pool drops it.
            begun?;
            opened
        }
        AnyConnection::Sqlite(sqlite) => {
            begin_immediate(sqlite).await?;
            first(Pipelined::Sqlite(sqlite)).await
        }
    };
    let result = match opened {
        Ok(opened) => work(conn, opened).await,
        Err(error) => Err(error),
    };
    finish(conn, result).await
}

async fn begin_immediate(sqlite: &mut connection::SqliteWrapper) -> diesel::QueryResult<()> {
    use diesel::connection::AnsiTransactionManager;
    sqlite.spawn_blocking(|c| AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")).await
}

/// Commits after `work` succeeded; rolls back after it failed.
async fn finish<T, E>(conn: &mut AnyConnection, result: Result<T, E>) -> Result<T, E>
where
    E: From<DieselError>,
{
    use diesel_async::{AsyncConnection, TransactionManager};
    async fn commit<C: AsyncConnection>(c: &mut C) -> diesel::QueryResult<()> {
        C::TransactionManager::commit_transaction(c).await
    }
    async fn rollback<C: AsyncConnection>(c: &mut C) -> diesel::QueryResult<()> {
        C::TransactionManager::rollback_transaction(c).await
    }
    match result {
        Ok(value) => match on_backend!(conn, c => commit(c).await) {
            Ok(()) => Ok(value),
            // The commit failed (a serialisation failure, a lost connection):
            // the transaction manager has rolled back or marked the
            // connection broken, and the pool drops a broken one.
            Err(error) => Err(error.into()),
        },
        Err(error) => {
            // The work's error is the answer. A rollback that fails leaves
            // the connection broken, and the pool drops it.
            let _ = on_backend!(conn, c => rollback(c).await);
            Err(error)
        }
    }
}

/// A connection on which statements are pipelined: on PostgreSQL shared,
/// so that each statement is a future of its own and those polled together
/// are sent together; on SQLite the connection itself, statements in turn.
pub enum Pipelined<'c> {
    Postgresql(&'c diesel_async::AsyncPgConnection),
    Sqlite(&'c mut connection::SqliteWrapper),
}

impl Pipelined<'_> {
    /// Runs `first` and `second`, `first`'s statements first: on PostgreSQL
    /// sent together (one round trip for both), on SQLite in turn. Both must
    /// be statements whose order is all that matters between them: the
    /// second is sent before the first has answered.
    pub async fn both<A, B, E>(
        self,
        first: impl AsyncFnOnce(Pipelined<'_>) -> Result<A, E>,
        second: impl AsyncFnOnce(Pipelined<'_>) -> Result<B, E>,
    ) -> Result<(A, B), E> {
        match self {
            // Polled first, so queued first. Both are answered before either
            // result counts: a failure of the first fails the second too
            // (the transaction is aborted), and the first failure is the one
            // returned.
            Self::Postgresql(pg) => {
                let (first, second) =
                    futures_util::future::join(first(Pipelined::Postgresql(pg)), second(Pipelined::Postgresql(pg)))
                        .await;
                Ok((first?, second?))
            }
            Self::Sqlite(sqlite) => {
                let first = first(Pipelined::Sqlite(&mut *sqlite)).await?;
                Ok((first, second(Pipelined::Sqlite(sqlite)).await?))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str, statement_timeout_ms: u64) -> ConnectionSettings {
        ConnectionSettings {
            url: DatabaseUrl::parse(Some(url)).expect("url"),
            statement_timeout: Duration::from_millis(statement_timeout_ms),
            busy_timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn postgres_work_gets_three_statement_timeouts_and_none_when_the_timeout_is_off() {
        assert_eq!(answer_deadline(&settings("postgres://db.test/sts", 500)), Some(Duration::from_millis(1_500)));
        // 0 is PostgreSQL's "no timeout": a zero deadline would end every
        // unit of work at its first round trip.
        assert_eq!(answer_deadline(&settings("postgres://db.test/sts", 0)), None);
        assert_eq!(answer_deadline(&settings("sqlite://data/sts.db", 500)), None);
    }
}

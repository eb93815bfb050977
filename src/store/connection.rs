//! The connection types (PostgreSQL or SQLite), their pool, and the
//! per-connection settings each backend needs. Which backend is used is
//! decided here, from the URL scheme, once.

use std::path::PathBuf;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection, SqliteConnection};
use diesel_async::pooled_connection::PoolableConnection;
use diesel_async::sync_connection_wrapper::{SpawnBlocking, SyncConnectionWrapper};
use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};
use futures_util::future::BoxFuture;

/// The connection requests use: PostgreSQL through an asynchronous driver
/// (no thread waits on a round trip), SQLite through diesel's synchronous
/// one, wrapped to offer the same interface. Queries are written once and
/// run on either (`on_backend!`).
pub enum AnyConnection {
    Postgresql(AsyncPgConnection),
    Sqlite(SqliteWrapper),
}

/// SQLite's synchronous connection behind diesel-async's interface.
pub type SqliteWrapper = SyncConnectionWrapper<SqliteConnection, Inline>;

/// A synchronous connection, for the migrations (diesel_migrations has no
/// asynchronous form).
pub enum SyncConnection {
    Postgresql(PgConnection),
    Sqlite(SqliteConnection),
}

/// Runs SQLite's work where it is asked for. `Store::run` already moves the
/// whole of a request's SQLite work onto one blocking thread: a hand-off per
/// statement on top would only add context switches.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inline;

impl SpawnBlocking for Inline {
    fn spawn_blocking<'a, R>(
        &mut self,
        task: impl FnOnce() -> R + Send + 'static,
    ) -> BoxFuture<'a, Result<R, Box<dyn std::error::Error + Send + Sync + 'static>>>
    where
        R: Send + 'static,
    {
        Box::pin(std::future::ready(Ok(task())))
    }

    fn get_runtime() -> Self {
        Self
    }
}

impl AnyConnection {
    /// A cheap round trip.
    pub async fn ping(&mut self) -> diesel::QueryResult<()> {
        match self {
            Self::Postgresql(c) => c.batch_execute("SELECT 1").await,
            Self::Sqlite(c) => c.batch_execute("SELECT 1").await,
        }
    }

    /// This connection for statements sent together (`store::Pipelined`).
    pub fn pipelined(&mut self) -> super::Pipelined<'_> {
        match self {
            Self::Postgresql(c) => super::Pipelined::Postgresql(c),
            Self::Sqlite(c) => super::Pipelined::Sqlite(c),
        }
    }

    /// Closed, or left inside a transaction (its request was dropped halfway).
    pub fn is_broken(&mut self) -> bool {
        match self {
            Self::Postgresql(c) => c.is_broken(),
            Self::Sqlite(c) => c.is_broken(),
        }
    }
}

/// Where the data lives, parsed from `DATABASE_URL` before any connection.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Postgres(String),
    Sqlite(PathBuf),
}

impl std::fmt::Debug for DatabaseUrl {
    /// PostgreSQL URLs may carry a password: print only the scheme and host.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Postgres(url) => {
                let host = url::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default();
                write!(f, "postgres://{host}/…")
            }
            Self::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
        }
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// The default embedded database, relative to the working directory.
pub const DEFAULT_SQLITE_PATH: &str = "data/sts.db";

impl DatabaseUrl {
    /// `postgres://` / `postgresql://` select PostgreSQL; `sqlite://PATH`
    /// (or `sqlite:PATH`) selects a SQLite file; `None` the default file.
    pub fn parse(raw: Option<&str>) -> Result<Self, String> {
        let Some(raw) = raw.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(Self::Sqlite(PathBuf::from(DEFAULT_SQLITE_PATH)));
        };
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            url::Url::parse(raw).map_err(|e| format!("not a valid PostgreSQL URL ({e})"))?;
            return Ok(Self::Postgres(raw.to_owned()));
        }
        if let Some(path) = raw.strip_prefix("sqlite://").or_else(|| raw.strip_prefix("sqlite:")) {
            if path.is_empty() || path == ":memory:" {
                return Err("a SQLite URL needs a file path (sqlite://PATH)".into());
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        Err("expected postgres://… or sqlite://PATH".into())
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }
}

/// Settings applied to every new connection.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    pub url: DatabaseUrl,
    /// PostgreSQL `statement_timeout`: a slow database ends a request with
    /// 503 instead of holding a worker and a connection indefinitely.
    pub statement_timeout: Duration,
    /// SQLite `busy_timeout`: how long a writer waits for the file lock.
    pub busy_timeout: Duration,
}

impl ConnectionSettings {
    /// A synchronous connection (migrations).
    pub fn establish(&self) -> diesel::ConnectionResult<SyncConnection> {
        match &self.url {
            DatabaseUrl::Postgres(url) => {
                let mut conn = PgConnection::establish(url)?;
                conn.batch_execute(&self.postgres_setup())
                    .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                Ok(SyncConnection::Postgresql(conn))
            }
            DatabaseUrl::Sqlite(path) => self.establish_sqlite(path).map(SyncConnection::Sqlite),
        }
    }

    /// A connection for the pool, with its driver on PostgreSQL. Opening a
    /// SQLite file may wait for its lock (`journal_mode`), so it happens on a
    /// blocking thread.
    async fn connect(&self) -> diesel::ConnectionResult<(AnyConnection, Option<Driver>)> {
        match &self.url {
            DatabaseUrl::Postgres(url) => {
                let bad = |e: tokio_postgres::Error| diesel::ConnectionError::BadConnection(e.to_string());
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.map_err(bad)?;
                let mut driver: Option<Driver> = Some(Box::pin(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(error = %error, "database connection ended");
                    }
                }));
                let mut conn = drive(AsyncPgConnection::try_from(client), &mut driver).await?;
                drive(conn.batch_execute(&self.postgres_setup()), &mut driver)
                    .await
                    .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                Ok((AnyConnection::Postgresql(conn), driver))
            }
            DatabaseUrl::Sqlite(path) => {
                let (settings, path) = (self.clone(), path.clone());
                let conn = tokio::task::spawn_blocking(move || settings.establish_sqlite(&path))
                    .await
                    .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))??;
                Ok((AnyConnection::Sqlite(SyncConnectionWrapper::with_runtime(conn, Inline)), None))
            }
        }
    }

    fn postgres_setup(&self) -> String {
        let ms = self.statement_timeout.as_millis();
        format!(
            "SET statement_timeout = {ms}; SET idle_in_transaction_session_timeout = {}; SET TIME ZONE 'UTC';",
            ms * 2
        )
    }

    fn establish_sqlite(&self, path: &std::path::Path) -> diesel::ConnectionResult<SqliteConnection> {
        let mut conn = SqliteConnection::establish(&path.to_string_lossy())?;
        conn.batch_execute(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = {};",
            self.busy_timeout.as_millis()
        ))
        .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
        Ok(conn)
    }
}

/// The I/O of a PostgreSQL connection: tokio-postgres's connection future,
/// which reads and writes the socket for the client half that diesel-async
/// wraps.
pub type Driver = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Runs `work` while polling the connection's I/O in the same task.
///
/// The driver is not spawned as a task of its own: a spawned driver lives on
/// the runtime that opened the connection, and every round trip of a request
/// on another actix worker would cross threads twice. Driven here, a round
/// trip is a write and a read on the thread that serves the request, the way
/// the benchmark floor does it (docs/PERFORMANCE.md). Between uses nobody
/// polls it; `Manager::recycle` polls it once before the next use, so a
/// connection the server closed meanwhile is dropped then.
pub async fn drive<T>(work: impl std::future::Future<Output = T>, driver: &mut Option<Driver>) -> T {
    let mut work = std::pin::pin!(work);
    if let Some(io) = driver.as_mut() {
        match futures_util::future::select(work.as_mut(), io.as_mut()).await {
            futures_util::future::Either::Left((out, _)) => return out,
            // The connection is gone: the work sees it closed.
            futures_util::future::Either::Right(((), _)) => *driver = None,
        }
    }
    work.await
}

/// A pooled connection, its driver, and whether its last use ended in an
/// error.
///
/// The pool does not send `SELECT 1` before handing a connection out (that
/// costs a round trip on every use, one in eight of a refresh grant's). It
/// polls the driver once, which notices a connection the server closed, and
/// pings only a connection whose work failed: a connection lost without the
/// server saying so fails one request (503) and leaves the pool, rather
/// than failing every request it serves.
pub struct Pooled {
    pub(super) conn: AnyConnection,
    pub(super) driver: Option<Driver>,
    pub(super) suspect: bool,
}

/// deadpool manager that picks the backend from the parsed URL instead of
/// letting each backend try the string (SQLite would accept any string as a
/// path).
#[derive(Debug)]
pub struct Manager(pub ConnectionSettings);

impl deadpool::managed::Manager for Manager {
    type Type = Pooled;
    type Error = diesel::ConnectionError;

    async fn create(&self) -> Result<Pooled, Self::Error> {
        match self.0.connect().await {
            Ok((conn, driver)) => Ok(Pooled { conn, driver, suspect: false }),
            Err(error) => {
                tracing::warn!(error = %error, "database connection failed");
                Err(error)
            }
        }
    }

    async fn recycle(
        &self,
        pooled: &mut Pooled,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<Self::Error> {
        // Nobody polls an idle connection's driver. Polled once here, it
        // finishes at once if the server closed the connection meanwhile
        // (a restart), and the connection is dropped before anyone uses it.
        if let Some(io) = pooled.driver.as_mut()
            && futures_util::FutureExt::now_or_never(io.as_mut()).is_some()
        {
            return Err(deadpool::managed::RecycleError::message("connection closed by the server"));
        }
        if pooled.conn.is_broken() {
            return Err(deadpool::managed::RecycleError::message("connection broken"));
        }
        if std::mem::take(&mut pooled.suspect) && drive(pooled.conn.ping(), &mut pooled.driver).await.is_err() {
            return Err(deadpool::managed::RecycleError::message("connection lost"));
        }
        Ok(())
    }
}

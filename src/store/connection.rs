//! The one connection type (PostgreSQL or SQLite behind a diesel
//! `MultiConnection`), its pool, and the per-connection settings each backend
//! needs. Which backend is used is decided here, from the URL scheme, once.

use std::path::PathBuf;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::r2d2::R2D2Connection;
use diesel::{Connection, PgConnection, SqliteConnection};

#[derive(diesel::MultiConnection)]
pub enum AnyConnection {
    Postgresql(PgConnection),
    Sqlite(SqliteConnection),
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
    pub fn establish(&self) -> diesel::ConnectionResult<AnyConnection> {
        match &self.url {
            DatabaseUrl::Postgres(url) => {
                let mut conn = PgConnection::establish(url)?;
                let ms = self.statement_timeout.as_millis();
                conn.batch_execute(&format!(
                    "SET statement_timeout = {ms}; SET idle_in_transaction_session_timeout = {}; \
                     SET TIME ZONE 'UTC';",
                    ms * 2
                ))
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                Ok(AnyConnection::Postgresql(conn))
            }
            DatabaseUrl::Sqlite(path) => {
                let mut conn = SqliteConnection::establish(&path.to_string_lossy())?;
                conn.batch_execute(&format!(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = {};",
                    self.busy_timeout.as_millis()
                ))
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                Ok(AnyConnection::Sqlite(conn))
            }
        }
    }
}

/// A pooled connection, and whether its last use ended in an error.
///
/// The pool does not test a connection before handing it out (r2d2's
/// `test_on_check_out` costs a `SELECT 1` round trip on every use, one in
/// eight of a refresh grant's). Instead a connection whose work failed is
/// pinged when it comes back, and a dead one is dropped then: after the
/// database restarts, each stale connection fails one request (503) and
/// leaves the pool, rather than failing every request it serves.
pub struct Pooled {
    pub(super) conn: AnyConnection,
    pub(super) suspect: bool,
}

/// r2d2 manager that picks the backend from the parsed URL instead of letting
/// each backend try the string (SQLite would accept any string as a path).
#[derive(Debug)]
pub struct Manager(pub ConnectionSettings);

impl r2d2::ManageConnection for Manager {
    type Connection = Pooled;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<Pooled, Self::Error> {
        let conn = self.0.establish().map_err(diesel::r2d2::Error::ConnectionError)?;
        Ok(Pooled { conn, suspect: false })
    }

    fn is_valid(&self, pooled: &mut Pooled) -> Result<(), Self::Error> {
        pooled.conn.ping().map_err(diesel::r2d2::Error::QueryError)
    }

    fn has_broken(&self, pooled: &mut Pooled) -> bool {
        if pooled.conn.is_broken() {
            return true;
        }
        std::mem::take(&mut pooled.suspect) && pooled.conn.ping().is_err()
    }
}

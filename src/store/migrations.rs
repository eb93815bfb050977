//! Migrations for both backends, embedded in the binary; the folder used is
//! the one of the live backend (`migrations/postgres`, `migrations/sqlite`).

use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::connection::SyncConnection;

const POSTGRES: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

pub type MigrationError = Box<dyn std::error::Error + Send + Sync>;

/// Applies every pending migration; returns the versions applied.
pub fn run_pending(conn: &mut SyncConnection) -> Result<Vec<String>, MigrationError> {
    let applied = match conn {
        SyncConnection::Postgresql(c) => c.run_pending_migrations(POSTGRES)?,
        SyncConnection::Sqlite(c) => c.run_pending_migrations(SQLITE)?,
    };
    Ok(applied.iter().map(ToString::to_string).collect())
}

/// Reverts every applied migration (used by the up-down-up test).
pub fn revert_all(conn: &mut SyncConnection) -> Result<Vec<String>, MigrationError> {
    let reverted = match conn {
        SyncConnection::Postgresql(c) => c.revert_all_migrations(POSTGRES)?,
        SyncConnection::Sqlite(c) => c.revert_all_migrations(SQLITE)?,
    };
    Ok(reverted.iter().map(ToString::to_string).collect())
}

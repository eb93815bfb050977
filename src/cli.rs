//! The command line: `sts serve` (the default), `sts migrate`,
//! `sts user create`, `sts key list|rotate|remove`.

use clap::{Parser, Subcommand};

const SETTINGS_HELP: &str = "\
Settings come from config/default.toml (another file: STS_CONFIG=PATH), where
every key is commented, and these environment variables override it:

  DATABASE_URL                   postgres://USER:PASS@HOST/DB or sqlite://PATH
                                 (unset: SQLite file data/sts.db)
  STS_LISTEN                     address and port to bind (127.0.0.1:8080)
  STS_ISSUER                     the `iss` of every token (http:// + STS_LISTEN)
  STS_AUDIENCE                   the `aud` of every token (one-core)
  STS_KEYS_DIR                   where signing keys live (keys)
  STS_CONFIG                     the settings file (config/default.toml)
  STS_ACCESS_TOKEN_TTL           access-token lifetime, seconds (300); also the
                                 longest a deactivation takes to reach Core
  STS_REFRESH_TOKEN_TTL          refresh-token lifetime, seconds (28800)
  STS_BOOTSTRAP_ADMIN_USERNAME   at start, create this ADMIN user if missing
  STS_BOOTSTRAP_ADMIN_PASSWORD   its password
  STS_ROLES_FILE                 the role mapping (config/roles.toml)
  STS_LOG_FORMAT                 auto, json or text (auto)
  RUST_LOG                       log filter (info)

A bad setting stops the process with exit status 2 and one line naming it.";

#[derive(Debug, Parser)]
#[command(name = "sts", version, about = "Organisation-scoped Security Token Service", after_long_help = SETTINGS_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve HTTP (the default): migrates the database first.
    Serve,
    /// Create or update the database schema, then exit.
    Migrate,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage the signing keys in STS_KEYS_DIR (works beside a running
    /// service, which picks changes up within keys.reload_interval_secs;
    /// touches neither the database nor a port).
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List the keys: kid, state, created, published since, promoted (for a
    /// next key: the earliest it may sign), retired, removable after.
    List,
    /// Publish a new `next` key; it signs once every verifier can have it
    /// cached (see docs/KEYS.md). Does nothing if a `next` key already waits.
    Rotate {
        /// For a compromised key only: a new key signs at once and the
        /// current key is deleted. Verifiers that cached the JWKS refuse new
        /// tokens until their cache expires.
        #[arg(long)]
        emergency: bool,
    },
    /// Delete a key. Refuses the current key, and a retired key that may
    /// still verify live tokens unless --force.
    Remove {
        /// Key ids are base64url, so one may begin with `-`.
        #[arg(allow_hyphen_values = true)]
        kid: String,
        /// Remove a retired key even though tokens it signed may be live.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; the password is read from standard input.
    Create {
        #[arg(long)]
        username: String,
        /// A system role (repeatable), e.g. --system-role ADMIN.
        #[arg(long = "system-role")]
        system_roles: Vec<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Create a technical user; its client secret is printed once.
        #[arg(long, conflicts_with = "password_stdin")]
        technical: bool,
    },
}

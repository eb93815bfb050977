//! Builds the application from a validated configuration: prepares and
//! migrates the database, loads the keys, binds (reporting the real port)
//! and serves until told to stop.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpServer, middleware::from_fn, web};

use crate::api::{self, AppState};
use crate::clock::Clock;
use crate::config::Config;
use crate::service::passwords::{PasswordPolicy, Passwords};
use crate::service::throttle::SourceLimiter;
use crate::service::{Context, users};
use crate::store::{self, ConnectionSettings, DatabaseUrl, PoolSettings, Store};
use crate::tokens::{KeyDir, LiveKeys, Verifier};

/// Why the process could not start; each is one line and exit status 2.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database {url}: {reason}")]
    Database { url: String, reason: String },
    #[error("data directory {path}: {reason}")]
    DataDirectory { path: String, reason: String },
    #[error("signing keys: {0}")]
    Keys(#[from] crate::tokens::KeyError),
    #[error("cannot listen on {address}: {reason}")]
    Bind { address: String, reason: String },
    #[error("start-up failed: {0}")]
    Other(String),
}

pub fn connection_settings(config: &Config) -> ConnectionSettings {
    let db = &config.settings.database;
    ConnectionSettings {
        url: config.database.clone(),
        statement_timeout: Duration::from_millis(db.statement_timeout_ms),
        busy_timeout: Duration::from_millis(db.sqlite_busy_timeout_ms),
    }
}

/// A SQLite file's directory must exist and be writable before SQLite tries.
fn prepare_sqlite_directory(url: &DatabaseUrl) -> Result<(), StartError> {
    let DatabaseUrl::Sqlite(path) = url else {
        return Ok(());
    };
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    let fail = |reason: String| StartError::DataDirectory { path: dir.display().to_string(), reason };
    std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    let probe = dir.join(".sts-write-probe");
    std::fs::write(&probe, b"").map_err(|e| fail(format!("not writable ({e})")))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Creates the schema or brings it up to date; returns the versions applied.
pub async fn migrate(config: &Config) -> Result<Vec<String>, StartError> {
    prepare_sqlite_directory(&config.database)?;
    let settings = connection_settings(config);
    let url = config.database.to_string();
    let fail = move |reason: String| StartError::Database { url: url.clone(), reason };
    let outcome = tokio::task::spawn_blocking(move || {
        let mut conn = settings.establish().map_err(|e| first_line(&e.to_string()))?;
        store::migrations::run_pending(&mut conn).map_err(|e| first_line(&e.to_string()))
    })
    .await
    .map_err(|e| fail(e.to_string()))?;
    outcome.map_err(fail)
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().trim().to_owned()
}

async fn bootstrap(ctx: &Context) -> Result<(), StartError> {
    if let Some((username, password)) =
        users::bootstrap(ctx).await.map_err(|e| StartError::Other(format!("bootstrap admin: {e}")))?
    {
        // Shown once, on the terminal only: never through the logger.
        println!("created user `{username}` with system role ADMIN and password: {}", password.expose());
    }
    Ok(())
}

/// After a start without the database: migrate as soon as it answers, then
/// open the store for requests and create the bootstrap admin.
async fn migrate_when_reachable(ctx: Context) {
    const RETRY: Duration = Duration::from_secs(2);
    loop {
        tokio::time::sleep(RETRY).await;
        match migrate(&ctx.config).await {
            Ok(_) => break,
            Err(e) => tracing::debug!(error = %e, "database still unreachable"),
        }
    }
    ctx.store.set_schema_ready(true);
    tracing::info!("database reachable: schema migrated, serving");
    if let Err(e) = bootstrap(&ctx).await {
        tracing::error!(error = %e, "bootstrap admin failed");
    }
}

/// A started server and what tests and `main` need of it.
pub struct Application {
    server: Server,
    address: std::net::SocketAddr,
    state: web::Data<AppState>,
    grace: Duration,
    /// Between readiness turning 503 and the listener closing.
    delay: Duration,
}

/// Connections at most for everything but the HTTP workers: the bootstrap,
/// the audit retention job, `sts user create`.
const BACKGROUND_CONNECTIONS: u32 = 2;

/// Everything but the HTTP server: migrates, opens the pool, loads the keys
/// and the password hasher. Commands that work on the data (`sts user
/// create`) use this and never bind a port.
pub async fn prepare(config: Config, clock: Arc<dyn Clock>) -> Result<Context, StartError> {
    let migrated = migrate(&config).await;
    let db = &config.settings.database;
    // The HTTP workers get `pool_size` between them (`AppState::for_worker`);
    // this store serves start-up, background jobs and commands.
    let store = Store::new(
        connection_settings(&config),
        &PoolSettings {
            max_size: db.pool_size.min(BACKGROUND_CONNECTIONS),
            acquire_timeout: Duration::from_millis(db.acquire_timeout_ms),
        },
    );
    match migrated {
        Ok(_) => {}
        Err(StartError::Database { reason, .. }) if db.wait_at_start => {
            tracing::warn!(reason = %reason, "database unreachable at start: serving degraded until it answers");
            store.set_schema_ready(false);
        }
        Err(e) => return Err(e),
    }
    let keys = Arc::new(LiveKeys::open(KeyDir::new(&config.settings.keys.dir), config.key_timing(), clock.now())?);
    let tokens = &config.settings.tokens;
    let verifier =
        Verifier::new(&config.issuer, &tokens.audience, tokens.leeway_secs, tokens.access_ttl_secs, clock.clone());
    let pw = &config.settings.passwords;
    let passwords = Passwords::new(
        config.argon2.clone(),
        config.hashing_threads,
        Duration::from_millis(pw.queue_timeout_ms),
        PasswordPolicy { min_chars: pw.min_chars, max_bytes: pw.max_bytes },
    )
    .map_err(|e| StartError::Other(e.to_string()))?;
    let sources = Arc::new(SourceLimiter::new(config.settings.login.source_failures_per_minute));
    Ok(Context { config: Arc::new(config), store, keys, verifier, clock, passwords, sources })
}

impl Application {
    /// Prepares the context, bootstraps the admin, starts the background
    /// jobs and binds. The server runs once [`Application::run_until_stopped`]
    /// (or [`Application::run_until_signalled`]) is awaited.
    pub async fn build(config: Config, clock: Arc<dyn Clock>) -> Result<Self, StartError> {
        let ctx = prepare(config, clock).await?;
        if ctx.store.schema_ready() {
            bootstrap(&ctx).await?;
        } else {
            tokio::spawn(migrate_when_reachable(ctx.clone()));
        }
        crate::service::audit::spawn_retention(ctx.clone());
        crate::service::keys::spawn_maintenance(ctx.clone());
        ctx.passwords.spawn_release();

        let server_settings = &ctx.config.settings.server;
        let grace = Duration::from_secs(server_settings.shutdown_grace_secs);
        let delay = Duration::from_secs(server_settings.shutdown_delay_secs);
        let (listen, workers) = (ctx.config.listen, ctx.config.workers);
        let bind_error = |e: std::io::Error| StartError::Bind { address: listen.to_string(), reason: e.to_string() };
        let listener = TcpListener::bind(listen).map_err(bind_error)?;
        let address = listener.local_addr().map_err(bind_error)?;
        let state = web::Data::new(AppState {
            ctx,
            shutting_down: Arc::new(AtomicBool::new(false)),
            metrics: crate::telemetry::metrics_recorder(),
        });
        let (shared, started) = (state.clone(), Arc::new(AtomicUsize::new(0)));
        let pool_size = shared.ctx.config.settings.database.pool_size;
        let server = HttpServer::new(move || {
            // Runs once on each worker's thread (again if one restarts).
            let worker = started.fetch_add(1, Ordering::SeqCst) % workers;
            let data = web::Data::new(shared.for_worker(worker_share(pool_size, workers, worker)));
            App::new().app_data(data).wrap(from_fn(api::middleware::observe)).configure(api::routes)
        })
        .workers(workers)
        .disable_signals()
        .shutdown_timeout(grace.as_secs())
        .listen(listener)
        .map_err(bind_error)?
        .run();
        Ok(Self { server, address, state, grace, delay })
    }

    /// The address actually bound (port 0 becomes the real port).
    pub fn address(&self) -> std::net::SocketAddr {
        self.address
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    pub fn context(&self) -> &Context {
        &self.state.ctx
    }

    /// A handle to stop the server gracefully (tests, signals).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Marks the service as going away (readiness 503 from now) and stops
    /// accepting; in-flight requests get the configured grace.
    pub fn shutdown_trigger(&self) -> impl Fn() + Send + Sync + 'static {
        let flag = self.state.shutting_down.clone();
        let handle = self.server.handle();
        let delay = self.delay;
        move || {
            flag.store(true, Ordering::SeqCst);
            let handle = handle.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                handle.stop(true).await;
            });
        }
    }

    /// Serves until the server stops (see [`Application::shutdown_trigger`]).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }

    /// Serves until SIGTERM or SIGINT, then drains within the grace period.
    pub async fn run_until_signalled(self) -> std::io::Result<()> {
        let trigger = self.shutdown_trigger();
        let grace = self.grace;
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!(grace_secs = grace.as_secs(), "shutting down: draining in-flight requests");
            trigger();
        });
        self.server.await
    }
}

/// Worker `index`'s share of `pool_size` connections: an even split, the
/// remainder to the first workers, at least one each.
fn worker_share(pool_size: u32, workers: usize, index: usize) -> u32 {
    let workers = u32::try_from(workers.max(1)).unwrap_or(u32::MAX);
    let index = u32::try_from(index).unwrap_or(u32::MAX);
    (pool_size / workers + u32::from(index < pool_size % workers)).max(1)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::worker_share;

    #[test]
    fn the_pool_is_split_between_the_workers_without_exceeding_it() {
        let shares = |size, workers| (0..workers).map(|i| worker_share(size, workers, i)).collect::<Vec<_>>();
        assert_eq!(shares(10, 2), [5, 5]);
        assert_eq!(shares(10, 3), [4, 3, 3]);
        assert_eq!(shares(10, 1), [10]);
        // Fewer connections than workers: every worker still gets one.
        assert_eq!(shares(2, 4), [1, 1, 1, 1]);
    }
}

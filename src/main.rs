//! Parse the command line, load settings, init tracing, run.

use std::io::BufRead;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use sts::app::{self, Application};
use sts::cli::{Cli, Command, KeyCommand, UserCommand};
use sts::clock::SystemClock;
use sts::config::Settings;
use sts::secret::Secret;

/// Exit status for bad settings and failed start-up checks.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Settings::load(&|name| std::env::var(name).ok()).and_then(Settings::resolve) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("sts: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    sts::telemetry::init(&config.settings.log.level, config.settings.log.format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("sts: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(config).await,
            Command::Migrate => {
                let applied = app::migrate(&config).await.map_err(|e| e.to_string())?;
                println!("database {}: {} migration(s) applied", config.database, applied.len());
                Ok(())
            }
            Command::User(UserCommand::Create { username, system_roles, password_stdin, technical }) => {
                create_user(config, username, system_roles, password_stdin, technical).await
            }
            Command::Key(command) => key_command(&config, command),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sts: {message}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

async fn serve(config: sts::config::Config) -> Result<(), String> {
    let database = config.database.clone();
    let application = Application::build(config, Arc::new(SystemClock)).await.map_err(|e| e.to_string())?;
    let address = application.address();
    println!("sts listening on http://{address} (database: {database})");
    tracing::info!(%address, database = %database, "listening");
    application.run_until_signalled().await.map_err(|e| format!("server failed: {e}"))?;
    tracing::info!("stopped");
    Ok(())
}

/// `sts key ...`: the keys directory only, with the service's own timing.
fn key_command(config: &sts::config::Config, command: KeyCommand) -> Result<(), String> {
    use sts::service::keys::{self, Rotation, show};
    let dir = sts::tokens::KeyDir::new(&config.settings.keys.dir);
    let timing = config.key_timing();
    let now = sts::clock::Clock::now(&SystemClock);
    match command {
        KeyCommand::List => {
            let (rows, unlisted) = keys::list(&dir, &timing, now).map_err(|e| e.to_string())?;
            print!("{}", keys::table(&rows));
            for file in unlisted {
                eprintln!("warning: {file} is not listed in the state file and is ignored");
            }
        }
        KeyCommand::Rotate { emergency: false } => match keys::rotate(&dir, &timing, now).map_err(|e| e.to_string())? {
            Rotation::Created { kid, promotable_at } => {
                println!("created next key {kid}; it signs from {} on", show(Some(promotable_at)));
            }
            Rotation::Pending { kid, promotable_at } => {
                println!("next key {kid} already waits; it signs from {} on", show(Some(promotable_at)));
            }
            Rotation::First { kid } => println!("created key {kid}; it signs at once (there was no key)"),
        },
        KeyCommand::Rotate { emergency: true } => {
            let (kid, dropped) = keys::emergency(&dir, now).map_err(|e| e.to_string())?;
            eprintln!(
                "warning: emergency rotation. Key {kid} signs at once, before verifiers can have it: a verifier \
                 that cached the JWKS (Core: ttlJwks, 600 s by default) refuses new tokens until its cache \
                 expires. Tokens signed by the removed key are refused as soon as verifiers refetch. Use this \
                 for a compromised key only."
            );
            println!(
                "key {kid} signs now; removed: {}",
                if dropped.is_empty() { "-".into() } else { dropped.join(", ") }
            );
        }
        KeyCommand::Remove { kid, force } => {
            let row = keys::remove(&dir, &timing, &kid, force, now).map_err(|e| e.to_string())?;
            if force && row.removable_after.is_some_and(|after| now < after) {
                eprintln!("warning: tokens signed by {kid} are refused once verifiers refetch the JWKS");
            }
            println!("removed {} key {kid}", row.state);
        }
    }
    Ok(())
}

async fn create_user(
    config: sts::config::Config,
    username: String,
    system_roles: Vec<String>,
    password_stdin: bool,
    technical: bool,
) -> Result<(), String> {
    use sts::service::users::{Kind, NewUser};
    let password = if password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(|e| format!("reading the password: {e}"))?;
        Some(Secret::new(line.trim_end_matches(['\r', '\n'])))
    } else if technical {
        None
    } else {
        return Err("a user needs --password-stdin (or --technical)".into());
    };
    let kind = if technical { Kind::Technical } else { Kind::User };
    // Works on the data only: no port is bound, no bootstrap admin made.
    let ctx = app::prepare(config, Arc::new(SystemClock)).await.map_err(|e| e.to_string())?;
    let new = NewUser { username: username.clone(), kind, password, system_roles };
    let meta =
        sts::service::audit::RequestMeta { request_id: Some(format!("cli-{}", uuid::Uuid::new_v4())), source_ip: None };
    let created = sts::service::users::create(&ctx, &meta, (sts::service::audit::Author::System, None), new)
        .await
        .map_err(|e| e.to_string())?;
    println!("created user `{username}` with id {}", created.id);
    if let Some(secret) = created.client_secret {
        println!("client secret (shown once): {}", secret.expose());
    }
    Ok(())
}

//! Parse the command line, load settings, init tracing, run.

use std::io::BufRead;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use sts::app::{self, Application};
use sts::cli::{Cli, Command, UserCommand};
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
    let created = sts::service::users::create(&ctx, &meta, None, new).await.map_err(|e| e.to_string())?;
    println!("created user `{username}` with id {}", created.id);
    if let Some(secret) = created.client_secret {
        println!("client secret (shown once): {}", secret.expose());
    }
    Ok(())
}

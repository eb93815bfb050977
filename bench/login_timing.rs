//! R1c: an unknown user and a wrong password must cost the same time, or
//! the token endpoint tells an attacker which usernames exist.
//!
//! Boots the real service in-process (SQLite, production argon2 parameters),
//! then sends wrong-password and unknown-user logins interleaved A-B-A-B,
//! one at a time, and prints the ratio of their median latencies per round,
//! the median ratio and its spread. Target: 0.9 – 1.1.
//!
//! `cargo run --release --example login_timing -- [ROUNDS] [REQUESTS_PER_KIND]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use sts::app::Application;
use sts::clock::SystemClock;
use sts::config::Settings;
use sts::secret::Secret;

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5);
    let per_kind: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(40);

    let dir = tempfile::tempdir()?;
    let mut settings = Settings::default();
    settings.server.listen = "127.0.0.1:0".into();
    settings.database.url = Some(format!("sqlite://{}", dir.path().join("sts.db").display()));
    settings.keys.dir = dir.path().join("keys");
    settings.bootstrap.admin_username = Some("alice".into());
    settings.bootstrap.admin_password = Some(Secret::new("alice-has-a-long-password"));
    // Every request comes from 127.0.0.1: without this, the per-source limit
    // answers 429 after 20 failures and the run measures that instead.
    settings.login.source_failures_per_minute = u32::MAX;
    let config = settings.resolve()?;
    let params = config.argon2.clone();
    let app = Application::build(config, Arc::new(SystemClock)).await?;
    let url = format!("http://127.0.0.1:{}/api/sts/token/v1", app.port());
    tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();

    let login = |username: &'static str| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let started = Instant::now();
            let form = [("grant_type", "password"), ("username", username), ("password", "not-the-password-at-all")];
            let response = client.post(url).form(&form).send().await?;
            let status = response.status();
            response.bytes().await?;
            assert_eq!(status, 400, "both must be refused");
            Ok::<_, reqwest::Error>(started.elapsed())
        }
    };

    println!(
        "argon2id m={} KiB t={} p={}; {rounds} rounds x {per_kind} logins per kind, interleaved",
        params.m_cost(),
        params.t_cost(),
        params.p_cost()
    );
    for _ in 0..5 {
        login("alice").await?;
        login("mallory").await?;
    }
    let mut ratios = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let (mut wrong, mut unknown) = (Vec::new(), Vec::new());
        for _ in 0..per_kind {
            wrong.push(login("alice").await?);
            unknown.push(login("mallory").await?);
        }
        let (w, u) = (median(&mut wrong), median(&mut unknown));
        let ratio = u.as_secs_f64() / w.as_secs_f64();
        println!(
            "round {round}: wrong password {:.2} ms, unknown user {:.2} ms, ratio {ratio:.3}",
            w.as_secs_f64() * 1e3,
            u.as_secs_f64() * 1e3
        );
        ratios.push(ratio);
    }
    ratios.sort_by(f64::total_cmp);
    let spread = ratios[ratios.len() - 1] - ratios[0];
    let median_ratio = ratios[ratios.len() / 2];
    let verdict = if (0.9..=1.1).contains(&median_ratio) { "within" } else { "OUTSIDE" };
    println!(
        "R1c unknown-user / wrong-password median login time: {median_ratio:.3} (spread {spread:.3}); {verdict} the 0.9-1.1 target"
    );
    Ok(())
}

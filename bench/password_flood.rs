//! Memory and throttling under a password flood (issue 5, SECURITY.md #47).
//!
//! Boots the real service in-process (SQLite, production argon2 parameters)
//! and fires N parallel wrong-password requests at one account and N at
//! unknown users, sampling the process's resident memory. Argon2 runs behind
//! a semaphore of one permit per hashing thread, so the peak must stay below
//! baseline + threads × argon2 memory, however many requests wait; the
//! account's throttle must let only its free failures reach a real
//! comparison.
//!
//! With `settle`, it then waits until hashing has been quiet for
//! `RELEASE_AFTER` and reports what the process holds at rest again (the
//! argon2 buffers are freed then).
//!
//! `cargo run --release --example password_flood -- [N] [settle]` (default 200)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sts::app::Application;
use sts::clock::SystemClock;
use sts::config::Settings;
use sts::secret::Secret;
use sts::service::passwords::RELEASE_AFTER;

fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(200);
    let settle = std::env::args().nth(2).is_some_and(|a| a == "settle");
    let dir = tempfile::tempdir()?;
    let mut settings = Settings::default();
    settings.server.listen = "127.0.0.1:0".into();
    settings.database.url = Some(format!("sqlite://{}", dir.path().join("sts.db").display()));
    settings.keys.dir = dir.path().join("keys");
    settings.bootstrap.admin_username = Some("victim".into());
    settings.bootstrap.admin_password = Some(Secret::new("victim-has-a-long-password"));
    settings.login.source_failures_per_minute = u32::MAX;
    let config = settings.resolve()?;
    let (memory_kib, threads) = (u64::from(config.argon2.m_cost()), config.hashing_threads as u64);
    let app = Application::build(config, Arc::new(SystemClock)).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let ctx = app.context().clone();
    tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();
    let login = |username: String| {
        let (client, url) = (client.clone(), format!("{base}/api/sts/token/v1"));
        async move {
            let form =
                [("grant_type", "password"), ("username", username.as_str()), ("password", "not-the-password-at-all")];
            client.post(url).form(&form).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
        }
    };
    for i in 0..threads * 2 {
        login(format!("warm-up-{i}")).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = resident_kib();
    let comparisons_before = ctx.passwords.comparisons();

    let (peak, running) = (Arc::new(AtomicU64::new(baseline)), Arc::new(AtomicBool::new(true)));
    let sampler = {
        let (peak, running) = (peak.clone(), running.clone());
        std::thread::spawn(move || {
            while running.load(Ordering::Relaxed) {
                peak.fetch_max(resident_kib(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let flood = (0..n).map(|i| login(if i % 2 == 0 { "victim".into() } else { format!("nobody-{i}") }));
    let statuses = futures_util::future::join_all(flood).await;
    running.store(false, Ordering::Relaxed);
    let _ = sampler.join();

    let peak = peak.load(Ordering::Relaxed);
    let budget = threads * memory_kib;
    let count = |code: u16| statuses.iter().filter(|s| **s == code).count();
    println!(
        "{n} parallel logins ({} at one account, {} at unknown users); argon2 m={memory_kib} KiB, {threads} hashing threads",
        n.div_ceil(2),
        n / 2
    );
    println!("answers: {} x 400 invalid_grant, {} x 503 (hashing queue full after 2 s)", count(400), count(503));
    println!("real comparisons for the attacked account: {}", ctx.passwords.comparisons() - comparisons_before);
    println!(
        "resident memory: baseline {:.1} MiB, peak {:.1} MiB, growth {:.1} MiB; budget threads x argon2 = {:.1} MiB; growth / budget = {:.2} (target <= 1.0)",
        baseline as f64 / 1024.0,
        peak as f64 / 1024.0,
        peak.saturating_sub(baseline) as f64 / 1024.0,
        budget as f64 / 1024.0,
        peak.saturating_sub(baseline) as f64 / budget as f64
    );
    if settle {
        tokio::time::sleep(RELEASE_AFTER + Duration::from_secs(6)).await;
        println!(
            "after {} s without a hash: resident {:.1} MiB ({} argon2 buffers held)",
            (RELEASE_AFTER + Duration::from_secs(6)).as_secs(),
            resident_kib() as f64 / 1024.0,
            ctx.passwords.buffers_held()
        );
    }
    Ok(())
}

//! The load generator of the benchmark suite (issue 7); `bench/run` drives it.
//!
//! Talks HTTP/1.1 with keep-alive to a separately started `sts` (or to the
//! bare JWKS baseline) on 127.0.0.1 only, and prints one `result` line per
//! run with throughput, HDR-histogram latencies and, given `--pid`, the
//! target process's CPU time per operation (utime + stime from
//! `/proc/PID/stat`) and resident memory (idle and peak, `/proc/PID/status`).
//!
//! ```text
//! loadgen setup  --base URL --admin NAME --admin-password PW --out FILE [--env FILE]
//! loadgen run    --setup FILE --op OP --conc C --secs S [--rate R] [--pid PID] [--url URL]
//!                [--count N] [--reset-stats POSTGRES_URL] [--families F --chain K]
//! loadgen argon2 --threads T --secs S --m KIB --t ITER --p LANES
//! loadgen sign   --setup FILE --keys DIR --threads T --secs S [--clk-tck HZ]
//! loadgen rss    --pid PID
//! loadgen fetch  --url URL [--out FILE] [--secs S]
//! ```
//!
//! OP is `refresh` (each lane logs in once, then chains the rotating refresh
//! token every response returns; with `--families F --chain K` it logs in F
//! times and moves to the next family after K grants, so that a run's
//! chains stay as long as a real login's, see bench/README.md), `client`
//! (client_credentials), `password` (a successful password grant),
//! `exchange` (token exchange, RFC 8693: each lane logs in once and then
//! exchanges that access token for one scoped to the set-up's second
//! organisation, an organisation switch), `jwks` (GET `--url`), or `org`
//! (create an organisation with the admin token). Without `--rate` the run
//! is closed-loop with `--conc` lanes; with `--rate` requests start at a
//! fixed arrival rate on up to `--conc` lanes, latency counts from the
//! intended start (no coordinated omission) and a start with no free lane is
//! counted as `missed`. `--count N` makes each lane send exactly N requests
//! instead (for the statement capture, with `--reset-stats` to empty
//! `pg_stat_statements` after the lanes have logged in).

use std::collections::HashMap;
use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use argon2::password_hash::SaltString;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::Mutex;

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// `--key value` pairs after the subcommand.
fn parse_args(args: &[String]) -> Res<HashMap<String, String>> {
    let mut map = HashMap::new();
    let mut it = args.iter();
    while let Some(key) = it.next() {
        let Some(name) = key.strip_prefix("--") else { return Err(format!("unexpected argument {key}").into()) };
        let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
        map.insert(name.to_owned(), value.clone());
    }
    Ok(map)
}

fn arg<T: std::str::FromStr>(args: &HashMap<String, String>, name: &str, default: Option<T>) -> Res<T> {
    match args.get(name) {
        Some(v) => v.parse().map_err(|_| format!("--{name}: cannot parse {v}").into()),
        None => default.ok_or_else(|| format!("--{name} is required").into()),
    }
}

fn loopback_only(url: &str) -> Res<()> {
    let parsed = url::Url::parse(url)?;
    match parsed.host_str() {
        Some("127.0.0.1" | "localhost" | "[::1]") => Ok(()),
        other => Err(format!("refusing to send traffic to {other:?}: loopback only").into()),
    }
}

/// What `setup` creates and every `run` reads.
#[derive(serde::Serialize, serde::Deserialize, Clone)]
struct Setup {
    base: String,
    admin_token: String,
    organisation_id: String,
    username: String,
    password: String,
    client_id: String,
    client_secret: String,
    /// A second organisation the user is a member of: the target of `exchange`.
    #[serde(default)]
    exchange_organisation_id: String,
}

async fn expect_status(response: reqwest::Response, status: u16, what: &str) -> Res<Value> {
    let got = response.status().as_u16();
    let body = response.bytes().await?;
    if got != status {
        return Err(format!("{what}: HTTP {got}: {}", String::from_utf8_lossy(&body)).into());
    }
    Ok(serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn text(value: &Value, field: &str) -> Res<String> {
    value[field].as_str().map(str::to_owned).ok_or_else(|| format!("no `{field}` in {value}").into())
}

async fn setup(args: &HashMap<String, String>) -> Res<()> {
    let base: String = arg(args, "base", None)?;
    loopback_only(&base)?;
    let admin: String = arg(args, "admin", None)?;
    let admin_password: String = arg(args, "admin-password", None)?;
    let out: String = arg(args, "out", None)?;
    let client = reqwest::Client::new();
    let token_url = format!("{base}/api/sts/token/v1");
    let form = [("grant_type", "password"), ("username", admin.as_str()), ("password", admin_password.as_str())];
    let login = expect_status(client.post(&token_url).form(&form).send().await?, 200, "admin login").await?;
    let admin_token = text(&login, "access_token")?;
    let post = |path: &str, body: Value| client.post(format!("{base}{path}")).bearer_auth(&admin_token).json(&body);
    let put = |path: String| client.put(format!("{base}{path}")).bearer_auth(&admin_token);

    let suffix = std::process::id();
    let name = format!("bench-{suffix}");
    let org = expect_status(
        post("/api/sts/organisation/v1", json!({"name": name, "roles": ["ISSUER"]})).send().await?,
        201,
        "create organisation",
    )
    .await?;
    let organisation_id = text(&org, "id")?;
    let password = format!("{name}-password-that-is-long-enough");
    let user = expect_status(
        post(
            "/api/sts/user/v1",
            json!({"username": name, "type": "USER", "password": password, "systemRoles": ["ISSUING_OPERATOR"]}),
        )
        .send()
        .await?,
        201,
        "create user",
    )
    .await?;
    let tech = expect_status(
        post(
            "/api/sts/user/v1",
            json!({"username": format!("{name}-client"), "type": "TECHNICAL", "systemRoles": ["ISSUING_OPERATOR"]}),
        )
        .send()
        .await?,
        201,
        "create technical user",
    )
    .await?;
    for member in [text(&user, "id")?, text(&tech, "id")?] {
        let path = format!("/api/sts/organisation/v1/{organisation_id}/member/{member}");
        expect_status(put(path).send().await?, 204, "add member").await?;
    }
    let switch = expect_status(
        post("/api/sts/organisation/v1", json!({"name": format!("{name}-switch"), "roles": ["ISSUER"]})).send().await?,
        201,
        "create exchange organisation",
    )
    .await?;
    let exchange_organisation_id = text(&switch, "id")?;
    let path = format!("/api/sts/organisation/v1/{exchange_organisation_id}/member/{}", text(&user, "id")?);
    expect_status(put(path).send().await?, 204, "add exchange member").await?;
    let setup = Setup {
        base,
        admin_token,
        organisation_id,
        username: name,
        password,
        client_id: text(&tech, "id")?,
        client_secret: text(&tech, "clientSecret")?,
        exchange_organisation_id,
    };
    std::fs::write(&out, serde_json::to_vec_pretty(&json!(setup))?)?;
    if let Some(env) = args.get("env") {
        let lines = format!(
            "BENCH_USER_ID={}\nBENCH_ORG_ID={}\nBENCH_EXCHANGE_ORG_ID={}\n",
            text(&user, "id")?,
            setup.organisation_id,
            setup.exchange_organisation_id
        );
        std::fs::write(env, lines)?;
    }
    println!("setup written to {out}");
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Refresh,
    Client,
    Password,
    Exchange,
    Jwks,
    Org,
}

impl std::str::FromStr for Op {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "refresh" => Self::Refresh,
            "client" => Self::Client,
            "password" => Self::Password,
            "exchange" => Self::Exchange,
            "jwks" => Self::Jwks,
            "org" => Self::Org,
            other => return Err(format!("unknown op {other}")),
        })
    }
}

/// One lane of requests: its own refresh-token chain when the op needs one,
/// its own subject token for `exchange`.
struct Lane {
    id: usize,
    refresh_token: Option<String>,
    access_token: Option<String>,
    sent: u64,
    /// Starting tokens of further families (see `--chain`).
    spare: Vec<String>,
    chained: u64,
}

struct Target {
    op: Op,
    client: reqwest::Client,
    setup: Setup,
    token_url: String,
    url: String,
    run_id: u128,
    /// Grants per family before a lane moves to its next family.
    chain: u64,
}

impl Target {
    async fn password_login(&self) -> Res<Value> {
        let form = [
            ("grant_type", "password"),
            ("username", self.setup.username.as_str()),
            ("password", self.setup.password.as_str()),
            ("organisation_id", self.setup.organisation_id.as_str()),
        ];
        expect_status(self.client.post(&self.token_url).form(&form).send().await?, 200, "password grant").await
    }

    /// A set-up login, retried the way a client would when the service is
    /// busy hashing (503) or asks to slow down (429): R8 logs its lanes in
    /// while a password flood keeps the hashing queue full.
    async fn patient_login(&self) -> Res<Value> {
        let mut attempt = 0;
        loop {
            match self.password_login().await {
                Err(e)
                    if attempt < 40 && (e.to_string().contains("HTTP 503") || e.to_string().contains("HTTP 429")) =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                other => return other,
            }
        }
    }

    async fn prepare(&self, lane: &mut Lane, families: usize) -> Res<()> {
        if self.op == Op::Refresh {
            for _ in 0..families.max(1) {
                lane.spare.push(text(&self.patient_login().await?, "refresh_token")?);
            }
            lane.refresh_token = lane.spare.pop();
        }
        if self.op == Op::Exchange {
            lane.access_token = Some(text(&self.patient_login().await?, "access_token")?);
        }
        Ok(())
    }

    /// One operation; the lane keeps whatever the next one needs.
    async fn once(&self, lane: &mut Lane) -> Res<()> {
        lane.sent += 1;
        match self.op {
            Op::Refresh => {
                if lane.chained >= self.chain && !lane.spare.is_empty() {
                    lane.refresh_token = lane.spare.pop();
                    lane.chained = 0;
                }
                lane.chained += 1;
                let token = lane.refresh_token.take().ok_or("lane has no refresh token (an earlier grant failed)")?;
                let form = [("grant_type", "refresh_token"), ("refresh_token", token.as_str())];
                let body =
                    expect_status(self.client.post(&self.token_url).form(&form).send().await?, 200, "refresh").await?;
                lane.refresh_token = Some(text(&body, "refresh_token")?);
            }
            Op::Client => {
                let form = [
                    ("grant_type", "client_credentials"),
                    ("client_id", self.setup.client_id.as_str()),
                    ("client_secret", self.setup.client_secret.as_str()),
                    ("organisation_id", self.setup.organisation_id.as_str()),
                ];
                expect_status(self.client.post(&self.token_url).form(&form).send().await?, 200, "client").await?;
            }
            Op::Password => {
                self.password_login().await?;
            }
            Op::Exchange => {
                let subject = lane.access_token.as_deref().ok_or("lane has no subject token")?;
                let form = [
                    ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
                    ("subject_token", subject),
                    ("subject_token_type", "urn:ietf:params:oauth:token-type:access_token"),
                    ("organisation_id", self.setup.exchange_organisation_id.as_str()),
                ];
                expect_status(self.client.post(&self.token_url).form(&form).send().await?, 200, "exchange").await?;
            }
            Op::Jwks => {
                let response = self.client.get(&self.url).send().await?;
                let status = response.status().as_u16();
                let body = response.bytes().await?;
                if status != 200 || body.is_empty() {
                    return Err(format!("jwks: HTTP {status}").into());
                }
            }
            Op::Org => {
                let name = format!("load-{:x}-{}-{}", self.run_id, lane.id, lane.sent);
                let response = self
                    .client
                    .post(format!("{}/api/sts/organisation/v1", self.setup.base))
                    .bearer_auth(&self.setup.admin_token)
                    .json(&json!({"name": name, "roles": ["ISSUER"]}))
                    .send()
                    .await?;
                expect_status(response, 201, "create organisation").await?;
            }
        }
        Ok(())
    }
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[derive(Default)]
struct Tally {
    ops: u64,
    errors: u64,
    missed: u64,
    first_error: Option<String>,
}

async fn run(args: &HashMap<String, String>) -> Res<()> {
    let op: Op = arg(args, "op", None)?;
    let conc: usize = arg(args, "conc", Some(8))?;
    let secs: f64 = arg(args, "secs", Some(5.0))?;
    let rate: f64 = arg(args, "rate", Some(0.0))?;
    let pid: u32 = arg(args, "pid", Some(0))?;
    let clk_tck: f64 = arg(args, "clk-tck", Some(100.0))?;
    let setup: Setup = serde_json::from_slice(&std::fs::read(arg::<String>(args, "setup", None)?)?)?;
    let url: String = arg(args, "url", Some(format!("{}/.well-known/jwks.json", setup.base)))?;
    loopback_only(&setup.base)?;
    loopback_only(&url)?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(conc.max(1) * 2).build()?;
    let target = Arc::new(Target {
        op,
        token_url: format!("{}/api/sts/token/v1", setup.base),
        client,
        setup,
        url,
        run_id: u128::from(std::process::id()) << 64
            | u128::from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos()),
        chain: arg(args, "chain", Some(u64::MAX))?,
    });

    // Lanes log in (refresh) before the clock starts, one at a time: parallel
    // logins to one account would trip its throttle.
    let families: usize = arg(args, "families", Some(1))?;
    let mut lanes = Vec::with_capacity(conc);
    for id in 0..conc {
        let mut lane = Lane { id, refresh_token: None, access_token: None, sent: 0, spare: Vec::new(), chained: 0 };
        target.prepare(&mut lane, families).await?;
        lanes.push(lane);
    }

    // Statement capture (bench/run): forget what the logins above sent, so
    // pg_stat_statements holds exactly the measured operations.
    if let Some(url) = args.get("reset-stats") {
        use diesel::{Connection, RunQueryDsl};
        let mut conn = diesel::PgConnection::establish(url)?;
        diesel::sql_query("SELECT pg_stat_statements_reset()").execute(&mut conn)?;
    }
    let count: u64 = arg(args, "count", Some(0))?;

    let (peak_rss, sampling) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(pid != 0)));
    let rss_start = if pid != 0 { rss_kib(pid).unwrap_or(0) } else { 0 };
    let sampler = {
        let (peak, sampling) = (peak_rss.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid).unwrap_or(0), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let cpu_start = if pid != 0 { cpu_ticks(pid) } else { None };
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?));
    let tally = Arc::new(Mutex::new(Tally::default()));

    if rate <= 0.0 {
        let mut tasks = Vec::new();
        for mut lane in lanes {
            let (target, histogram, tally) = (target.clone(), histogram.clone(), tally.clone());
            tasks.push(tokio::spawn(async move {
                let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).ok();
                let (mut ops, mut errors, mut first_error) = (0u64, 0u64, None);
                while (count == 0 && Instant::now() < deadline) || (count > 0 && lane.sent < count) {
                    let t0 = Instant::now();
                    match target.once(&mut lane).await {
                        Ok(()) => {
                            ops += 1;
                            if let Some(h) = local.as_mut() {
                                h.saturating_record(t0.elapsed().as_micros().try_into().unwrap_or(u64::MAX));
                            }
                        }
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e.to_string());
                            if target.op == Op::Refresh {
                                break; // the chain is broken; a retry would measure the error path
                            }
                        }
                    }
                }
                if let Some(h) = local {
                    let _ = histogram.lock().await.add(h);
                }
                let mut t = tally.lock().await;
                t.ops += ops;
                t.errors += errors;
                if t.first_error.is_none() {
                    t.first_error = first_error;
                }
            }));
        }
        for task in tasks {
            task.await?;
        }
    } else {
        // Fixed arrival rate: start i at started + i / rate on a free lane.
        let free = Arc::new(Mutex::new(lanes));
        let mut tasks = Vec::new();
        let mut i = 0u64;
        loop {
            let intended = started + Duration::from_secs_f64(i as f64 / rate);
            if intended >= deadline {
                break;
            }
            tokio::time::sleep_until(intended.into()).await;
            i += 1;
            let Some(mut lane) = free.lock().await.pop() else {
                tally.lock().await.missed += 1;
                continue;
            };
            let (target, histogram, tally, free) = (target.clone(), histogram.clone(), tally.clone(), free.clone());
            tasks.push(tokio::spawn(async move {
                let outcome = target.once(&mut lane).await;
                let micros: u64 = intended.elapsed().as_micros().try_into().unwrap_or(u64::MAX);
                let mut t = tally.lock().await;
                match outcome {
                    Ok(()) => {
                        t.ops += 1;
                        histogram.lock().await.saturating_record(micros);
                    }
                    Err(e) => {
                        t.errors += 1;
                        t.first_error.get_or_insert(e.to_string());
                    }
                }
                drop(t);
                if lane.refresh_token.is_some() || target.op != Op::Refresh {
                    free.lock().await.push(lane);
                }
            }));
        }
        for task in tasks {
            task.await?;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_end = if pid != 0 { cpu_ticks(pid) } else { None };
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.join();

    let h = histogram.lock().await;
    let t = tally.lock().await;
    let cpu_us_per_op = match (cpu_start, cpu_end) {
        (Some(a), Some(b)) if t.ops > 0 => format!("{:.1}", (b - a) as f64 / clk_tck * 1e6 / t.ops as f64),
        _ => "-".into(),
    };
    println!(
        "result op={op:?} mode={} conc={conc} ops={} secs={elapsed:.2} rate={:.1} p50_us={} p99_us={} max_us={} errors={} missed={} cpu_us_per_op={cpu_us_per_op} rss_start_kib={rss_start} rss_peak_kib={}",
        if rate > 0.0 { format!("fixed-rate@{rate}") } else { "closed-loop".into() },
        t.ops,
        t.ops as f64 / elapsed,
        h.value_at_quantile(0.50),
        h.value_at_quantile(0.99),
        h.max(),
        t.errors,
        t.missed,
        peak_rss.load(Ordering::Relaxed),
    );
    if let Some(e) = &t.first_error {
        eprintln!("loadgen: first error: {e}");
    }
    Ok(())
}

/// R1's baseline: argon2id verifications with the same crate and
/// parameters as the service, one preallocated buffer per thread (as the
/// service's hashing pool has), on `--threads` threads.
fn argon2_loop(args: &HashMap<String, String>) -> Res<()> {
    let threads: usize = arg(args, "threads", Some(2))?;
    let secs: f64 = arg(args, "secs", Some(5.0))?;
    let params = Params::new(arg(args, "m", Some(19456))?, arg(args, "t", Some(2))?, arg(args, "p", Some(1))?, None)
        .map_err(|e| e.to_string())?;
    let salt = SaltString::encode_b64(b"bench-salt-16-by").map_err(|e| e.to_string())?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut expected = [0u8; 32];
    let mut memory = vec![Block::default(); params.block_count()];
    let password = b"bench-password-that-is-long-enough";
    argon.hash_password_into_with_memory(password, salt.as_str().as_bytes(), &mut expected, &mut memory[..])?;
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (argon, salt) = (argon.clone(), salt.clone());
            let blocks = params.block_count();
            std::thread::spawn(move || {
                let mut memory = vec![Block::default(); blocks];
                let (mut count, mut ok) = (0u64, true);
                while Instant::now() < deadline {
                    let mut out = [0u8; 32];
                    let hashed = argon.hash_password_into_with_memory(
                        password,
                        salt.as_str().as_bytes(),
                        &mut out,
                        &mut memory[..],
                    );
                    ok &= hashed.is_ok() && subtle::ConstantTimeEq::ct_eq(&out[..], &expected[..]).into();
                    count += 1;
                }
                (count, ok)
            })
        })
        .collect();
    let mut total = 0;
    for worker in workers {
        let (count, ok) = worker.join().map_err(|_| "argon2 thread panicked")?;
        if !ok {
            return Err("argon2 verification failed".into());
        }
        total += count;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "result op=argon2 threads={threads} ops={total} secs={elapsed:.2} rate={:.1} single_ms={:.2} m={} t={} p={}",
        total as f64 / elapsed,
        elapsed * 1e3 * threads as f64 / total.max(1) as f64,
        params.m_cost(),
        params.t_cost(),
        params.p_cost()
    );
    Ok(())
}

/// The Ed25519 baseline: the instance's own signing key (read from its keys
/// directory, `--keys`) signing, through the service's `KeyRing::sign`
/// (jsonwebtoken, rust_crypto backend), the claims of an organisation-scoped
/// client-credentials token it issued, with a fresh `jti` and times per
/// signature as `Mint::sign` has, on `--threads` threads. No HTTP, no
/// database: what a grant would cost if signing were all it did.
async fn sign_loop(args: &HashMap<String, String>) -> Res<()> {
    use base64::Engine;
    let threads: usize = arg(args, "threads", Some(2))?;
    let secs: f64 = arg(args, "secs", Some(5.0))?;
    let clk_tck: f64 = arg(args, "clk-tck", Some(100.0))?;
    let keys: String = arg(args, "keys", None)?;
    let setup: Setup = serde_json::from_slice(&std::fs::read(arg::<String>(args, "setup", None)?)?)?;
    loopback_only(&setup.base)?;
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", setup.client_id.as_str()),
        ("client_secret", setup.client_secret.as_str()),
        ("organisation_id", setup.organisation_id.as_str()),
    ];
    let token_url = format!("{}/api/sts/token/v1", setup.base);
    let issued =
        expect_status(reqwest::Client::new().post(&token_url).form(&form).send().await?, 200, "client").await?;
    let token = text(&issued, "access_token")?;
    let payload = token.split('.').nth(1).ok_or("the access token is not a compact JWS")?;
    let template: sts::tokens::AccessClaims =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)?)?;
    let (_, ring) = sts::tokens::KeyDir::new(keys).load(chrono::Utc::now(), None)?.ok_or("no key ring")?;
    let ring = Arc::new(ring);
    let lifetime = template.exp - template.iat;
    tokio::task::spawn_blocking(move || -> Res<()> {
        let cpu_start = cpu_ticks(std::process::id());
        let started = Instant::now();
        let deadline = started + Duration::from_secs_f64(secs);
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (ring, template) = (ring.clone(), template.clone());
                std::thread::spawn(move || {
                    let (mut count, mut bytes) = (0u64, 0usize);
                    while Instant::now() < deadline {
                        let iat = chrono::Utc::now().timestamp();
                        let claims = sts::tokens::AccessClaims {
                            jti: uuid::Uuid::new_v4(),
                            iat,
                            nbf: iat,
                            exp: iat + lifetime,
                            ..template.clone()
                        };
                        match ring.sign(&claims) {
                            Ok(token) => bytes = token.len(),
                            Err(e) => return Err(e.to_string()),
                        }
                        count += 1;
                    }
                    Ok((count, bytes))
                })
            })
            .collect();
        let (mut total, mut bytes) = (0u64, 0usize);
        for worker in workers {
            let (count, size) = worker.join().map_err(|_| "signing thread panicked")??;
            total += count;
            bytes = size;
        }
        let elapsed = started.elapsed().as_secs_f64();
        // This process's CPU over the loop (the idle runtime threads add
        // nothing measurable): the cost of one signature, whatever else
        // shares the cores.
        let cpu_us_per_op = match (cpu_start, cpu_ticks(std::process::id())) {
            (Some(a), Some(b)) if total > 0 => format!("{:.1}", (b - a) as f64 / clk_tck * 1e6 / total as f64),
            _ => "-".into(),
        };
        println!(
            "result op=sign threads={threads} ops={total} secs={elapsed:.2} rate={:.1} single_us={:.1} cpu_us_per_op={cpu_us_per_op} token_bytes={bytes} permissions={}",
            total as f64 / elapsed,
            elapsed * 1e6 * threads as f64 / total.max(1) as f64,
            template.permissions.len()
        );
        Ok(())
    })
    .await?
}

/// GETs `--url` until it answers 200 (at most `--secs`), writing the body
/// to `--out` if given: waits for a server to be ready and saves the JWKS.
async fn fetch(args: &HashMap<String, String>) -> Res<()> {
    let url: String = arg(args, "url", None)?;
    loopback_only(&url)?;
    let deadline = Instant::now() + Duration::from_secs_f64(arg(args, "secs", Some(60.0))?);
    let client = reqwest::Client::new();
    loop {
        let last = match client.get(&url).send().await {
            Ok(response) if response.status().as_u16() == 200 => {
                let body = response.bytes().await?;
                if let Some(out) = args.get("out") {
                    std::fs::write(out, &body)?;
                }
                return Ok(());
            }
            Ok(response) => format!("HTTP {}", response.status()),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(format!("{url} not ready: {last}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        return Err("usage: loadgen setup|run|argon2|sign|rss|fetch [--key value ...]".into());
    };
    let options = parse_args(rest)?;
    match command.as_str() {
        "setup" => setup(&options).await,
        "run" => run(&options).await,
        "argon2" => tokio::task::spawn_blocking(move || argon2_loop(&options)).await?,
        "sign" => sign_loop(&options).await,
        "fetch" => fetch(&options).await,
        "rss" => {
            let pid: u32 = arg(&options, "pid", None)?;
            println!("result op=rss rss_kib={}", rss_kib(pid).ok_or("no such process")?);
            Ok(())
        }
        other => Err(format!("unknown command {other}").into()),
    }
}

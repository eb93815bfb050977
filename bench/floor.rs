//! The floor under R2, R3 and R6: the refresh grant, the token exchange and
//! the create-organisation request served by the least code this stack
//! allows, to tell what the machine permits from what `sts` costs.
//!
//! It answers `POST /api/sts/token/v1` (`grant_type=refresh_token` and the
//! token exchange) and `POST /api/sts/organisation/v1` the way `sts` does on
//! their successful paths, with the same statements in the same transaction
//! (`bench/pgbench/*.sql`), the same opaque-token code, the same signature
//! (`KeyRing::sign` with the PostgreSQL instance's own key, claims templated
//! from a token that instance issued) and the same token verification
//! (`Verifier::verify`, for the subject token and the administrator's bearer
//! token). What it leaves out is everything that is `sts` rather than the
//! operation: no authorisation logic or permission sets (the template's
//! permissions are reused), no input checks beyond what the statements need,
//! no audit log line, no tracing or metrics, no middleware. Its database driver is
//! tokio-postgres, asynchronous, with statements prepared once per connection
//! and connections pooled per actix worker, so the statements run on the
//! async workers with no hand-off to a blocking thread.
//!
//! `grant_type=password` is the floor under R1: the password grant's
//! statements in its two transactions (the attempt counted before the
//! comparison, then the reset, the membership, the new family and the audit
//! row), and between them one argon2id verification of the stored hash as
//! the loop in `loadgen argon2` runs it: a permit per hashing thread,
//! tokio's blocking pool, one buffer per thread. No throttling decision, no
//! rehash, no per-source limiter. `GET /hashes` answers "runs microseconds"
//! of the hashing so far, to split R1 as `sts`'s `/metrics` does.
//!
//! `cargo run --release --example floor -- DATABASE_URL KEYS_DIR SETUP_FILE PORT [WORKERS] [POOL] [HASHING]`
//! (SETUP_FILE is `loadgen setup`'s output; each worker opens POOL ÷ WORKERS
//! connections, rounded up: 10 in all with the defaults, as `sts`'s pool;
//! HASHING, the number of hashing permits, defaults to WORKERS; `bench/run`
//! gives it `sts`'s, one per core but one.)

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix_web::{App, HttpResponse, HttpServer, web};
use argon2::password_hash::{Output, PasswordHash};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use futures_util::future::{try_join, try_join3};
use serde_json::json;
use sts::clock::SystemClock;
use sts::tokens::claims::Audience;
use sts::tokens::{AccessClaims, KeyRing, Verifier, opaque};
use tokio_postgres::{Client, GenericClient, NoTls, Statement};
use uuid::Uuid;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The statements of a refresh grant, as `sts` sends them (`$n` for binds).
const FIND: &str = r#"SELECT "refresh_tokens"."id", "refresh_tokens"."digest", "refresh_tokens"."family_id", "refresh_tokens"."user_id", "refresh_tokens"."organisation_id", "refresh_tokens"."issued_at", "refresh_tokens"."expires_at", "refresh_tokens"."family_expires_at", "refresh_tokens"."consumed_at", "refresh_tokens"."revoked_at" FROM "refresh_tokens" WHERE ("refresh_tokens"."digest" = $1) LIMIT $2"#;
const MEMBER: &str = r#"SELECT "users"."id", "users"."username", "users"."username_key", "users"."kind", "users"."password_hash", "users"."secret_digest", "users"."system_roles", "users"."created_at", "users"."last_modified", "users"."disabled_at", "organisations"."id", "organisations"."name", "organisations"."name_key", "organisations"."roles", "organisations"."created_at", "organisations"."last_modified", "organisations"."deactivated_at" FROM (("memberships" INNER JOIN "users" ON ("memberships"."user_id" = "users"."id")) INNER JOIN "organisations" ON ("memberships"."organisation_id" = "organisations"."id")) WHERE (("memberships"."organisation_id" = $1) AND ("memberships"."user_id" = $2)) LIMIT $3 FOR SHARE"#;
const LOCK: &str =
    r#"SELECT "refresh_tokens"."id" FROM "refresh_tokens" WHERE ("refresh_tokens"."id" = $1) FOR UPDATE"#;
const CONSUME: &str =
    "UPDATE refresh_tokens SET consumed_at = $1 WHERE id = $2 AND consumed_at IS NULL AND revoked_at IS NULL";
const INSERT: &str = r#"INSERT INTO "refresh_tokens" ("id", "digest", "family_id", "user_id", "organisation_id", "issued_at", "expires_at", "family_expires_at", "consumed_at", "revoked_at") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"#;
const ORGANISATION: &str = r#"SELECT "organisations"."id", "organisations"."name", "organisations"."name_key", "organisations"."roles", "organisations"."created_at", "organisations"."last_modified", "organisations"."deactivated_at" FROM "organisations" WHERE ("organisations"."id" = $1) LIMIT $2"#;
const CALLER: &str = r#"SELECT "users"."disabled_at" FROM "users" WHERE ("users"."id" = $1) LIMIT $2"#;
const CREATE_ORGANISATION: &str = r#"INSERT INTO "organisations" ("id", "name", "name_key", "roles", "created_at", "last_modified", "deactivated_at") VALUES ($1, $2, $3, $4, $5, $6, $7)"#;
/// The password grant's own statements (with MEMBER, INSERT and AUDIT above).
const FIND_USER: &str = r#"SELECT "users"."id", "users"."username", "users"."username_key", "users"."kind", "users"."password_hash", "users"."secret_digest", "users"."system_roles", "users"."created_at", "users"."last_modified", "users"."disabled_at" FROM "users" WHERE ("users"."username_key" = $1) LIMIT $2"#;
const LOGIN_STATE: &str = r#"SELECT "users"."failed_logins", "users"."last_failed_at", "users"."throttled_until" FROM "users" WHERE ("users"."id" = $1) LIMIT $2 FOR UPDATE"#;
const SET_LOGIN_STATE: &str = r#"UPDATE "users" SET "failed_logins" = $1, "last_failed_at" = $2, "throttled_until" = $3 WHERE ("users"."id" = $4)"#;
const AUDIT: &str = r#"INSERT INTO "audit_events" ("id", "created_at", "action", "outcome", "subject", "actor", "organisation_id", "target_id", "request_id", "source_ip", "reason") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"#;

/// `sts`'s default lifetimes (config/default.toml), and bench/lib.sh's
/// access-token lifetime (the longest a verified token may claim).
const REFRESH_TTL: i64 = 28_800;
const FAMILY_TTL: i64 = 86_400;
const ACCESS_TTL: u64 = 3_600;
const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

struct Conn {
    client: Client,
    find: Statement,
    member: Statement,
    lock: Statement,
    consume: Statement,
    insert: Statement,
    audit: Statement,
    organisation: Statement,
    caller: Statement,
    create_organisation: Statement,
    find_user: Statement,
    login_state: Statement,
    set_login_state: Statement,
}

impl Conn {
    async fn connect(url: &str) -> Res<Self> {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
        // Runs on the worker's own runtime, next to the requests that use it.
        actix_web::rt::spawn(async move {
            if let Err(e) = connection.await {
                eprintln!("floor: connection ended: {e}");
            }
        });
        client.batch_execute("SET TIME ZONE 'UTC'").await?;
        Ok(Self {
            find: client.prepare(FIND).await?,
            member: client.prepare(MEMBER).await?,
            lock: client.prepare(LOCK).await?,
            consume: client.prepare(CONSUME).await?,
            insert: client.prepare(INSERT).await?,
            audit: client.prepare(AUDIT).await?,
            organisation: client.prepare(ORGANISATION).await?,
            caller: client.prepare(CALLER).await?,
            create_organisation: client.prepare(CREATE_ORGANISATION).await?,
            find_user: client.prepare(FIND_USER).await?,
            login_state: client.prepare(LOGIN_STATE).await?,
            set_login_state: client.prepare(SET_LOGIN_STATE).await?,
            client,
        })
    }
}

/// One worker's connections: a permit per connection, waited for as a future.
struct Pool {
    idle: Mutex<Vec<Conn>>,
    permits: tokio::sync::Semaphore,
}

impl Pool {
    async fn with<T>(&self, work: impl AsyncFnOnce(&mut Conn) -> Res<T>) -> Res<T> {
        let _permit = self.permits.acquire().await?;
        let mut conn = self.idle.lock().map_err(|_| "pool poisoned")?.pop().ok_or("no idle connection")?;
        let result = work(&mut conn).await;
        self.idle.lock().map_err(|_| "pool poisoned")?.push(conn);
        result
    }
}

/// What every worker shares: the key ring, the verifier and the claims template.
struct Shared {
    ring: KeyRing,
    verifier: Verifier,
    template: AccessClaims,
}

thread_local! {
    /// The argon2 buffer of this blocking thread, kept across hashes.
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// argon2id on tokio's blocking pool, one permit per hashing thread.
struct Hashing {
    permits: tokio::sync::Semaphore,
    runs: AtomicU64,
    micros: AtomicU64,
}

impl Hashing {
    /// Whether `password` matches the PHC string `stored`.
    async fn verify(self: Arc<Self>, password: String, stored: String) -> Res<bool> {
        let _permit = self.permits.acquire().await?;
        let hashing = self.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let matches = verify(&password, &stored);
            hashing.runs.fetch_add(1, Ordering::Relaxed);
            hashing
                .micros
                .fetch_add(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
            matches
        })
        .await?
    }
}

fn verify(password: &str, stored: &str) -> Res<bool> {
    let hash = PasswordHash::new(stored).map_err(|e| e.to_string())?;
    let params = Params::try_from(&hash).map_err(|e| e.to_string())?;
    let expected = hash.hash.ok_or("no hash in the PHC string")?;
    let mut salt = [0u8; 64];
    let salt = hash.salt.ok_or("no salt in the PHC string")?.decode_b64(&mut salt).map_err(|e| e.to_string())?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut out = vec![0u8; expected.len()];
    MEMORY
        .with_borrow_mut(|memory| {
            if memory.len() != params.block_count() {
                *memory = vec![Block::default(); params.block_count()];
            }
            argon.hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut memory[..])
        })
        .map_err(|e| e.to_string())?;
    Ok(Output::new(&out).map_err(|e| e.to_string())? == expected)
}

#[derive(serde::Deserialize)]
struct Form {
    grant_type: String,
    username: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
    subject_token: Option<String>,
    organisation_id: Option<Uuid>,
}

impl Shared {
    /// A fresh token from the template, for `organisation`.
    fn sign(&self, now: DateTime<Utc>, organisation: Option<Uuid>) -> Res<String> {
        let claims = AccessClaims {
            jti: Uuid::new_v4(),
            iat: now.timestamp(),
            nbf: now.timestamp(),
            exp: now.timestamp() + (self.template.exp - self.template.iat),
            organisation_id: organisation,
            ..self.template.clone()
        };
        Ok(self.ring.sign(&claims)?)
    }
}

/// The audit row every operation writes, as `audit::record` binds it.
async fn audit(
    client: &impl GenericClient,
    statement: &Statement,
    now: DateTime<Utc>,
    (action, subject, actor): (&str, Uuid, Option<&str>),
    organisation: Option<Uuid>,
    target: Option<String>,
) -> Res<()> {
    let no_text: Option<&str> = None;
    let subject = subject.to_string();
    let (request, source) = ("f5b0c4d2-2f0e-4a5e-9c1e-000000000000", "127.0.0.1");
    client
        .execute(
            statement,
            &[
                &Uuid::new_v4(),
                &now,
                &action,
                &"SUCCESS",
                &subject,
                &actor,
                &organisation,
                &target,
                &request,
                &source,
                &no_text,
            ],
        )
        .await?;
    Ok(())
}

fn invalid_grant(reason: &str) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({"error": "invalid_grant", "error_description": reason}))
}

/// A new token of `family` (id `id`) for the set-up's user; returns the secret.
async fn store_token(
    client: &impl GenericClient,
    insert: &Statement,
    now: DateTime<Utc>,
    id: Uuid,
    (family, family_expires_at): (Uuid, DateTime<Utc>),
    (user, organisation): (Uuid, Option<Uuid>),
) -> Res<String> {
    let secret = opaque::generate().map_err(|_| "no randomness")?;
    let expires_at = (now + Duration::seconds(REFRESH_TTL)).min(family_expires_at);
    let digest = opaque::digest(secret.expose());
    let none: Option<DateTime<Utc>> = None;
    client
        .execute(
            insert,
            &[&id, &digest, &family, &user, &organisation, &now, &expires_at, &family_expires_at, &none, &none],
        )
        .await?;
    Ok(secret.expose().to_owned())
}

/// The successful path of `sts`'s refresh grant (src/service/grants/refresh.rs),
/// statement for statement and round trip for round trip; any other outcome
/// is an `invalid_grant`.
async fn refresh(conn: &mut Conn, shared: &Shared, presented: &str) -> Res<Result<(String, String), &'static str>> {
    let outcome = rotate(conn, shared, presented).await;
    if !matches!(outcome, Ok(Ok(_))) {
        // Refused or failed: end the transaction `rotate` opened (a no-op
        // on the server if its COMMIT already rolled back).
        conn.client.batch_execute("ROLLBACK").await?;
    }
    outcome
}

/// Pipelined as `sts` sends them (`docs/DECISIONS.md`): `BEGIN` with the
/// read, the membership with the lock and the update, the two inserts
/// together, then `COMMIT`; four round trips. tokio-postgres queues a
/// request when its future is first polled, so `try_join` sends them in
/// their order.
async fn rotate(conn: &Conn, shared: &Shared, presented: &str) -> Res<Result<(String, String), &'static str>> {
    let now = Utc::now();
    let digest = opaque::digest(presented);
    let c = &conn.client;
    let (_, row) = try_join(c.batch_execute("BEGIN"), c.query_opt(&conn.find, &[&digest, &1_i64])).await?;
    let Some(row) = row else {
        return Ok(Err("unknown refresh token"));
    };
    let (id, family, user): (Uuid, Uuid, Uuid) = (row.get(0), row.get(2), row.get(3));
    let organisation: Option<Uuid> = row.get(4);
    let (expires_at, family_expires_at): (DateTime<Utc>, DateTime<Utc>) = (row.get(6), row.get(7));
    let (consumed, revoked): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = (row.get(8), row.get(9));
    if consumed.is_some() || revoked.is_some() || expires_at <= now || family_expires_at <= now {
        return Ok(Err("used, revoked or expired refresh token"));
    }
    let (member, _, consumed) = try_join3(
        c.query_opt(&conn.member, &[&organisation, &user, &1_i64]),
        c.query_opt(&conn.lock, &[&family]),
        c.execute(&conn.consume, &[&now, &id]),
    )
    .await?;
    // Refused: `refresh` rolls the update back.
    let Some(member) = member else {
        return Ok(Err("not a member"));
    };
    let (disabled, deactivated): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = (member.get(9), member.get(16));
    if disabled.is_some() || deactivated.is_some() {
        return Ok(Err("disabled or deactivated"));
    }
    if consumed != 1 {
        return Ok(Err("used since the read"));
    }
    let access_token = shared.sign(now, organisation)?;
    let (secret, ()) = try_join(
        store_token(c, &conn.insert, now, Uuid::new_v4(), (family, family_expires_at), (user, organisation)),
        audit(c, &conn.audit, now, ("token.refresh", user, None), organisation, Some(family.to_string())),
    )
    .await?;
    c.batch_execute("COMMIT").await?;
    Ok(Ok((access_token, secret)))
}

/// The successful path of `sts`'s password grant (src/service/grants/password.rs):
/// the attempt counted, the hash compared, then the family started. Only
/// with an organisation (as the load generator logs in): without one `sts`
/// reads the user alone, and this answers "not a member".
async fn password(
    pool: &Pool,
    shared: &Shared,
    hashing: Arc<Hashing>,
    (username, password): (&str, &str),
    organisation: Option<Uuid>,
) -> Res<Result<(String, String), &'static str>> {
    let now = Utc::now();
    let key = username.trim().to_lowercase();
    let never: Option<DateTime<Utc>> = None;
    let found = pool
        .with(async |conn| {
            let tx = conn.client.transaction().await?;
            let Some(user) = tx.query_opt(&conn.find_user, &[&key, &1_i64]).await? else { return Ok(None) };
            let (id, stored): (Uuid, Option<String>) = (user.get(0), user.get(4));
            let state = tx.query_one(&conn.login_state, &[&id, &1_i64]).await?;
            let failures = state.get::<_, i32>(0).saturating_add(1);
            tx.execute(&conn.set_login_state, &[&failures, &Some(now), &never, &id]).await?;
            tx.commit().await?;
            Ok(Some((id, stored)))
        })
        .await?;
    let Some((user, Some(stored))) = found else { return Ok(Err("invalid username or password")) };
    if !hashing.verify(password.to_owned(), stored).await? {
        return Ok(Err("invalid username or password"));
    }
    pool.with(async |conn| {
        let tx = conn.client.transaction().await?;
        tx.execute(&conn.set_login_state, &[&0_i32, &never, &never, &user]).await?;
        let Some(member) = tx.query_opt(&conn.member, &[&organisation, &user, &1_i64]).await? else {
            return Ok(Err("not a member"));
        };
        let (disabled, deactivated): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = (member.get(9), member.get(16));
        if disabled.is_some() || deactivated.is_some() {
            return Ok(Err("disabled or deactivated"));
        }
        let family = (Uuid::new_v4(), now + Duration::seconds(FAMILY_TTL));
        let secret = store_token(&tx, &conn.insert, now, family.0, family, (user, organisation)).await?;
        let access_token = shared.sign(now, organisation)?;
        audit(&tx, &conn.audit, now, ("token.password", user, None), organisation, None).await?;
        tx.commit().await?;
        Ok(Ok((access_token, secret)))
    })
    .await
}

/// The successful path of `sts`'s token exchange (src/service/grants/exchange.rs):
/// an organisation switch, no actor; any other outcome is an
/// `invalid_grant`.
async fn exchange(
    conn: &Conn,
    shared: &Shared,
    subject: &AccessClaims,
    target: Uuid,
) -> Res<Result<String, &'static str>> {
    let outcome = switch(conn, shared, subject, target).await;
    if !matches!(outcome, Ok(Ok(_))) {
        conn.client.batch_execute("ROLLBACK").await?;
    }
    outcome
}

/// Pipelined as `sts` sends them: `BEGIN` with the reads of the source
/// organisation and of the target membership, the audit row, then `COMMIT`;
/// three round trips.
async fn switch(
    conn: &Conn,
    shared: &Shared,
    subject: &AccessClaims,
    target: Uuid,
) -> Res<Result<String, &'static str>> {
    let now = Utc::now();
    let c = &conn.client;
    let source = async {
        match subject.organisation_id {
            Some(source) => c.query_opt(&conn.organisation, &[&source, &1_i64]).await.map(Some),
            None => Ok(None),
        }
    };
    let (_, source, member) =
        try_join3(c.batch_execute("BEGIN"), source, c.query_opt(&conn.member, &[&target, &subject.sub, &1_i64]))
            .await?;
    if source.is_some_and(|row| row.is_none_or(|row| row.get::<_, Option<DateTime<Utc>>>(6).is_some())) {
        return Ok(Err("subject token's organisation is not active"));
    }
    let Some(member) = member else {
        return Ok(Err("not a member"));
    };
    let (disabled, deactivated): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = (member.get(9), member.get(16));
    if disabled.is_some() || deactivated.is_some() {
        return Ok(Err("disabled or deactivated"));
    }
    let access_token = shared.sign(now, Some(target))?;
    audit(c, &conn.audit, now, ("token.exchange", subject.sub, None), Some(target), None).await?;
    c.batch_execute("COMMIT").await?;
    Ok(Ok(access_token))
}

async fn token(
    form: web::Form<Form>,
    pool: web::Data<Pool>,
    shared: web::Data<Shared>,
    hashing: web::Data<Hashing>,
) -> HttpResponse {
    let shared = shared.into_inner();
    let outcome = match (form.grant_type.as_str(), form.refresh_token.as_deref()) {
        ("refresh_token", Some(presented)) => pool.with(async |conn| refresh(conn, &shared, presented).await).await,
        ("password", _) => {
            let (Some(username), Some(secret)) = (form.username.as_deref(), form.password.as_deref()) else {
                return invalid_grant("username and password are required");
            };
            password(&pool, &shared, hashing.into_inner(), (username, secret), form.organisation_id).await
        }
        (EXCHANGE, _) => {
            let (Some(subject), Some(target)) = (form.subject_token.as_deref(), form.organisation_id) else {
                return invalid_grant("subject_token and organisation_id are required");
            };
            let Ok(subject) = shared.verifier.verify(&shared.ring, subject) else {
                return invalid_grant("subject_token is not a valid access token");
            };
            pool.with(async |conn| Ok(exchange(conn, &shared, &subject, target).await?.map(|t| (t, String::new()))))
                .await
        }
        _ => return invalid_grant("unsupported here"),
    };
    match outcome {
        Ok(Ok((access_token, refresh_token))) => HttpResponse::Ok().json(json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": shared.template.exp - shared.template.iat,
            "refresh_token": refresh_token,
        })),
        Ok(Err(reason)) => invalid_grant(reason),
        Err(e) => HttpResponse::ServiceUnavailable()
            .json(json!({"error": "temporarily_unavailable", "detail": e.to_string()})),
    }
}

/// "runs microseconds" of argon2 so far.
async fn hashes(hashing: web::Data<Hashing>) -> HttpResponse {
    let (runs, micros) = (hashing.runs.load(Ordering::Relaxed), hashing.micros.load(Ordering::Relaxed));
    HttpResponse::Ok().body(format!("{runs} {micros}\n"))
}

#[derive(serde::Deserialize)]
struct NewOrganisation {
    name: String,
    roles: Vec<String>,
}

/// The successful path of `sts`'s create organisation (src/service/organisations.rs
/// through `audit::audited_write`): the caller's state, the insert, the audit row.
async fn create_organisation(
    request: actix_web::HttpRequest,
    body: web::Json<NewOrganisation>,
    pool: web::Data<Pool>,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let bearer = request.headers().get("authorization").and_then(|h| h.to_str().ok());
    let Some(Ok(caller)) =
        bearer.and_then(|h| h.strip_prefix("Bearer ")).map(|t| shared.verifier.verify(&shared.ring, t))
    else {
        return HttpResponse::Unauthorized().finish();
    };
    let (id, now) = (Uuid::new_v4(), Utc::now());
    // Pipelined as `sts` sends them (`docs/DECISIONS.md`): `BEGIN` with the
    // caller's read, the insert with the audit row, then `COMMIT`; three
    // round trips.
    let created = pool
        .with(async |conn| {
            let c = &conn.client;
            let (_, row) =
                try_join(c.batch_execute("BEGIN"), c.query_opt(&conn.caller, &[&caller.sub, &1_i64])).await?;
            let active = row.is_some_and(|row| row.get::<_, Option<DateTime<Utc>>>(0).is_none());
            if !active {
                c.batch_execute("ROLLBACK").await?;
                return Ok(false);
            }
            let (key, roles) = (body.name.trim().to_lowercase(), serde_json::json!(body.roles));
            let none: Option<DateTime<Utc>> = None;
            let written = async {
                let event = ("organisation.create", caller.sub, Some("admin"));
                try_join(
                    async {
                        Res::Ok(
                            c.execute(&conn.create_organisation, &[&id, &body.name, &key, &roles, &now, &now, &none])
                                .await?,
                        )
                    },
                    audit(c, &conn.audit, now, event, Some(id), Some(id.to_string())),
                )
                .await?;
                Res::Ok(c.batch_execute("COMMIT").await?)
            };
            if let Err(e) = written.await {
                c.batch_execute("ROLLBACK").await?;
                return Err(e);
            }
            Ok(true)
        })
        .await;
    match created {
        Ok(true) => HttpResponse::Created().json(json!({"id": id})),
        Ok(false) => HttpResponse::Unauthorized().finish(),
        Err(e) => HttpResponse::ServiceUnavailable().json(json!({"detail": e.to_string()})),
    }
}

#[derive(serde::Deserialize)]
struct Setup {
    base: String,
    organisation_id: String,
    username: String,
    password: String,
}

/// Claims of a real access token of the set-up's user in its organisation,
/// issued by the `sts` instance under test: the template every token here
/// is signed from.
async fn template(setup: &Setup) -> Res<AccessClaims> {
    let form = [
        ("grant_type", "password"),
        ("username", setup.username.as_str()),
        ("password", setup.password.as_str()),
        ("organisation_id", setup.organisation_id.as_str()),
    ];
    let response = reqwest::Client::new().post(format!("{}/api/sts/token/v1", setup.base)).form(&form).send().await?;
    let body: serde_json::Value = response.error_for_status()?.json().await?;
    let token = body["access_token"].as_str().ok_or("no access_token in the login answer")?;
    let payload = token.split('.').nth(1).ok_or("the access token is not a compact JWS")?;
    Ok(serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)?)?)
}

#[actix_web::main]
async fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, keys, setup, port, rest @ ..] = args.as_slice() else {
        return Err("usage: floor DATABASE_URL KEYS_DIR SETUP_FILE PORT [WORKERS] [POOL] [HASHING]".into());
    };
    let port: u16 = port.parse()?;
    let workers: usize = rest.first().map(|w| w.parse()).transpose()?.unwrap_or(2);
    let pool: usize = rest.get(1).map(|p| p.parse()).transpose()?.unwrap_or(10);
    let hashing_threads: usize = rest.get(2).map(|h| h.parse()).transpose()?.unwrap_or(workers);
    let setup: Setup = serde_json::from_slice(&std::fs::read(setup)?)?;
    let template = template(&setup).await?;
    let (_, ring) = sts::tokens::KeyDir::new(keys).load(Utc::now(), None)?.ok_or("no key ring")?;
    let audience = match &template.aud {
        Audience::One(one) => one.clone(),
        Audience::Many(all) => all.first().cloned().unwrap_or_default(),
    };
    let verifier = Verifier::new(&template.iss, &audience, 60, ACCESS_TTL, Arc::new(SystemClock));
    let shared = web::Data::new(Shared { ring, verifier, template });
    let hashing = web::Data::new(Hashing {
        permits: tokio::sync::Semaphore::new(hashing_threads.max(1)),
        runs: AtomicU64::new(0),
        micros: AtomicU64::new(0),
    });
    let url = Arc::new(url.clone());
    let per_worker = pool.div_ceil(workers).max(1);
    HttpServer::new(move || {
        let url = url.clone();
        App::new()
            .app_data(shared.clone())
            .app_data(hashing.clone())
            .data_factory(move || {
                let url = url.clone();
                async move {
                    let mut conns = Vec::with_capacity(per_worker);
                    for _ in 0..per_worker {
                        conns.push(Conn::connect(&url).await.map_err(|e| e.to_string())?);
                    }
                    Ok::<_, String>(Pool { idle: Mutex::new(conns), permits: tokio::sync::Semaphore::new(per_worker) })
                }
            })
            .route("/api/sts/token/v1", web::post().to(token))
            .route("/api/sts/organisation/v1", web::post().to(create_organisation))
            .route("/hashes", web::get().to(hashes))
    })
    .workers(workers)
    .bind(("127.0.0.1", port))?
    .run()
    .await?;
    Ok(())
}

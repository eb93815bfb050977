//! Boots the real application on port 0 against a fresh database (a new
//! PostgreSQL database, dropped afterwards, or a temporary SQLite file) and
//! hands the test a typed HTTP client.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use diesel::{Connection, PgConnection, RunQueryDsl};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sts::app::Application;
use sts::clock::ManualClock;
use sts::config::Settings;
use uuid::Uuid;

pub const ADMIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A database that exists for one test.
pub enum TestDb {
    Postgres { maintenance: String, name: String, url: String },
    Sqlite { dir: tempfile::TempDir },
}

impl TestDb {
    pub fn create(backend: Backend) -> Self {
        match backend {
            Backend::Postgres => {
                let maintenance = std::env::var("TEST_DATABASE_URL")
                    .expect("TEST_DATABASE_URL is not set: run the tests with scripts/test");
                let name = format!("sts_test_{}", Uuid::new_v4().simple());
                let mut conn = PgConnection::establish(&maintenance).expect("connect to TEST_DATABASE_URL");
                diesel::sql_query(format!("CREATE DATABASE {name}")).execute(&mut conn).expect("create database");
                let mut url = url::Url::parse(&maintenance).expect("TEST_DATABASE_URL is a URL");
                url.set_path(&name);
                Self::Postgres { maintenance, name, url: url.to_string() }
            }
            Backend::Sqlite => Self::Sqlite { dir: tempfile::tempdir().expect("tempdir") },
        }
    }

    pub fn url(&self) -> String {
        match self {
            Self::Postgres { url, .. } => url.clone(),
            Self::Sqlite { dir } => format!("sqlite://{}", dir.path().join("sts.db").display()),
        }
    }

    /// Runs SQL against the test database from outside the application.
    pub fn execute(&self, sql: &str) {
        let Self::Postgres { maintenance, .. } = self else { panic!("PostgreSQL only") };
        let mut conn = PgConnection::establish(maintenance).expect("connect");
        diesel::sql_query(sql).execute(&mut conn).expect("execute");
    }

    /// Runs SQL inside the test database itself, from outside the
    /// application (either backend).
    pub fn execute_here(&self, sql: &str) {
        match self {
            Self::Postgres { url, .. } => {
                let mut conn = PgConnection::establish(url).expect("connect");
                diesel::sql_query(sql).execute(&mut conn).expect("execute");
            }
            Self::Sqlite { dir } => {
                let path = dir.path().join("sts.db");
                let mut conn = diesel::SqliteConnection::establish(&path.to_string_lossy()).expect("open");
                diesel::sql_query(sql).execute(&mut conn).expect("execute");
            }
        }
    }

    pub fn is_sqlite(&self) -> bool {
        matches!(self, Self::Sqlite { .. })
    }

    /// A connection of its own to the test database, from outside the
    /// application (either backend): for batches of statements and for
    /// transactions held open while the application works.
    pub fn connect(&self) -> Box<dyn diesel::connection::SimpleConnection + Send> {
        match self {
            Self::Postgres { url, .. } => Box::new(PgConnection::establish(url).expect("connect")),
            Self::Sqlite { dir } => {
                let path = dir.path().join("sts.db");
                Box::new(diesel::SqliteConnection::establish(&path.to_string_lossy()).expect("open"))
            }
        }
    }

    /// Runs several statements in one batch, from outside the application
    /// (either backend).
    pub fn batch_execute(&self, sql: &str) {
        self.connect().batch_execute(sql).expect("batch");
    }

    /// One number from SQL run outside the application (either backend).
    pub fn scalar(&self, sql: &str) -> i64 {
        #[derive(diesel::QueryableByName)]
        struct Scalar {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            value: i64,
        }
        let rows: Vec<Scalar> = match self {
            Self::Postgres { url, .. } => {
                let mut conn = PgConnection::establish(url).expect("connect");
                diesel::sql_query(sql).load(&mut conn).expect("query")
            }
            Self::Sqlite { dir } => {
                let path = dir.path().join("sts.db");
                let mut conn = diesel::SqliteConnection::establish(&path.to_string_lossy()).expect("open");
                diesel::sql_query(sql).load(&mut conn).expect("query")
            }
        };
        rows.first().map(|r| r.value).expect("one row")
    }

    pub fn name(&self) -> &str {
        match self {
            Self::Postgres { name, .. } => name,
            Self::Sqlite { .. } => "sqlite",
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Self::Postgres { maintenance, name, .. } = self {
            let (maintenance, name) = (maintenance.clone(), name.clone());
            // Dropping happens on a plain thread: Drop may run inside the runtime.
            let _ = std::thread::spawn(move || {
                if let Ok(mut conn) = PgConnection::establish(&maintenance) {
                    let _ =
                        diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn);
                }
            })
            .join();
        }
    }
}

/// Settings every test starts from: cheap argon2, a fixed issuer, port 0.
pub fn test_settings(database_url: &str, keys_dir: &std::path::Path) -> Settings {
    let mut settings = Settings::default();
    settings.server.listen = "127.0.0.1:0".into();
    settings.server.workers = 2;
    settings.database.url = Some(database_url.to_owned());
    settings.database.pool_size = 8;
    settings.tokens.issuer = Some("http://sts.test".into());
    settings.keys.dir = keys_dir.to_owned();
    settings.passwords.memory_kib = 1024;
    settings.passwords.iterations = 1;
    // Every test talks from 127.0.0.1; the per-source limit gets its own test.
    settings.login.source_failures_per_minute = 10_000;
    settings.bootstrap.admin_username = Some(ADMIN.into());
    settings.bootstrap.admin_password = Some(sts::secret::Secret::new(ADMIN_PASSWORD));
    settings
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub clock: Arc<ManualClock>,
    /// Shared with sibling instances; dropped with the last of them.
    pub db: Arc<TestDb>,
    pub stop: Box<dyn Fn() + Send + Sync>,
    /// The running application's context (keys, clock, settings).
    pub ctx: sts::service::Context,
    pub keys: Arc<tempfile::TempDir>,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(backend: Backend, adjust: impl FnOnce(&mut Settings)) -> Self {
        // Warnings of the application (why a request got 503, ...) go to the
        // test's captured output, shown when the test fails.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
            .try_init();
        let db = tokio::task::spawn_blocking(move || TestDb::create(backend)).await.expect("create db");
        let keys = Arc::new(tempfile::tempdir().expect("tempdir"));
        let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
        Self::start(Arc::new(db), keys, clock, adjust).await
    }

    /// Another instance on the same database, keys directory and clock, as
    /// when several `sts serve` processes run side by side.
    pub async fn sibling(&self, adjust: impl FnOnce(&mut Settings)) -> Self {
        Self::start(self.db.clone(), self.keys.clone(), self.clock.clone(), adjust).await
    }

    async fn start(
        db: Arc<TestDb>,
        keys: Arc<tempfile::TempDir>,
        clock: Arc<ManualClock>,
        adjust: impl FnOnce(&mut Settings),
    ) -> Self {
        let mut settings = test_settings(&db.url(), keys.path());
        adjust(&mut settings);
        let config = settings.resolve().expect("test settings are valid");
        let app = Application::build(config, clock.clone()).await.expect("application starts");
        let address = format!("http://127.0.0.1:{}", app.port());
        let stop = Box::new(app.shutdown_trigger());
        let ctx = app.context().clone();
        tokio::spawn(app.run_until_stopped());
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        Self { address, client, clock, db, stop, ctx, keys }
    }

    pub fn keys_dir(&self) -> &std::path::Path {
        self.keys.path()
    }

    /// One key-maintenance tick at the manual clock's time, as the
    /// background job runs it every reload interval.
    pub async fn tick_keys(&self) -> sts::tokens::live::Tick {
        self.ctx.maintain_keys().await.expect("key maintenance")
    }

    /// The JWKS as served: body and ETag.
    pub async fn jwks(&self) -> (Value, String) {
        let response = self.client.get(self.url("/.well-known/jwks.json")).send().await.expect("jwks");
        let etag = response.headers()["etag"].to_str().expect("etag").to_owned();
        (response.json().await.expect("json"), etag)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.client.get(self.url(path)).bearer_auth(token).send().await.expect("request")
    }

    pub async fn post_json(&self, path: &str, token: &str, body: &Value) -> Response {
        self.client.post(self.url(path)).bearer_auth(token).json(body).send().await.expect("request")
    }

    pub async fn patch_json(&self, path: &str, token: &str, body: &Value) -> Response {
        self.client.patch(self.url(path)).bearer_auth(token).json(body).send().await.expect("request")
    }

    pub async fn put(&self, path: &str, token: &str) -> Response {
        self.client.put(self.url(path)).bearer_auth(token).send().await.expect("request")
    }

    pub async fn delete(&self, path: &str, token: &str) -> Response {
        self.client.delete(self.url(path)).bearer_auth(token).send().await.expect("request")
    }

    pub async fn token_request(&self, form: &[(&str, &str)]) -> Response {
        self.client.post(self.url("/api/sts/token/v1")).form(form).send().await.expect("request")
    }

    /// A password grant that must succeed; returns the whole response body.
    pub async fn login(&self, username: &str, password: &str, organisation: Option<Uuid>) -> Value {
        let org = organisation.map(|o| o.to_string()).unwrap_or_default();
        let mut form = vec![("grant_type", "password"), ("username", username), ("password", password)];
        if organisation.is_some() {
            form.push(("organisation_id", &org));
        }
        let response = self.token_request(&form).await;
        assert_eq!(response.status(), StatusCode::OK, "login of {username} for {org}");
        response.json().await.expect("json")
    }

    pub async fn admin_token(&self) -> String {
        self.login(ADMIN, ADMIN_PASSWORD, None).await["access_token"].as_str().expect("token").to_owned()
    }

    pub async fn create_org(&self, admin: &str, name: &str, roles: &[&str]) -> Uuid {
        let response = self.post_json("/api/sts/organisation/v1", admin, &json!({"name": name, "roles": roles})).await;
        assert_eq!(response.status(), StatusCode::CREATED, "create organisation {name}");
        id_of(response).await
    }

    /// Creates a USER whose password is `password_of(username)`.
    pub async fn create_user(&self, admin: &str, username: &str, roles: &[&str]) -> Uuid {
        let body =
            json!({"username": username, "type": "USER", "password": password_of(username), "systemRoles": roles});
        let response = self.post_json("/api/sts/user/v1", admin, &body).await;
        assert_eq!(response.status(), StatusCode::CREATED, "create user {username}");
        id_of(response).await
    }

    /// Creates a technical user; returns its id and secret.
    pub async fn create_technical(&self, admin: &str, username: &str, roles: &[&str]) -> (Uuid, String) {
        let body = json!({"username": username, "type": "TECHNICAL", "systemRoles": roles});
        let response = self.post_json("/api/sts/user/v1", admin, &body).await;
        assert_eq!(response.status(), StatusCode::CREATED, "create technical user {username}");
        let body: Value = response.json().await.expect("json");
        let id = body["id"].as_str().and_then(|s| Uuid::parse_str(s).ok()).expect("id");
        (id, body["clientSecret"].as_str().expect("clientSecret").to_owned())
    }

    pub async fn add_member(&self, admin: &str, org: Uuid, user: Uuid) {
        let response = self.put(&format!("/api/sts/organisation/v1/{org}/member/{user}"), admin).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "add member");
    }

    /// Audit events matching a query string, newest first.
    pub async fn audit(&self, admin: &str, query: &str) -> Vec<Value> {
        let response = self.get(&format!("/api/sts/audit/v1?pageSize=1000&{query}"), admin).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("json");
        body["values"].as_array().cloned().unwrap_or_default()
    }

    /// Verifies a token the way Core does, with an independent Ed25519
    /// implementation against the published JWKS; returns the claims.
    pub async fn verify_like_core(&self, token: &str) -> Value {
        let jwks: Value =
            self.client.get(self.url("/.well-known/jwks.json")).send().await.expect("jwks").json().await.expect("json");
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3, "compact JWS");
        assert!(!token.contains('='), "base64url without padding");
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("b64")).expect("header");
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(header["typ"], "at+jwt");
        let key = jwks["keys"]
            .as_array()
            .and_then(|keys| keys.iter().find(|k| k["kid"] == header["kid"]))
            .expect("kid is in the JWKS");
        assert_eq!((key["kty"].as_str(), key["crv"].as_str()), (Some("OKP"), Some("Ed25519")));
        let x: [u8; 32] =
            URL_SAFE_NO_PAD.decode(key["x"].as_str().expect("x")).expect("b64").try_into().expect("32 bytes");
        let verifying = ed25519_dalek::VerifyingKey::from_bytes(&x).expect("public key");
        let signature =
            ed25519_dalek::Signature::from_slice(&URL_SAFE_NO_PAD.decode(parts[2]).expect("b64")).expect("sig");
        verifying
            .verify_strict(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .expect("signature verifies");
        let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("claims");
        assert_eq!(claims["iss"], "http://sts.test");
        assert_eq!(claims["aud"], "one-core");
        assert!(claims["sub"].as_str().and_then(|s| Uuid::parse_str(s).ok()).is_some());
        assert!(claims["jti"].as_str().and_then(|s| Uuid::parse_str(s).ok()).is_some());
        for time in ["exp", "iat", "nbf"] {
            assert!(claims[time].is_i64(), "{time} is a NumericDate");
        }
        let permissions: Vec<String> = serde_json::from_value(claims["permissions"].clone()).expect("permissions");
        let mut sorted = permissions.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(permissions, sorted, "permissions sorted without duplicates");
        claims
    }
}

impl TestApp {
    /// The service's own signing key for `kid`, read from its keys folder,
    /// so tests can forge tokens whose signature is valid.
    pub fn signing_key(&self, kid: &str) -> ed25519_dalek::SigningKey {
        use ed25519_dalek::pkcs8::DecodePrivateKey;
        let entries = std::fs::read_dir(self.keys.path()).expect("keys dir");
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "pk8") {
                let der = std::fs::read(&path).expect("read key");
                let key = ed25519_dalek::SigningKey::from_pkcs8_der(&der).expect("pkcs8");
                if sts::tokens::keys::thumbprint(&URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes())) == kid {
                    return key;
                }
            }
        }
        panic!("no key file for kid {kid}");
    }

    /// A compact JWS of arbitrary header and claims, signed with `key`.
    pub fn sign_with(key: &ed25519_dalek::SigningKey, header: &Value, claims: &Value) -> String {
        use ed25519_dalek::Signer;
        let input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signature = key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    /// The header and claims of a real admin token, to be bent by a test.
    pub async fn admin_parts(&self) -> (Value, Value) {
        let token = self.admin_token().await;
        let header = token.split('.').next().expect("header");
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("b64")).expect("json");
        (header, claims(&token))
    }

    /// The admin API refuses `token` with 401, the generic body and the
    /// RFC 6750 challenge: nothing about why.
    pub async fn assert_refused(&self, token: &str, case: &str) {
        let response = self.get("/api/sts/organisation/v1", token).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{case}");
        assert_eq!(response.headers()["www-authenticate"], r#"Bearer error="invalid_token""#, "{case}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body, json!({"code": "STS_0002", "message": "missing or invalid access token"}), "{case}");
    }

    /// The admin API accepts `token`.
    pub async fn assert_accepted(&self, token: &str, case: &str) {
        assert_eq!(self.get("/api/sts/organisation/v1", token).await.status(), StatusCode::OK, "{case}");
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        (self.stop)();
    }
}

/// What the published role mapping (`GET /api/sts/role/v1`) says a user
/// with `system_roles` holds in an organisation with `org_roles`: the
/// intersection of the two unions, sorted.
pub fn intersection_from_mapping(roles: &Value, system_roles: &[&str], org_roles: &[&str]) -> Vec<String> {
    let union = |map: &Value, names: &[&str]| -> std::collections::BTreeSet<String> {
        names
            .iter()
            .flat_map(|n| map[*n].as_array().cloned().unwrap_or_default())
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    union(&roles["systemRoles"], system_roles)
        .intersection(&union(&roles["organisationRoles"], org_roles))
        .cloned()
        .collect()
}

pub fn password_of(username: &str) -> String {
    format!("{username}-password-that-is-long")
}

pub async fn id_of(response: Response) -> Uuid {
    let body: Value = response.json().await.expect("json");
    body["id"].as_str().and_then(|s| Uuid::parse_str(s).ok()).expect("id")
}

/// The claims of a token, unverified (for assertions on tokens already verified).
pub fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("claims")
}

pub fn permissions(token: &str) -> Vec<String> {
    serde_json::from_value(claims(token)["permissions"].clone()).expect("permissions")
}

/// Writes each scenario once and runs it on both backends; the test names
/// end in `::postgres` and `::sqlite`. `where |settings| ...` adjusts the
/// settings the application starts with.
#[macro_export]
macro_rules! both_backends {
    (@adjust) => { |_: &mut sts::config::Settings| {} };
    (@adjust $adjust:expr) => { $adjust };
    ($(async fn $name:ident($app:ident) $(where ($adjust:expr))? $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                async fn scenario($app: $crate::helpers::TestApp) $body

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let adjust = $crate::both_backends!(@adjust $($adjust)?);
                    scenario($crate::helpers::TestApp::spawn_with($crate::helpers::Backend::Postgres, adjust).await).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let adjust = $crate::both_backends!(@adjust $($adjust)?);
                    scenario($crate::helpers::TestApp::spawn_with($crate::helpers::Backend::Sqlite, adjust).await).await;
                }
            }
        )*
    };
}

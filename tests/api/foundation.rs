//! Server basics: health, request ids, metrics, errors, limits, migrations.

use diesel::{Connection, RunQueryDsl};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, TestDb};

both_backends! {
    async fn liveness_and_readiness_answer_200(app) {
        let live = app.client.get(app.url("/health/live")).send().await.expect("live");
        assert_eq!(live.status(), StatusCode::OK);
        let ready = app.client.get(app.url("/health/ready")).send().await.expect("ready");
        assert_eq!(ready.status(), StatusCode::OK);
        let body: Value = ready.json().await.expect("json");
        assert_eq!(body["database"], "UP");
    }

    async fn a_request_id_is_echoed_or_generated(app) {
        let given = app.client.get(app.url("/health/live")).header("x-request-id", "abc-123").send().await.expect("live");
        assert_eq!(given.headers()["x-request-id"], "abc-123");
        let generated = app.client.get(app.url("/health/live")).send().await.expect("live");
        let id = generated.headers()["x-request-id"].to_str().expect("ascii");
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
        let hostile = app.client.get(app.url("/health/live")).header("x-request-id", "a".repeat(500)).send().await.expect("live");
        assert_ne!(hostile.headers()["x-request-id"].len(), 500, "an oversized id is replaced");
    }

    async fn unknown_routes_answer_404_in_the_error_shape(app) {
        let response = app.client.get(app.url("/no/such/route")).send().await.expect("request");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["code"], "STS_0004");
        assert!(body["message"].is_string());
    }

    async fn metrics_count_requests_per_route_and_status(app) {
        app.client.get(app.url("/health/live")).send().await.expect("live");
        let text = app.client.get(app.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
        assert!(text.contains(r#"http_requests_total{route="/health/live",status="200"}"#), "{text}");
        assert!(text.contains("http_request_duration_seconds"), "{text}");
    }

    async fn metrics_count_argon2_runs_and_their_time(app) {
        let value = |text: &str, name: &str| -> f64 {
            text.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().last()).and_then(|v| v.parse().ok()).unwrap_or(-1.0)
        };
        let metrics = || async { app.client.get(app.url("/metrics")).send().await.expect("metrics").text().await.expect("text") };
        let before = metrics().await;
        app.admin_token().await;
        let after = metrics().await;
        assert_eq!(value(&after, "password_hashes_total") - value(&before, "password_hashes_total").max(0.0), 1.0, "{after}");
        assert!(value(&after, "password_hash_microseconds_total") > value(&before, "password_hash_microseconds_total"), "{after}");
        assert_eq!(value(&after, "password_hash_buffers_held"), 1.0, "one login at a time keeps one argon2 buffer for the next: {after}");
    }

    async fn an_oversized_body_gets_413(app) {
        let admin = app.admin_token().await;
        let name = "x".repeat(70 * 1024);
        let response = app.post_json("/api/sts/organisation/v1", &admin, &json!({"name": name, "roles": ["ISSUER"]})).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["code"], "STS_0006");
    }

    async fn the_jwks_is_cacheable_and_revalidates_with_304(app) {
        let response = app.client.get(app.url("/.well-known/jwks.json")).send().await.expect("jwks");
        assert_eq!(response.headers()["cache-control"], "public, max-age=300");
        let etag = response.headers()["etag"].to_str().expect("etag").to_owned();
        let jwks: Value = response.json().await.expect("json");
        for key in jwks["keys"].as_array().expect("keys") {
            assert_eq!(key["kty"], "OKP");
            assert_eq!(key["crv"], "Ed25519");
            assert!(key["kid"].is_string());
            assert!(key.get("d").is_none(), "no private member");
        }
        let again = app.client.get(app.url("/.well-known/jwks.json")).header("if-none-match", etag).send().await.expect("jwks");
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    }
}

/// Each migration runs up, down and up again on both backends.
fn up_down_up(backend: Backend) {
    let db = TestDb::create(backend);
    let url = sts::store::DatabaseUrl::parse(Some(&db.url())).expect("url");
    let settings = sts::store::ConnectionSettings {
        url,
        statement_timeout: std::time::Duration::from_secs(5),
        busy_timeout: std::time::Duration::from_secs(5),
    };
    let mut conn = settings.establish().expect("connect");
    let up = sts::store::migrations::run_pending(&mut conn).expect("up");
    assert!(!up.is_empty());
    let down = sts::store::migrations::revert_all(&mut conn).expect("down");
    assert_eq!(down.len(), up.len());
    let again = sts::store::migrations::run_pending(&mut conn).expect("up again");
    assert_eq!(again, up);
}

#[test]
fn migrations_run_up_down_and_up_again_on_postgres() {
    up_down_up(Backend::Postgres);
}

#[test]
fn migrations_run_up_down_and_up_again_on_sqlite() {
    up_down_up(Backend::Sqlite);
}

#[derive(diesel::QueryableByName)]
struct Column {
    #[diesel(sql_type = diesel::sql_types::Text)]
    column_name: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    data_type: String,
}

#[tokio::test]
async fn postgres_columns_use_native_uuid_timestamptz_and_jsonb() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let mut conn = diesel::PgConnection::establish(&app.db.url()).expect("connect");
    let columns: Vec<Column> = diesel::sql_query(
        "SELECT column_name::text, data_type::text FROM information_schema.columns WHERE table_name = 'organisations'",
    )
    .load(&mut conn)
    .expect("columns");
    let type_of = |name: &str| columns.iter().find(|c| c.column_name == name).map(|c| c.data_type.clone());
    assert_eq!(type_of("id").as_deref(), Some("uuid"));
    assert_eq!(type_of("created_at").as_deref(), Some("timestamp with time zone"));
    assert_eq!(type_of("roles").as_deref(), Some("jsonb"));
}

/// Losing PostgreSQL: readiness and database routes answer 503 within
/// seconds, JWKS keeps being served, and everything recovers by itself.
/// (An embedded SQLite file cannot be "lost" while open, so this is
/// PostgreSQL only.)
#[tokio::test]
async fn losing_postgres_gives_503_and_recovers_without_restart() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let admin = app.admin_token().await;
    let name = app.db.name().to_owned();
    app.db.execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"));
    app.db.execute(&format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"));

    let started = std::time::Instant::now();
    let ready = app.client.get(app.url("/health/ready")).send().await.expect("ready");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "503 within 5 s");
    let orgs = app.get("/api/sts/organisation/v1", &admin).await;
    assert_eq!(orgs.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(orgs.headers().contains_key("retry-after"));
    let login = app.token_request(&[("grant_type", "password"), ("username", "admin"), ("password", "x")]).await;
    assert_eq!(login.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = login.json().await.expect("json");
    assert_eq!(body["error"], "temporarily_unavailable");
    let jwks = app.client.get(app.url("/.well-known/jwks.json")).send().await.expect("jwks");
    assert_eq!(jwks.status(), StatusCode::OK, "JWKS is served from memory");

    app.db.execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"));
    let ready = app.client.get(app.url("/health/ready")).send().await.expect("ready");
    assert_eq!(ready.status(), StatusCode::OK, "recovers without restart");
    assert_eq!(app.get("/api/sts/organisation/v1", &admin).await.status(), StatusCode::OK);
}

/// A pooled connection the server closed while it sat idle (a restart, an
/// administrator's `pg_terminate_backend`) is noticed when it is next handed
/// out and replaced: no request fails for it. (PostgreSQL only: SQLite has
/// no server to close it.)
#[tokio::test]
async fn connections_the_server_closed_while_idle_are_replaced_without_failing_a_request() {
    let app = TestApp::spawn_with(Backend::Postgres, |s| s.server.workers = 1).await;
    let admin = app.admin_token().await;
    assert_eq!(app.get("/api/sts/organisation/v1", &admin).await.status(), StatusCode::OK);
    let name = app.db.name().to_owned();
    let open =
        format!("SELECT COUNT(*) AS value FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()");
    assert!(app.db.scalar(&open) > 0, "the pool holds a connection");
    app.db.execute(&format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while app.db.scalar(&open) > 0 {
        assert!(std::time::Instant::now() < deadline, "the backends exit");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for _ in 0..3 {
        assert_eq!(app.get("/api/sts/organisation/v1", &admin).await.status(), StatusCode::OK);
    }
}

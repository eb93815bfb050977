//! The audit trail: every grant decision, admin write and refusal, with who,
//! what, where from and why; never a secret; kept past what it describes;
//! deleted only by the configured retention.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{ADMIN_PASSWORD, Backend, TestApp, password_of};

both_backends! {
    async fn events_carry_subject_request_id_and_source_and_never_a_secret(app) {
        let admin = app.admin_token().await;
        let org = app.create_org(&admin, "Audited", &["ISSUER"]).await;
        let (tech, secret) = app.create_technical(&admin, "backend", &["ISSUING_OPERATOR"]).await;
        app.add_member(&admin, org, tech).await;
        let response = app.client.post(app.url("/api/sts/token/v1")).header("x-request-id", "trace-42")
            .form(&[("grant_type", "client_credentials"), ("client_id", tech.to_string().as_str()), ("client_secret", secret.as_str()), ("organisation_id", org.to_string().as_str())])
            .send().await.expect("request");
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("json");
        let events = app.audit(&admin, "action=token.client_credentials").await;
        let event = events.iter().find(|e| e["requestId"] == "trace-42").expect("the grant's event");
        assert_eq!(event["outcome"], "SUCCESS");
        assert_eq!(event["subject"], tech.to_string());
        assert_eq!(event["organisationId"], org.to_string());
        assert_eq!(event["sourceIp"], "127.0.0.1");
        let everything = app.get("/api/sts/audit/v1?pageSize=1000", &admin).await.text().await.expect("text");
        for secret in [secret.as_str(), ADMIN_PASSWORD, body["access_token"].as_str().expect("at")] {
            assert!(!everything.contains(secret), "no secret in the audit log");
        }
    }

    async fn a_failed_change_leaves_a_failure_event(app) {
        let admin = app.admin_token().await;
        app.create_org(&admin, "Taken", &["HOLDER"]).await;
        app.clock.advance(chrono::Duration::seconds(1));
        let clash = app.post_json("/api/sts/organisation/v1", &admin, &json!({"name": "TAKEN", "roles": ["HOLDER"]})).await;
        assert_eq!(clash.status(), StatusCode::CONFLICT);
        let events = app.audit(&admin, "action=organisation.create").await;
        let outcomes: Vec<&str> = events.iter().filter_map(|e| e["outcome"].as_str()).collect();
        assert_eq!(outcomes, ["FAILURE", "SUCCESS"], "newest first");
        assert!(events[0]["reason"].as_str().is_some_and(|r| r.contains("name")), "{:?}", events[0]);
    }

    async fn the_audit_list_filters_by_subject_action_and_date(app) {
        let admin = app.admin_token().await;
        let admin_id = crate::helpers::claims(&admin)["sub"].as_str().expect("sub").to_owned();
        let before = (chrono::Utc::now() - chrono::Duration::seconds(60)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        app.create_org(&admin, "Filtered", &["HOLDER"]).await;
        let by_subject = app.audit(&admin, &format!("subject={admin_id}&action=organisation.create")).await;
        assert_eq!(by_subject.len(), 1);
        let from = app.audit(&admin, &format!("createdDateFrom={before}")).await;
        assert!(from.len() >= 2);
        let future = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        assert!(app.audit(&admin, &format!("createdDateFrom={future}")).await.is_empty());
        let bad = app.get("/api/sts/audit/v1?createdDateFrom=yesterday", &admin).await;
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        app.create_user(&admin, "no.audit", &["WALLET_USER"]).await;
        let token = app.login("no.audit", &password_of("no.audit"), None).await["access_token"].as_str().expect("at").to_owned();
        assert_eq!(app.get("/api/sts/audit/v1", &token).await.status(), StatusCode::FORBIDDEN);
    }
}

/// With a retention of one day, the periodic job deletes older events and
/// keeps newer ones.
async fn retention_deletes_only_expired_events(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.audit.retention_days = 1;
        s.audit.purge_interval_secs = 1;
    })
    .await;
    let admin = app.admin_token().await;
    app.create_org(&admin, "Old news", &["HOLDER"]).await;
    app.clock.advance(chrono::Duration::days(2));
    let admin = app.admin_token().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let old = app.audit(&admin, "action=organisation.create").await;
        if old.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "expired events are purged");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(!app.audit(&admin, "action=token.password").await.is_empty(), "recent events stay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_only_expired_events_on_postgres() {
    retention_deletes_only_expired_events(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_only_expired_events_on_sqlite() {
    retention_deletes_only_expired_events(Backend::Sqlite).await;
}

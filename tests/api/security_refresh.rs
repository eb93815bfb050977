//! Hostile inputs at refresh, rotation and token exchange (SECURITY.md §1,
//! cases 26–34), race cases with at least 20 parallel requests, repeated.

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::both_backends;
use crate::helpers::{TestApp, password_of};

/// A named exchange request and the error it must get.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";

async fn refresh(app: &TestApp, rt: &str, org: Option<&str>) -> (StatusCode, Value) {
    let mut form = vec![("grant_type", "refresh_token"), ("refresh_token", rt)];
    if let Some(org) = org {
        form.push(("organisation_id", org));
    }
    let response = app.token_request(&form).await;
    let status = response.status();
    (status, response.json().await.expect("json"))
}

/// A member of an Issuer organisation; returns (admin, org, user).
async fn member(app: &TestApp) -> (String, Uuid, Uuid) {
    let admin = app.admin_token().await;
    let org = app.create_org(&admin, "Issuing", &["ISSUER"]).await;
    let user = app.create_user(&admin, "staff", &["ISSUING_OPERATOR"]).await;
    app.add_member(&admin, org, user).await;
    (admin, org, user)
}

fn rt_of(body: &Value) -> String {
    body["refresh_token"].as_str().expect("refresh_token").to_owned()
}

both_backends! {
    async fn case_26_a_replay_after_rotation_kills_the_family_and_is_recorded_once(app) {
        let (admin, org, user) = member(&app).await;
        let rt1 = rt_of(&app.login("staff", &password_of("staff"), Some(org)).await);
        let (_, second) = refresh(&app, &rt1, None).await;
        let rt2 = rt_of(&second);
        let (_, third) = refresh(&app, &rt2, None).await;
        let rt3 = rt_of(&third);
        assert_eq!(refresh(&app, &rt1, None).await.0, StatusCode::BAD_REQUEST, "two generations old");
        assert_eq!(refresh(&app, &rt3, None).await.0, StatusCode::BAD_REQUEST, "the newest died with the family");
        let family = app.db.scalar(&format!("SELECT COUNT(*) AS value FROM refresh_tokens WHERE user_id = '{user}' AND revoked_at IS NULL"));
        assert_eq!(family, 0);
        let denied = app.audit(&admin, &format!("subject={user}&action=token.refresh")).await;
        assert_eq!(denied.iter().filter(|e| e["outcome"] == "DENIED").count(), 1, "one reuse event");
    }

    // Concurrent uses of one family run one after the other (they share a
    // lock); a roomy acquire timeout keeps this a test of the single winner,
    // not of how fast a busy machine serialises twenty transactions.
    async fn case_27_twenty_parallel_uses_of_one_token_yield_one_success_every_time(app)
        where (|s: &mut sts::config::Settings| {
            s.database.acquire_timeout_ms = 15_000;
            s.database.statement_timeout_ms = 15_000;
        })
    {
        let (_, org, _) = member(&app).await;
        for round in 0..10 {
            let rt = rt_of(&app.login("staff", &password_of("staff"), Some(org)).await);
            let uses = (0..20).map(|_| {
                let (client, url, rt) = (app.client.clone(), app.url("/api/sts/token/v1"), rt.clone());
                tokio::spawn(async move {
                    let response = client.post(url).form(&[("grant_type", "refresh_token"), ("refresh_token", rt.as_str())]).send().await.expect("request");
                    (response.status(), response.json::<Value>().await.expect("json"))
                })
            });
            let answers: Vec<_> = futures_util::future::join_all(uses).await.into_iter().map(|a| a.expect("task")).collect();
            let winners: Vec<&Value> = answers.iter().filter(|(s, _)| *s == StatusCode::OK).map(|(_, b)| b).collect();
            assert_eq!(winners.len(), 1, "round {round}: {:?}", answers.iter().map(|a| a.0).collect::<Vec<_>>());
            assert!(answers.iter().all(|(s, _)| *s == StatusCode::OK || *s == StatusCode::BAD_REQUEST), "{answers:?}");
        }
    }

    async fn case_28_a_refresh_racing_a_revocation_leaves_no_usable_token(app) {
        let (_, org, _) = member(&app).await;
        for round in 0..20 {
            let rt = rt_of(&app.login("staff", &password_of("staff"), Some(org)).await);
            let refresh_task = {
                let (client, url, rt) = (app.client.clone(), app.url("/api/sts/token/v1"), rt.clone());
                tokio::spawn(async move {
                    let response = client.post(url).form(&[("grant_type", "refresh_token"), ("refresh_token", rt.as_str())]).send().await.expect("request");
                    response.json::<Value>().await.expect("json")
                })
            };
            let revoke = app.client.post(app.url("/api/sts/token/v1/revoke")).form(&[("token", rt.as_str())]).send().await.expect("revoke");
            assert_eq!(revoke.status(), StatusCode::OK);
            let raced = refresh_task.await.expect("task");
            if let Some(minted) = raced["refresh_token"].as_str() {
                assert_eq!(refresh(&app, minted, None).await.0, StatusCode::BAD_REQUEST, "round {round}: the racing token was revoked too");
            }
        }
    }

    async fn case_29_a_restart_between_rotation_and_replay_still_detects_the_replay(app) {
        let (_, org, _) = member(&app).await;
        let rt1 = rt_of(&app.login("staff", &password_of("staff"), Some(org)).await);
        let (status, second) = refresh(&app, &rt1, None).await;
        assert_eq!(status, StatusCode::OK);
        // A second instance on the same database and keys stands for the
        // restarted process: rotation state lives only in the database.
        let url = app.db.url();
        let keys = app.keys.path().to_owned();
        let mut settings = crate::helpers::test_settings(&url, &keys);
        settings.login.source_failures_per_minute = 10_000;
        let config = settings.resolve().expect("settings");
        let restarted = sts::app::Application::build(config, app.clock.clone()).await.expect("restart");
        let address = format!("http://127.0.0.1:{}", restarted.port());
        tokio::spawn(restarted.run_until_stopped());
        let replay = app.client.post(format!("{address}/api/sts/token/v1")).form(&[("grant_type", "refresh_token"), ("refresh_token", rt1.as_str())]).send().await.expect("replay");
        assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
        assert_eq!(refresh(&app, &rt_of(&second), None).await.0, StatusCode::BAD_REQUEST, "the family is revoked");
    }

    async fn case_30_a_refresh_cannot_widen_into_an_organisation_the_user_is_not_in(app) {
        let (admin, org, _) = member(&app).await;
        let other = app.create_org(&admin, "Elsewhere", &["ISSUER", "VERIFIER"]).await;
        let rt = rt_of(&app.login("staff", &password_of("staff"), Some(org)).await);
        let other = other.to_string();
        let (status, body) = refresh(&app, &rt, Some(&other)).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
        assert_eq!(refresh(&app, &rt, None).await.0, StatusCode::OK, "the refusal did not consume the token");
    }

    async fn case_31_lifetimes_hold(app) {
        let (_, org, _) = member(&app).await;
        let mut rt = rt_of(&app.login("staff", &password_of("staff"), Some(org)).await);
        for _ in 0..3 {
            app.clock.advance(chrono::Duration::hours(7));
            let (status, body) = refresh(&app, &rt, None).await;
            assert_eq!(status, StatusCode::OK, "within the 8 h idle time");
            rt = rt_of(&body);
        }
        app.clock.advance(chrono::Duration::hours(4));
        assert_eq!(refresh(&app, &rt, None).await.0, StatusCode::BAD_REQUEST, "never beyond the 24 h family lifetime");
        let idle = rt_of(&app.login("staff", &password_of("staff"), Some(org)).await);
        app.clock.advance(chrono::Duration::hours(8) + chrono::Duration::seconds(1));
        assert_eq!(refresh(&app, &idle, None).await.0, StatusCode::BAD_REQUEST, "idle past 8 h");
    }

    async fn case_32_33_exchange_refuses_missing_rights_and_bad_input(app) {
        let (admin, org, _) = member(&app).await;
        let other = app.create_org(&admin, "Not mine", &["ISSUER"]).await.to_string();
        let subject = app.login("staff", &password_of("staff"), Some(org)).await["access_token"].as_str().expect("at").to_owned();
        let (plain, secret) = app.create_technical(&admin, "no-delegation", &["ISSUING_OPERATOR"]).await;
        let actor = app.token_request(&[("grant_type", "client_credentials"), ("client_id", &plain.to_string()), ("client_secret", &secret)]).await;
        let actor = actor.json::<Value>().await.expect("json")["access_token"].as_str().expect("at").to_owned();
        let org_s = org.to_string();
        let expired = {
            app.clock.advance(chrono::Duration::seconds(400));
            subject.clone()
        };
        let cases: Vec<Case> = vec![
            ("subject_token missing", vec![("subject_token_type", ACCESS), ("organisation_id", &org_s)], "invalid_request"),
            ("subject_token empty", vec![("subject_token", ""), ("subject_token_type", ACCESS), ("organisation_id", &org_s)], "invalid_request"),
            ("expired subject", vec![("subject_token", &expired), ("subject_token_type", ACCESS), ("organisation_id", &org_s)], "invalid_request"),
            ("forged subject", vec![("subject_token", "eyJhbGciOiJub25lIn0.e30."), ("subject_token_type", ACCESS), ("organisation_id", &org_s)], "invalid_request"),
            ("wrong subject type", vec![("subject_token", &subject), ("subject_token_type", "urn:ietf:params:oauth:token-type:refresh_token"), ("organisation_id", &org_s)], "invalid_request"),
            ("actor without type", vec![("subject_token", &subject), ("subject_token_type", ACCESS), ("actor_token", &actor), ("organisation_id", &org_s)], "invalid_request"),
            ("actor may not delegate", vec![("subject_token", &subject), ("subject_token_type", ACCESS), ("actor_token", &actor), ("actor_token_type", ACCESS), ("organisation_id", &org_s)], "invalid_request"),
            ("unknown requested type", vec![("subject_token", &subject), ("subject_token_type", ACCESS), ("requested_token_type", "urn:x"), ("organisation_id", &org_s)], "invalid_request"),
        ];
        for (case, mut fields, error) in cases {
            fields.push(("grant_type", EXCHANGE));
            let response = app.token_request(&fields).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{case}");
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["error"], error, "{case}");
            assert!(body.get("access_token").is_none());
        }
        let fresh = app.login("staff", &password_of("staff"), Some(org)).await["access_token"].as_str().expect("at").to_owned();
        // A valid subject asking for an organisation that is not theirs:
        // invalid_grant, per CONTRACT §3.
        let not_member = app.token_request(&[("grant_type", EXCHANGE), ("subject_token", &fresh), ("subject_token_type", ACCESS), ("organisation_id", &other)]).await;
        let body: Value = not_member.json().await.expect("json");
        assert_eq!(body["error"], "invalid_grant", "not a member of the target organisation");
    }

    async fn case_34_security_events_end_sessions_at_once(app) {
        let (admin, org, user) = member(&app).await;
        let rt = rt_of(&app.login("staff", &password_of("staff"), Some(org)).await);
        let changed = app.patch_json(&format!("/api/sts/user/v1/{user}"), &admin, &json!({"password": "a-new-password-for-staff"})).await;
        assert_eq!(changed.status(), StatusCode::NO_CONTENT);
        assert_eq!(refresh(&app, &rt, None).await.0, StatusCode::BAD_REQUEST, "a password change ends refresh tokens");
        let (tech, secret) = app.create_technical(&admin, "svc", &["ISSUING_OPERATOR"]).await;
        app.patch_json(&format!("/api/sts/user/v1/{tech}"), &admin, &json!({"disabled": true})).await;
        let cc = app.token_request(&[("grant_type", "client_credentials"), ("client_id", &tech.to_string()), ("client_secret", &secret)]).await;
        assert_eq!(cc.status(), StatusCode::BAD_REQUEST, "a disabled technical user gets no token");
    }
}

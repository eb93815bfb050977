//! Hostile inputs at the password and client-credential grants
//! (SECURITY.md §1, cases 16–25): no answer tells accounts apart, caps come
//! before hashing, throttling holds under parallel guessing and spraying.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{TestApp, password_of};

const GENERIC: &str = r#"{"error":"invalid_grant","error_description":"the grant is invalid, expired or revoked"}"#;

async fn comparisons(app: &TestApp) -> u64 {
    let text = app.client.get(app.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    text.lines()
        .find(|l| l.starts_with("password_comparisons_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn password_attempt(app: &TestApp, username: &str, password: &str, org: Option<&str>) -> (StatusCode, String) {
    let mut form = vec![("grant_type", "password"), ("username", username), ("password", password)];
    if let Some(org) = org {
        form.push(("organisation_id", org));
    }
    let response = app.token_request(&form).await;
    (response.status(), response.text().await.expect("body"))
}

both_backends! {
    async fn case_16_every_refusal_reads_the_same(app) {
        let admin = app.admin_token().await;
        let org = app.create_org(&admin, "Off", &["HOLDER"]).await;
        let member = app.create_user(&admin, "member", &["WALLET_USER"]).await;
        app.add_member(&admin, org, member).await;
        app.patch_json(&format!("/api/sts/organisation/v1/{org}"), &admin, &json!({"deactivate": true})).await;
        let disabled = app.create_user(&admin, "disabled", &["WALLET_USER"]).await;
        app.patch_json(&format!("/api/sts/user/v1/{disabled}"), &admin, &json!({"disabled": true})).await;
        app.create_user(&admin, "locked", &["WALLET_USER"]).await;
        for _ in 0..6 {
            password_attempt(&app, "locked", "wrong-password-0123456789", None).await;
        }
        app.create_technical(&admin, "machine", &[]).await;
        let org_s = org.to_string();
        let cases = [
            ("wrong password", password_attempt(&app, "admin", "wrong-password-0123456789", None).await),
            ("unknown user", password_attempt(&app, "nobody", "wrong-password-0123456789", None).await),
            ("disabled user, right password", password_attempt(&app, "disabled", &password_of("disabled"), None).await),
            ("deactivated organisation", password_attempt(&app, "member", &password_of("member"), Some(&org_s)).await),
            ("locked user, right password", password_attempt(&app, "locked", &password_of("locked"), None).await),
            ("technical user (no password)", password_attempt(&app, "machine", "wrong-password-0123456789", None).await),
        ];
        for (case, answer) in cases {
            assert_eq!(answer, (StatusCode::BAD_REQUEST, GENERIC.to_owned()), "{case}");
        }
    }

    async fn case_18_malformed_credentials_get_400_never_500(app) {
        let forms: Vec<Vec<(&str, String)>> = vec![
            vec![("grant_type", "password".into()), ("username", "".into()), ("password", "".into())],
            vec![("grant_type", "password".into()), ("username", "   ".into()), ("password", " ".into())],
            vec![("grant_type", "password".into()), ("username", "admin".into()), ("password", "admin\0password".into())],
            vec![("grant_type", "password".into()), ("username", "u".repeat(10_240)), ("password", "x".into())],
            vec![("grant_type", "password".into()), ("username", "a".into()), ("username", "b".into()), ("password", "x".into())],
        ];
        for form in forms {
            let response = app.client.post(app.url("/api/sts/token/v1")).form(&form).send().await.expect("request");
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{:?}", form.iter().map(|(k, v)| (k, v.len())).collect::<Vec<_>>());
            let body: Value = response.json().await.expect("json");
            assert!(matches!(body["error"].as_str(), Some("invalid_request" | "invalid_grant")), "{body}");
        }
        let raw = [
            ("application/x-www-form-urlencoded", b"grant_type=password&username=%FF%FE&password=x".to_vec()),
            ("application/json", b"{\"grant_type\":\"password\",".to_vec()),
            ("text/plain", b"grant_type=password&username=admin&password=x".to_vec()),
            ("application/x-www-form-urlencoded", b"grant_type=password&username[]=a&username[]=b&password=x".to_vec()),
        ];
        for (content_type, body) in raw {
            let response = app.client.post(app.url("/api/sts/token/v1")).header("content-type", content_type).body(body).send().await.expect("request");
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{content_type}");
        }
    }

    async fn case_19_oversized_input_is_refused_before_any_hashing(app) {
        let before = comparisons(&app).await;
        let (status, _) = password_attempt(&app, "admin", &"p".repeat(1024 * 1024), None).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        let (status, body) = password_attempt(&app, "admin", &"p".repeat(1025), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body.contains("invalid_request"));
        let fields: String = (0..10_000).map(|i| format!("f{i}=x&")).collect();
        let response = app.client.post(app.url("/api/sts/token/v1")).header("content-type", "application/x-www-form-urlencoded")
            .body(format!("{fields}grant_type=password&username=admin&password=x")).send().await.expect("request");
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(comparisons(&app).await, before, "no password was compared");
    }

    async fn case_20_two_hundred_parallel_guesses_are_counted_exactly_and_only_the_free_ones_compare(app) {
        let admin = app.admin_token().await;
        let victim = app.create_user(&admin, "victim", &["WALLET_USER"]).await;
        let before = comparisons(&app).await;
        let guesses = (0..200).map(|i| {
            let (client, url) = (app.client.clone(), app.url("/api/sts/token/v1"));
            tokio::spawn(async move {
                let password = format!("guess-number-{i:04}-long-enough");
                let form = [("grant_type", "password"), ("username", "victim"), ("password", password.as_str())];
                client.post(url).form(&form).send().await.expect("request").status()
            })
        });
        for status in futures_util::future::join_all(guesses).await {
            assert_eq!(status.expect("task"), StatusCode::BAD_REQUEST);
        }
        let failures = app.db.scalar(&format!("SELECT CAST(failed_logins AS BIGINT) AS value FROM users WHERE id = '{victim}'"));
        assert_eq!(failures, 200, "every attempt counted, atomically");
        assert_eq!(comparisons(&app).await - before, 5, "only the free failures reach a real comparison");
        let (status, body) = password_attempt(&app, "victim", &password_of("victim"), None).await;
        assert_eq!((status, body), (StatusCode::BAD_REQUEST, GENERIC.to_owned()), "the right password is refused too while locked");
    }

    async fn case_21_a_locked_account_keeps_its_sessions_and_an_admin_reset_unlocks_it(app) {
        let admin = app.admin_token().await;
        let victim = app.create_user(&admin, "victim", &["WALLET_USER"]).await;
        let session = app.login("victim", &password_of("victim"), None).await["refresh_token"].as_str().expect("rt").to_owned();
        for _ in 0..25 {
            password_attempt(&app, "victim", "attacker-guess-0123456789", None).await;
        }
        let refreshed = app.token_request(&[("grant_type", "refresh_token"), ("refresh_token", &session)]).await;
        assert_eq!(refreshed.status(), StatusCode::OK, "existing sessions survive a lockout");
        app.clock.advance(chrono::Duration::minutes(16));
        let (status, _) = password_attempt(&app, "victim", &password_of("victim"), None).await;
        assert_eq!(status, StatusCode::OK, "the lock is temporary");
        for _ in 0..25 {
            password_attempt(&app, "victim", "attacker-guess-0123456789", None).await;
        }
        let admin = app.admin_token().await;
        let reset = app.patch_json(&format!("/api/sts/user/v1/{victim}"), &admin, &json!({"password": "a-fresh-password-from-admin"})).await;
        assert_eq!(reset.status(), StatusCode::NO_CONTENT);
        let (status, _) = password_attempt(&app, "victim", "a-fresh-password-from-admin", None).await;
        assert_eq!(status, StatusCode::OK, "an admin's reset lifts the lock");
        let events = app.audit(&admin, &format!("subject={victim}&action=token.password")).await;
        assert!(events.iter().any(|e| e["reason"].as_str().is_some_and(|r| r.starts_with("account throttled"))), "throttling is audited");
    }

    async fn case_22_spraying_from_one_address_gets_429_and_forwarded_headers_do_not_reset_it(app)
        where (|s: &mut sts::config::Settings| s.login.source_failures_per_minute = 20)
    {
        for i in 0..20 {
            let (status, _) = password_attempt(&app, &format!("user{i}"), "Summer2026!-is-long", None).await;
            assert_eq!(status, StatusCode::BAD_REQUEST);
        }
        let response = app.client.post(app.url("/api/sts/token/v1")).header("x-forwarded-for", "203.0.113.9")
            .form(&[("grant_type", "password"), ("username", "user99"), ("password", "Summer2026!-is-long")]).send().await.expect("request");
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = response.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
        assert!((1..=60).contains(&retry));
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"], "slow_down");
        let client_credentials = app.token_request(&[("grant_type", "client_credentials"), ("client_id", "x"), ("client_secret", "y")]).await;
        assert_eq!(client_credentials.status(), StatusCode::TOO_MANY_REQUESTS, "every credential path shares the limit");
    }

    async fn case_24_client_authentication_is_strict(app) {
        let admin = app.admin_token().await;
        let (a, secret_a) = app.create_technical(&admin, "client-a", &[]).await;
        let (_, secret_b) = app.create_technical(&admin, "client-b", &[]).await;
        let a = a.to_string();
        for (case, secret) in [("another client's secret", secret_b.clone()), ("trailing newline", format!("{secret_a}\n")), ("empty", String::new())] {
            let response = app.token_request(&[("grant_type", "client_credentials"), ("client_id", &a), ("client_secret", &secret)]).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{case}");
            assert_eq!(response.headers()["www-authenticate"], r#"Basic realm="sts""#);
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["error"], "invalid_client", "{case}");
        }
        let both_equal = app.client.post(app.url("/api/sts/token/v1")).basic_auth(&a, Some(&secret_a))
            .form(&[("grant_type", "client_credentials"), ("client_id", a.as_str()), ("client_secret", secret_a.as_str())]).send().await.expect("request");
        assert_eq!(both_equal.status(), StatusCode::BAD_REQUEST, "two methods at once");
        let escaped = app.client.post(app.url("/api/sts/token/v1")).basic_auth(&a, Some(secret_a.replace('-', "%2D")))
            .form(&[("grant_type", "client_credentials")]).send().await.expect("request");
        assert_eq!(escaped.status(), StatusCode::OK, "Basic credentials are form-urlencoded once (RFC 6749 §2.3.1)");
    }

    async fn case_25_technical_users_get_no_refresh_token_and_distinct_subjects(app) {
        let admin = app.admin_token().await;
        let admin_sub = crate::helpers::claims(&admin)["sub"].as_str().expect("sub").to_owned();
        let clash = app.post_json("/api/sts/user/v1", &admin, &json!({"username": admin_sub, "type": "TECHNICAL", "systemRoles": []})).await;
        assert_eq!(clash.status(), StatusCode::CREATED, "a username is just a name");
        let body: Value = clash.json().await.expect("json");
        let id = body["id"].as_str().expect("id").to_owned();
        assert_ne!(id, admin_sub, "subjects are generated UUIDs, never names");
        let token = app.token_request(&[("grant_type", "client_credentials"), ("client_id", &id), ("client_secret", body["clientSecret"].as_str().expect("secret"))]).await;
        let token: Value = token.json().await.expect("json");
        assert!(token.get("refresh_token").is_none());
        assert_eq!(crate::helpers::claims(token["access_token"].as_str().expect("at"))["sub"], id);
    }
}

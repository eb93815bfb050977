//! The token endpoint: four grants, refresh rotation and reuse, revocation,
//! and the rules Core applies to what we issue.

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::both_backends;
use crate::helpers::{TestApp, claims, password_of, permissions};

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";

/// What the role mapping says a user with `system_roles` gets in an
/// organisation with `org_roles`, computed from `GET /api/sts/role/v1`.
async fn expected(app: &TestApp, token: &str, system_roles: &[&str], org_roles: &[&str]) -> Vec<String> {
    let roles: Value = app.get("/api/sts/role/v1", token).await.json().await.expect("json");
    crate::helpers::intersection_from_mapping(&roles, system_roles, org_roles)
}

async fn error_of(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().await.expect("json");
    (status, body["error"].as_str().unwrap_or_default().to_owned())
}

/// An organisation with a member; returns (admin token, org, user id, username).
async fn member_of_issuer(app: &TestApp) -> (String, Uuid, Uuid, String) {
    let admin = app.admin_token().await;
    let org = app.create_org(&admin, "PID Issuance", &["ISSUER"]).await;
    let user = app.create_user(&admin, "issuer.staff", &["ISSUING_OPERATOR", "VERIFYING_OPERATOR"]).await;
    app.add_member(&admin, org, user).await;
    (admin, org, user, "issuer.staff".to_owned())
}

both_backends! {
    async fn a_password_grant_issues_a_system_token_core_accepts(app) {
        let response = app.token_request(&[("grant_type", "password"), ("username", "admin"), ("password", crate::helpers::ADMIN_PASSWORD)]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["cache-control"], "no-store");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 300);
        assert!(body["refresh_token"].as_str().is_some_and(|t| t.len() >= 43));
        let claims = app.verify_like_core(body["access_token"].as_str().expect("token")).await;
        assert!(claims.get("organisationId").is_none(), "a system token has no organisation");
        let perms = permissions(body["access_token"].as_str().expect("token"));
        assert!(perms.contains(&"STS_ORGANISATION_CREATE".to_owned()));
        assert!(perms.iter().all(|p| p.starts_with("STS_") || p.starts_with("SYSTEM_")), "{perms:?}");
        assert_eq!(claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"), 300);
    }

    async fn an_organisation_token_holds_user_permissions_within_the_ceiling(app) {
        let (admin, org, _, username) = member_of_issuer(&app).await;
        let body = app.login(&username, &password_of(&username), Some(org)).await;
        let token = body["access_token"].as_str().expect("token");
        let claims = app.verify_like_core(token).await;
        assert_eq!(claims["organisationId"], org.to_string());
        assert_eq!(body["organisation_id"], org.to_string());
        let granted = permissions(token);
        assert_eq!(granted, expected(&app, &admin, &["ISSUING_OPERATOR", "VERIFYING_OPERATOR"], &["ISSUER"]).await);
        assert!(granted.contains(&"CREDENTIAL_ISSUE".to_owned()));
        assert!(!granted.contains(&"PROOF_ISSUE".to_owned()), "the Issuer ceiling removes verifying");
    }

    async fn non_members_and_unknown_organisations_get_invalid_grant(app) {
        let (admin, _, _, username) = member_of_issuer(&app).await;
        let other = app.create_org(&admin, "Other", &["VERIFIER"]).await;
        for org in [other, Uuid::new_v4()] {
            let org = org.to_string();
            let response = app.token_request(&[("grant_type", "password"), ("username", &username), ("password", &password_of(&username)), ("organisation_id", &org)]).await;
            assert_eq!(error_of(response).await, (StatusCode::BAD_REQUEST, "invalid_grant".into()));
        }
    }

    async fn an_unknown_user_and_a_wrong_password_get_the_same_answer(app) {
        let wrong = app.token_request(&[("grant_type", "password"), ("username", "admin"), ("password", "not-the-password-at-all")]).await;
        let unknown = app.token_request(&[("grant_type", "password"), ("username", "nobody"), ("password", "not-the-password-at-all")]).await;
        assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
        assert_eq!(wrong.status(), unknown.status());
        assert_eq!(wrong.text().await.expect("body"), unknown.text().await.expect("body"));
        let admin = app.admin_token().await;
        let failures = app.audit(&admin, "action=token.password").await;
        assert!(failures.iter().any(|e| e["outcome"] == "FAILURE" && e["subject"] == "nobody"), "failed login recorded with the attempted name");
    }

    async fn a_refresh_rotates_and_a_replay_revokes_the_whole_family(app) {
        let (admin, org, user, username) = member_of_issuer(&app).await;
        let first = app.login(&username, &password_of(&username), Some(org)).await;
        let rt1 = first["refresh_token"].as_str().expect("rt").to_owned();
        let second = app.token_request(&[("grant_type", "refresh_token"), ("refresh_token", &rt1)]).await;
        assert_eq!(second.status(), StatusCode::OK);
        let second: Value = second.json().await.expect("json");
        let rt2 = second["refresh_token"].as_str().expect("rt").to_owned();
        assert_ne!(rt1, rt2, "rotated");
        assert_eq!(claims(second["access_token"].as_str().expect("at"))["organisationId"], org.to_string(), "stays in its organisation");

        let replay = app.token_request(&[("grant_type", "refresh_token"), ("refresh_token", &rt1)]).await;
        assert_eq!(error_of(replay).await, (StatusCode::BAD_REQUEST, "invalid_grant".into()));
        let after = app.token_request(&[("grant_type", "refresh_token"), ("refresh_token", &rt2)]).await;
        assert_eq!(error_of(after).await.1, "invalid_grant", "the family died with the replay");
        let events = app.audit(&admin, &format!("subject={user}&action=token.refresh")).await;
        assert!(events.iter().any(|e| e["outcome"] == "DENIED"), "{events:?}");
    }

    async fn ten_parallel_uses_of_one_refresh_token_yield_exactly_one_success(app) {
        let (_, org, _, username) = member_of_issuer(&app).await;
        let rt = app.login(&username, &password_of(&username), Some(org)).await["refresh_token"].as_str().expect("rt").to_owned();
        let attempts = (0..10).map(|_| {
            let (client, url, rt) = (app.client.clone(), app.url("/api/sts/token/v1"), rt.clone());
            tokio::spawn(async move {
                client.post(url).form(&[("grant_type", "refresh_token"), ("refresh_token", rt.as_str())]).send().await.expect("request").status()
            })
        });
        let statuses = futures_util::future::join_all(attempts).await;
        let ok = statuses.iter().filter(|s| matches!(s, Ok(StatusCode::OK))).count();
        assert_eq!(ok, 1, "{statuses:?}");
    }

    async fn a_refresh_token_switches_organisation_without_a_password(app) {
        let (admin, org, user, username) = member_of_issuer(&app).await;
        let verifier = app.create_org(&admin, "Department A Verification", &["VERIFIER"]).await;
        app.add_member(&admin, verifier, user).await;
        let rt = app.login(&username, &password_of(&username), Some(org)).await["refresh_token"].as_str().expect("rt").to_owned();
        let target = verifier.to_string();
        let switched = app.token_request(&[("grant_type", "refresh_token"), ("refresh_token", &rt), ("organisation_id", &target)]).await;
        assert_eq!(switched.status(), StatusCode::OK);
        let body: Value = switched.json().await.expect("json");
        let token = body["access_token"].as_str().expect("at");
        assert_eq!(claims(token)["organisationId"], target);
        assert!(permissions(token).contains(&"PROOF_ISSUE".to_owned()));
        assert!(!permissions(token).contains(&"CREDENTIAL_ISSUE".to_owned()));
    }

    async fn client_credentials_issue_tokens_without_a_refresh_token(app) {
        let admin = app.admin_token().await;
        let org = app.create_org(&admin, "Issuer Backend", &["ISSUER"]).await;
        let (id, secret) = app.create_technical(&admin, "issuer-backend", &["ISSUING_OPERATOR"]).await;
        app.add_member(&admin, org, id).await;
        let org_s = org.to_string();
        let id_s = id.to_string();
        let body = app.client.post(app.url("/api/sts/token/v1")).basic_auth(&id_s, Some(&secret))
            .form(&[("grant_type", "client_credentials"), ("organisation_id", org_s.as_str())]).send().await.expect("request");
        assert_eq!(body.status(), StatusCode::OK);
        let body: Value = body.json().await.expect("json");
        assert!(body.get("refresh_token").is_none(), "never a refresh token for client credentials");
        let claims = app.verify_like_core(body["access_token"].as_str().expect("at")).await;
        assert_eq!(claims["sub"], id_s);
        assert_eq!(claims["organisationId"], org_s);

        let in_body = app.token_request(&[("grant_type", "client_credentials"), ("client_id", &id_s), ("client_secret", &secret)]).await;
        assert_eq!(in_body.status(), StatusCode::OK, "secret in the body works too");

        let wrong = app.client.post(app.url("/api/sts/token/v1")).basic_auth(&id_s, Some("wrong"))
            .form(&[("grant_type", "client_credentials")]).send().await.expect("request");
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        assert!(wrong.headers().contains_key("www-authenticate"));
        assert_eq!(error_of(wrong).await.1, "invalid_client");

        let both = app.client.post(app.url("/api/sts/token/v1")).basic_auth(&id_s, Some(&secret))
            .form(&[("grant_type", "client_credentials"), ("client_secret", secret.as_str())]).send().await.expect("request");
        assert_eq!(error_of(both).await, (StatusCode::BAD_REQUEST, "invalid_request".into()));

        let rotated = app.client.post(app.url(&format!("/api/sts/user/v1/{id}/secret"))).bearer_auth(&admin).send().await.expect("rotate");
        assert_eq!(rotated.status(), StatusCode::OK);
        let old = app.token_request(&[("grant_type", "client_credentials"), ("client_id", &id_s), ("client_secret", &secret)]).await;
        assert_eq!(old.status(), StatusCode::UNAUTHORIZED, "the old secret stops working at rotation");
    }

    async fn client_credentials_judge_the_secret_before_the_organisation(app) {
        let admin = app.admin_token().await;
        let (id, secret) = app.create_technical(&admin, "outsider", &["ISSUING_OPERATOR"]).await;
        let elsewhere = app.create_org(&admin, "Not Theirs", &["ISSUER"]).await.to_string();
        let id_s = id.to_string();
        let ask = |secret: String, organisation: Option<String>| {
            let app = &app;
            let id_s = id_s.clone();
            async move {
                let mut form = vec![("grant_type", "client_credentials".to_owned()), ("client_id", id_s), ("client_secret", secret)];
                form.extend(organisation.map(|o| ("organisation_id", o)));
                let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
                error_of(app.token_request(&form).await).await
            }
        };
        let refused_grant = (StatusCode::BAD_REQUEST, "invalid_grant".to_owned());
        let refused_client = (StatusCode::UNAUTHORIZED, "invalid_client".to_owned());
        assert_eq!(ask(secret.clone(), Some(elsewhere.clone())).await, refused_grant, "the right secret, not a member");
        assert_eq!(ask("wrong".into(), Some(elsewhere.clone())).await, refused_client, "a wrong secret says nothing of membership");
        assert_eq!(ask("wrong".into(), None).await, refused_client);
        let disabled = app.patch_json(&format!("/api/sts/user/v1/{id}"), &admin, &json!({"disabled": true})).await;
        assert_eq!(disabled.status(), StatusCode::NO_CONTENT);
        assert_eq!(ask(secret.clone(), None).await, refused_grant, "the right secret, disabled");
        assert_eq!(ask("wrong".into(), None).await, refused_client, "a wrong secret says nothing of the account's state");
        let person = app.create_user(&admin, "person", &["ISSUING_OPERATOR"]).await.to_string();
        let as_person = app.token_request(&[("grant_type", "client_credentials"), ("client_id", &person), ("client_secret", &password_of("person"))]).await;
        assert_eq!(error_of(as_person).await, refused_client, "a person is not a client");
        let reasons: Vec<_> = app.audit(&admin, "action=token.client_credentials").await.into_iter().map(|e| e["reason"].clone()).collect();
        assert!(reasons.contains(&json!("user disabled")) && reasons.contains(&json!("invalid client credentials")), "{reasons:?}");
    }

    async fn token_exchange_switches_organisation_and_delegates_with_act(app) {
        let (admin, org, user, username) = member_of_issuer(&app).await;
        let second = app.create_org(&admin, "Employee Credentials", &["ISSUER", "VERIFIER"]).await;
        app.add_member(&admin, second, user).await;
        let subject = app.login(&username, &password_of(&username), Some(org)).await["access_token"].as_str().expect("at").to_owned();
        let target = second.to_string();

        let switched = app.token_request(&[("grant_type", EXCHANGE), ("subject_token", &subject), ("subject_token_type", ACCESS), ("organisation_id", &target)]).await;
        assert_eq!(switched.status(), StatusCode::OK);
        let body: Value = switched.json().await.expect("json");
        assert_eq!(body["issued_token_type"], ACCESS);
        let exchanged = app.verify_like_core(body["access_token"].as_str().expect("at")).await;
        assert_eq!(exchanged["organisationId"], target);
        assert!(exchanged.get("act").is_none());
        assert!(exchanged["exp"].as_i64() <= claims(&subject)["exp"].as_i64(), "never outlives the subject token");

        let (actor, secret) = app.create_technical(&admin, "wallet-backend", &["DELEGATION_SERVICE", "ISSUING_OPERATOR"]).await;
        app.add_member(&admin, second, actor).await;
        let actor_token = app.token_request(&[("grant_type", "client_credentials"), ("client_id", &actor.to_string()), ("client_secret", &secret)]).await;
        let actor_token: Value = actor_token.json().await.expect("json");
        let actor_token = actor_token["access_token"].as_str().expect("at").to_owned();
        let delegated = app.token_request(&[("grant_type", EXCHANGE), ("subject_token", &subject), ("subject_token_type", ACCESS), ("actor_token", &actor_token), ("actor_token_type", ACCESS), ("organisation_id", &target)]).await;
        assert_eq!(delegated.status(), StatusCode::OK);
        let delegated: Value = delegated.json().await.expect("json");
        let delegated = delegated["access_token"].as_str().expect("at").to_owned();
        let claims_d = app.verify_like_core(&delegated).await;
        assert_eq!(claims_d["sub"], user.to_string());
        assert_eq!(claims_d["act"], json!({"sub": actor.to_string()}));
        let perms = permissions(&delegated);
        assert!(perms.contains(&"CREDENTIAL_ISSUE".to_owned()));
        assert!(!perms.contains(&"PROOF_ISSUE".to_owned()), "limited to what the actor may do there");

        let chained = app.token_request(&[("grant_type", EXCHANGE), ("subject_token", &delegated), ("subject_token_type", ACCESS), ("organisation_id", &target)]).await;
        assert_eq!(error_of(chained).await, (StatusCode::BAD_REQUEST, "invalid_request".into()), "no delegation chains");
        let forged = app.token_request(&[("grant_type", EXCHANGE), ("subject_token", "e30.e30.e30"), ("subject_token_type", ACCESS), ("organisation_id", &target)]).await;
        assert_eq!(error_of(forged).await, (StatusCode::BAD_REQUEST, "invalid_request".into()));
    }

    async fn a_disabled_user_gets_no_token_and_their_refresh_tokens_die(app) {
        let (admin, org, user, username) = member_of_issuer(&app).await;
        let rt = app.login(&username, &password_of(&username), Some(org)).await["refresh_token"].as_str().expect("rt").to_owned();
        let disabled = app.patch_json(&format!("/api/sts/user/v1/{user}"), &admin, &json!({"disabled": true})).await;
        assert_eq!(disabled.status(), StatusCode::NO_CONTENT);
        let login = app.token_request(&[("grant_type", "password"), ("username", &username), ("password", &password_of(&username))]).await;
        assert_eq!(error_of(login).await.1, "invalid_grant");
        let refresh = app.token_request(&[("grant_type", "refresh_token"), ("refresh_token", &rt)]).await;
        assert_eq!(error_of(refresh).await.1, "invalid_grant");
    }

    async fn a_deactivated_organisation_yields_no_token_on_any_path_until_reactivated(app) {
        let (admin, org, user, username) = member_of_issuer(&app).await;
        let (tech, secret) = app.create_technical(&admin, "issuer-backend", &["ISSUING_OPERATOR"]).await;
        app.add_member(&admin, org, tech).await;
        let home = app.create_org(&admin, "Home", &["HOLDER"]).await;
        app.add_member(&admin, home, user).await;
        let login = app.login(&username, &password_of(&username), Some(org)).await;
        let rt = login["refresh_token"].as_str().expect("rt").to_owned();
        let home_token = app.login(&username, &password_of(&username), Some(home)).await["access_token"].as_str().expect("at").to_owned();
        let org_s = org.to_string();

        let patched = app.patch_json(&format!("/api/sts/organisation/v1/{org}"), &admin, &json!({"deactivate": true})).await;
        assert_eq!(patched.status(), StatusCode::NO_CONTENT);
        let attempts = [
            app.token_request(&[("grant_type", "password"), ("username", &username), ("password", &password_of(&username)), ("organisation_id", &org_s)]).await,
            app.token_request(&[("grant_type", "refresh_token"), ("refresh_token", &rt)]).await,
            app.token_request(&[("grant_type", "client_credentials"), ("client_id", &tech.to_string()), ("client_secret", &secret), ("organisation_id", &org_s)]).await,
            app.token_request(&[("grant_type", EXCHANGE), ("subject_token", &home_token), ("subject_token_type", ACCESS), ("organisation_id", &org_s)]).await,
        ];
        for attempt in attempts {
            assert_eq!(error_of(attempt).await, (StatusCode::BAD_REQUEST, "invalid_grant".into()));
        }
        let detail: Value = app.get(&format!("/api/sts/organisation/v1/{org}"), &admin).await.json().await.expect("json");
        assert_eq!(detail["status"], "DEACTIVATED", "still readable");
        assert!(detail["deactivatedAt"].is_string());

        let reactivated = app.patch_json(&format!("/api/sts/organisation/v1/{org}"), &admin, &json!({"deactivate": false})).await;
        assert_eq!(reactivated.status(), StatusCode::NO_CONTENT);
        let again = app.token_request(&[("grant_type", "refresh_token"), ("refresh_token", &rt)]).await;
        assert_eq!(again.status(), StatusCode::OK, "the refresh token was not consumed by the refusal");
    }

    async fn revoking_a_refresh_token_ends_its_family(app) {
        let rt = app.login("admin", crate::helpers::ADMIN_PASSWORD, None).await["refresh_token"].as_str().expect("rt").to_owned();
        let revoked = app.client.post(app.url("/api/sts/token/v1/revoke")).form(&[("token", rt.as_str())]).send().await.expect("revoke");
        assert_eq!(revoked.status(), StatusCode::OK);
        let unknown = app.client.post(app.url("/api/sts/token/v1/revoke")).form(&[("token", "unknown")]).send().await.expect("revoke");
        assert_eq!(unknown.status(), StatusCode::OK, "unknown tokens are not revealed");
        let refresh = app.token_request(&[("grant_type", "refresh_token"), ("refresh_token", &rt)]).await;
        assert_eq!(error_of(refresh).await.1, "invalid_grant");
    }

    async fn bad_token_requests_get_rfc_6749_errors(app) {
        let cases: [(&[(&str, &str)], &str); 4] = [
            (&[("grant_type", "implicit")], "unsupported_grant_type"),
            (&[("username", "admin")], "invalid_request"),
            (&[("grant_type", "password"), ("username", "admin")], "invalid_request"),
            (&[("grant_type", "password"), ("username", "admin"), ("password", "x"), ("organisation_id", "not-a-uuid")], "invalid_request"),
        ];
        for (form, error) in cases {
            assert_eq!(error_of(app.token_request(form).await).await, (StatusCode::BAD_REQUEST, error.into()), "{form:?}");
        }
        let json = app.client.post(app.url("/api/sts/token/v1")).json(&json!({"grant_type": "password", "username": "admin", "password": crate::helpers::ADMIN_PASSWORD})).send().await.expect("request");
        assert_eq!(json.status(), StatusCode::OK, "a JSON body is accepted too");
    }

    async fn the_server_metadata_names_the_endpoints(app) {
        let body: Value = app.client.get(app.url("/.well-known/oauth-authorization-server")).send().await.expect("metadata").json().await.expect("json");
        assert_eq!(body["issuer"], "http://sts.test");
        assert_eq!(body["jwks_uri"], "http://sts.test/.well-known/jwks.json");
        assert_eq!(body["token_endpoint"], "http://sts.test/api/sts/token/v1");
        assert_eq!(body["revocation_endpoint"], "http://sts.test/api/sts/token/v1/revoke");
        assert_eq!(body["grant_types_supported"].as_array().map(Vec::len), Some(4));
    }

    async fn an_expired_token_is_refused_by_the_admin_api(app) {
        let admin = app.admin_token().await;
        assert_eq!(app.get("/api/sts/organisation/v1", &admin).await.status(), StatusCode::OK);
        app.clock.advance(chrono::Duration::seconds(300 + 6));
        let response = app.get("/api/sts/organisation/v1", &admin).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()["www-authenticate"], r#"Bearer error="invalid_token""#);
    }
}

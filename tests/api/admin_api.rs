//! What every admin route shares: authentication before input, 405 for a
//! wrong method, the OpenAPI description, no escalation through user admin.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::password_of;

async fn code(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or_default();
    (status, body["code"].as_str().unwrap_or_default().to_owned())
}

both_backends! {
    async fn a_stranger_learns_nothing_about_the_body_or_query(app) {
        let garbage = app.client.post(app.url("/api/sts/organisation/v1")).header("content-type", "application/json")
            .body("{not json").send().await.expect("request");
        assert_eq!(code(garbage).await, (StatusCode::UNAUTHORIZED, "STS_0002".into()));
        let query = app.client.get(app.url("/api/sts/organisation/v1?bogus=1")).send().await.expect("request");
        assert_eq!(query.status(), StatusCode::UNAUTHORIZED);
        let malformed_id = app.client.get(app.url("/api/sts/organisation/v1/not-a-uuid")).send().await.expect("request");
        assert_eq!(malformed_id.status(), StatusCode::UNAUTHORIZED, "401 before anything about the path");
        let admin = app.admin_token().await;
        assert_eq!(app.get("/api/sts/organisation/v1/not-a-uuid", &admin).await.status(), StatusCode::NOT_FOUND);
    }

    async fn a_wrong_method_gets_405_in_the_error_shape(app) {
        let response = app.client.put(app.url("/api/sts/organisation/v1")).send().await.expect("request");
        assert_eq!(code(response).await, (StatusCode::METHOD_NOT_ALLOWED, "STS_0009".into()));
        let response = app.client.get(app.url("/api/sts/token/v1")).send().await.expect("request");
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    async fn an_oversized_token_request_gets_413_in_the_oauth_shape(app) {
        let password = "p".repeat(17 * 1024);
        let response = app.token_request(&[("grant_type", "password"), ("username", "admin"), ("password", &password)]).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"], "invalid_request");
    }

    async fn the_openapi_description_lists_every_route(app) {
        let doc: Value = app.client.get(app.url("/api/sts/openapi.json")).send().await.expect("doc").json().await.expect("json");
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
        for (method, path) in sts::api::ROUTES {
            assert!(doc["paths"][path][method].is_object(), "{method} {path}");
        }
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    }

    async fn an_identity_admin_cannot_grant_admin_to_anyone(app) {
        let admin = app.admin_token().await;
        let idm = app.create_user(&admin, "idm", &["IDENTITY_ADMIN"]).await;
        let token = app.login("idm", &password_of("idm"), None).await["access_token"].as_str().expect("at").to_owned();
        let escalate = app.post_json("/api/sts/user/v1", &token, &json!({"username": "evil", "password": password_of("evil"), "systemRoles": ["ADMIN"]})).await;
        assert_eq!(code(escalate).await, (StatusCode::FORBIDDEN, "STS_0003".into()));
        let self_promote = app.patch_json(&format!("/api/sts/user/v1/{idm}"), &token, &json!({"systemRoles": ["ADMIN"]})).await;
        assert_eq!(self_promote.status(), StatusCode::FORBIDDEN);
        let delegate = app.post_json("/api/sts/user/v1", &token, &json!({"username": "svc", "type": "TECHNICAL", "systemRoles": ["DELEGATION_SERVICE"]})).await;
        assert_eq!(delegate.status(), StatusCode::FORBIDDEN, "STS_TOKEN_DELEGATE is not the identity admin's to give");
        let fine = app.post_json("/api/sts/user/v1", &token, &json!({"username": "staff", "password": password_of("staff"), "systemRoles": ["ISSUING_OPERATOR"]})).await;
        assert_eq!(fine.status(), StatusCode::CREATED, "organisation-scoped roles stay bounded by ceilings");
        let events = app.audit(&admin, "action=user.create").await;
        assert!(events.iter().any(|e| e["outcome"] == "FAILURE" && e["subject"] == idm.to_string()), "refusal recorded");
    }

    async fn a_disabled_admin_is_locked_out_of_the_admin_api_at_once(app) {
        let admin = app.admin_token().await;
        let second = app.create_user(&admin, "second.admin", &["IDENTITY_ADMIN"]).await;
        let token = app.login("second.admin", &password_of("second.admin"), None).await["access_token"].as_str().expect("at").to_owned();
        assert_eq!(app.get("/api/sts/user/v1", &token).await.status(), StatusCode::OK);
        app.patch_json(&format!("/api/sts/user/v1/{second}"), &admin, &json!({"disabled": true})).await;
        assert_eq!(app.get("/api/sts/user/v1", &token).await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(app.get("/api/sts/me/v1", &token).await.status(), StatusCode::UNAUTHORIZED, "any-token routes too");
        assert_eq!(app.get("/api/sts/role/v1", &token).await.status(), StatusCode::UNAUTHORIZED);
    }

    async fn an_empty_patch_changes_nothing_and_says_so(app) {
        let admin = app.admin_token().await;
        let org = app.create_org(&admin, "Unchanged", &["HOLDER"]).await;
        let before: Value = app.get(&format!("/api/sts/organisation/v1/{org}"), &admin).await.json().await.expect("json");
        app.clock.advance(chrono::Duration::seconds(1));
        let response = app.patch_json(&format!("/api/sts/organisation/v1/{org}"), &admin, &json!({})).await;
        assert_eq!(code(response).await, (StatusCode::BAD_REQUEST, "STS_0001".into()));
        let after: Value = app.get(&format!("/api/sts/organisation/v1/{org}"), &admin).await.json().await.expect("json");
        assert_eq!(before["lastModified"], after["lastModified"]);
    }
}

//! Users, technical users, roles, `me`, and the HTTP property test of the
//! permission policy.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, password_of, permissions};

const USERS: &str = "/api/sts/user/v1";

both_backends! {
    async fn users_are_created_listed_edited_and_deleted(app) {
        let admin = app.admin_token().await;
        let id = app.create_user(&admin, "Alice", &["AUDITOR"]).await;
        let detail: Value = app.get(&format!("{USERS}/{id}"), &admin).await.json().await.expect("json");
        assert_eq!(detail["username"], "Alice");
        assert_eq!(detail["type"], "USER");
        assert_eq!(detail["systemRoles"], json!(["AUDITOR"]));
        assert!(detail.get("passwordHash").is_none() && !detail.to_string().contains("argon2"), "no hash on the wire");
        let dup = app.post_json(USERS, &admin, &json!({"username": "alice", "password": password_of("x"), "systemRoles": []})).await;
        assert_eq!(dup.status(), StatusCode::CONFLICT, "usernames are case-insensitive");
        for body in [
            json!({"username": "short", "password": "short", "systemRoles": []}),
            json!({"username": "role", "password": password_of("role"), "systemRoles": ["EMPEROR"]}),
            json!({"username": "nopass", "systemRoles": []}),
        ] {
            assert_eq!(app.post_json(USERS, &admin, &body).await.status(), StatusCode::BAD_REQUEST, "{body}");
        }
        let list: Value = app.get(&format!("{USERS}?pageSize=1"), &admin).await.json().await.expect("json");
        assert_eq!((list["totalItems"].as_i64(), list["totalPages"].as_i64()), (Some(2), Some(2)));
        let new_password = "a-brand-new-password-for-alice";
        assert_eq!(app.patch_json(&format!("{USERS}/{id}"), &admin, &json!({"password": new_password})).await.status(), StatusCode::NO_CONTENT);
        app.login("Alice", new_password, None).await;
        assert_eq!(app.delete(&format!("{USERS}/{id}"), &admin).await.status(), StatusCode::NO_CONTENT);
        assert_eq!(app.get(&format!("{USERS}/{id}"), &admin).await.status(), StatusCode::NOT_FOUND);
    }

    async fn roles_and_me_describe_what_tokens_would_hold(app) {
        let admin = app.admin_token().await;
        let roles: Value = app.get("/api/sts/role/v1", &admin).await.json().await.expect("json");
        assert_eq!(roles["organisationRoles"].as_object().map(|o| o.len()), Some(7));
        assert!(roles["systemRoles"]["ADMIN"].as_array().is_some_and(|a| a.len() > 90));
        let org = app.create_org(&admin, "Mine", &["HOLDER"]).await;
        let off = app.create_org(&admin, "Off", &["HOLDER"]).await;
        let user = app.create_user(&admin, "wallet.user", &["WALLET_USER"]).await;
        app.add_member(&admin, org, user).await;
        app.add_member(&admin, off, user).await;
        app.patch_json(&format!("/api/sts/organisation/v1/{off}"), &admin, &json!({"deactivate": true})).await;
        let token = app.login("wallet.user", &password_of("wallet.user"), Some(org)).await["access_token"].as_str().expect("at").to_owned();
        let me: Value = app.get("/api/sts/me/v1", &token).await.json().await.expect("json");
        assert_eq!(me["id"], user.to_string());
        assert_eq!(me["systemRoles"], json!(["WALLET_USER"]));
        let orgs = me["organisations"].as_array().expect("organisations");
        assert_eq!(orgs.len(), 2);
        let mine = orgs.iter().find(|o| o["id"] == org.to_string()).expect("mine");
        assert_eq!(mine["permissions"], json!(permissions(&token)));
        let deactivated = orgs.iter().find(|o| o["id"] == off.to_string()).expect("off");
        assert_eq!((deactivated["status"].as_str(), deactivated["permissions"].as_array().map(Vec::len)), (Some("DEACTIVATED"), Some(0)));
    }
}

const SYSTEM_ROLES: [&str; 6] =
    ["ISSUING_OPERATOR", "VERIFYING_OPERATOR", "WALLET_USER", "AUDITOR", "IDENTITY_ADMIN", "DELEGATION_SERVICE"];
const ORG_ROLES: [&str; 7] = [
    "ISSUER",
    "HOLDER",
    "VERIFIER",
    "WALLET_PROVIDER",
    "NATIONAL_REGISTRY",
    "ACCESS_CERTIFICATE_PROVIDER",
    "REGISTRATION_CERTIFICATE_PROVIDER",
];

fn pick<'a>(all: &'a [&'a str], mask: u8) -> Vec<&'a str> {
    all.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, r)| *r).collect()
}

/// Random system roles × random organisation roles, over HTTP: every
/// token's permissions equal the intersection computed from the published
/// role mapping; a non-member gets `invalid_grant`.
async fn permission_policy_holds_over_http(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let roles: Value = app.get("/api/sts/role/v1", &admin).await.json().await.expect("json");
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases: 12, ..ProptestConfig::default() });
    let cases: Vec<(u8, u8)> =
        (0..12).map(|_| (any::<u8>(), 1u8..128).new_tree(&mut runner).expect("strategy").current()).collect();
    for (i, (user_mask, org_mask)) in cases.into_iter().enumerate() {
        let system = pick(&SYSTEM_ROLES, user_mask & 0b11_1111);
        let org_roles = pick(&ORG_ROLES, org_mask);
        let org = app.create_org(&admin, &format!("Org {i}"), &org_roles).await;
        let username = format!("user{i}");
        let user = app.create_user(&admin, &username, &system).await;
        let org_s = org.to_string();
        let outsider = app
            .token_request(&[
                ("grant_type", "password"),
                ("username", &username),
                ("password", &password_of(&username)),
                ("organisation_id", &org_s),
            ])
            .await;
        assert_eq!(outsider.status(), StatusCode::BAD_REQUEST, "non-members get invalid_grant");
        app.add_member(&admin, org, user).await;
        let token = app.login(&username, &password_of(&username), Some(org)).await["access_token"]
            .as_str()
            .expect("at")
            .to_owned();
        let expected = crate::helpers::intersection_from_mapping(&roles, &system, &org_roles);
        assert_eq!(permissions(&token), expected, "system {system:?} × organisation {org_roles:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_policy_holds_over_http_on_postgres() {
    permission_policy_holds_over_http(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_policy_holds_over_http_on_sqlite() {
    permission_policy_holds_over_http(Backend::Sqlite).await;
}

//! The organisation lifecycle, memberships, the explain endpoint, the
//! audit trail, and the permission checks on every admin route.

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::both_backends;
use crate::helpers::{TestApp, password_of};

const ORGS: &str = "/api/sts/organisation/v1";

async fn code(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or_default();
    (status, body["code"].as_str().unwrap_or_default().to_owned())
}

both_backends! {
    async fn an_organisation_is_created_active_and_readable(app) {
        let admin = app.admin_token().await;
        let id = app.create_org(&admin, "  Acme Bank  ", &["ISSUER", "VERIFIER", "ISSUER"]).await;
        let detail: Value = app.get(&format!("{ORGS}/{id}"), &admin).await.json().await.expect("json");
        assert_eq!(detail["id"], id.to_string());
        assert_eq!(detail["name"], "Acme Bank", "trimmed");
        assert_eq!(detail["roles"], json!(["ISSUER", "VERIFIER"]));
        assert_eq!(detail["status"], "ACTIVE");
        assert!(detail.get("deactivatedAt").is_none());
        let given = Uuid::new_v4();
        let created = app.post_json(ORGS, &admin, &json!({"name": "Given Id", "roles": ["HOLDER"], "id": given})).await;
        assert_eq!(created.status(), StatusCode::CREATED);
        assert_eq!(crate::helpers::id_of(created).await, given);
        let reused = app.post_json(ORGS, &admin, &json!({"name": "Another", "roles": ["HOLDER"], "id": given})).await;
        let body: Value = reused.json().await.expect("json");
        assert_eq!((body["code"].as_str(), body["message"].as_str()), (Some("STS_0005"), Some("an organisation with this id exists")));
        let renamed = app.post_json(ORGS, &admin, &json!({"name": "ACME BANK", "roles": ["HOLDER"]})).await;
        assert_eq!(renamed.status(), StatusCode::CONFLICT);
        let body: Value = renamed.json().await.expect("json");
        assert_eq!(body["message"], "an organisation with this name exists", "the unique index tells which one");
        let after: Value = app.get(&format!("{ORGS}?pageSize=1000"), &admin).await.json().await.expect("json");
        assert_eq!(after["totalItems"], 2, "the refused creates left nothing behind");
    }

    async fn bad_organisation_bodies_get_400(app) {
        let admin = app.admin_token().await;
        let bodies = [
            json!({"name": "", "roles": ["ISSUER"]}),
            json!({"name": "x".repeat(201), "roles": ["ISSUER"]}),
            json!({"name": "No roles", "roles": []}),
            json!({"name": "Bad role", "roles": ["EMPEROR"]}),
            json!({"name": "Extra", "roles": ["ISSUER"], "deactivated": false}),
            json!({"roles": ["ISSUER"]}),
        ];
        for body in bodies {
            let response = app.post_json(ORGS, &admin, &body).await;
            assert_eq!(code(response).await, (StatusCode::BAD_REQUEST, "STS_0001".into()), "{body}");
        }
        let list: Value = app.get(ORGS, &admin).await.json().await.expect("json");
        assert_eq!(list["totalItems"], 0, "nothing half-written");
    }

    async fn names_are_unique_case_insensitively_even_under_ten_parallel_creates(app) {
        let admin = app.admin_token().await;
        let creates = (0..10).map(|i| {
            let (client, url, admin) = (app.client.clone(), app.url(ORGS), admin.clone());
            let name = if i % 2 == 0 { "Race Org" } else { "race org" };
            tokio::spawn(async move {
                client.post(url).bearer_auth(admin).json(&json!({"name": name, "roles": ["HOLDER"]})).send().await.expect("request").status()
            })
        });
        let statuses: Vec<_> = futures_util::future::join_all(creates).await.into_iter().map(|s| s.expect("task")).collect();
        assert_eq!(statuses.iter().filter(|s| **s == StatusCode::CREATED).count(), 1, "{statuses:?}");
        assert!(statuses.iter().all(|s| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT), "{statuses:?}");
    }

    async fn the_list_pages_filters_and_sorts(app) {
        let admin = app.admin_token().await;
        for (name, roles) in [("Beta", "HOLDER"), ("alpha", "ISSUER"), ("Alpine", "VERIFIER"), ("Gamma", "HOLDER")] {
            app.create_org(&admin, name, &[roles]).await;
        }
        let gamma: Value = app.get(&format!("{ORGS}?name=gam"), &admin).await.json().await.expect("json");
        let gamma_id = gamma["values"][0]["id"].as_str().expect("id").to_owned();
        app.patch_json(&format!("{ORGS}/{gamma_id}"), &admin, &json!({"deactivate": true})).await;

        let page: Value = app.get(&format!("{ORGS}?pageSize=3&sort=name"), &admin).await.json().await.expect("json");
        assert_eq!((page["totalItems"].as_i64(), page["totalPages"].as_i64()), (Some(4), Some(2)));
        let names: Vec<&str> = page["values"].as_array().expect("values").iter().filter_map(|v| v["name"].as_str()).collect();
        assert_eq!(names, ["alpha", "Alpine", "Beta"]);
        let prefix: Value = app.get(&format!("{ORGS}?name=AL&sortDirection=DESC"), &admin).await.json().await.expect("json");
        let names: Vec<&str> = prefix["values"].as_array().expect("values").iter().filter_map(|v| v["name"].as_str()).collect();
        assert_eq!(names, ["Alpine", "alpha"]);
        let active: Value = app.get(&format!("{ORGS}?status=ACTIVE"), &admin).await.json().await.expect("json");
        assert_eq!(active["totalItems"], 3);
        let deactivated: Value = app.get(&format!("{ORGS}?status=DEACTIVATED"), &admin).await.json().await.expect("json");
        assert_eq!(deactivated["values"][0]["name"], "Gamma");
        for bad in ["pageSize=0", "pageSize=1001", "page=-1", "status=GONE", "sort=id", "bogus=1"] {
            assert_eq!(app.get(&format!("{ORGS}?{bad}"), &admin).await.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    async fn editing_renames_changes_the_ceiling_and_moves_last_modified(app) {
        let admin = app.admin_token().await;
        let org = app.create_org(&admin, "Shifting", &["VERIFIER"]).await;
        let user = app.create_user(&admin, "operator", &["ISSUING_OPERATOR", "VERIFYING_OPERATOR"]).await;
        app.add_member(&admin, org, user).await;
        let before: Value = app.get(&format!("{ORGS}/{org}"), &admin).await.json().await.expect("json");
        app.clock.advance(chrono::Duration::seconds(2));
        let patched = app.patch_json(&format!("{ORGS}/{org}"), &admin, &json!({"name": "Shifted", "roles": ["ISSUER"]})).await;
        assert_eq!(patched.status(), StatusCode::NO_CONTENT);
        let after: Value = app.get(&format!("{ORGS}/{org}"), &admin).await.json().await.expect("json");
        assert_eq!(after["name"], "Shifted");
        assert_ne!(before["lastModified"], after["lastModified"]);
        let token = app.login("operator", &password_of("operator"), Some(org)).await["access_token"].as_str().expect("at").to_owned();
        let perms = crate::helpers::permissions(&token);
        assert!(perms.contains(&"CREDENTIAL_ISSUE".to_owned()), "the new ceiling applies to the next token");
        assert!(!perms.contains(&"PROOF_ISSUE".to_owned()));
        let unknown = app.patch_json(&format!("{ORGS}/{}", Uuid::new_v4()), &admin, &json!({"name": "x"})).await;
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    }

    async fn deleting_removes_everything_but_the_audit_trail(app) {
        let admin = app.admin_token().await;
        let org = app.create_org(&admin, "Doomed", &["HOLDER"]).await;
        let user = app.create_user(&admin, "holder", &["WALLET_USER"]).await;
        app.add_member(&admin, org, user).await;
        let rt = app.login("holder", &password_of("holder"), Some(org)).await["refresh_token"].as_str().expect("rt").to_owned();
        assert_eq!(app.delete(&format!("{ORGS}/{org}"), &admin).await.status(), StatusCode::NO_CONTENT);
        for path in [format!("{ORGS}/{org}"), format!("{ORGS}/{org}/member"), format!("{ORGS}/{org}/member/{user}/permissions")] {
            assert_eq!(app.get(&path, &admin).await.status(), StatusCode::NOT_FOUND, "{path}");
        }
        assert_eq!(app.delete(&format!("{ORGS}/{org}"), &admin).await.status(), StatusCode::NOT_FOUND);
        assert_eq!(app.put(&format!("{ORGS}/{org}/member/{user}"), &admin).await.status(), StatusCode::NOT_FOUND);
        let refresh = app.token_request(&[("grant_type", "refresh_token"), ("refresh_token", &rt)]).await;
        assert_eq!(refresh.status(), StatusCode::BAD_REQUEST, "refresh tokens bound to it are gone");
        assert_eq!(app.get(&format!("/api/sts/user/v1/{user}"), &admin).await.status(), StatusCode::OK, "users stay");
        let events = app.audit(&admin, &format!("organisationId={org}")).await;
        let actions: Vec<&str> = events.iter().filter_map(|e| e["action"].as_str()).collect();
        for action in ["organisation.create", "membership.add", "token.password", "organisation.delete"] {
            assert!(actions.contains(&action), "{action} in {actions:?}");
        }
    }

    async fn memberships_are_idempotent_and_refused_while_deactivated(app) {
        let admin = app.admin_token().await;
        let org = app.create_org(&admin, "Members", &["HOLDER"]).await;
        let user = app.create_user(&admin, "member", &["WALLET_USER"]).await;
        app.add_member(&admin, org, user).await;
        app.add_member(&admin, org, user).await;
        let members: Value = app.get(&format!("{ORGS}/{org}/member"), &admin).await.json().await.expect("json");
        assert_eq!(members["values"].as_array().map(Vec::len), Some(1));
        assert_eq!(members["values"][0]["username"], "member");
        let late = app.create_user(&admin, "late", &["WALLET_USER"]).await;
        app.patch_json(&format!("{ORGS}/{org}"), &admin, &json!({"deactivate": true})).await;
        assert_eq!(code(app.put(&format!("{ORGS}/{org}/member/{late}"), &admin).await).await.0, StatusCode::CONFLICT);
        assert_eq!(app.delete(&format!("{ORGS}/{org}/member/{user}"), &admin).await.status(), StatusCode::NO_CONTENT, "removal allowed");
        assert_eq!(app.put(&format!("{ORGS}/{org}/member/{}", Uuid::new_v4()), &admin).await.status(), StatusCode::NOT_FOUND);
    }

    async fn explain_tells_what_the_ceiling_removed(app) {
        let admin = app.admin_token().await;
        let org = app.create_org(&admin, "Verifier Org", &["VERIFIER"]).await;
        let user = app.create_user(&admin, "mixed", &["ISSUING_OPERATOR", "VERIFYING_OPERATOR"]).await;
        app.add_member(&admin, org, user).await;
        let why: Value = app.get(&format!("{ORGS}/{org}/member/{user}/permissions"), &admin).await.json().await.expect("json");
        let has = |key: &str, p: &str| why[key].as_array().is_some_and(|a| a.iter().any(|v| v == p));
        assert!(has("userPermissions", "CREDENTIAL_ISSUE"));
        assert!(has("removedByCeiling", "CREDENTIAL_ISSUE"));
        assert!(has("granted", "PROOF_ISSUE"));
        assert!(!has("granted", "CREDENTIAL_ISSUE"));
        let token = app.login("mixed", &password_of("mixed"), Some(org)).await["access_token"].as_str().expect("at").to_owned();
        assert_eq!(json!(crate::helpers::permissions(&token)), why["granted"], "explain matches the token");
    }

    async fn admin_routes_refuse_missing_and_insufficient_tokens_and_record_it(app) {
        let admin = app.admin_token().await;
        let org = app.create_org(&admin, "Guarded", &["ISSUER"]).await;
        let auditor = app.create_user(&admin, "auditor", &["AUDITOR", "ISSUING_OPERATOR"]).await;
        app.add_member(&admin, org, auditor).await;
        let no_token = app.client.post(app.url(ORGS)).json(&json!({"name": "x", "roles": ["ISSUER"]})).send().await.expect("request");
        assert_eq!(no_token.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(no_token.headers()["www-authenticate"], r#"Bearer error="invalid_token""#);
        assert_eq!(app.get(ORGS, "not.a.token").await.status(), StatusCode::UNAUTHORIZED);
        let system = app.login("auditor", &password_of("auditor"), None).await["access_token"].as_str().expect("at").to_owned();
        assert_eq!(app.get(ORGS, &system).await.status(), StatusCode::OK, "auditors may list");
        let denied = app.post_json(ORGS, &system, &json!({"name": "x", "roles": ["ISSUER"]})).await;
        assert_eq!(code(denied).await, (StatusCode::FORBIDDEN, "STS_0003".into()));
        let scoped = app.login("auditor", &password_of("auditor"), Some(org)).await["access_token"].as_str().expect("at").to_owned();
        assert_eq!(app.get(ORGS, &scoped).await.status(), StatusCode::FORBIDDEN, "org tokens never reach the admin API");
        let events = app.audit(&admin, "action=admin.denied").await;
        assert!(events.iter().any(|e| e["reason"].as_str().is_some_and(|r| r.starts_with("401"))), "{events:?}");
        assert!(events.iter().any(|e| e["subject"] == auditor.to_string() && e["outcome"] == "DENIED"), "{events:?}");
        let list: Value = app.get(ORGS, &admin).await.json().await.expect("json");
        assert_eq!(list["totalItems"], 1, "nothing was created by refused requests");
    }
}

/// The product documentation's government scenario: issuance staff hold
/// Issuer permissions only in their organisation, verifiers cannot issue,
/// nobody's token reaches another organisation.
async fn government(app: TestApp) {
    let admin = app.admin_token().await;
    let pid = app.create_org(&admin, "PID Issuance", &["ISSUER"]).await;
    let wallet = app.create_org(&admin, "National Wallet Provider", &["WALLET_PROVIDER"]).await;
    let dept_a = app.create_org(&admin, "Department A Verification", &["VERIFIER"]).await;
    let dept_b = app.create_org(&admin, "Department B Verification", &["VERIFIER"]).await;
    let issuer = app.create_user(&admin, "pid.officer", &["ISSUING_OPERATOR"]).await;
    let verifier = app.create_user(&admin, "dept.a.clerk", &["VERIFYING_OPERATOR", "ISSUING_OPERATOR"]).await;
    app.add_member(&admin, pid, issuer).await;
    app.add_member(&admin, dept_a, verifier).await;

    let issuing = app.login("pid.officer", &password_of("pid.officer"), Some(pid)).await["access_token"]
        .as_str()
        .expect("at")
        .to_owned();
    assert!(crate::helpers::permissions(&issuing).contains(&"CREDENTIAL_ISSUE".to_owned()));
    let verifying = app.login("dept.a.clerk", &password_of("dept.a.clerk"), Some(dept_a)).await["access_token"]
        .as_str()
        .expect("at")
        .to_owned();
    let perms = crate::helpers::permissions(&verifying);
    assert!(perms.contains(&"PROOF_ISSUE".to_owned()));
    assert!(!perms.contains(&"CREDENTIAL_ISSUE".to_owned()), "verifiers cannot issue");
    for (user, org) in
        [("pid.officer", dept_a), ("pid.officer", wallet), ("dept.a.clerk", pid), ("dept.a.clerk", dept_b)]
    {
        let org = org.to_string();
        let response = app
            .token_request(&[
                ("grant_type", "password"),
                ("username", user),
                ("password", &password_of(user)),
                ("organisation_id", &org),
            ])
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{user} has no token for another organisation");
    }

    // Deactivate the wallet provider: no token, data visible, reactivation
    // works. Delete Department B: gone, its audit trail kept.
    let wallet_staff = app.create_user(&admin, "wallet.ops", &["WALLET_USER"]).await;
    app.add_member(&admin, wallet, wallet_staff).await;
    app.patch_json(&format!("{ORGS}/{wallet}"), &admin, &json!({"deactivate": true})).await;
    let wallet_s = wallet.to_string();
    let password = password_of("wallet.ops");
    let form = [
        ("grant_type", "password"),
        ("username", "wallet.ops"),
        ("password", &password),
        ("organisation_id", &wallet_s),
    ];
    assert_eq!(app.token_request(&form).await.status(), StatusCode::BAD_REQUEST);
    let detail: Value = app.get(&format!("{ORGS}/{wallet}"), &admin).await.json().await.expect("json");
    assert_eq!(detail["status"], "DEACTIVATED");
    app.patch_json(&format!("{ORGS}/{wallet}"), &admin, &json!({"deactivate": false})).await;
    assert_eq!(app.token_request(&form).await.status(), StatusCode::OK);
    assert_eq!(app.delete(&format!("{ORGS}/{dept_b}"), &admin).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.get(&format!("{ORGS}/{dept_b}"), &admin).await.status(), StatusCode::NOT_FOUND);
    assert!(!app.audit(&admin, &format!("organisationId={dept_b}")).await.is_empty(), "audit kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn government_scenario_on_postgres() {
    government(TestApp::spawn(crate::helpers::Backend::Postgres).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn government_scenario_on_sqlite() {
    government(TestApp::spawn(crate::helpers::Backend::Sqlite).await).await;
}

/// University: two issuer organisations with separate staff; diploma
/// issuers cannot issue badges and badge issuers cannot issue diplomas.
/// Then one is deactivated (tokens stop, data stays visible, reactivation
/// works) and the other deleted (gone, its audit trail kept).
async fn university(app: TestApp) {
    let admin = app.admin_token().await;
    let academic = app.create_org(&admin, "Academic Credentials", &["ISSUER"]).await;
    let employee = app.create_org(&admin, "Employee Credentials", &["ISSUER"]).await;
    let registrar = app.create_user(&admin, "registrar", &["ISSUING_OPERATOR"]).await;
    let hr = app.create_user(&admin, "hr.badges", &["ISSUING_OPERATOR"]).await;
    app.add_member(&admin, academic, registrar).await;
    app.add_member(&admin, employee, hr).await;
    for (user, own, other) in [("registrar", academic, employee), ("hr.badges", employee, academic)] {
        app.login(user, &password_of(user), Some(own)).await;
        let other = other.to_string();
        let refused = app
            .token_request(&[
                ("grant_type", "password"),
                ("username", user),
                ("password", &password_of(user)),
                ("organisation_id", &other),
            ])
            .await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{user} cannot issue for the other side");
    }
    app.patch_json(&format!("{ORGS}/{academic}"), &admin, &json!({"deactivate": true})).await;
    let academic_s = academic.to_string();
    let stopped = app
        .token_request(&[
            ("grant_type", "password"),
            ("username", "registrar"),
            ("password", &password_of("registrar")),
            ("organisation_id", &academic_s),
        ])
        .await;
    assert_eq!(stopped.status(), StatusCode::BAD_REQUEST);
    let members: Value = app.get(&format!("{ORGS}/{academic}/member"), &admin).await.json().await.expect("json");
    assert_eq!(members["values"][0]["username"], "registrar", "data stays visible");
    app.patch_json(&format!("{ORGS}/{academic}"), &admin, &json!({"deactivate": false})).await;
    app.login("registrar", &password_of("registrar"), Some(academic)).await;
    assert_eq!(app.delete(&format!("{ORGS}/{employee}"), &admin).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.get(&format!("{ORGS}/{employee}"), &admin).await.status(), StatusCode::NOT_FOUND);
    assert!(!app.audit(&admin, &format!("organisationId={employee}")).await.is_empty(), "audit kept");
}

/// Enterprise: four holder organisations; Finance staff cannot obtain a
/// Procurement token.
async fn enterprise(app: TestApp) {
    let admin = app.admin_token().await;
    let mut orgs = Vec::new();
    for name in ["HR", "Finance", "Legal", "Procurement"] {
        orgs.push(app.create_org(&admin, name, &["HOLDER"]).await);
    }
    let finance = app.create_user(&admin, "finance.clerk", &["WALLET_USER"]).await;
    app.add_member(&admin, orgs[1], finance).await;
    let token = app.login("finance.clerk", &password_of("finance.clerk"), Some(orgs[1])).await;
    assert!(
        crate::helpers::permissions(token["access_token"].as_str().expect("at"))
            .contains(&"HOLDER_CREDENTIAL_LIST".to_owned())
    );
    let procurement = orgs[3].to_string();
    let refused = app
        .token_request(&[
            ("grant_type", "password"),
            ("username", "finance.clerk"),
            ("password", &password_of("finance.clerk")),
            ("organisation_id", &procurement),
        ])
        .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    // Deactivate Finance (tokens stop, data visible, reactivation works);
    // delete Legal (gone, audit kept).
    let finance_s = orgs[1].to_string();
    let password = password_of("finance.clerk");
    let form = [
        ("grant_type", "password"),
        ("username", "finance.clerk"),
        ("password", &password),
        ("organisation_id", &finance_s),
    ];
    app.patch_json(&format!("{ORGS}/{}", orgs[1]), &admin, &json!({"deactivate": true})).await;
    assert_eq!(app.token_request(&form).await.status(), StatusCode::BAD_REQUEST);
    let members: Value = app.get(&format!("{ORGS}/{}/member", orgs[1]), &admin).await.json().await.expect("json");
    assert_eq!(members["values"][0]["username"], "finance.clerk");
    app.patch_json(&format!("{ORGS}/{}", orgs[1]), &admin, &json!({"deactivate": false})).await;
    assert_eq!(app.token_request(&form).await.status(), StatusCode::OK);
    assert_eq!(app.delete(&format!("{ORGS}/{}", orgs[2]), &admin).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.get(&format!("{ORGS}/{}", orgs[2]), &admin).await.status(), StatusCode::NOT_FOUND);
    assert!(!app.audit(&admin, &format!("organisationId={}", orgs[2])).await.is_empty(), "audit kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn university_scenario_on_postgres() {
    university(TestApp::spawn(crate::helpers::Backend::Postgres).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn university_scenario_on_sqlite() {
    university(TestApp::spawn(crate::helpers::Backend::Sqlite).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enterprise_scenario_on_postgres() {
    enterprise(TestApp::spawn(crate::helpers::Backend::Postgres).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enterprise_scenario_on_sqlite() {
    enterprise(TestApp::spawn(crate::helpers::Backend::Sqlite).await).await;
}

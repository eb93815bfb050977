//! Hostile inputs at the admin API and the audit trail (SECURITY.md §1,
//! cases 35–42): every route from the route table refuses the wrong
//! caller, odd payloads are refused whole, the audit log stays intact.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::both_backends;
use crate::helpers::{ADMIN_PASSWORD, Backend, TestApp, id_of, password_of};

/// Routes that need no token, or any valid token.
const OPEN: [&str; 8] = [
    "/health/live",
    "/health/ready",
    "/metrics",
    "/.well-known/jwks.json",
    "/.well-known/oauth-authorization-server",
    "/api/sts/openapi.json",
    "/api/sts/role/v1",
    "/api/sts/me/v1",
];

fn concrete(path: &str, id: Uuid) -> String {
    path.replace("{id}", &id.to_string()).replace("{userId}", &id.to_string())
}

async fn counts(app: &TestApp) -> (i64, i64, i64) {
    (
        app.db.scalar("SELECT COUNT(*) AS value FROM organisations"),
        app.db.scalar("SELECT COUNT(*) AS value FROM users"),
        app.db.scalar("SELECT COUNT(*) AS value FROM memberships"),
    )
}

/// Starts one refresh grant per token at once; each task yields the answer.
fn race_refreshes(app: &TestApp, tokens: Vec<String>) -> Vec<tokio::task::JoinHandle<Value>> {
    tokens
        .into_iter()
        .map(|rt| {
            let (client, url) = (app.client.clone(), app.url("/api/sts/token/v1"));
            tokio::spawn(async move {
                let form = [("grant_type", "refresh_token"), ("refresh_token", rt.as_str())];
                client.post(url).form(&form).send().await.expect("request").json::<Value>().await.expect("json")
            })
        })
        .collect()
}

/// Waits until a request of the application waits for a lock (PostgreSQL:
/// a backend of the test database waits on a lock; SQLite shows no such
/// thing, so a pause long enough for the request to reach the database).
async fn wait_until_blocked(app: &TestApp) {
    if app.db.is_sqlite() {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        return;
    }
    for _ in 0..200 {
        let waiting = app.db.scalar(
            "SELECT COUNT(*) AS value FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        );
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the admin change never waited for the other transaction's lock");
}

/// Another client's transaction, held open from outside the application:
/// it runs `hold` (PostgreSQL; on SQLite it takes the one writer's lock
/// instead, the only lock SQLite has), then waits to be told to go on, runs
/// the statements it is given and commits.
struct InFlight {
    go: std::sync::mpsc::Sender<String>,
    done: std::thread::JoinHandle<Result<(), String>>,
}

impl InFlight {
    fn start(app: &TestApp, hold: &str) -> Self {
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel::<String>();
        let begin = if app.db.is_sqlite() { "BEGIN IMMEDIATE".to_owned() } else { format!("BEGIN; {hold}") };
        let mut conn = app.db.connect();
        let done = std::thread::spawn(move || {
            conn.batch_execute(&begin).map_err(|e| e.to_string())?;
            held_tx.send(()).map_err(|e| e.to_string())?;
            let then = go_rx.recv().map_err(|e| e.to_string())?;
            conn.batch_execute(&format!("{then}; COMMIT")).map_err(|e| e.to_string())
        });
        held_rx.recv().expect("the transaction holds its lock");
        Self { go, done }
    }

    fn finish(self, then: &str) -> Result<(), String> {
        self.go.send(then.to_owned()).expect("go");
        self.done.join().expect("transaction thread")
    }
}

/// `clause` on PostgreSQL, nothing on SQLite (no row locks there).
fn on_postgres(app: &TestApp, clause: &str) -> String {
    if app.db.is_sqlite() { String::new() } else { clause.to_owned() }
}

both_backends! {
    async fn case_35_36_every_admin_route_refuses_the_wrong_caller_and_changes_nothing(app) {
        let admin = app.admin_token().await;
        let org = app.create_org(&admin, "Target", &["ISSUER"]).await;
        let user = app.create_user(&admin, "plain", &["ISSUING_OPERATOR"]).await;
        app.add_member(&admin, org, user).await;
        let plain_system = app.login("plain", &password_of("plain"), None).await["access_token"].as_str().expect("at").to_owned();
        let scoped = app.login("plain", &password_of("plain"), Some(org)).await["access_token"].as_str().expect("at").to_owned();
        let before = counts(&app).await;
        let admin_routes: Vec<_> = sts::api::ROUTES.iter().filter(|(_, p)| !OPEN.contains(p) && !p.starts_with("/api/sts/token")).collect();
        assert!(admin_routes.len() >= 15, "the route table is enumerated, so a new route cannot skip this test");
        for (method, path) in admin_routes {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let url = app.url(&concrete(path, org));
            let body = json!({"name": "x", "roles": ["ISSUER"], "username": "x", "systemRoles": []});
            let anonymous = app.client.request(method.clone(), &url).json(&body).send().await.expect("request");
            assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED, "{method} {path} without a token");
            for (who, token) in [("a user's system token", &plain_system), ("an organisation token", &scoped)] {
                let response = app.client.request(method.clone(), &url).bearer_auth(token).json(&body).send().await.expect("request");
                assert_eq!(response.status(), StatusCode::FORBIDDEN, "{method} {path} with {who}");
            }
        }
        assert_eq!(counts(&app).await, before, "nothing changed");
        let denied = app.audit(&admin, "action=admin.denied").await;
        assert!(denied.len() >= 45, "each refusal is recorded ({})", denied.len());
    }

    async fn case_35_36_a_caller_disabled_or_deleted_after_their_token_was_issued_can_write_nothing(app) {
        let admin = app.admin_token().await;
        let org = app.create_org(&admin, "Kept", &["ISSUER"]).await;
        let member = app.create_user(&admin, "member", &["ISSUING_OPERATOR"]).await;
        app.add_member(&admin, org, member).await;
        let (robot, secret) = app.create_technical(&admin, "robot", &[]).await;
        // Every write of the admin API, each with a body it would accept.
        let writes = [
            ("POST", "/api/sts/organisation/v1", "/api/sts/organisation/v1".to_owned(), json!({"name": "Fresh", "roles": ["ISSUER"]})),
            ("PATCH", "/api/sts/organisation/v1/{id}", format!("/api/sts/organisation/v1/{org}"), json!({"name": "Renamed"})),
            ("DELETE", "/api/sts/organisation/v1/{id}", format!("/api/sts/organisation/v1/{org}"), Value::Null),
            ("PUT", "/api/sts/organisation/v1/{id}/member/{userId}", format!("/api/sts/organisation/v1/{org}/member/{robot}"), Value::Null),
            ("DELETE", "/api/sts/organisation/v1/{id}/member/{userId}", format!("/api/sts/organisation/v1/{org}/member/{member}"), Value::Null),
            ("POST", "/api/sts/user/v1", "/api/sts/user/v1".to_owned(), json!({"username": "fresh", "password": password_of("fresh"), "systemRoles": []})),
            ("PATCH", "/api/sts/user/v1/{id}", format!("/api/sts/user/v1/{member}"), json!({"disabled": true})),
            ("DELETE", "/api/sts/user/v1/{id}", format!("/api/sts/user/v1/{member}"), Value::Null),
            ("POST", "/api/sts/user/v1/{id}/secret", format!("/api/sts/user/v1/{robot}/secret"), Value::Null),
        ];
        // Writes whose input is judged, or a password hashed, before their
        // transaction: the caller is refused before that, not after.
        let judged_early = [
            ("POST", "/api/sts/user/v1", "/api/sts/user/v1".to_owned(), json!({"username": "weak", "password": "short", "systemRoles": []})),
            ("PATCH", "/api/sts/user/v1/{id}", format!("/api/sts/user/v1/{member}"), json!({"password": "short"})),
        ];
        let mut listed: Vec<_> = writes.iter().map(|(m, p, _, _)| (m.to_lowercase(), *p)).collect();
        let mut table: Vec<_> = sts::api::ROUTES.iter().filter(|(m, p)| *m != "get" && !p.starts_with("/api/sts/token")).map(|(m, p)| (m.to_string(), *p)).collect();
        listed.sort();
        table.sort();
        assert_eq!(listed, table, "every write route of the route table is tried");
        for (how, end) in [("disabled", json!({"disabled": true})), ("deleted", Value::Null)] {
            let name = format!("{how}.admin");
            let id = app.create_user(&admin, &name, &["ADMIN"]).await;
            let token = app.login(&name, &password_of(&name), None).await["access_token"].as_str().expect("at").to_owned();
            let ended = if end.is_null() {
                app.delete(&format!("/api/sts/user/v1/{id}"), &admin).await
            } else {
                app.patch_json(&format!("/api/sts/user/v1/{id}"), &admin, &end).await
            };
            assert_eq!(ended.status(), StatusCode::NO_CONTENT);
            let before = counts(&app).await;
            for (method, pattern, path, body) in writes.iter().chain(&judged_early) {
                let request = app.client.request(Method::from_bytes(method.as_bytes()).expect("method"), app.url(path)).bearer_auth(&token);
                let request = if body.is_null() { request } else { request.json(body) };
                let response = request.send().await.expect("request");
                assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{method} {pattern} by a {how} admin");
                let denied = app.audit(&admin, &format!("action=admin.denied&subject={id}")).await;
                assert!(
                    denied.iter().any(|e| e["targetId"] == format!("{method} {pattern}") && e["reason"] == "401: user disabled or deleted"),
                    "{method} {pattern}: the refusal names the route ({denied:?})"
                );
            }
            assert_eq!(counts(&app).await, before, "nothing changed for a {how} admin");
            let kept: Value = app.get(&format!("/api/sts/organisation/v1/{org}"), &admin).await.json().await.expect("json");
            assert_eq!(kept["name"], "Kept");
            let member_view: Value = app.get(&format!("/api/sts/user/v1/{member}"), &admin).await.json().await.expect("json");
            assert_eq!(member_view["disabled"], false, "the member was not disabled: {member_view}");
            let robot_s = robot.to_string();
            let old_secret = app.token_request(&[("grant_type", "client_credentials"), ("client_id", &robot_s), ("client_secret", &secret)]).await;
            assert_eq!(old_secret.status(), StatusCode::OK, "the robot's secret was not rotated");
            let since_login: Vec<_> = app.audit(&admin, &format!("subject={id}")).await.into_iter().filter(|e| e["action"] != "token.password").collect();
            assert_eq!(since_login.len(), writes.len() + judged_early.len(), "one event per refused write: {since_login:?}");
            assert!(since_login.iter().all(|e| e["action"] == "admin.denied"), "refusals only, no failed writes: {since_login:?}");
        }
    }

    async fn case_35_36_a_delegated_token_dies_with_its_actor_not_only_with_its_subject(app) {
        let admin = app.admin_token().await;
        let org = app.create_org(&admin, "Delegating", &["ISSUER"]).await;
        let user = app.create_user(&admin, "principal", &["ISSUING_OPERATOR"]).await;
        let (actor, secret) = app.create_technical(&admin, "delegate", &["DELEGATION_SERVICE", "ISSUING_OPERATOR"]).await;
        for member in [user, actor] {
            app.add_member(&admin, org, member).await;
        }
        let subject = app.login("principal", &password_of("principal"), Some(org)).await["access_token"].as_str().expect("at").to_owned();
        let actor_s = actor.to_string();
        let actor_token: Value = app.token_request(&[("grant_type", "client_credentials"), ("client_id", &actor_s), ("client_secret", &secret)]).await.json().await.expect("json");
        let org_s = org.to_string();
        let delegated: Value = app
            .token_request(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
                ("subject_token", &subject),
                ("subject_token_type", "urn:ietf:params:oauth:token-type:access_token"),
                ("actor_token", actor_token["access_token"].as_str().expect("at")),
                ("actor_token_type", "urn:ietf:params:oauth:token-type:access_token"),
                ("organisation_id", &org_s),
            ])
            .await
            .json()
            .await
            .expect("json");
        let delegated = delegated["access_token"].as_str().expect("a delegated token").to_owned();
        assert_eq!(crate::helpers::claims(&delegated)["act"], json!({"sub": actor_s}));
        let routes = ["/api/sts/me/v1", "/api/sts/role/v1"];
        for route in routes {
            assert_eq!(app.get(route, &delegated).await.status(), StatusCode::OK, "{route} before the actor is disabled");
        }

        let disabled = app.patch_json(&format!("/api/sts/user/v1/{actor}"), &admin, &json!({"disabled": true})).await;
        assert_eq!(disabled.status(), StatusCode::NO_CONTENT);
        for route in routes {
            assert_eq!(app.get(route, &delegated).await.status(), StatusCode::UNAUTHORIZED, "{route} once the actor is disabled");
            assert_eq!(app.get(route, &subject).await.status(), StatusCode::OK, "{route}: the subject's own token is not affected");
        }
        let denied = app.audit(&admin, &format!("action=admin.denied&subject={user}")).await;
        assert_eq!(denied.len(), routes.len(), "one refusal per route: {denied:?}");
        for event in &denied {
            assert_eq!(event["actor"], actor_s, "the refusal names the actor: {event}");
            assert_eq!(event["reason"], "401: user disabled or deleted");
        }

        let enabled = app.patch_json(&format!("/api/sts/user/v1/{actor}"), &admin, &json!({"disabled": false})).await;
        assert_eq!(enabled.status(), StatusCode::NO_CONTENT);
        assert_eq!(app.get(routes[0], &delegated).await.status(), StatusCode::OK, "re-enabling the actor revives an unexpired token");
        assert_eq!(app.delete(&format!("/api/sts/user/v1/{actor}"), &admin).await.status(), StatusCode::NO_CONTENT);
        assert_eq!(app.get(routes[0], &delegated).await.status(), StatusCode::UNAUTHORIZED, "once the actor is deleted");
    }

    // The same for writes, whose caller is re-read inside the write's own
    // transaction (`audit::audited_write`): no delegated token the exchange
    // issues holds an STS_* write permission today (no ceiling has one), so
    // the token is signed here with our key, the admin's claims and an actor.
    async fn case_35_36_a_write_by_a_disabled_actor_is_refused_and_leaves_nothing(app) {
        let admin = app.admin_token().await;
        let (actor, _) = app.create_technical(&admin, "write-delegate", &["DELEGATION_SERVICE"]).await;
        let (header, mut claims) = app.admin_parts().await;
        let key = app.signing_key(header["kid"].as_str().expect("kid"));
        claims["act"] = json!({"sub": actor.to_string()});
        let delegated = TestApp::sign_with(&key, &header, &claims);
        let orgs = "/api/sts/organisation/v1";
        let before = app.post_json(orgs, &delegated, &json!({"name": "Before", "roles": ["ISSUER"]})).await;
        assert_eq!(before.status(), StatusCode::CREATED, "a write while the actor is active");
        let before = id_of(before).await;

        let disabled = app.patch_json(&format!("/api/sts/user/v1/{actor}"), &admin, &json!({"disabled": true})).await;
        assert_eq!(disabled.status(), StatusCode::NO_CONTENT);
        let created = app.post_json(orgs, &delegated, &json!({"name": "After", "roles": ["ISSUER"]})).await;
        assert_eq!(created.status(), StatusCode::UNAUTHORIZED, "create once the actor is disabled");
        let renamed = app.patch_json(&format!("{orgs}/{before}"), &delegated, &json!({"name": "Renamed"})).await;
        assert_eq!(renamed.status(), StatusCode::UNAUTHORIZED, "edit once the actor is disabled");

        let page: Value = app.get(&format!("{orgs}?pageSize=100"), &admin).await.json().await.expect("json");
        let names: Vec<&str> = page["values"].as_array().expect("values").iter().filter_map(|v| v["name"].as_str()).collect();
        assert!(names.contains(&"Before") && !names.contains(&"After") && !names.contains(&"Renamed"), "{names:?}");
        let denied = app.audit(&admin, "action=admin.denied").await;
        let by_actor: Vec<&Value> = denied.iter().filter(|e| e["actor"] == json!(actor.to_string())).collect();
        assert_eq!(by_actor.len(), 2, "one refusal per write: {denied:?}");
        assert!(by_actor.iter().all(|e| e["reason"] == "401: user disabled or deleted"), "{by_actor:?}");
    }

    async fn case_36_a_token_for_another_audience_or_an_expired_one_is_refused(app) {
        let (header, mut claims) = app.admin_parts().await;
        let key = app.signing_key(header["kid"].as_str().expect("kid"));
        claims["aud"] = json!("wallet-backend");
        app.assert_refused(&TestApp::sign_with(&key, &header, &claims), "audience of another service").await;
        let admin = app.admin_token().await;
        app.clock.advance(chrono::Duration::seconds(306));
        app.assert_refused(&admin, "expired").await;
    }

    async fn case_37_deactivation_stops_exchange_out_of_the_organisation(app) {
        let admin = app.admin_token().await;
        let a = app.create_org(&admin, "A", &["ISSUER"]).await;
        let b = app.create_org(&admin, "B", &["ISSUER"]).await;
        let user = app.create_user(&admin, "both", &["ISSUING_OPERATOR"]).await;
        app.add_member(&admin, a, user).await;
        app.add_member(&admin, b, user).await;
        let in_a = app.login("both", &password_of("both"), Some(a)).await["access_token"].as_str().expect("at").to_owned();
        app.patch_json(&format!("/api/sts/organisation/v1/{a}"), &admin, &json!({"deactivate": true})).await;
        let b_s = b.to_string();
        let out = app.token_request(&[("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"), ("subject_token", &in_a),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:access_token"), ("organisation_id", &b_s)]).await;
        assert_eq!(out.status(), StatusCode::BAD_REQUEST, "no way out of a deactivated organisation");
    }

    async fn case_38_deleting_under_load_leaves_no_token_for_the_deleted_organisation(app) {
        let admin = app.admin_token().await;
        let org = app.create_org(&admin, "Doomed", &["HOLDER"]).await;
        let user = app.create_user(&admin, "holder", &["WALLET_USER"]).await;
        app.add_member(&admin, org, user).await;
        let password = password_of("holder");
        let mut rts = Vec::new();
        for _ in 0..20 {
            rts.push(app.login("holder", &password, Some(org)).await["refresh_token"].as_str().expect("rt").to_owned());
        }
        let racing = race_refreshes(&app, rts);
        let deleted = app.delete(&format!("/api/sts/organisation/v1/{org}"), &admin).await;
        assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
        for answer in futures_util::future::join_all(racing).await {
            if let Some(rt) = answer.expect("task")["refresh_token"].as_str() {
                let after = app.token_request(&[("grant_type", "refresh_token"), ("refresh_token", rt)]).await;
                assert_eq!(after.status(), StatusCode::BAD_REQUEST, "a token minted in the race dies with the organisation");
            }
        }
        assert_eq!(app.db.scalar(&format!("SELECT COUNT(*) AS value FROM refresh_tokens WHERE organisation_id = '{org}'")), 0);
        let again = app.create_org(&admin, "Doomed", &["HOLDER"]).await;
        assert_ne!(again, org, "a new organisation of the same name gets a new id");
        assert!(!app.audit(&admin, &format!("organisationId={org}")).await.is_empty(), "the audit trail stays");
    }

    async fn disabling_or_removing_under_load_ends_every_session_even_after_reinstatement(app) {
        // A refresh racing the admin change must not leave a token that the
        // change missed: it would come back to life once the user is enabled
        // again, or made a member again.
        let admin = app.admin_token().await;
        let org = app.create_org(&admin, "Racing", &["HOLDER"]).await;
        let user = app.create_user(&admin, "racer", &["WALLET_USER"]).await;
        app.add_member(&admin, org, user).await;
        let password = password_of("racer");
        let disable = |disabled: bool| json!({"disabled": disabled});
        for round in 0..4 {
            let mut rts = Vec::new();
            for _ in 0..20 {
                rts.push(app.login("racer", &password, Some(org)).await["refresh_token"].as_str().expect("rt").to_owned());
            }
            let racing = race_refreshes(&app, rts);
            let removing = round % 2 == 1;
            let ended = if removing {
                app.delete(&format!("/api/sts/organisation/v1/{org}/member/{user}"), &admin).await
            } else {
                app.patch_json(&format!("/api/sts/user/v1/{user}"), &admin, &disable(true)).await
            };
            assert_eq!(ended.status(), StatusCode::NO_CONTENT, "round {round}");
            let minted: Vec<String> = futures_util::future::join_all(racing).await.into_iter()
                .filter_map(|answer| answer.expect("task")["refresh_token"].as_str().map(str::to_owned)).collect();
            if removing {
                app.add_member(&admin, org, user).await;
            } else {
                let enabled = app.patch_json(&format!("/api/sts/user/v1/{user}"), &admin, &disable(false)).await;
                assert_eq!(enabled.status(), StatusCode::NO_CONTENT);
            }
            for rt in minted {
                let after = app.token_request(&[("grant_type", "refresh_token"), ("refresh_token", rt.as_str())]).await;
                assert_eq!(after.status(), StatusCode::BAD_REQUEST, "round {round}: a token minted in the race stays dead after reinstatement");
            }
        }
    }

    async fn revocations_of_many_families_wait_for_a_replay_in_flight_instead_of_failing(app) {
        // A replay holds its family's anchor, then revokes the family's other
        // tokens. An admin change that ends many families at once (disable,
        // member removal, user or organisation delete) used to write their
        // tokens in table order and could take one of those tokens first:
        // the two waited for each other until PostgreSQL killed one (a 503,
        // or a failed replay). Now it locks the anchors first and waits.
        // (On SQLite the one writer serialises both; the scenario runs there
        // too, for the answers, but cannot deadlock.)
        let admin = app.admin_token().await;
        for (round, action) in ["disable", "remove member", "delete user", "delete organisation"].into_iter().enumerate() {
            let org = app.create_org(&admin, &format!("Replayed {round}"), &["HOLDER"]).await;
            let name = format!("replayer-{round}");
            let user = app.create_user(&admin, &name, &["WALLET_USER"]).await;
            app.add_member(&admin, org, user).await;
            let first = app.login(&name, &password_of(&name), Some(org)).await["refresh_token"].as_str().expect("rt").to_owned();
            let rotated = app.token_request(&[("grant_type", "refresh_token"), ("refresh_token", first.as_str())]).await;
            assert_eq!(rotated.status(), StatusCode::OK, "{action}");
            let newest = rotated.json::<Value>().await.expect("json")["refresh_token"].as_str().expect("rt").to_owned();
            // A second family, which only the admin change can end.
            let other = app.login(&name, &password_of(&name), Some(org)).await["refresh_token"].as_str().expect("rt").to_owned();
            // The anchor row rewritten, so that it comes after the family's
            // newer token in the table, as rows end up in a busy table.
            let digest = sts::tokens::opaque::digest(&first);
            app.db.batch_execute(&format!(
                "BEGIN; CREATE TEMP TABLE anchor AS SELECT * FROM refresh_tokens WHERE digest = '{digest}';
                 DELETE FROM refresh_tokens WHERE digest = '{digest}';
                 INSERT INTO refresh_tokens SELECT * FROM anchor; DROP TABLE anchor; COMMIT"
            ));
            if !app.db.is_sqlite() {
                let newest_digest = sts::tokens::opaque::digest(&newest);
                let after = app.db.scalar(&format!(
                    "SELECT ((SELECT ctid FROM refresh_tokens WHERE digest = '{digest}')
                           > (SELECT ctid FROM refresh_tokens WHERE digest = '{newest_digest}'))::int::bigint AS value"
                ));
                assert_eq!(after, 1, "{action}: the anchor comes after the family's newest token in the table");
            }
            // The replay: the family's anchor locked, then the family revoked.
            let family = format!("(SELECT family_id FROM refresh_tokens WHERE digest = '{digest}')");
            let replay = InFlight::start(&app, &format!("SELECT id FROM refresh_tokens WHERE id = {family} FOR UPDATE"));
            let request = match action {
                "disable" => app.client.patch(app.url(&format!("/api/sts/user/v1/{user}"))).json(&json!({"disabled": true})),
                "remove member" => app.client.delete(app.url(&format!("/api/sts/organisation/v1/{org}/member/{user}"))),
                "delete user" => app.client.delete(app.url(&format!("/api/sts/user/v1/{user}"))),
                _ => app.client.delete(app.url(&format!("/api/sts/organisation/v1/{org}"))),
            };
            let change = tokio::spawn(request.bearer_auth(&admin).send());
            wait_until_blocked(&app).await;
            let now = if app.db.is_sqlite() { "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')" } else { "now()" };
            let revoke = format!("UPDATE refresh_tokens SET revoked_at = {now} WHERE family_id = {family} AND revoked_at IS NULL");
            assert_eq!(replay.finish(&revoke), Ok(()), "{action}: the replay's revocation commits");
            let changed = change.await.expect("task").expect("response");
            assert_eq!(changed.status(), StatusCode::NO_CONTENT, "{action}: the admin change succeeds after the replay");
            let after = app.token_request(&[("grant_type", "refresh_token"), ("refresh_token", newest.as_str())]).await;
            assert_eq!(after.status(), StatusCode::BAD_REQUEST, "{action}: the family's newest token is dead");
            let other = app.token_request(&[("grant_type", "refresh_token"), ("refresh_token", other.as_str())]).await;
            assert_eq!(other.status(), StatusCode::BAD_REQUEST, "{action}: the user's other family is ended too");
        }
    }

    async fn deletes_wait_for_a_grant_in_flight_instead_of_failing(app) {
        // A grant share-locks the membership, then the user and the
        // organisation (`member_for_grant`). A delete that took the user or
        // organisation row first and the memberships last (the cascade's
        // order) would wait for the grant while the grant waits for it.
        let admin = app.admin_token().await;
        for (round, target) in ["user", "organisation"].into_iter().enumerate() {
            let org = app.create_org(&admin, &format!("Granting {round}"), &["HOLDER"]).await;
            let name = format!("granted-{round}");
            let user = app.create_user(&admin, &name, &["WALLET_USER"]).await;
            app.add_member(&admin, org, user).await;
            let share = on_postgres(&app, " FOR SHARE");
            let grant = InFlight::start(&app, &format!(
                "SELECT organisation_id FROM memberships WHERE organisation_id = '{org}' AND user_id = '{user}'{share}"
            ));
            let path = if target == "user" { format!("/api/sts/user/v1/{user}") } else { format!("/api/sts/organisation/v1/{org}") };
            let delete = tokio::spawn(app.client.delete(app.url(&path)).bearer_auth(&admin).send());
            wait_until_blocked(&app).await;
            let rest = format!("SELECT id FROM users WHERE id = '{user}'{share}; SELECT id FROM organisations WHERE id = '{org}'{share}");
            assert_eq!(grant.finish(&rest), Ok(()), "{target}: the grant in flight completes");
            let deleted = delete.await.expect("task").expect("response");
            assert_eq!(deleted.status(), StatusCode::NO_CONTENT, "{target}: the delete succeeds after the grant");
            assert_eq!(app.get(&path, &admin).await.status(), StatusCode::NOT_FOUND, "{target}: gone");
        }
    }

    async fn a_delete_takes_memberships_in_key_order_and_waits_instead_of_failing(app) {
        // Deletes of users and organisations whose memberships cross could
        // each hold one membership row the next one needs. A delete takes
        // its rows in key order, so another transaction that does the same
        // is waited for, never met in a circle. Here the user's membership
        // of the organisation with the larger id is the first row in the
        // table, and the other transaction takes the smaller key first.
        let admin = app.admin_token().await;
        let (a, b) = (app.create_org(&admin, "Keyed A", &["HOLDER"]).await, app.create_org(&admin, "Keyed B", &["HOLDER"]).await);
        let (small, large) = if a < b { (a, b) } else { (b, a) };
        let user = app.create_user(&admin, "keyed", &["WALLET_USER"]).await;
        app.add_member(&admin, large, user).await;
        app.add_member(&admin, small, user).await;
        let lock = on_postgres(&app, " FOR UPDATE");
        let row = |org: Uuid| format!("SELECT user_id FROM memberships WHERE organisation_id = '{org}' AND user_id = '{user}'{lock}");
        let other = InFlight::start(&app, &row(small));
        let path = format!("/api/sts/user/v1/{user}");
        let delete = tokio::spawn(app.client.delete(app.url(&path)).bearer_auth(&admin).send());
        wait_until_blocked(&app).await;
        assert_eq!(other.finish(&row(large)), Ok(()), "the other transaction takes its second row and commits");
        let deleted = delete.await.expect("task").expect("response");
        assert_eq!(deleted.status(), StatusCode::NO_CONTENT, "the delete succeeds after it");
        assert_eq!(app.get(&path, &admin).await.status(), StatusCode::NOT_FOUND);
    }

    async fn case_39_40_odd_payloads_are_refused_whole(app) {
        let admin = app.admin_token().await;
        let org = app.create_org(&admin, "Existing", &["HOLDER"]).await;
        let bodies = [
            json!({"name": "Mass", "roles": ["HOLDER"], "createdDate": "2020-01-01T00:00:00Z"}),
            json!({"name": "Mass", "roles": ["HOLDER"], "is_system": true}),
            json!({"name": "x".repeat(10 * 1024), "roles": ["HOLDER"]}),
            json!({"name": "EXISTING", "roles": ["HOLDER"]}),
            json!({"name": "Claims", "roles": ["HOLDER"], "iss": "http://evil", "permissions": ["STS_USER_CREATE"]}),
        ];
        for body in bodies {
            let status = app.post_json("/api/sts/organisation/v1", &admin, &body).await.status();
            assert!(status == StatusCode::BAD_REQUEST || status == StatusCode::CONFLICT, "{status} for {}", body.to_string().chars().take(80).collect::<String>());
        }
        let patch = app.patch_json(&format!("/api/sts/organisation/v1/{org}"), &admin, &json!({"deactivate": true, "id": Uuid::new_v4()})).await;
        assert_eq!(patch.status(), StatusCode::BAD_REQUEST);
        let detail: Value = app.get(&format!("/api/sts/organisation/v1/{org}"), &admin).await.json().await.expect("json");
        assert_eq!(detail["status"], "ACTIVE", "a refused body is never partly applied");
        assert_eq!(app.db.scalar("SELECT COUNT(*) AS value FROM organisations"), 1);
    }

    async fn case_41_hostile_names_stay_one_bounded_record(app) {
        let admin = app.admin_token().await;
        let hostile = format!("evil\n{{\"json\":1}}\r\u{1b}[31m{}", "x".repeat(10 * 1024));
        let (status, _) = (app.token_request(&[("grant_type", "password"), ("username", &hostile), ("password", "wrong-password-0123456")]).await.status(), ());
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let events = app.audit(&admin, "action=token.password").await;
        let event = events.iter().find(|e| e["subject"].as_str().is_some_and(|s| s.starts_with("evil"))).expect("recorded");
        let subject = event["subject"].as_str().expect("subject");
        assert!(subject.chars().count() <= 256, "truncated");
        assert!(!subject.chars().any(char::is_control), "no control characters");
        let everything = app.get("/api/sts/audit/v1?pageSize=1000", &admin).await.text().await.expect("text");
        assert!(!everything.contains(ADMIN_PASSWORD));
    }
}

/// Case 42: when the audit row cannot be written, the change it records
/// rolls back and the client gets 503; no token is issued without its row
/// (a refresh grant sends its token and audit inserts together: the stored
/// token and the rotation roll back too); after recovery, changes and audit
/// rows match again.
async fn a_lost_audit_write_rolls_the_change_back(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let session = app.login("admin", ADMIN_PASSWORD, None).await;
    let admin = session["access_token"].as_str().expect("token").to_owned();
    let refresh_token = session["refresh_token"].as_str().expect("refresh token");
    let freeze = match backend {
        Backend::Postgres => "ALTER TABLE audit_events ADD CONSTRAINT audit_frozen CHECK (false) NOT VALID",
        Backend::Sqlite => {
            "CREATE TRIGGER audit_frozen BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'frozen'); END"
        }
    };
    let thaw = match backend {
        Backend::Postgres => "ALTER TABLE audit_events DROP CONSTRAINT audit_frozen",
        Backend::Sqlite => "DROP TRIGGER audit_frozen",
    };
    let audit_rows = app.db.scalar("SELECT COUNT(*) AS value FROM audit_events");
    app.db.execute_here(freeze);
    let create =
        app.post_json("/api/sts/organisation/v1", &admin, &json!({"name": "Unaudited", "roles": ["HOLDER"]})).await;
    assert_eq!(create.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(create.headers().contains_key("retry-after"));
    assert_eq!(
        app.db.scalar("SELECT COUNT(*) AS value FROM organisations"),
        0,
        "the change rolled back with its audit row"
    );
    let login =
        app.token_request(&[("grant_type", "password"), ("username", "admin"), ("password", ADMIN_PASSWORD)]).await;
    assert_eq!(login.status(), StatusCode::SERVICE_UNAVAILABLE, "no token without its audit row");
    let refresh = app.token_request(&[("grant_type", "refresh_token"), ("refresh_token", refresh_token)]).await;
    assert_eq!(refresh.status(), StatusCode::SERVICE_UNAVAILABLE, "no rotation without its audit row");
    assert!(refresh.headers().contains_key("retry-after"));
    assert_eq!(
        app.db.scalar("SELECT COUNT(*) AS value FROM refresh_tokens"),
        1,
        "only the refresh token of the first login"
    );
    assert_eq!(app.db.scalar("SELECT COUNT(*) AS value FROM refresh_tokens WHERE consumed_at IS NOT NULL"), 0);
    assert_eq!(app.db.scalar("SELECT COUNT(*) AS value FROM audit_events"), audit_rows);
    app.db.execute_here(thaw);
    let rotated = app.token_request(&[("grant_type", "refresh_token"), ("refresh_token", refresh_token)]).await;
    assert_eq!(rotated.status(), StatusCode::OK, "the token was not used up by the grant that rolled back");
    let created =
        app.post_json("/api/sts/organisation/v1", &admin, &json!({"name": "Audited", "roles": ["HOLDER"]})).await;
    assert_eq!(created.status(), StatusCode::CREATED, "recovers by itself");
    assert_eq!(app.db.scalar("SELECT COUNT(*) AS value FROM audit_events"), audit_rows + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_42_a_lost_audit_write_rolls_the_change_back_on_postgres() {
    a_lost_audit_write_rolls_the_change_back(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_42_a_lost_audit_write_rolls_the_change_back_on_sqlite() {
    a_lost_audit_write_rolls_the_change_back(Backend::Sqlite).await;
}

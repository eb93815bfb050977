//! Signing-key rotation as a caching verifier lives through it: two full
//! rotations on the simulated clock with a token every 30 s and zero
//! refusals; the same run with a key that signs at once (Hydra's way) is
//! refused; several instances on one keys directory agree; a rotation
//! under a load of grants fails none of them.

use std::collections::BTreeSet;

use chrono::Duration;
use reqwest::StatusCode;
use serde_json::Value;
use sts::clock::Clock;
use sts::config::Settings;
use sts::service::keys;
use sts::tokens::KeyDir;

use crate::both_backends;
use crate::core_verifier::{CoreVerifier, HttpCache, core_key_set};
use crate::helpers::{Backend, TestApp, claims};

/// Core's shipped `ttlJwks`.
const CORE_TTL_JWKS: i64 = 600;
/// A token is issued every this many simulated seconds.
const STEP: i64 = 30;

/// What a simulated run saw.
#[derive(Debug, Default)]
struct Run {
    issued: usize,
    refusals: Vec<String>,
    signing_kids: Vec<String>,
}

/// Core replicas that started at different times, so their caches expire
/// at different moments: one every 4 steps (2 minutes) across the cache
/// lifetime, behind one HTTP cache.
const REPLICAS: usize = 5;
const REPLICA_SPACING: usize = 4;

/// Issues a token every [`STEP`] seconds for `span`, running one key
/// maintenance tick before each, and has every Core replica check every
/// token when it is issued and again at the last step it is still live.
async fn run(app: &TestApp, span: Duration) -> Run {
    let admin = app.admin_token().await;
    let (client, secret) = app.create_technical(&admin, "core-caller", &["ADMIN"]).await;
    let client = client.to_string();
    let mut http = HttpCache::default();
    let mut replicas: Vec<CoreVerifier> = (0..REPLICAS).map(|_| CoreVerifier::new(CORE_TTL_JWKS)).collect();
    let mut live: Vec<(String, i64)> = Vec::new();
    let mut outcome = Run::default();
    let end = app.clock.now().timestamp() + span.num_seconds();
    for step in 0.. {
        if app.clock.now().timestamp() >= end {
            break;
        }
        app.clock.advance(Duration::seconds(STEP));
        app.tick_keys().await;
        let now = app.clock.now().timestamp();
        let form = [("grant_type", "client_credentials"), ("client_id", &client), ("client_secret", &secret)];
        let response = app.token_request(&form).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("json");
        let token = body["access_token"].as_str().expect("token").to_owned();
        let kid = header_kid(&token);
        if outcome.signing_kids.last() != Some(&kid) {
            outcome.signing_kids.push(kid);
        }
        outcome.issued += 1;
        let exp = claims(&token)["exp"].as_i64().expect("exp");
        live.push((token.clone(), exp));
        // A replica that starts now fetches the set afresh: a key removed
        // too early fails the late checks here even when caches hide it.
        let mut starting = CoreVerifier::new(CORE_TTL_JWKS);
        for (token, _) in live.iter().filter(|(_, exp)| *exp - now <= STEP && *exp > now) {
            if let Err(reason) = starting.verify(&mut HttpCache::default(), app, token, now).await {
                outcome.refusals.push(format!("starting replica, late check, t={now}: {reason}"));
            }
        }
        let started = replicas.iter_mut().take(step / REPLICA_SPACING + 1);
        for (replica, verifier) in started.enumerate() {
            if let Err(reason) = verifier.verify(&mut http, app, &token, now).await {
                outcome.refusals.push(format!("replica {replica} at issue, t={now}: {reason}"));
            }
            for (token, exp) in &live {
                if *exp - now <= STEP
                    && *exp > now
                    && let Err(reason) = verifier.verify(&mut http, app, token, now).await
                {
                    outcome.refusals.push(format!("replica {replica} late check, t={now}: {reason}"));
                }
            }
        }
        live.retain(|(_, exp)| *exp - now > STEP);
    }
    outcome
}

fn header_kid(token: &str) -> String {
    use base64::Engine;
    let header = token.split('.').next().expect("header");
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).expect("b64");
    let header: Value = serde_json::from_slice(&header).expect("json");
    header["kid"].as_str().expect("kid").to_owned()
}

/// Parallel lanes of grants in the rotation-under-load case.
const LANES: usize = 4;

/// A one-day rotation period (the shortest there is), Core's cache timings.
fn one_day(settings: &mut Settings) {
    settings.keys.rotation_period_days = 1;
}

/// Hydra's behaviour: the service believes nobody caches the JWKS, so a new
/// key signs as soon as every instance has reloaded.
fn signs_at_once(settings: &mut Settings) {
    one_day(settings);
    settings.keys.verifier_cache_ttl_secs = 0;
    settings.tokens.jwks_max_age_secs = 0;
    settings.tokens.leeway_secs = 0;
}

async fn two_rotations_are_invisible_to_a_caching_verifier(backend: Backend) {
    let app = TestApp::spawn_with(backend, one_day).await;
    let timing = app.ctx.keys.timing();
    let span = Duration::days(2) + timing.retention() + Duration::minutes(10);
    let outcome = run(&app, span).await;
    assert_eq!(outcome.refusals, Vec::<String>::new(), "after {} tokens", outcome.issued);
    assert_eq!(outcome.signing_kids.len(), 3, "two rotations: {:?}", outcome.signing_kids);
    let (jwks, _) = app.jwks().await;
    let published = core_key_set(&jwks).expect("Core accepts the set");
    assert!(!published.contains_key(&outcome.signing_kids[0]), "the first key was removed after its retention");
    assert!(published.contains_key(&outcome.signing_kids[2]));
}

async fn a_key_that_signs_at_once_is_refused_by_a_caching_verifier(backend: Backend) {
    let app = TestApp::spawn_with(backend, signs_at_once).await;
    let outcome = run(&app, Duration::days(1) + Duration::minutes(20)).await;
    assert_eq!(outcome.signing_kids.len(), 2, "one rotation: {:?}", outcome.signing_kids);
    assert!(
        outcome.refusals.iter().any(|r| r.contains("unknown kid")),
        "the verifier refuses tokens of a key it has not cached: {:?}",
        outcome.refusals
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rotations_are_invisible_to_a_caching_verifier_postgres() {
    two_rotations_are_invisible_to_a_caching_verifier(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rotations_are_invisible_to_a_caching_verifier_sqlite() {
    two_rotations_are_invisible_to_a_caching_verifier(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_signs_at_once_is_refused_by_a_caching_verifier_postgres() {
    a_key_that_signs_at_once_is_refused_by_a_caching_verifier(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_signs_at_once_is_refused_by_a_caching_verifier_sqlite() {
    a_key_that_signs_at_once_is_refused_by_a_caching_verifier(Backend::Sqlite).await;
}

/// The admin API answers a token from `issuer` at `verifier`.
async fn accepted_by(verifier: &TestApp, issuer: &TestApp) -> bool {
    let token = issuer.admin_token().await;
    verifier.get("/api/sts/organisation/v1", &token).await.status() == StatusCode::OK
}

async fn signing_kid(app: &TestApp) -> String {
    header_kid(&app.admin_token().await)
}

both_backends! {
    async fn instances_sharing_a_keys_directory_agree_through_a_rotation(app) {
        let other = app.sibling(|_| {}).await;
        assert_eq!(app.jwks().await, other.jwks().await, "same set, same ETag");
        assert!(accepted_by(&app, &other).await && accepted_by(&other, &app).await);
        let first = signing_kid(&app).await;
        assert_eq!(signing_kid(&other).await, first);

        let timing = *app.ctx.keys.timing();
        app.clock.advance(timing.successor_due_after());
        // Both are due at the same moment; the lock lets at most one act
        // (a background tick may already have).
        let (a, b) = tokio::join!(app.tick_keys(), other.tick_keys());
        assert!(a.actions.len() + b.actions.len() <= 1, "one successor: {a:?} {b:?}");
        other.tick_keys().await;
        app.tick_keys().await;
        let (jwks, etag) = app.jwks().await;
        assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(2), "the next key is published");
        assert_eq!(other.jwks().await, (jwks, etag));
        assert_eq!(signing_kid(&other).await, first, "a next key does not sign");

        app.clock.advance(timing.pre_publication_lead());
        app.tick_keys().await;
        let second = signing_kid(&app).await;
        assert_ne!(second, first, "promoted");
        // The other instance follows within one reload interval: its next tick.
        other.tick_keys().await;
        assert_eq!(signing_kid(&other).await, second);
        assert_eq!(app.jwks().await, other.jwks().await);
        assert!(accepted_by(&app, &other).await && accepted_by(&other, &app).await);
    }

    async fn the_running_service_picks_up_an_emergency_rotation_within_the_reload_interval(app) {
        let old_token = app.admin_token().await;
        let before = header_kid(&old_token);
        let organisations = "/api/sts/organisation/v1";
        assert_eq!(app.get(organisations, &old_token).await.status(), StatusCode::OK, "accepted before the emergency");
        let (fresh, dropped) = keys::emergency(&KeyDir::new(app.keys_dir()), app.clock.now()).expect("emergency");
        assert_eq!(dropped, vec![before.clone()]);
        // No manual tick: the background job reloads every 2 s of real time.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while signing_kid(&app).await != fresh {
            assert!(std::time::Instant::now() < deadline, "not reloaded within 5 s");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let (jwks, _) = app.jwks().await;
        let kids: BTreeSet<&str> = jwks["keys"].as_array().expect("keys").iter().filter_map(|k| k["kid"].as_str()).collect();
        assert_eq!(kids, BTreeSet::from([fresh.as_str()]), "the compromised key is gone");
        // Its tokens with it, though this one was verified a moment ago.
        let refused = app.get(organisations, &old_token).await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "a token of the compromised key after the emergency");
    }

    async fn case_49_a_rotation_under_load_fails_no_grant_and_every_token_verifies_under_its_kid(app) {
        let admin = app.admin_token().await;
        let (client, secret) = app.create_technical(&admin, "busy-backend", &[]).await;
        let first = signing_kid(&app).await;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Lanes of client-credentials grants, each answer kept with the
        // moments its request was sent and answered.
        let lanes: Vec<_> = (0..LANES)
            .map(|_| {
                let (http, url, stop) = (app.client.clone(), app.url("/api/sts/token/v1"), stop.clone());
                let form = [("grant_type", "client_credentials".to_owned()), ("client_id", client.to_string()), ("client_secret", secret.clone())];
                tokio::spawn(async move {
                    let mut answers = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let sent = std::time::Instant::now();
                        let response = http.post(&url).form(&form).send().await.expect("request");
                        let status = response.status();
                        let body: Value = response.json().await.expect("json");
                        answers.push((sent, std::time::Instant::now(), status, body["access_token"].as_str().unwrap_or_default().to_owned()));
                    }
                    answers
                })
            })
            .collect();
        let pause = || tokio::time::sleep(std::time::Duration::from_millis(300));
        pause().await;
        let timing = *app.ctx.keys.timing();
        keys::rotate(&KeyDir::new(app.keys_dir()), &timing, app.clock.now()).expect("rotate");
        app.tick_keys().await;
        pause().await;
        // Taken before the clock moves: a background tick may promote from then on.
        let promotable = std::time::Instant::now();
        app.clock.advance(timing.pre_publication_lead());
        app.tick_keys().await;
        let promoted = std::time::Instant::now();
        // Long enough for every lane to send after the promotion, even on a
        // slow runner with SQLite's one connection.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut answers = Vec::new();
        for lane in lanes {
            answers.extend(lane.await.expect("lane"));
        }

        let refused: Vec<_> = answers.iter().filter(|(_, _, status, _)| *status != StatusCode::OK).map(|(_, _, s, _)| *s).collect();
        assert_eq!(refused, Vec::<StatusCode>::new(), "every grant through the rotation succeeds ({} in all)", answers.len());
        let second = signing_kid(&app).await;
        assert_ne!(second, first, "promoted");
        // A Core replica that fetches the set now checks each token as of its
        // issue: published kid, signature by that key.
        let (mut core, mut http) = (CoreVerifier::new(CORE_TTL_JWKS), HttpCache::default());
        for (sent, answered, _, token) in &answers {
            let kid = header_kid(token);
            let issued_at = claims(token)["iat"].as_i64().expect("iat");
            core.verify(&mut http, &app, token, issued_at).await.unwrap_or_else(|e| panic!("Core accepts a token of {kid}: {e}"));
            if *answered < promotable {
                assert_eq!(kid, first, "the published next key signs nothing before its lead has passed");
            }
            if *sent > promoted {
                assert_eq!(kid, second, "once promoted, the new key signs every token");
            }
        }
        let counted = |kid: &str| answers.iter().filter(|(_, _, _, t)| header_kid(t) == kid).count();
        assert!(counted(&first) > 0 && counted(&second) > 0, "grants ran on both sides of the promotion");
    }

    async fn the_jwks_meets_cores_rule_in_every_state(app) {
        let timing = *app.ctx.keys.timing();
        app.clock.advance(timing.successor_due_after());
        app.tick_keys().await;
        app.clock.advance(timing.pre_publication_lead());
        app.tick_keys().await;
        keys::rotate(&KeyDir::new(app.keys_dir()), &timing, app.clock.now()).expect("rotate");
        app.tick_keys().await;
        let rows = keys::list(&KeyDir::new(app.keys_dir()), &timing, app.clock.now()).expect("list").0;
        let states: Vec<String> = rows.iter().map(|r| r.state.to_string()).collect();
        assert_eq!(states, ["retired", "current", "next"]);
        let (jwks, _) = app.jwks().await;
        let set = core_key_set(&jwks).expect("Core accepts every key");
        assert_eq!(set.len(), 3, "next, current and retired are all published");
        assert!(!jwks.to_string().contains("\"d\""), "no private member");
    }
}

//! Fuzz targets, run as property tests so that they run in CI on stable
//! Rust (cargo-fuzz needs nightly): the token endpoint's form and JSON
//! decoding, our JWT validation, and the admin JSON bodies. Each must
//! answer every input with a value or an error — never a panic — and a
//! bent token must never validate.
//!
//! CI runs 256 cases per target; a longer run:
//! `PROPTEST_CASES=200000 cargo test --release --test fuzz`.

#![expect(clippy::expect_used, reason = "test set-up fails loudly, with the reason, where it cannot go on")]

use std::sync::{Arc, OnceLock};

use actix_web::http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use actix_web::web::Bytes;
use proptest::prelude::*;
use sts::clock::{Clock, SystemClock};
use sts::tokens::claims::{AccessClaims, Audience};
use sts::tokens::{KeyDir, KeyRing, LiveKeys, Verifier};

fn headers(content_type: &'static str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers
}

/// One key ring and one valid token, shared by every case.
fn fixture() -> &'static (Arc<KeyRing>, Verifier, String, tempfile::TempDir) {
    static FIXTURE: OnceLock<(Arc<KeyRing>, Verifier, String, tempfile::TempDir)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let timing = sts::config::Settings::default().resolve().expect("defaults").key_timing();
        let live = LiveKeys::open(KeyDir::new(dir.path()), timing, clock.now()).expect("keys");
        let keys = live.ring();
        let now = clock.now().timestamp();
        let claims = AccessClaims {
            iss: "http://sts.test".into(),
            sub: uuid::Uuid::new_v4(),
            aud: Audience::One("one-core".into()),
            exp: now + 300,
            iat: now,
            nbf: now,
            jti: uuid::Uuid::new_v4(),
            organisation_id: None,
            permissions: vec!["STS_AUDIT_LIST".into()],
            act: None,
        };
        let token = keys.sign(&claims).expect("sign");
        let verifier = Verifier::new("http://sts.test", "one-core", 5, 300, clock);
        (keys, verifier, token, dir)
    })
}

#[test]
fn the_fixture_token_is_valid() {
    let (keys, verifier, token, _) = fixture();
    assert!(verifier.verify(keys, token).is_ok());
}

proptest! {
    #[test]
    fn token_form_decoding_never_panics(body in prop::collection::vec(any::<u8>(), 0..2048)) {
        let body = Bytes::from(body);
        for content_type in ["application/x-www-form-urlencoded", "application/json", "text/plain"] {
            let _ = sts::api::token::decode::<sts::api::token::TokenForm>(&headers(content_type), &body);
        }
    }

    #[test]
    fn token_form_decoding_of_near_forms_never_panics(pairs in prop::collection::vec(("[a-z_\\[\\]%]{0,12}", "[ -~]{0,40}"), 0..20)) {
        let body: String = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
        let _ = sts::api::token::decode::<sts::api::token::TokenForm>(&headers("application/x-www-form-urlencoded"), &Bytes::from(body));
    }

    #[test]
    fn arbitrary_text_never_validates(text in "[A-Za-z0-9_\\-\\.=+/ ]{0,600}") {
        let (keys, verifier, _, _) = fixture();
        prop_assert!(verifier.verify(keys, &text).is_err());
    }

    #[test]
    fn a_bent_token_never_validates(position in any::<prop::sample::Index>(), replacement in any::<u8>()) {
        let (keys, verifier, token, _) = fixture();
        let mut bytes = token.clone().into_bytes();
        let at = position.index(bytes.len());
        if bytes[at] != replacement {
            bytes[at] = replacement;
            if let Ok(bent) = String::from_utf8(bytes) {
                // Flipping a base64 character's unused low bits can leave the
                // decoded bytes unchanged; then the token is the same token.
                let same = bent.split('.').zip(token.split('.')).all(|(a, b)| {
                    use base64::Engine;
                    let decode = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok();
                    decode(a).is_some() && decode(a) == decode(b)
                }) && bent.matches('.').count() == 2;
                prop_assert_eq!(verifier.verify(keys, &bent).is_ok(), same);
            }
        }
    }

    #[test]
    fn admin_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..1024)) {
        let _ = serde_json::from_slice::<sts::api::organisation::CreateOrganisation>(&body);
        let _ = serde_json::from_slice::<sts::api::organisation::UpdateOrganisation>(&body);
        let _ = serde_json::from_slice::<sts::api::user::CreateUser>(&body);
        let _ = serde_json::from_slice::<sts::api::user::UpdateUser>(&body);
    }

    #[test]
    fn admin_bodies_of_near_json_never_panic(name in ".{0,300}", roles in prop::collection::vec("[A-Z_]{0,30}", 0..10), extra in prop::option::of("[a-z]{1,10}")) {
        let mut body = serde_json::json!({"name": name, "roles": roles});
        if let Some(extra) = extra {
            body[extra] = serde_json::json!(true);
        }
        let _ = serde_json::from_value::<sts::api::organisation::CreateOrganisation>(body);
    }
}

//! A verifier that behaves like Core towards our JWKS, on the simulated
//! clock: it fetches the set through an HTTP cache that honours our
//! `max-age`, keeps what it fetched for its own `ttlJwks`, never refetches on
//! an unknown `kid`, and drops the whole set if one key is not a well-formed
//! Ed25519 public key. Signatures are checked with ed25519-dalek, an
//! implementation independent of the service's.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::Value;

use crate::helpers::TestApp;

/// Core's rule for a JWKS: every key `kty` OKP, `crv` Ed25519, `x` 32 bytes,
/// a `kid`, `alg` EdDSA, `use` sig, and no private member `d`. One key that
/// breaks it and the whole set is refused.
pub fn core_key_set(jwks: &Value) -> Result<HashMap<String, VerifyingKey>, String> {
    let keys = jwks["keys"].as_array().ok_or("no keys array")?;
    let mut set = HashMap::new();
    for key in keys {
        let member = |name: &str| key.get(name).and_then(Value::as_str);
        let shape = (member("kty"), member("crv"), member("alg"), member("use"));
        if shape != (Some("OKP"), Some("Ed25519"), Some("EdDSA"), Some("sig")) || key.get("d").is_some() {
            return Err(format!("not an Ed25519 public signing key: {key}"));
        }
        let kid = member("kid").filter(|k| !k.is_empty()).ok_or_else(|| format!("no kid: {key}"))?;
        let x = URL_SAFE_NO_PAD.decode(member("x").unwrap_or_default()).map_err(|e| e.to_string())?;
        let x: [u8; 32] = x.try_into().map_err(|_| format!("x is not 32 bytes: {key}"))?;
        set.insert(kid.to_owned(), VerifyingKey::from_bytes(&x).map_err(|e| e.to_string())?);
    }
    Ok(set)
}

/// An HTTP cache shared by the verifiers (a proxy in front of the STS): it
/// serves a stored response until the response's `max-age` has passed, so a
/// verifier may receive a set that is already that old.
#[derive(Default)]
pub struct HttpCache {
    stored: Option<(i64, i64, Value)>,
}

impl HttpCache {
    async fn get(&mut self, app: &TestApp, now: i64) -> Value {
        if let Some((at, max_age, body)) = &self.stored
            && now < at + max_age
        {
            return body.clone();
        }
        let response = app.client.get(app.url("/.well-known/jwks.json")).send().await.expect("jwks");
        let max_age = response.headers()["cache-control"]
            .to_str()
            .ok()
            .and_then(|c| c.split(',').find_map(|d| d.trim().strip_prefix("max-age=")?.parse().ok()))
            .unwrap_or(0);
        let body: Value = response.json().await.expect("json");
        self.stored = Some((now, max_age, body.clone()));
        body
    }
}

pub struct CoreVerifier {
    ttl_jwks: i64,
    leeway: i64,
    cached: Option<(i64, HashMap<String, VerifyingKey>)>,
}

impl CoreVerifier {
    pub fn new(ttl_jwks: i64) -> Self {
        Self { ttl_jwks, leeway: 5, cached: None }
    }

    /// The key set, refetched only when the cached copy is `ttlJwks` old.
    async fn keys(&mut self, http: &mut HttpCache, app: &TestApp, now: i64) -> &HashMap<String, VerifyingKey> {
        let stale = self.cached.as_ref().is_none_or(|(at, _)| now >= at + self.ttl_jwks);
        if stale {
            let jwks = http.get(app, now).await;
            // A set Core cannot parse leaves it with no keys at all.
            self.cached = Some((now, core_key_set(&jwks).unwrap_or_default()));
        }
        &self.cached.as_ref().expect("cached").1
    }

    /// Verifies `token` at simulated time `now` (seconds); the reason on refusal.
    pub async fn verify(&mut self, http: &mut HttpCache, app: &TestApp, token: &str, now: i64) -> Result<(), String> {
        let parts: Vec<&str> = token.split('.').collect();
        let [header, payload, signature] = parts[..] else { return Err("not a compact JWS".into()) };
        let decode = |part: &str| -> Result<Value, String> {
            let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|e| e.to_string())?;
            serde_json::from_slice(&bytes).map_err(|e| e.to_string())
        };
        let (head, claims) = (decode(header)?, decode(payload)?);
        if head["alg"] != "EdDSA" {
            return Err("alg".into());
        }
        let kid = head["kid"].as_str().ok_or("no kid")?.to_owned();
        let leeway = self.leeway;
        let key = *self.keys(http, app, now).await.get(&kid).ok_or_else(|| format!("unknown kid {kid}"))?;
        let signature = Signature::from_slice(&URL_SAFE_NO_PAD.decode(signature).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        key.verify_strict(format!("{header}.{payload}").as_bytes(), &signature)
            .map_err(|_| format!("bad signature by {kid}"))?;
        if claims["exp"].as_i64().is_none_or(|exp| exp <= now - leeway) {
            return Err("expired".into());
        }
        Ok(())
    }
}

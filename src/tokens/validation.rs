//! The one validation builder for our own tokens (admin API, token exchange).
//!
//! jsonwebtoken checks the signature with `alg` pinned to EdDSA, the presence
//! of `exp`, `iss`, `aud`, `sub`, and the exact `iss` and `aud`. Time is
//! checked here against the injected clock, with our small leeway. Header
//! members that name keys (`jku`, `x5u`, `jwk`, `x5c`) are never read: the
//! key comes from our own key ring by `kid`, or the token is refused.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, Validation};

use super::claims::{ACCESS_TOKEN_TYP, AccessClaims, Audience};
use super::keys::KeyRing;
use crate::clock::Clock;

/// Why a token was refused. Logged, never shown to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    #[error("malformed token or header")]
    Malformed,
    #[error("algorithm is not EdDSA")]
    Algorithm,
    #[error("typ is not at+jwt")]
    Type,
    #[error("unknown or missing kid")]
    UnknownKey,
    #[error("signature or claims invalid: {0}")]
    Invalid(String),
    #[error("expired")]
    Expired,
    #[error("not yet valid")]
    NotYetValid,
    #[error("issued in the future")]
    IssuedInFuture,
    #[error("lifetime longer than this service issues")]
    LifetimeTooLong,
}

/// Our largest token (an organisation token holding every organisation-
/// scoped permission) is about 3 KB; the request-header cap is 8 KiB.
/// Anything larger is not ours and is refused before it is decoded.
pub const MAX_TOKEN_BYTES: usize = 8192;

/// We understand no JWS extension, so a `crit` header member must make the
/// token invalid (RFC 7515 §4.1.11) — jsonwebtoken does not look at it.
fn reject_critical_header(token: &str) -> Result<(), TokenRejection> {
    use base64::Engine;
    let segment = token.split('.').next().ok_or(TokenRejection::Malformed)?;
    let bytes =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(segment).map_err(|_| TokenRejection::Malformed)?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|_| TokenRejection::Malformed)?;
    if header.contains_key("crit") {
        return Err(TokenRejection::Malformed);
    }
    Ok(())
}

/// How many verified tokens a verifier remembers. Callers of the admin API
/// and Core's token exchanges reuse one token for its lifetime (minutes).
/// An entry is the claims of one of our tokens: well under 1 KB for most,
/// about 6 KB for one holding every permission, so at most about 6 MB.
pub const VERIFIED_CACHE_ENTRIES: usize = 1024;

/// What a verification found that does not depend on the time: this token
/// verified, under the key set `keys` (`KeyRing::fingerprint`), to `claims`.
#[derive(Clone)]
struct Verified {
    keys: [u8; 32],
    claims: Arc<AccessClaims>,
}

#[derive(Clone)]
pub struct Verifier {
    validation: Validation,
    audience: String,
    leeway: i64,
    max_lifetime: i64,
    clock: Arc<dyn Clock>,
    /// Tokens that passed every check, by the SHA-256 of their text; the
    /// time's checks run again at every use (`docs/DECISIONS.md`, "Verified
    /// tokens are remembered").
    verified: Arc<quick_cache::sync::Cache<[u8; 32], Verified>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("audience", &self.audience).finish_non_exhaustive()
    }
}

impl Verifier {
    /// `max_lifetime` is the access-token lifetime: a token that claims to
    /// live longer was not issued by us, whatever its signature says.
    pub fn new(issuer: &str, audience: &str, leeway_secs: u64, max_lifetime_secs: u64, clock: Arc<dyn Clock>) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        // Time is ours to check, against the injected clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        Self {
            validation,
            audience: audience.to_owned(),
            leeway: i64::try_from(leeway_secs).unwrap_or(i64::MAX),
            max_lifetime: i64::try_from(max_lifetime_secs).unwrap_or(i64::MAX),
            clock,
            verified: Arc::new(quick_cache::sync::Cache::new(VERIFIED_CACHE_ENTRIES)),
        }
    }

    /// The claims of `token` if it is one of ours, signed with a key of
    /// `keys`, and valid now. A token that verified before under the same
    /// key set skips the signature and decoding, never the time checks.
    pub fn verify(&self, keys: &KeyRing, token: &str) -> Result<Arc<AccessClaims>, TokenRejection> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenRejection::Malformed);
        }
        let mut digest = [0; 32];
        digest.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref());
        let fingerprint = keys.fingerprint();
        if let Some(hit) = self.verified.get(&digest).filter(|hit| hit.keys == fingerprint) {
            self.check_time(&hit.claims)?;
            return Ok(hit.claims);
        }
        let claims = Arc::new(self.verify_signed(keys, token)?);
        self.check_time(&claims)?;
        self.verified.insert(digest, Verified { keys: fingerprint, claims: claims.clone() });
        Ok(claims)
    }

    /// Every check that does not depend on the time: the header, the
    /// signature with a key of `keys`, the issuer, the exact audience, the
    /// lifetime the token claims.
    fn verify_signed(&self, keys: &KeyRing, token: &str) -> Result<AccessClaims, TokenRejection> {
        reject_critical_header(token)?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenRejection::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenRejection::Algorithm);
        }
        match header.typ.as_deref() {
            Some(t) if t.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) || t.eq_ignore_ascii_case("application/at+jwt") => {}
            _ => return Err(TokenRejection::Type),
        }
        let key = header.kid.as_deref().and_then(|kid| keys.decoding_key(kid)).ok_or(TokenRejection::UnknownKey)?;
        let claims = jsonwebtoken::decode::<AccessClaims>(token, key, &self.validation)
            .map_err(|e| TokenRejection::Invalid(e.to_string()))?
            .claims;
        // Exact audience: one value, ours. A token minted for several
        // audiences is not one of ours (RFC 8725 §3.9).
        if !matches!(&claims.aud, Audience::One(a) if a == &self.audience)
            && !matches!(&claims.aud, Audience::Many(all) if all.len() == 1 && all[0] == self.audience)
        {
            return Err(TokenRejection::Invalid("audience".into()));
        }
        if claims.exp.saturating_sub(claims.iat) > self.max_lifetime + self.leeway {
            return Err(TokenRejection::LifetimeTooLong);
        }
        Ok(claims)
    }

    /// The time checks, against the injected clock, on every use.
    fn check_time(&self, claims: &AccessClaims) -> Result<(), TokenRejection> {
        let now = self.clock.now().timestamp();
        // Valid up to and including exp + leeway (RFC 7519 §4.1.4).
        if claims.exp < now - self.leeway {
            return Err(TokenRejection::Expired);
        }
        if claims.nbf > now + self.leeway {
            return Err(TokenRejection::NotYetValid);
        }
        if claims.iat > now + self.leeway {
            return Err(TokenRejection::IssuedInFuture);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, Utc};

    use super::super::claims::{AccessClaims, Audience};
    use super::super::keys::{KeyRing, generate, read_key};
    use super::*;
    use crate::clock::ManualClock;

    const ISSUER: &str = "https://sts.example";
    const AUDIENCE: &str = "core";

    /// Two key files; `ring(&[i, …])` builds a ring of those keys, the first signing.
    struct Keys {
        dir: tempfile::TempDir,
        files: Vec<String>,
        kids: Vec<String>,
    }

    impl Keys {
        fn two() -> Self {
            let Ok(dir) = tempfile::tempdir() else { panic!("tempdir") };
            let (mut files, mut kids) = (Vec::new(), Vec::new());
            for _ in 0..2 {
                let Ok((kid, file)) = generate(dir.path(), Utc::now()) else { panic!("generate") };
                files.push(file);
                kids.push(kid);
            }
            Self { dir, files, kids }
        }

        fn ring(&self, which: &[usize]) -> KeyRing {
            let keys = which.iter().map(|&i| read_key(&self.dir.path().join(&self.files[i]))).collect();
            let Ok(keys) = keys else { panic!("read") };
            let Ok(ring) = KeyRing::new(keys, &self.kids[which[0]]) else { panic!("ring") };
            ring
        }
    }

    fn claims(now: i64) -> AccessClaims {
        AccessClaims {
            iss: ISSUER.into(),
            sub: uuid::Uuid::new_v4(),
            aud: Audience::One(AUDIENCE.into()),
            exp: now + 300,
            iat: now,
            nbf: now,
            jti: uuid::Uuid::new_v4(),
            organisation_id: None,
            permissions: vec!["STS_AUDIT_LIST".into()],
            act: None,
        }
    }

    /// Two keys, a clock that moves when told, and a verifier reading it
    /// (leeway 5 s, lifetime 300 s).
    fn fixture() -> (Keys, Arc<ManualClock>, Verifier) {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let verifier = Verifier::new(ISSUER, AUDIENCE, 5, 300, clock.clone());
        (Keys::two(), clock, verifier)
    }

    #[test]
    fn a_remembered_token_stands_while_its_key_is_in_the_set_and_falls_with_it() {
        let (keys, clock, verifier) = fixture();
        let both = keys.ring(&[0, 1]);
        let Ok(token) = both.sign(&claims(clock.now().timestamp())) else { panic!("sign") };
        assert!(verifier.verify(&both, &token).is_ok(), "verified, and remembered");
        // Another set (the other key retired): verified again, still good.
        assert!(verifier.verify(&keys.ring(&[0]), &token).is_ok(), "its key is still in the set");
        // A set without its key: refused, remembered or not.
        assert_eq!(verifier.verify(&keys.ring(&[1]), &token).err(), Some(TokenRejection::UnknownKey));
        assert!(verifier.verify(&both, &token).is_ok(), "back to a set holding its key");
    }

    #[test]
    fn a_remembered_token_is_judged_by_the_clock_at_every_use() {
        let (keys, clock, verifier) = fixture();
        let ring = keys.ring(&[0]);
        let Ok(token) = ring.sign(&claims(clock.now().timestamp())) else { panic!("sign") };
        assert!(verifier.verify(&ring, &token).is_ok());
        clock.advance(Duration::seconds(-6));
        assert_eq!(verifier.verify(&ring, &token).err(), Some(TokenRejection::NotYetValid), "the clock went back");
        clock.advance(Duration::seconds(6 + 305));
        assert!(verifier.verify(&ring, &token).is_ok(), "exp + leeway, the last second");
        clock.advance(Duration::seconds(1));
        assert_eq!(verifier.verify(&ring, &token).err(), Some(TokenRejection::Expired));
    }

    #[test]
    fn a_token_refused_for_its_time_is_accepted_once_its_time_comes() {
        let (keys, clock, verifier) = fixture();
        let ring = keys.ring(&[0]);
        let now = clock.now().timestamp();
        let early = AccessClaims { iat: now + 60, nbf: now + 60, exp: now + 360, ..claims(now) };
        let Ok(token) = ring.sign(&early) else { panic!("sign") };
        assert_eq!(verifier.verify(&ring, &token).err(), Some(TokenRejection::NotYetValid));
        clock.advance(Duration::seconds(60));
        assert!(verifier.verify(&ring, &token).is_ok());
    }
}

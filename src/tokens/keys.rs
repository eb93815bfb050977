//! Ed25519 signing keys: generated with ring, kept as PKCS#8 files (mode
//! 0600) under the keys directory, read once into ed25519-dalek's signing
//! key, identified by their RFC 7638 thumbprint, published as a
//! pre-serialised JWKS. Private material is never printed.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use jsonwebtoken::{Algorithm, DecodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::Serialize;

use super::claims::{ACCESS_TOKEN_TYP, AccessClaims};

const KEY_EXTENSION: &str = "pk8";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("key file {path} is readable by group or others (mode {mode:o}); chmod 600 it")]
    LoosePermissions { path: PathBuf, mode: u32 },
    #[error("key file {path} is not an Ed25519 PKCS#8 key")]
    Invalid { path: PathBuf },
    #[error("key generation failed")]
    Generation,
    #[error("state file {path} is corrupt: {reason}")]
    CorruptState { path: PathBuf, reason: String },
    #[error("key file {path} does not hold key {kid} that the state file names")]
    Mismatch { path: PathBuf, kid: String },
    #[error("no current key to sign with")]
    NoSigner,
    #[error("{0}")]
    Refused(String),
}

/// One key: its id and public half in the clear, the private half only inside
/// ed25519-dalek's signing key (zeroed when dropped), parsed once.
/// (jsonwebtoken's `encode` parses the PKCS#8 document and derives the
/// public key again on every signature, which cost as much as the signature
/// itself; ed25519-dalek signs in about two thirds of ring's time, with the
/// same deterministic signature: docs/PERFORMANCE.md.)
pub(super) struct SigningKey {
    pub(super) kid: String,
    x: String,
    pair: ed25519_dalek::SigningKey,
    /// The JWS header this key signs under, base64url-encoded once.
    header: String,
    decoding: DecodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Jwk<'a> {
    kty: &'static str,
    crv: &'static str,
    x: &'a str,
    kid: &'a str,
    alg: &'static str,
    #[serde(rename = "use")]
    use_: &'static str,
}

#[derive(Serialize)]
struct Jwks<'a> {
    keys: Vec<Jwk<'a>>,
}

/// The keys this instance signs and verifies with, and the JWKS built once.
#[derive(Debug)]
pub struct KeyRing {
    signer: usize,
    keys: Vec<SigningKey>,
    by_kid: HashMap<String, usize>,
    jwks: Vec<u8>,
    etag: String,
    /// SHA-256 of `jwks`: names the set of keys a token was verified with.
    fingerprint: [u8; 32],
}

/// RFC 7638 thumbprint of an Ed25519 public key: SHA-256 over the required
/// members in lexicographic order, base64url.
pub fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()))
}

fn parse_key(path: &Path, pkcs8: &[u8]) -> Result<SigningKey, KeyError> {
    // PKCS#8 v1 or v2; a v2 document's public key must match its private key.
    let pair =
        ed25519_dalek::SigningKey::from_pkcs8_der(pkcs8).map_err(|_| KeyError::Invalid { path: path.to_owned() })?;
    let public = pair.verifying_key().to_bytes();
    let x = URL_SAFE_NO_PAD.encode(public);
    let kid = thumbprint(&x);
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some(ACCESS_TOKEN_TYP.to_owned());
    header.kid = Some(kid.clone());
    let header = serde_json::to_vec(&header).map_err(|_| KeyError::Invalid { path: path.to_owned() })?;
    Ok(SigningKey { kid, decoding: DecodingKey::from_ed_der(&public), header: URL_SAFE_NO_PAD.encode(header), pair, x })
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io { path: path.to_owned(), source }
}

/// Reads one key file: refused if group or others may read it (the private
/// key would be exposed) or if it is not an Ed25519 PKCS#8 key.
pub(super) fn read_key(path: &Path) -> Result<SigningKey, KeyError> {
    let mode = fs::metadata(path).map_err(io(path))?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(KeyError::LoosePermissions { path: path.to_owned(), mode: mode & 0o777 });
    }
    let pkcs8 = fs::read(path).map_err(io(path))?;
    parse_key(path, &pkcs8)
}

/// Generates a key into `dir` with mode 0600; returns its kid and file name.
/// Written under a temporary name and renamed, so a reader never sees half
/// a key file.
pub fn generate(dir: &Path, now: chrono::DateTime<chrono::Utc>) -> Result<(String, String), KeyError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Generation)?;
    let x = {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| KeyError::Generation)?;
        URL_SAFE_NO_PAD.encode(pair.public_key().as_ref())
    };
    let kid = thumbprint(&x);
    let name = format!("{}-{}.{KEY_EXTENSION}", now.format("%Y%m%dT%H%M%SZ"), &kid[..12]);
    let (path, temporary) = (dir.join(&name), dir.join(format!(".{name}.tmp")));
    let mut file =
        fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary).map_err(io(&temporary))?;
    file.write_all(pkcs8.as_ref()).and_then(|()| file.sync_all()).map_err(io(&temporary))?;
    fs::rename(&temporary, &path).map_err(io(&path))?;
    Ok((kid, name))
}

impl KeyRing {
    /// The published set is `keys` in this order (every instance orders the
    /// same way, so all serve the same bytes and ETag); `signer` signs.
    pub(super) fn new(keys: Vec<SigningKey>, signer: &str) -> Result<Self, KeyError> {
        let signer = keys.iter().position(|k| k.kid == signer).ok_or(KeyError::NoSigner)?;
        let by_kid = keys.iter().enumerate().map(|(i, k)| (k.kid.clone(), i)).collect();
        let jwks = Jwks {
            keys: keys
                .iter()
                .map(|k| Jwk { kty: "OKP", crv: "Ed25519", x: &k.x, kid: &k.kid, alg: "EdDSA", use_: "sig" })
                .collect(),
        };
        let jwks = serde_json::to_vec(&jwks).unwrap_or_else(|_| b"{\"keys\":[]}".to_vec());
        let mut fingerprint = [0; 32];
        fingerprint.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, &jwks).as_ref());
        let etag = format!("\"{}\"", URL_SAFE_NO_PAD.encode(&fingerprint[..16]));
        Ok(Self { signer, keys, by_kid, jwks, etag, fingerprint })
    }

    pub fn signing_kid(&self) -> &str {
        self.keys.get(self.signer).map_or("", |k| k.kid.as_str())
    }

    /// Signs claims as a compact JWS (RFC 7515 §7.1) with `alg: EdDSA`,
    /// `typ: at+jwt`, `kid`.
    pub fn sign(&self, claims: &AccessClaims) -> Result<String, jsonwebtoken::errors::Error> {
        let key = self.keys.get(self.signer).ok_or(jsonwebtoken::errors::ErrorKind::InvalidEcdsaKey)?;
        let payload = serde_json::to_vec(claims)?;
        let mut token = String::with_capacity(key.header.len() + payload.len() * 4 / 3 + 92);
        token.push_str(&key.header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        let signature = key.pair.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut token);
        Ok(token)
    }

    /// The verification key for `kid`, looked up in our own set only.
    pub fn decoding_key(&self, kid: &str) -> Option<&DecodingKey> {
        self.by_kid.get(kid).and_then(|&i| self.keys.get(i)).map(|k| &k.decoding)
    }

    pub fn jwks(&self) -> &[u8] {
        &self.jwks
    }

    pub fn etag(&self) -> &str {
        &self.etag
    }

    /// The digest of the published set: two rings with the same fingerprint
    /// verify with the same keys under the same kids. (The same keys in
    /// another order give another fingerprint, which costs a verification,
    /// never a wrong answer.)
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }
}

/// The `*.pk8` files of `dir`, sorted by name (names start with their
/// creation time, so this is oldest first).
pub(super) fn key_files(dir: &Path) -> Result<Vec<PathBuf>, KeyError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(KeyError::Io { path: dir.to_owned(), source: e });
        }
    };
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry.map_err(io(dir))?.path();
        let hidden = path.file_name().and_then(|n| n.to_str()).is_none_or(|n| n.starts_with('.'));
        if !hidden && path.extension().is_some_and(|e| e == KEY_EXTENSION) {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring_of(n: usize) -> (tempfile::TempDir, KeyRing) {
        let Ok(dir) = tempfile::tempdir() else { panic!("tempdir") };
        let mut keys = Vec::new();
        for _ in 0..n {
            let Ok((_, file)) = generate(dir.path(), chrono::Utc::now()) else { panic!("generate") };
            let Ok(key) = read_key(&dir.path().join(file)) else { panic!("read") };
            keys.push(key);
        }
        let signer = keys[0].kid.clone();
        let Ok(ring) = KeyRing::new(keys, &signer) else { panic!("ring") };
        (dir, ring)
    }

    fn claims() -> AccessClaims {
        AccessClaims {
            iss: "https://sts.example".into(),
            sub: uuid::Uuid::new_v4(),
            aud: super::super::claims::Audience::One("core".into()),
            exp: 4_102_444_800,
            iat: 1_700_000_000,
            nbf: 1_700_000_000,
            jti: uuid::Uuid::new_v4(),
            organisation_id: None,
            permissions: vec!["ORGANISATION_DETAIL".into()],
            act: None,
        }
    }

    #[test]
    fn a_generated_key_file_is_private_to_its_owner() {
        let (dir, _) = ring_of(1);
        let files = key_files(dir.path()).unwrap_or_default();
        assert_eq!(files.len(), 1);
        let mode = fs::metadata(&files[0]).map(|m| m.permissions().mode() & 0o777).ok();
        assert_eq!(mode, Some(0o600));
    }

    #[test]
    fn a_key_readable_by_others_is_refused() {
        let Ok(dir) = tempfile::tempdir() else { panic!("tempdir") };
        let Ok((_, file)) = generate(dir.path(), chrono::Utc::now()) else { panic!("generate") };
        let path = dir.path().join(file);
        let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o644));
        assert!(matches!(read_key(&path), Err(KeyError::LoosePermissions { .. })));
    }

    #[test]
    fn a_file_that_is_not_an_ed25519_key_is_refused_by_name() {
        let Ok(dir) = tempfile::tempdir() else { panic!("tempdir") };
        let path = dir.path().join("broken.pk8");
        let _ = fs::write(&path, b"not a key");
        let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o600));
        let err = read_key(&path).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("broken.pk8"), "{err}");
    }

    #[test]
    fn the_kid_is_the_rfc_7638_thumbprint() {
        // RFC 8037 appendix A.3: the thumbprint of its example Ed25519 key.
        assert_eq!(
            thumbprint("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn the_jwks_holds_only_public_ed25519_members_of_every_key() {
        let (_dir, ring) = ring_of(3);
        let jwks: serde_json::Value = serde_json::from_slice(ring.jwks()).unwrap_or_default();
        let keys = jwks["keys"].as_array().cloned().unwrap_or_default();
        assert_eq!(keys.len(), 3);
        for key in &keys {
            let members: Vec<&str> =
                key.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
            assert_eq!(members.len(), 6, "{key}");
            assert_eq!((key["kty"].as_str(), key["crv"].as_str()), (Some("OKP"), Some("Ed25519")));
            assert_eq!((key["alg"].as_str(), key["use"].as_str()), (Some("EdDSA"), Some("sig")));
            let x = URL_SAFE_NO_PAD.decode(key["x"].as_str().unwrap_or_default()).unwrap_or_default();
            assert_eq!(x.len(), 32);
            assert_eq!(key["kid"].as_str(), Some(thumbprint(key["x"].as_str().unwrap_or_default()).as_str()));
        }
        assert_eq!(keys[0]["kid"], ring.signing_kid());
    }

    #[test]
    fn a_signed_token_verifies_with_jsonwebtoken_against_the_published_key() {
        let (_dir, ring) = ring_of(2);
        let claims = claims();
        let Ok(token) = ring.sign(&claims) else { panic!("sign") };
        let Ok(header) = jsonwebtoken::decode_header(&token) else { panic!("header") };
        assert_eq!((header.alg, header.typ.as_deref()), (Algorithm::EdDSA, Some(ACCESS_TOKEN_TYP)));
        assert_eq!(header.kid.as_deref(), Some(ring.signing_kid()));
        let Some(key) = ring.decoding_key(ring.signing_kid()) else { panic!("key") };
        let mut validation = jsonwebtoken::Validation::new(Algorithm::EdDSA);
        validation.set_audience(&["core"]);
        let decoded = jsonwebtoken::decode::<serde_json::Value>(&token, key, &validation);
        assert_eq!(decoded.ok().map(|d| d.claims["sub"].clone()), Some(serde_json::json!(claims.sub)));
        // The other key in the set does not verify it.
        let other = ring.keys.iter().find(|k| k.kid != ring.signing_kid()).map(|k| &k.decoding);
        let Some(other) = other else { panic!("second key") };
        assert!(jsonwebtoken::decode::<serde_json::Value>(&token, other, &validation).is_err());
    }

    #[test]
    fn the_signature_is_the_one_ring_makes_with_the_same_key_file() {
        let (dir, ring) = ring_of(1);
        let files = key_files(dir.path()).unwrap_or_default();
        let Ok(pkcs8) = fs::read(&files[0]) else { panic!("read") };
        let Ok(pair) = Ed25519KeyPair::from_pkcs8(&pkcs8) else { panic!("ring reads the file") };
        let claims = claims();
        let Ok(token) = ring.sign(&claims) else { panic!("sign") };
        let Some((input, signature)) = token.rsplit_once('.') else { panic!("compact JWS") };
        assert_eq!(signature, URL_SAFE_NO_PAD.encode(pair.sign(input.as_bytes())));
    }

    #[test]
    fn a_pkcs8_v1_key_as_openssl_writes_it_is_read() {
        // RFC 8410 §10.3's example: the seed in a v1 document, no public key.
        let Ok(der) = base64::engine::general_purpose::STANDARD
            .decode("MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC")
        else {
            panic!("base64")
        };
        let Ok(key) = parse_key(Path::new("openssl.pk8"), &der) else { panic!("a v1 document is read") };
        let Ok(pair) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der) else { panic!("ring reads it") };
        assert_eq!(key.x, URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()));
    }

    #[test]
    fn a_pkcs8_v2_key_whose_public_half_does_not_match_is_refused() {
        let (dir, _) = ring_of(1);
        let files = key_files(dir.path()).unwrap_or_default();
        let Ok(mut pkcs8) = fs::read(&files[0]) else { panic!("read") };
        // ring writes the public key last.
        let Some(last) = pkcs8.last_mut() else { panic!("empty file") };
        *last ^= 1;
        assert!(matches!(parse_key(Path::new("bent.pk8"), &pkcs8), Err(KeyError::Invalid { .. })));
    }

    #[test]
    fn a_ring_without_its_signer_is_refused() {
        let (_dir, ring) = ring_of(1);
        assert!(matches!(KeyRing::new(Vec::new(), ring.signing_kid()), Err(KeyError::NoSigner)));
    }
}

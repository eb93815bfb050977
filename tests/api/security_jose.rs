//! Hostile inputs at the JOSE layer (SECURITY.md §1, cases 1–14): every
//! forged, bent or oversized token is refused by the admin API with the
//! generic 401, whatever its flaw.
//!
//! Every scenario starts from the header and claims of a real admin token and
//! first shows that the same header and claims, validly signed with our own
//! key, are accepted (the positive control): each refusal below is then caused
//! by the one flaw the case introduces. Refusals are table-driven: a list of
//! (case, token) checked by `refuse_all`, which also asserts the generic body,
//! the RFC 6750 challenge, a quick answer and exactly one `admin.denied` audit
//! event per refused request.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::{Signer, SigningKey};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde_json::{Value, json};
use sts::clock::Clock;
use uuid::Uuid;

use crate::both_backends;
use crate::helpers::{ADMIN, ADMIN_PASSWORD, Backend, TestApp, TestDb};
use sts::tokens::validation::MAX_TOKEN_BYTES;

/// How long any refusal may take. SECURITY.md asks for ≤ 10–50 ms on the
/// release build; these are debug builds sharing two cores with other jobs,
/// so the bound only catches work that grows with the hostile input.
const QUICK: Duration = Duration::from_secs(3);

/// The Ed25519 group order ℓ, little-endian (RFC 8032 §5.1).
const GROUP_ORDER: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32 key bytes follow.
const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn kid_of(header: &Value) -> String {
    header["kid"].as_str().expect("the admin token names its key").to_owned()
}

/// `object` with `member` set to `value`.
fn with(object: &Value, member: &str, value: Value) -> Value {
    let mut object = object.clone();
    object.as_object_mut().expect("a JSON object").insert(member.to_owned(), value);
    object
}

/// `object` without `member`.
fn without(object: &Value, member: &str) -> Value {
    let mut object = object.clone();
    object.as_object_mut().expect("a JSON object").remove(member);
    object
}

/// The JSON text of `object` with `member` written as the raw text `raw`:
/// for values `serde_json::Value` cannot hold (1e309, NaN, 400 digits).
fn with_raw(object: &Value, member: &str, raw: &str) -> String {
    prepend(&without(object, member).to_string(), &format!("\"{member}\":{raw}"))
}

/// The JSON object text `text` with the raw member text `member` written first.
fn prepend(text: &str, member: &str) -> String {
    let rest = text.strip_prefix('{').expect("a JSON object");
    if rest == "}" { format!("{{{member}}}") } else { format!("{{{member},{rest}") }
}

/// The JSON object text `text` with the raw member text `member` written last.
fn append(text: &str, member: &str) -> String {
    let rest = text.strip_suffix('}').expect("a JSON object");
    if rest == "{" { format!("{{{member}}}") } else { format!("{rest},{member}}}") }
}

/// A compact JWS over header and claims given as bytes (hand-written JSON,
/// duplicate members, a BOM), with a valid signature by `key`.
fn sign_raw(key: &SigningKey, header: impl AsRef<[u8]>, claims: impl AsRef<[u8]>) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    format!("{input}.{}", b64(key.sign(input.as_bytes()).to_bytes()))
}

/// A compact JWS whose third segment is an HMAC keyed with `secret`.
fn hmac_token(header: &Value, claims: &Value, algorithm: ring::hmac::Algorithm, secret: &[u8]) -> String {
    let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let tag = ring::hmac::sign(&ring::hmac::Key::new(algorithm, secret), input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

/// The signing input (`header.payload`) of a token and its decoded signature.
fn split_signature(token: &str) -> (String, Vec<u8>) {
    let (input, signature) = token.rsplit_once('.').expect("a compact JWS");
    (input.to_owned(), URL_SAFE_NO_PAD.decode(signature).expect("base64url signature"))
}

fn with_signature(input: &str, signature: &[u8]) -> String {
    format!("{input}.{}", b64(signature))
}

/// An Ed25519 key only the attacker holds.
fn attacker_key() -> SigningKey {
    use ring::rand::SecureRandom;
    let mut seed = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut seed).expect("random bytes");
    SigningKey::from_bytes(&seed)
}

/// The public JWK of `key` and its RFC 7638 thumbprint (what a kid of it would be).
fn public_jwk(key: &SigningKey) -> (Value, String) {
    let x = b64(key.verifying_key().as_bytes());
    let kid = sts::tokens::keys::thumbprint(&x);
    (json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"}), kid)
}

/// S + ℓ in the S half of an Ed25519 signature: the same point equation, a
/// non-canonical encoding that lax verifiers accept (signature malleability).
fn add_group_order(signature: &[u8]) -> Vec<u8> {
    let mut out = signature.to_vec();
    let mut carry = 0u16;
    for (i, l) in GROUP_ORDER.iter().enumerate() {
        let sum = u16::from(out[32 + i]) + u16::from(*l) + carry;
        out[32 + i] = (sum & 0xff) as u8;
        carry = sum >> 8;
    }
    out
}

/// A base64url segment whose last character also sets unused trailing bits:
/// lax decoders read the same bytes, a strict one refuses it.
fn with_trailing_bits(segment: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = segment.as_bytes().to_vec();
    let last = bytes.last_mut().expect("a non-empty segment");
    let index = ALPHABET.iter().position(|c| c == last).expect("a base64url character");
    *last = ALPHABET[index ^ 1];
    String::from_utf8(bytes).expect("ASCII")
}

/// `segment` with base64 padding, as a padding encoder would have written it.
fn padded(segment: &str) -> String {
    format!("{segment}{}", "=".repeat((4 - segment.len() % 4) % 4))
}

/// Proves the positive control: the untouched header and claims, validly
/// signed with our key, are accepted. Returns that key.
async fn control(app: &TestApp, header: &Value, claims: &Value) -> SigningKey {
    let key = app.signing_key(&kid_of(header));
    app.assert_accepted(&TestApp::sign_with(&key, header, claims), "positive control").await;
    key
}

async fn denials(app: &TestApp, admin: &str) -> i64 {
    let response = app.get("/api/sts/audit/v1?pageSize=1&action=admin.denied", admin).await;
    assert_eq!(response.status(), StatusCode::OK, "audit list");
    let body: Value = response.json().await.expect("json");
    body["totalItems"].as_i64().expect("totalItems")
}

/// Every token of `cases` is refused quickly with the generic 401, and each
/// refusal leaves exactly one `admin.denied` audit event.
async fn refuse_all<N: AsRef<str>>(app: &TestApp, cases: &[(N, String)]) {
    let admin = app.admin_token().await;
    let before = denials(app, &admin).await;
    for (case, token) in cases {
        let started = Instant::now();
        app.assert_refused(token, case.as_ref()).await;
        assert!(started.elapsed() < QUICK, "{}: answered in {:?}", case.as_ref(), started.elapsed());
    }
    let after = denials(app, &admin).await;
    assert_eq!(after - before, i64::try_from(cases.len()).expect("few cases"), "one audit event per refusal");
}

/// What `/api/sts/me/v1` answers to a verbatim `Authorization` value.
async fn me_raw(app: &TestApp, authorization: &[u8]) -> (StatusCode, Option<String>, Value) {
    let value = HeaderValue::from_bytes(authorization).expect("a value HTTP can carry");
    let response =
        app.client.get(app.url("/api/sts/me/v1")).header(AUTHORIZATION, value).send().await.expect("request");
    let status = response.status();
    let challenge = response.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).map(str::to_owned);
    (status, challenge, response.json().await.unwrap_or(Value::Null))
}

/// The caller as `/api/sts/me/v1` describes it for a canonical `Bearer` token.
async fn canonical_me(app: &TestApp, token: &str) -> Value {
    let (status, _, body) = me_raw(app, format!("Bearer {token}").as_bytes()).await;
    assert_eq!(status, StatusCode::OK, "the canonical token is accepted");
    body
}

fn assert_generic_401(answer: &(StatusCode, Option<String>, Value), case: &str) {
    assert_eq!(answer.0, StatusCode::UNAUTHORIZED, "{case}");
    assert_eq!(answer.1.as_deref(), Some(r#"Bearer error="invalid_token""#), "{case}");
    assert_eq!(answer.2, json!({"code": "STS_0002", "message": "missing or invalid access token"}), "{case}");
}

/// What the service decided to do with a variant that a lax parser would
/// read as the canonical token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// The generic 401.
    Refused,
    /// Accepted, as exactly the caller of the canonical token.
    SameCaller,
    /// Either of the above (no preference is promised), never anything else.
    Either,
}

async fn assert_decision(app: &TestApp, authorization: &[u8], canonical: &Value, decision: Decision, case: &str) {
    let answer = me_raw(app, authorization).await;
    match (decision, answer.0) {
        (Decision::Refused, _) | (Decision::Either, StatusCode::UNAUTHORIZED) => assert_generic_401(&answer, case),
        (Decision::SameCaller, _) | (Decision::Either, _) => {
            assert_eq!(answer.0, StatusCode::OK, "{case}");
            assert_eq!(&answer.2, canonical, "{case}: accepted, so it must be read as the canonical token");
        }
    }
}

/// An oversized request gets 431 (header limit) or the generic 401, quickly,
/// and the process keeps answering.
///
/// Heads beyond actix's 128 KiB read buffer get actix's own bare 431 and the
/// connection is closed, without `Connection: close`; a pooled client may then
/// reuse the dead connection and see a reset. So each request here goes on a
/// connection of its own, and the connection may even close while the head is
/// still being written. Liveness is then checked on a new connection.
async fn assert_too_large_or_refused(app: &TestApp, authorization: &str, case: &str) {
    let fresh = || reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
    let started = Instant::now();
    let sent = fresh().get(app.url("/api/sts/organisation/v1")).header(AUTHORIZATION, authorization).send().await;
    match sent {
        Ok(response) => {
            let status = response.status();
            assert!(
                status == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE || status == StatusCode::UNAUTHORIZED,
                "{case}: {status}"
            );
            if status == StatusCode::UNAUTHORIZED {
                assert_eq!(response.headers()["www-authenticate"], r#"Bearer error="invalid_token""#, "{case}");
            }
        }
        Err(error) => assert!(authorization.len() >= 128 * 1024, "{case}: {error}"),
    }
    assert!(started.elapsed() < QUICK, "{case}: answered in {:?}", started.elapsed());
    let live = fresh().get(app.url("/health/live")).send().await;
    assert_eq!(live.map(|r| r.status()).ok(), Some(StatusCode::OK), "{case}: the process still answers");
}

/// `depth` nested JSON arrays.
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

both_backends! {
    // Case 1.
    async fn alg_none_is_refused_in_every_spelling(app) {
        let (header, claims) = app.admin_parts().await;
        let key = control(&app, &header, &claims).await;
        let payload = b64(claims.to_string());
        let mut cases = Vec::new();
        for alg in ["none", "NONE", "None", "nOnE"] {
            let bent = with(&header, "alg", json!(alg));
            let h = b64(bent.to_string());
            cases.push((format!("alg {alg}, empty signature"), format!("{h}.{payload}.")));
            cases.push((format!("alg {alg}, signature removed"), format!("{h}.{payload}")));
            cases.push((format!("alg {alg}, signed by our key anyway"), TestApp::sign_with(&key, &bent, &claims)));
        }
        for (name, bent) in [
            ("alg removed", without(&header, "alg")),
            ("alg null", with(&header, "alg", Value::Null)),
            ("alg empty", with(&header, "alg", json!(""))),
        ] {
            cases.push((format!("{name}, empty signature"), format!("{}.{payload}.", b64(bent.to_string()))));
            cases.push((format!("{name}, signed by our key"), TestApp::sign_with(&key, &bent, &claims)));
        }
        refuse_all(&app, &cases).await;
    }

    // Case 2.
    async fn hmac_and_foreign_algorithms_are_refused_with_our_kid(app) {
        let (header, claims) = app.admin_parts().await;
        let key = control(&app, &header, &claims).await;
        let x = key.verifying_key().to_bytes();
        let der = [ED25519_SPKI_PREFIX.as_slice(), x.as_slice()].concat();
        let pem = format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", STANDARD.encode(&der));
        let jwks = app.client.get(app.url("/.well-known/jwks.json")).send().await.expect("jwks").bytes().await.expect("body");
        let secrets: Vec<(&str, Vec<u8>)> = vec![
            ("the 32 public key bytes", x.to_vec()),
            ("the base64url x text", b64(x).into_bytes()),
            ("the SPKI DER", der),
            ("the PEM without its last newline", pem.trim_end().as_bytes().to_vec()),
            ("the PEM", pem.into_bytes()),
            ("the JWKS document", jwks.to_vec()),
            ("an empty secret", Vec::new()),
        ];
        let mut cases = Vec::new();
        for (alg, algorithm) in [
            ("HS256", ring::hmac::HMAC_SHA256),
            ("HS384", ring::hmac::HMAC_SHA384),
            ("HS512", ring::hmac::HMAC_SHA512),
        ] {
            for (name, secret) in &secrets {
                let token = hmac_token(&with(&header, "alg", json!(alg)), &claims, algorithm, secret);
                cases.push((format!("{alg} keyed with {name}"), token));
            }
        }
        // Other families with our kid, and EdDSA spelt in another case (alg is
        // case-sensitive, RFC 7515 §4.1.1); the signature is a valid Ed25519 one.
        for alg in ["ES256", "ES384", "RS256", "PS256", "eddsa", "EDDSA"] {
            cases.push((format!("{alg} header with our kid"), TestApp::sign_with(&key, &with(&header, "alg", json!(alg)), &claims)));
        }
        refuse_all(&app, &cases).await;
    }

    // Case 3.
    async fn broken_and_borrowed_signatures_are_refused(app) {
        let (header, claims) = app.admin_parts().await;
        let key = control(&app, &header, &claims).await;
        let (input, signature) = split_signature(&TestApp::sign_with(&key, &header, &claims));
        assert_eq!(signature.len(), 64);
        let mut high_s = signature.clone();
        high_s[63] |= 0xe0;
        let mut longer = signature.clone();
        longer.push(0);
        let mut flipped = signature.clone();
        flipped[10] ^= 0x01;
        let mut identity_r_zero_s = vec![0u8; 64];
        identity_r_zero_s[0] = 1;
        let (_, other) = split_signature(&app.admin_token().await);
        let (_, other_header) = split_signature(&TestApp::sign_with(&key, &with(&header, "typ", json!("JWT")), &claims));
        let more = with(&claims, "permissions", json!(["STS_ORGANISATION_CREATE", "STS_ORGANISATION_LIST", "SYSTEM_EVERYTHING"]));
        let more_input = format!("{}.{}", b64(header.to_string()), b64(more.to_string()));
        let cases = vec![
            ("64 zero bytes", with_signature(&input, &[0u8; 64])),
            ("64 bytes of 0xFF", with_signature(&input, &[0xffu8; 64])),
            ("the valid signature cut to 63 bytes", with_signature(&input, &signature[..63])),
            ("the valid signature plus a 65th byte", with_signature(&input, &longer)),
            ("S with its top bits set (S ≥ ℓ)", with_signature(&input, &high_s)),
            ("S + ℓ (malleated, same equation)", with_signature(&input, &add_group_order(&signature))),
            ("identity R and zero S", with_signature(&input, &identity_r_zero_s)),
            ("one bit flipped", with_signature(&input, &flipped)),
            ("empty signature", format!("{input}.")),
            ("signature removed", input.clone()),
            ("the signature of another real token", with_signature(&input, &other)),
            ("our signature over another header", with_signature(&input, &other_header)),
            ("our signature over the original claims, more permissions claimed", with_signature(&more_input, &signature)),
        ];
        refuse_all(&app, &cases).await;
    }

    // Case 4. Decision: the token itself has exactly one accepted
    // serialisation, the compact JWS in unpadded base64url with canonical
    // trailing bits (RFC 7515 §2, §7.1), decoded strictly; anything else is
    // the generic 401, even where a lax decoder would read the same bytes.
    // Around the token we follow HTTP: the scheme is case-insensitive (RFC
    // 9110 §11.1) and the token is trimmed, so `bearer`, `BEARER` and two
    // spaces are accepted as the byte-identical token, hence the same caller.
    // Line breaks cannot be tested: HTTP field values cannot carry them.
    async fn non_canonical_encodings_are_refused_or_read_identically(app) {
        let (header, claims) = app.admin_parts().await;
        let key = control(&app, &header, &claims).await;
        // A token whose signature uses `-` or `_`, so the `+`/`/` alphabet changes it.
        let token = (0..64)
            .map(|_| TestApp::sign_with(&key, &header, &with(&claims, "jti", json!(Uuid::new_v4()))))
            .find(|t| t.rsplit('.').next().is_some_and(|s| s.contains(['-', '_'])))
            .expect("one signature in 64 holds - or _");
        let canonical = canonical_me(&app, &token).await;
        let segments: Vec<&str> = token.split('.').collect();
        let [h, p, s] = segments[..] else { panic!("three segments") };
        let lax = base64::engine::GeneralPurpose::new(
            &base64::alphabet::URL_SAFE,
            base64::engine::GeneralPurposeConfig::new()
                .with_encode_padding(false)
                .with_decode_allow_trailing_bits(true)
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        assert_eq!(lax.decode(with_trailing_bits(s)).expect("lax"), lax.decode(s).expect("lax"), "same bytes to a lax decoder");
        let standard = |t: &str| t.replace('-', "+").replace('_', "/");
        let all_standard = [h, p, s].map(|segment| padded(&standard(segment)));
        let (mid_p, rest_p) = p.split_at(p.len() / 2);
        let jws_json = json!({"protected": h, "payload": p, "signature": s}).to_string();
        let bom = |json: &Value| [b"\xef\xbb\xbf".as_slice(), json.to_string().as_bytes()].concat();
        let bom_header = sign_raw(&key, bom(&header), claims.to_string());
        let bom_claims = sign_raw(&key, header.to_string(), bom(&claims));
        let cases: Vec<(&str, Vec<u8>, Decision)> = vec![
            ("padded signature", format!("Bearer {h}.{p}.{}", padded(s)).into_bytes(), Decision::Refused),
            ("every segment padded", format!("Bearer {}.{}.{}", padded(h), padded(p), padded(s)).into_bytes(), Decision::Refused),
            ("signature in the +/ alphabet", format!("Bearer {h}.{p}.{}", standard(s)).into_bytes(), Decision::Refused),
            ("whole token in the +/ alphabet, padded", format!("Bearer {}", all_standard.join(".")).into_bytes(), Decision::Refused),
            ("signature with non-zero trailing bits", format!("Bearer {h}.{p}.{}", with_trailing_bits(s)).into_bytes(), Decision::Refused),
            ("a space inside the payload", format!("Bearer {h}.{mid_p} {rest_p}.{s}").into_bytes(), Decision::Refused),
            ("a tab inside the payload", format!("Bearer {h}.{mid_p}\t{rest_p}.{s}").into_bytes(), Decision::Refused),
            ("a 4th segment", format!("Bearer {token}.e30").into_bytes(), Decision::Refused),
            ("a trailing dot", format!("Bearer {token}.").into_bytes(), Decision::Refused),
            ("a UTF-8 BOM before the token", [b"Bearer \xef\xbb\xbf".as_slice(), token.as_bytes()].concat(), Decision::Refused),
            ("a UTF-8 BOM before the header JSON, validly signed", format!("Bearer {bom_header}").into_bytes(), Decision::Refused),
            ("a UTF-8 BOM before the claims JSON, validly signed", format!("Bearer {bom_claims}").into_bytes(), Decision::Refused),
            ("the JWS JSON serialisation", format!("Bearer {jws_json}").into_bytes(), Decision::Refused),
            ("the token in quotes", format!("Bearer \"{token}\"").into_bytes(), Decision::Refused),
            ("another scheme", format!("JWT {token}").into_bytes(), Decision::Refused),
            ("no scheme", token.clone().into_bytes(), Decision::Refused),
            ("bearer in lower case", format!("bearer {token}").into_bytes(), Decision::SameCaller),
            ("BEARER in upper case", format!("BEARER {token}").into_bytes(), Decision::SameCaller),
            ("two spaces after the scheme", format!("Bearer  {token}").into_bytes(), Decision::SameCaller),
        ];
        for (case, authorization, decision) in &cases {
            assert_decision(&app, authorization, &canonical, *decision, case).await;
        }
    }

    // Case 5. The kid only ever indexes our in-memory key ring; each token is
    // validly signed by our key, so the kid is the only flaw.
    async fn a_kid_we_do_not_hold_is_refused(app) {
        let (header, claims) = app.admin_parts().await;
        let key = control(&app, &header, &claims).await;
        let kid = kid_of(&header);
        let (_, attacker_kid) = public_jwk(&attacker_key());
        let key_file = std::fs::read_dir(app.keys.path())
            .expect("keys dir")
            .flatten()
            .map(|e| e.path().display().to_string())
            .next()
            .expect("a key file");
        let kids: Vec<(&str, Value)> = vec![
            ("unknown kid", json!("no-such-key")),
            ("the thumbprint of a key we do not hold", json!(attacker_kid)),
            ("path traversal to /dev/null", json!("../../../../dev/null")),
            ("path traversal to our key file", json!(format!("../../../..{key_file}"))),
            ("absolute path of our key file", json!(key_file)),
            ("SQL injection", json!("' OR '1'='1")),
            ("SQL union", json!(format!("x' UNION SELECT '{kid}' --"))),
            ("%00", json!("%00")),
            ("our kid then %00", json!(format!("{kid}%00"))),
            ("a NUL character", json!("\u{0}")),
            ("our kid then a NUL character", json!(format!("{kid}\u{0}"))),
            ("our kid in upper case", json!(kid.to_uppercase())),
            ("our kid with a leading space", json!(format!(" {kid}"))),
            ("our kid with a trailing space", json!(format!("{kid} "))),
            ("a URL", json!("https://attacker.test/.well-known/jwks.json")),
            ("a file URL", json!("file:///dev/null")),
            ("empty", json!("")),
            ("a number", json!(42)),
            ("an array holding our kid", json!([kid])),
            ("null", Value::Null),
        ];
        let mut cases: Vec<(String, String)> = kids
            .into_iter()
            .filter(|(_, value)| value.as_str() != Some(kid.as_str()))
            .map(|(name, value)| (format!("kid: {name}"), TestApp::sign_with(&key, &with(&header, "kid", value), &claims)))
            .collect();
        cases.push(("kid removed".into(), TestApp::sign_with(&key, &without(&header, "kid"), &claims)));
        refuse_all(&app, &cases).await;
        // 10 KB: over the 8 KiB header limit (431), else over the 8192-byte token limit (401).
        let long = TestApp::sign_with(&key, &with(&header, "kid", json!("k".repeat(10 * 1024))), &claims);
        assert_too_large_or_refused(&app, &format!("Bearer {long}"), "kid of 10 KB").await;
    }

    // Case 6. Keys named or carried by the token are never used, and never
    // fetched: a local listener stands in for the attacker's host and must
    // see no connection at all.
    async fn keys_carried_by_the_token_are_never_used_or_fetched(app) {
        let (header, claims) = app.admin_parts().await;
        let key = control(&app, &header, &claims).await;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let host = format!("http://{}", listener.local_addr().expect("address"));
        let attacker = attacker_key();
        let (jwk, attacker_kid) = public_jwk(&attacker);
        let mut cert = vec![0x30u8, 0x82];
        cert.extend([0x5a; 300]);
        let fake_cert = STANDARD.encode(&cert);
        let forged = |bent: Value| TestApp::sign_with(&attacker, &bent, &claims);
        let jku = json!(format!("{host}/jwks.json"));
        let b64_false = with(&header, "b64", json!(false));
        let cases = vec![
            ("embedded jwk, no kid", forged(with(&without(&header, "kid"), "jwk", jwk.clone()))),
            ("embedded jwk, its own kid", forged(with(&with(&header, "jwk", jwk.clone()), "kid", json!(attacker_kid)))),
            ("embedded jwk, our kid", forged(with(&header, "jwk", jwk.clone()))),
            ("jku to the attacker, its kid", forged(with(&with(&header, "jku", jku.clone()), "kid", json!(attacker_kid)))),
            ("jku to the attacker, our kid", forged(with(&header, "jku", jku.clone()))),
            ("jku to the attacker, no kid", forged(with(&without(&header, "kid"), "jku", jku.clone()))),
            ("x5u to the attacker, our kid", forged(with(&header, "x5u", json!(format!("{host}/cert.pem"))))),
            ("x5c with the attacker's certificate, our kid", forged(with(&header, "x5c", json!([fake_cert])))),
            ("x5c with the attacker's certificate, no kid", forged(with(&without(&header, "kid"), "x5c", json!([fake_cert])))),
            // crit: we understand no extension, so any crit is refused (RFC 7515 §4.1.11), even under our signature.
            ("crit [exp], our signature", TestApp::sign_with(&key, &with(&header, "crit", json!(["exp"])), &claims)),
            ("crit [unknown], our signature", TestApp::sign_with(&key, &with(&header, "crit", json!(["urn:example:unknown"])), &claims)),
            ("crit [], our signature", TestApp::sign_with(&key, &with(&header, "crit", json!([])), &claims)),
            ("crit as a string, our signature", TestApp::sign_with(&key, &with(&header, "crit", json!("exp")), &claims)),
            ("crit [b64] with b64 false, our signature", TestApp::sign_with(&key, &with(&b64_false, "crit", json!(["b64"])), &claims)),
        ];
        refuse_all(&app, &cases).await;
        // Under our own signature a jku/x5u is simply not read: accepting the
        // token is as right as refusing it, fetching it is not.
        let named = with(&with(&header, "jku", jku), "x5u", json!(format!("{host}/x.pem")));
        let ours = TestApp::sign_with(&key, &named, &claims);
        let canonical = canonical_me(&app, &TestApp::sign_with(&key, &header, &claims)).await;
        assert_decision(&app, format!("Bearer {ours}").as_bytes(), &canonical, Decision::Either, "jku and x5u under our signature").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        match listener.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("the service reached the attacker's host: {other:?}"),
        }
    }

    // Case 7.
    async fn only_access_tokens_pass_as_access_tokens(app) {
        let (header, claims) = app.admin_parts().await;
        let key = control(&app, &header, &claims).await;
        let mut cases: Vec<(String, String)> = [
            ("typ removed", without(&header, "typ")),
            ("typ JWT", with(&header, "typ", json!("JWT"))),
            ("typ jwt", with(&header, "typ", json!("jwt"))),
            ("typ refresh+jwt", with(&header, "typ", json!("refresh+jwt"))),
            ("typ application/jwt", with(&header, "typ", json!("application/jwt"))),
            ("typ dpop+jwt", with(&header, "typ", json!("dpop+jwt"))),
            ("typ JOSE", with(&header, "typ", json!("JOSE"))),
            ("typ at+jwt with a parameter", with(&header, "typ", json!("at+jwt; q=1"))),
            ("typ empty", with(&header, "typ", json!(""))),
            ("typ null", with(&header, "typ", Value::Null)),
            ("typ a number", with(&header, "typ", json!(1))),
        ]
        .into_iter()
        .map(|(name, bent)| (name.to_owned(), TestApp::sign_with(&key, &bent, &claims)))
        .collect();
        // An ID-token-shaped JWT: typ JWT, audience a client, a nonce.
        let id_token = with(&with(&claims, "aud", json!("some-client")), "nonce", json!("n-0S6_WzA2Mj"));
        cases.push(("an ID-token-shaped JWT".into(), TestApp::sign_with(&key, &with(&header, "typ", json!("JWT")), &id_token)));
        let login = app.login(ADMIN, ADMIN_PASSWORD, None).await;
        let refresh = login["refresh_token"].as_str().expect("refresh token").to_owned();
        cases.push(("a refresh token as the bearer".into(), refresh.clone()));
        refuse_all(&app, &cases).await;

        // typ is a media type: compared without case, `application/` optional (RFC 7515 §4.1.9).
        for typ in ["application/at+jwt", "AT+JWT", "Application/At+Jwt"] {
            app.assert_accepted(&TestApp::sign_with(&key, &with(&header, "typ", json!(typ)), &claims), typ).await;
        }

        // The other way round: an access token (or any JWT of ours) is not a refresh token.
        let access = login["access_token"].as_str().expect("access token").to_owned();
        let jwt_as_refresh = TestApp::sign_with(&key, &with(&header, "typ", json!("refresh+jwt")), &claims);
        let presented = [("an access token as refresh_token", access), ("a refresh+jwt of ours as refresh_token", jwt_as_refresh)];
        for (case, presented) in presented {
            let response = app.token_request(&[("grant_type", "refresh_token"), ("refresh_token", &presented)]).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{case}");
            assert_eq!(response.headers()["cache-control"], "no-store", "{case}");
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["error"], "invalid_grant", "{case}");
        }
        // The genuine refresh token was neither consumed nor harmed by any of it.
        let response = app.token_request(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await;
        assert_eq!(response.status(), StatusCode::OK, "the real refresh token still works");
    }

    // Case 8. Decision: a member that appears twice, in the header or the
    // claims, in whatever spelling, is refused (serde's derive refuses
    // duplicate fields; jsonwebtoken's header too). A single member written
    // with Unicode escapes is the same JSON string (RFC 8259 §7), so it may be
    // accepted, but then only as the canonical token's caller.
    async fn duplicate_members_are_refused(app) {
        let (header, claims) = app.admin_parts().await;
        let key = control(&app, &header, &claims).await;
        let (h, c) = (header.to_string(), claims.to_string());
        let other = Uuid::new_v4();
        let sub = claims["sub"].as_str().expect("sub").to_owned();
        let exp = claims["exp"].as_i64().expect("exp");
        let far = exp + 10 * 365 * 24 * 3600;
        let kid = kid_of(&header);
        let claim_cases = [
            ("two sub, ours last", prepend(&c, &format!(r#""sub":"{other}""#))),
            ("two sub, ours first", append(&c, &format!(r#""sub":"{other}""#))),
            ("two sub, the same value", append(&c, &format!(r#""sub":"{sub}""#))),
            ("two sub, one written with escapes", append(&c, &format!(r#""\u0073ub":"{other}""#))),
            ("two exp, ours last", prepend(&c, &format!(r#""exp":{far}"#))),
            ("two exp, ours first", append(&c, &format!(r#""exp":{far}"#))),
            ("two aud", prepend(&c, r#""aud":"evil""#)),
            ("two iss", append(&c, r#""iss":"http://evil.test""#)),
            ("two permissions", prepend(&c, r#""permissions":[]"#)),
            ("two organisationId", append(&append(&c, &format!(r#""organisationId":"{other}""#)), &format!(r#""organisationId":"{sub}""#))),
        ];
        let header_cases = [
            ("two alg, ours last", prepend(&h, r#""alg":"none""#)),
            ("two alg, ours first", append(&h, r#""alg":"HS256""#)),
            ("two alg, one written with escapes", append(&h, r#""\u0061lg":"none""#)),
            ("two kid", prepend(&h, r#""kid":"no-such-key""#)),
            ("two kid, the same value", append(&h, &format!(r#""kid":"{kid}""#))),
            ("two typ", prepend(&h, r#""typ":"JWT""#)),
        ];
        let mut cases: Vec<(String, String)> =
            claim_cases.into_iter().map(|(name, text)| (format!("claims: {name}"), sign_raw(&key, &h, text))).collect();
        cases.extend(header_cases.into_iter().map(|(name, text)| (format!("header: {name}"), sign_raw(&key, text, &c))));
        refuse_all(&app, &cases).await;

        let canonical = canonical_me(&app, &TestApp::sign_with(&key, &header, &claims)).await;
        let escaped = [
            ("sub written as \\u0073ub", &h, with_raw(&claims, "sub", &format!(r#""{sub}""#)).replacen(r#""sub":"#, r#""\u0073ub":"#, 1)),
            ("iss written as http:\\/\\/sts.test", &h, with_raw(&claims, "iss", r#""http:\/\/sts.test""#)),
            ("aud written as \\u006fne-core", &h, with_raw(&claims, "aud", r#""\u006fne-core""#)),
        ];
        let escaped_header = with_raw(&header, "kid", &format!(r#""{kid}""#)).replacen(r#""kid":"#, r#""\u006bid":"#, 1);
        for (case, header_text, claims_text) in escaped {
            let token = sign_raw(&key, header_text, claims_text);
            assert_decision(&app, format!("Bearer {token}").as_bytes(), &canonical, Decision::Either, case).await;
        }
        let token = sign_raw(&key, escaped_header, &c);
        assert_decision(&app, format!("Bearer {token}").as_bytes(), &canonical, Decision::Either, "kid written as \\u006bid").await;
    }

    // Case 9.
    async fn numeric_dates_of_another_type_are_refused(app) {
        let (header, claims) = app.admin_parts().await;
        let key = control(&app, &header, &claims).await;
        let mut cases = Vec::new();
        for member in ["exp", "nbf", "iat"] {
            let own = claims[member].as_i64().expect("a NumericDate");
            let raws = [r#""9999999999""#.to_owned(), format!(r#""{own}""#), format!("[{own}]"), format!(r#"{{"$date":{own}}}"#)];
            for raw in raws.iter().map(String::as_str).chain(["true", "null", "[]", "{}"]) {
                cases.push((format!("{member} = {raw}"), sign_raw(&key, header.to_string(), with_raw(&claims, member, raw))));
            }
            cases.push((format!("{member} removed"), TestApp::sign_with(&key, &header, &without(&claims, member))));
        }
        refuse_all(&app, &cases).await;
    }

    // Case 10.
    async fn numeric_dates_out_of_range_are_refused(app) {
        let (header, claims) = app.admin_parts().await;
        let key = control(&app, &header, &claims).await;
        let exp = claims["exp"].as_i64().expect("exp");
        let digits = "9".repeat(400);
        let raws = [
            "-1", "0", "1.5", "1e19", "18446744073709551616", "1e309", "-1e309", digits.as_str(), "NaN", "Infinity", "-Infinity",
            r#""NaN""#, r#""Infinity""#, "9223372036854775807", "9223372036854775808", "-9223372036854775808",
        ];
        let mut cases: Vec<(String, String)> = raws
            .iter()
            .map(|raw| (format!("exp = {}", &raw[..raw.len().min(24)]), sign_raw(&key, header.to_string(), with_raw(&claims, "exp", raw))))
            .collect();
        // The right instant, written as a float.
        for raw in [format!("{exp}.0"), format!("{exp}e0"), format!("{}.5", exp - 1)] {
            cases.push((format!("exp = {raw}"), sign_raw(&key, header.to_string(), with_raw(&claims, "exp", &raw))));
        }
        for raw in ["-9223372036854775808", "1.5", "1e309", digits.as_str()] {
            cases.push((format!("iat = {}", &raw[..raw.len().min(24)]), sign_raw(&key, header.to_string(), with_raw(&claims, "iat", raw))));
        }
        // A valid signature on a lifetime we never issue: exp − iat = TTL + leeway + 1.
        let now = app.clock.now().timestamp();
        let lifetime = |seconds: i64| with(&with(&with(&claims, "iat", json!(now)), "nbf", json!(now)), "exp", json!(now + seconds));
        cases.push(("exp − iat = 306".into(), TestApp::sign_with(&key, &header, &lifetime(306))));
        cases.push(("exp − iat = a year".into(), TestApp::sign_with(&key, &header, &lifetime(365 * 24 * 3600))));
        refuse_all(&app, &cases).await;
        app.assert_accepted(&TestApp::sign_with(&key, &header, &lifetime(305)), "exp − iat = 305, the last accepted").await;
    }

    // Case 11. Leeway 5 s: valid up to and including exp = now − 5.
    async fn time_boundaries_follow_the_clock_and_the_leeway(app) {
        let (header, claims) = app.admin_parts().await;
        let key = control(&app, &header, &claims).await;
        let now = app.clock.now().timestamp();
        let times = |iat: i64, nbf: i64, exp: i64| {
            TestApp::sign_with(&key, &header, &with(&with(&with(&claims, "iat", json!(iat)), "nbf", json!(nbf)), "exp", json!(exp)))
        };
        app.assert_accepted(&times(now - 300, now - 300, now - 5), "exp = now − 5").await;
        app.assert_accepted(&times(now, now + 5, now + 300), "nbf = now + 5").await;
        app.assert_accepted(&times(now + 5, now + 5, now + 305), "iat = now + 5").await;
        let cases = vec![
            ("exp = now − 6", times(now - 301, now - 301, now - 6)),
            ("exp = now − 300", times(now - 600, now - 600, now - 300)),
            ("nbf = now + 6", times(now, now + 6, now + 300)),
            ("iat = now + 6", times(now + 6, now, now + 300)),
            ("iat and nbf = now + 6", times(now + 6, now + 6, now + 306)),
        ];
        refuse_all(&app, &cases).await;

        // The real token, as the clock runs: accepted to exp + 5, refused a second later.
        let real = TestApp::sign_with(&key, &header, &claims);
        let exp = claims["exp"].as_i64().expect("exp");
        app.clock.advance(chrono::Duration::seconds(exp + 5 - now));
        app.assert_accepted(&real, "the real token at exp + 5").await;
        app.clock.advance(chrono::Duration::seconds(1));
        refuse_all(&app, &[("the real token at exp + 6", real)]).await;
    }

    // Case 12.
    async fn the_audience_must_be_exactly_ours(app) {
        let (header, claims) = app.admin_parts().await;
        let key = control(&app, &header, &claims).await;
        let mut cases: Vec<(String, String)> = [
            json!("core"),
            json!(["one-core", "evil"]),
            json!(["evil", "one-core"]),
            json!(["one-core", "one-core"]),
            json!(""),
            json!("ONE-CORE"),
            json!("one-core/"),
            json!(" one-core"),
            json!("one-core "),
            json!([]),
            json!([["one-core"]]),
            json!({"aud": "one-core"}),
            json!(1),
            Value::Null,
        ]
        .into_iter()
        .map(|aud| (format!("aud {aud}"), TestApp::sign_with(&key, &header, &with(&claims, "aud", aud))))
        .collect();
        cases.push(("aud absent".into(), TestApp::sign_with(&key, &header, &without(&claims, "aud"))));
        refuse_all(&app, &cases).await;
        // RFC 7519 §4.1.3 allows the one audience as a one-element array.
        app.assert_accepted(&TestApp::sign_with(&key, &header, &with(&claims, "aud", json!(["one-core"]))), "aud [one-core]").await;
    }

    // Case 13.
    async fn the_issuer_must_be_exactly_ours_and_signed_by_our_key(app) {
        let (header, claims) = app.admin_parts().await;
        let key = control(&app, &header, &claims).await;
        let mut cases: Vec<(String, String)> = [
            json!("https://sts.test"),
            json!("http://sts.test/"),
            json!("http://other.test"),
            json!("http://sts.test.evil.test"),
            json!("HTTP://STS.TEST"),
            json!("http://sts.test "),
            json!(""),
            json!(["http://sts.test"]),
            json!(["http://sts.test", "http://other.test"]),
            json!(1),
            Value::Null,
        ]
        .into_iter()
        .map(|iss| (format!("iss {iss}"), TestApp::sign_with(&key, &header, &with(&claims, "iss", iss))))
        .collect();
        cases.push(("iss absent".into(), TestApp::sign_with(&key, &header, &without(&claims, "iss"))));
        // The right issuer, signed by another environment's Ed25519 key.
        let staging = attacker_key();
        let (_, staging_kid) = public_jwk(&staging);
        cases.push(("another Ed25519 key under our kid".into(), TestApp::sign_with(&staging, &header, &claims)));
        let own_kid = with(&header, "kid", json!(staging_kid));
        cases.push(("another Ed25519 key under its own kid".into(), TestApp::sign_with(&staging, &own_kid, &claims)));
        refuse_all(&app, &cases).await;
    }

    // Case 14.
    async fn oversized_and_pathological_tokens_are_answered_quickly(app) {
        let (header, claims) = app.admin_parts().await;
        let key = control(&app, &header, &claims).await;
        let (h, c) = (header.to_string(), claims.to_string());
        assert_too_large_or_refused(&app, &format!("Bearer {}", "A".repeat(64 * 1024)), "Authorization of 64 KB").await;
        assert_too_large_or_refused(&app, &format!("Bearer {}", ".".repeat(100_000)), "100 000 dots").await;
        let deep = sign_raw(&key, &h, with_raw(&claims, "nested", &nested(10_000)));
        assert_too_large_or_refused(&app, &format!("Bearer {deep}"), "claims with 10 000-deep nested arrays").await;
        let scope = TestApp::sign_with(&key, &header, &with(&claims, "scope", json!("s".repeat(1024 * 1024))));
        assert_too_large_or_refused(&app, &format!("Bearer {scope}"), "a 1 MB scope claim").await;

        // Deep nesting that fits under the token cap: the parser's depth limit, not the size limit, must stop it.
        let cases: Vec<(String, String)> = vec![
            ("aud as 1000-deep nested arrays, validly signed".into(), sign_raw(&key, &h, with_raw(&claims, "aud", &nested(1000)))),
            ("a header member of 1000-deep nested arrays".into(), sign_raw(&key, with_raw(&header, "x", &nested(1000)), &c)),
            ("4000 dots".into(), ".".repeat(4000)),
        ];
        refuse_all(&app, &cases).await;
        // An unknown claim is skipped without recursion; acceptance is fine, a crash is not.
        let canonical = canonical_me(&app, &TestApp::sign_with(&key, &header, &claims)).await;
        let skipped = sign_raw(&key, &h, with_raw(&claims, "nested", &nested(1000)));
        assert!(skipped.len() <= MAX_TOKEN_BYTES);
        let case = "an unknown claim of 1000-deep arrays";
        assert_decision(&app, format!("Bearer {skipped}").as_bytes(), &canonical, Decision::Either, case).await;
        let live = app.client.get(app.url("/health/live")).send().await.expect("alive");
        assert_eq!(live.status(), StatusCode::OK);

        // The same giants past a header limit raised to 120 KiB: now the
        // verifier's own size guard (MAX_TOKEN_BYTES) must answer, with the
        // generic 401, before any base64 or JSON work — also for a token
        // whose signature is valid.
        let backend = match *app.db {
            TestDb::Postgres { .. } => Backend::Postgres,
            TestDb::Sqlite { .. } => Backend::Sqlite,
        };
        let roomy = TestApp::spawn_with(backend, |s| s.server.max_header_bytes = 120 * 1024).await;
        let (header, claims) = roomy.admin_parts().await;
        let key = control(&roomy, &header, &claims).await;
        let deep = sign_raw(&key, header.to_string(), with_raw(&claims, "nested", &nested(10_000)));
        let over = (0..400)
            .map(|n| TestApp::sign_with(&key, &header, &with(&claims, "pad", json!("p".repeat(6000 + 4 * n)))))
            .find(|t| t.len() > MAX_TOKEN_BYTES)
            .expect("a token just over the cap");
        let over_case = format!("a validly signed token of {} bytes", over.len());
        let cases = vec![
            (over_case.as_str(), over),
            ("a token of 64 KB", "A".repeat(64 * 1024)),
            ("100 000 dots", ".".repeat(100_000)),
            ("claims with 10 000-deep nested arrays, validly signed", deep),
        ];
        refuse_all(&roomy, &cases).await;
        let live = roomy.client.get(roomy.url("/health/live")).send().await.expect("alive");
        assert_eq!(live.status(), StatusCode::OK);
    }
}

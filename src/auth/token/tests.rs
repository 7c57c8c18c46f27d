//! Unit tests of bearer-token verification (kept apart so the module reads as the request path needs it).

use super::*;
use crate::auth::keys::mint;
use jsonwebtoken::{EncodingKey, Header};
use std::time::{SystemTime, UNIX_EPOCH};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn auth() -> AuthConfig {
    crate::config::testing::TestConfig::new().parse().auth
}

fn sign(claims: Value, alg: Algorithm, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn minted_token_verifies() {
    let a = auth();
    let v = JwtVerifier::with_secret(&a, SECRET);
    let t = mint(&a, &v.keys()[0], "alice", 60).unwrap();
    assert_eq!(v.verify(&t).unwrap().as_ref(), "alice");
}

#[test]
fn refusals_have_the_right_kind() {
    let v = JwtVerifier::with_secret(&auth(), SECRET);
    let exp = now() + 600;
    let cases = [
        (
            serde_json::json!({"username": "a", "exp": now() - 600}),
            TokenError::Expired,
        ),
        (serde_json::json!({"username": "a"}), TokenError::Invalid),
        (
            serde_json::json!({"username": "a", "exp": exp, "nbf": now() + 600}),
            TokenError::Invalid,
        ),
        (
            serde_json::json!({"username": 7, "exp": exp}),
            TokenError::Invalid,
        ),
        (
            serde_json::json!({"username": "", "exp": exp}),
            TokenError::Invalid,
        ),
        (
            serde_json::json!({"username": "a\nb", "exp": exp}),
            TokenError::Invalid,
        ),
        (
            serde_json::json!({"username": "a", "exp": "soon"}),
            TokenError::Invalid,
        ),
    ];
    for (claims, want) in cases {
        let t = sign(claims.clone(), Algorithm::HS256, SECRET);
        assert_eq!(v.verify(&t).unwrap_err(), want, "{claims}");
    }
    let good = serde_json::json!({"username": "a", "exp": exp});
    let other_alg = sign(good.clone(), Algorithm::HS512, SECRET);
    assert_eq!(v.verify(&other_alg).unwrap_err(), TokenError::Invalid);
    let wrong_key = sign(good, Algorithm::HS256, b"another-secret-another-secret-xx");
    assert_eq!(v.verify(&wrong_key).unwrap_err(), TokenError::Invalid);
    assert_eq!(v.verify("not.a.token").unwrap_err(), TokenError::Invalid);
    assert_eq!(
        v.verify(&"a".repeat(9000)).unwrap_err(),
        TokenError::Invalid
    );
}

#[test]
fn a_configured_audience_and_issuer_must_be_present() {
    let mut a = auth();
    a.audience = Some("robeing".into());
    a.issuer = Some("https://idp.test".into());
    let v = JwtVerifier::with_secret(&a, SECRET);
    let exp = now() + 600;
    for (claims, ok) in [
        (serde_json::json!({"username": "a", "exp": exp}), false),
        (
            serde_json::json!({"username": "a", "exp": exp, "iss": "https://idp.test"}),
            false,
        ),
        (
            serde_json::json!({"username": "a", "exp": exp, "aud": "robeing"}),
            false,
        ),
        (
            serde_json::json!({"username": "a", "exp": exp, "aud": "other", "iss": "https://idp.test"}),
            false,
        ),
        (
            serde_json::json!({"username": "a", "exp": exp, "aud": "robeing", "iss": "https://idp.test"}),
            true,
        ),
    ] {
        let t = sign(claims.clone(), Algorithm::HS256, SECRET);
        assert_eq!(v.verify(&t).is_ok(), ok, "{claims}");
    }
}

#[test]
fn first_sight_is_asked_only_for_tokens_not_remembered() {
    let a = auth();
    let v = JwtVerifier::with_secret(&a, SECRET);
    let t = mint(&a, &v.keys()[0], "alice", 60).unwrap();
    assert_eq!(
        v.verify_gated(&t, || false).unwrap_err(),
        TokenError::FirstSightLimited
    );
    let mut asked = 0;
    assert!(v
        .verify_gated(&t, || {
            asked += 1;
            true
        })
        .is_ok());
    // Remembered now: not asked again, even when the budget is spent.
    assert!(v.verify_gated(&t, || unreachable!("asked twice")).is_ok());
    assert_eq!(asked, 1);
}

#[test]
fn bearer_header_parsing() {
    let mut h = http::HeaderMap::new();
    assert_eq!(bearer_token(&h), BearerToken::Missing);
    h.insert("authorization", HeaderValue::from_static("Basic abc"));
    assert_eq!(bearer_token(&h), BearerToken::Missing);
    h.insert("authorization", HeaderValue::from_static("bearer  abc "));
    assert_eq!(bearer_token(&h), BearerToken::Present("abc"));
    h.insert("authorization", HeaderValue::from_static("Bearer "));
    assert_eq!(bearer_token(&h), BearerToken::Missing);
    // A tab does not end the scheme; around the token it is trimmed.
    h.insert("authorization", HeaderValue::from_static("Bearer\tabc"));
    assert_eq!(bearer_token(&h), BearerToken::Missing);
    h.insert(
        "authorization",
        HeaderValue::from_static("\tBearer \tabc\t"),
    );
    assert_eq!(bearer_token(&h), BearerToken::Present("abc"));
    h.insert(
        "authorization",
        HeaderValue::from_bytes(b"Bearer ab\x80").unwrap(),
    );
    assert_eq!(bearer_token(&h), BearerToken::Malformed);
    h.insert("authorization", HeaderValue::from_static("Bearer x"));
    h.append("authorization", HeaderValue::from_static("Bearer y"));
    assert_eq!(bearer_token(&h), BearerToken::Malformed);
}

/// HS256 over raw header and payload JSON text, as an attacker writes it.
fn sign_raw(header: &str, payload: &str) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signing_input = format!("{}.{}", b64.encode(header), b64.encode(payload));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET).unwrap();
    mac.update(signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        b64.encode(mac.finalize().into_bytes())
    )
}

#[test]
fn duplicate_members_are_refused() {
    let v = JwtVerifier::with_secret(&auth(), SECRET);
    let exp = now() + 600;
    let hs = r#"{"alg":"HS256","typ":"JWT"}"#;
    let ok = sign_raw(hs, &format!(r#"{{"username":"alice","exp":{exp}}}"#));
    assert_eq!(v.verify(&ok).unwrap().as_ref(), "alice");
    for (header, payload) in [
        (
            hs,
            format!(r#"{{"username":"alice","username":"admin","exp":{exp}}}"#),
        ),
        (
            hs,
            format!(r#"{{"username":"alice","user\u006eame":"admin","exp":{exp}}}"#),
        ),
        (hs, format!(r#"{{"username":"alice","exp":1,"exp":{exp}}}"#)),
        (
            r#"{"alg":"HS256","alg":"none"}"#,
            format!(r#"{{"username":"alice","exp":{exp}}}"#),
        ),
    ] {
        assert_eq!(
            v.verify(&sign_raw(header, &payload)).unwrap_err(),
            TokenError::Invalid,
            "{header} {payload}"
        );
    }
}

#[test]
fn remembered_tokens_still_expire() {
    let mut a = auth();
    a.leeway_seconds = 0;
    let v = JwtVerifier::with_secret(&a, SECRET);
    let t = sign(
        serde_json::json!({"username": "a", "exp": now() + 1}),
        Algorithm::HS256,
        SECRET,
    );
    assert_eq!(v.verify(&t).unwrap().as_ref(), "a");
    assert_eq!(v.verify(&t).unwrap().as_ref(), "a"); // from the cache
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(v.verify(&t).unwrap_err(), TokenError::Expired);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
    /// Any one byte of a valid token changed to any other byte: refused,
    /// even once the valid token is in the verified-token cache.
    #[test]
    fn every_single_byte_change_is_refused(position in 0usize..1000, byte in 0u8..=255) {
        let v = JwtVerifier::with_secret(&auth(), SECRET);
        let valid = sign(
            serde_json::json!({"username": "alice", "exp": now() + 600}),
            Algorithm::HS256,
            SECRET,
        );
        proptest::prop_assert!(v.verify(&valid).is_ok());
        let mut bytes = valid.clone().into_bytes();
        let position = position % bytes.len();
        proptest::prop_assume!(bytes[position] != byte);
        bytes[position] = byte;
        let Ok(changed) = String::from_utf8(bytes) else {
            return Ok(()); // not a header value a client could send as text
        };
        proptest::prop_assert!(v.verify(&changed).is_err(), "accepted {changed}");
    }
}

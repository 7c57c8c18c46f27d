//! Tokens and signatures, signed as real clients and Slack do.

use super::*;

pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A token with the given header and claims, HMAC-signed with `key`.
pub fn signed_token(header: serde_json::Value, claims: serde_json::Value, key: &[u8]) -> String {
    let alg = header["alg"].as_str().unwrap_or("HS256").to_owned();
    signed_raw(&alg, &header.to_string(), &claims.to_string(), key)
}

/// A token over header and payload JSON exactly as written (duplicate
/// members and all), signed with `alg` (HS256/384/512; anything else: none).
pub fn signed_raw(alg: &str, header: &str, payload: &str, key: &[u8]) -> String {
    let signing_input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let signature = match alg {
        "HS384" => {
            let mut mac = Hmac::<sha2::Sha384>::new_from_slice(key).unwrap();
            mac.update(signing_input.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        "HS512" => {
            let mut mac = Hmac::<sha2::Sha512>::new_from_slice(key).unwrap();
            mac.update(signing_input.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        "HS256" => {
            let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
            mac.update(signing_input.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        _ => Vec::new(),
    };
    format!("{signing_input}.{}", b64(&signature))
}

pub fn token_with(claims: serde_json::Value) -> String {
    signed_token(
        serde_json::json!({"alg": "HS256", "typ": "JWT"}),
        claims,
        JWT_SECRET.as_bytes(),
    )
}

pub fn token_for(username: &str) -> String {
    token_with(serde_json::json!({"username": username, "exp": now() + 600, "iat": now()}))
}

pub fn expired_token_for(username: &str) -> String {
    token_with(serde_json::json!({"username": username, "exp": now() - 600}))
}

pub fn in_seconds(seconds: i64) -> i64 {
    now() + seconds
}

pub fn bearer(token: &str) -> (String, String) {
    ("Authorization".into(), format!("Bearer {token}"))
}

/// Slack's v0 signature of `body` at `timestamp`.
pub fn slack_signature(timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SLACK_SECRET.as_bytes()).unwrap();
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("v0={hex}")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

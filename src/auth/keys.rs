//! Signing keys: the static keys of `[auth]` (the one-key shorthand
//! `secret_env`/`secret_file`, or `[[auth.keys]]`), each pinned to one
//! algorithm, their material read from the environment or files (never
//! from the configuration itself), and dev-token minting with an HS key.
//!
//! Public keys are parsed by their algorithm's own crate (`rsa`, `p256`,
//! `ed25519-dalek`) so a key of the wrong kind, curve or size is a
//! configuration error naming the key, not a token that never verifies.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use prometheus::IntCounter;
use serde_json::Map;

use crate::config::{AuthConfig, ConfigError, KeyConfig};
use crate::observe::metrics::metrics;

/// Seconds since the epoch, for `exp` and `iat`.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The shortest HS256 secret the gateway accepts (RFC 7518 §3.2).
pub const MIN_SECRET_BYTES: usize = 32;

/// The smallest RSA modulus accepted (NIST SP 800-131A).
pub const MIN_RSA_BITS: usize = 2048;

/// `gateway_jwt_verifications_total{kid, result}` of one key, resolved
/// once so a verification costs one atomic increment.
#[derive(Debug, Clone)]
pub struct VerifyCounters {
    pub ok: IntCounter,
    pub expired: IntCounter,
    pub invalid: IntCounter,
}

impl VerifyCounters {
    /// `label` is a configured or fetched `kid` (or `-` for the shorthand
    /// key); a token's own `kid` never becomes a label.
    pub fn new(label: &str) -> Self {
        let family = &metrics().jwt_verifications;
        Self {
            ok: family.with_label_values(&[label, "ok"]),
            expired: family.with_label_values(&[label, "expired"]),
            invalid: family.with_label_values(&[label, "invalid"]),
        }
    }
}

/// One key: the algorithm it verifies (never the token's choice), its
/// decoding key and validation, and until when it may verify.
pub struct SigningKey {
    pub kid: Option<Arc<str>>,
    pub algorithm: Algorithm,
    pub decoding: DecodingKey,
    /// The claim checks of `[auth]` with this key's algorithm alone.
    pub validation: Validation,
    /// Unix seconds after which the key verifies nothing.
    pub verify_until: Option<u64>,
    /// HS keys: the secret, to mint dev tokens (`token --kid`).
    secret: Option<Vec<u8>>,
    pub counters: VerifyCounters,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the material.
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    pub fn new(
        kid: Option<Arc<str>>,
        algorithm: Algorithm,
        decoding: DecodingKey,
        base: &Validation,
        verify_until: Option<u64>,
    ) -> Self {
        let mut validation = base.clone();
        validation.algorithms = vec![algorithm];
        let counters = VerifyCounters::new(kid.as_deref().unwrap_or("-"));
        Self {
            kid,
            algorithm,
            decoding,
            validation,
            verify_until,
            secret: None,
            counters,
        }
    }

    /// An HS256 key with its secret (it can sign dev tokens too).
    pub fn hs256(
        kid: Option<Arc<str>>,
        secret: Vec<u8>,
        base: &Validation,
        verify_until: Option<u64>,
    ) -> Self {
        let decoding = DecodingKey::from_secret(&secret);
        let mut key = Self::new(kid, Algorithm::HS256, decoding, base, verify_until);
        key.secret = Some(secret);
        key
    }

    /// False once `verify_until` has passed.
    pub fn is_current(&self, now: u64) -> bool {
        self.verify_until.is_none_or(|until| now < until)
    }
}

/// The static keys of `[auth]`, in configuration order: the shorthand
/// secret as one HS256 key without a `kid`, or every `[[auth.keys]]` entry.
/// With only `[auth.jwks]`, none.
pub fn load_keys(auth: &AuthConfig, base: &Validation) -> Result<Vec<SigningKey>, ConfigError> {
    if auth.keys.is_empty() {
        if auth.secret_env.is_none() && auth.secret_file.is_none() {
            return Ok(Vec::new());
        }
        let secret = read_secret(
            auth.secret_env.as_deref(),
            auth.secret_file.as_deref(),
            "auth",
        )?;
        return Ok(vec![SigningKey::hs256(None, secret, base, None)]);
    }
    auth.keys
        .iter()
        .enumerate()
        .map(|(i, config)| load_key(config, &format!("auth.keys[{i}]"), base))
        .collect()
}

fn load_key(config: &KeyConfig, at: &str, base: &Validation) -> Result<SigningKey, ConfigError> {
    let kid: Arc<str> = config.kid.as_str().into();
    let named = |what: &str| format!("{at}.{what}");
    let algorithm = config.algorithm.known().ok_or_else(|| {
        ConfigError::invalid(
            named("algorithm"),
            format!(
                "key '{kid}': '{}' is not HS256, RS256, ES256 or EdDSA",
                config.algorithm
            ),
        )
    })?;
    let verify_until = config
        .verify_until
        .as_deref()
        .map(|text| {
            crate::text::parse_rfc3339_seconds(text).map_err(|e| {
                ConfigError::invalid(named("verify_until"), format!("key '{kid}': '{text}' {e}"))
            })
        })
        .transpose()?;
    if algorithm == Algorithm::HS256 {
        let secret = read_secret(
            config.secret_env.as_deref(),
            config.secret_file.as_deref(),
            at,
        )
        .map_err(|e| match e {
            ConfigError::Invalid { key, message } => {
                ConfigError::invalid(key, format!("key '{kid}': {message}"))
            }
            other => other,
        })?;
        return Ok(SigningKey::hs256(Some(kid), secret, base, verify_until));
    }
    let path = config.public_key_file.as_deref().ok_or_else(|| {
        ConfigError::invalid(
            named("public_key_file"),
            format!("key '{kid}': {} needs a public_key_file", config.algorithm),
        )
    })?;
    let decoding = read_public_key(algorithm, path).map_err(|m| {
        ConfigError::invalid(
            named("public_key_file"),
            format!("key '{kid}', {}: {m}", path.display()),
        )
    })?;
    Ok(SigningKey::new(
        Some(kid),
        algorithm,
        decoding,
        base,
        verify_until,
    ))
}

/// An RS256, ES256 or EdDSA public key from a PEM file (SPKI, or PKCS#1
/// for RSA), checked by aws-lc-rs, the library that verifies with it.
fn read_public_key(algorithm: Algorithm, path: &Path) -> Result<DecodingKey, String> {
    let pem = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    public_key_from_pem(algorithm, &pem)
}

/// The decoding key of a PEM public key of `algorithm`: jsonwebtoken reads
/// the PEM, aws-lc-rs then parses the key itself (an RSA modulus, a point on
/// P-256, an Ed25519 point), so a key that would fail every token fails the
/// configuration instead.
pub fn public_key_from_pem(algorithm: Algorithm, pem: &str) -> Result<DecodingKey, String> {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ED25519};
    let pem = pem.as_bytes();
    match algorithm {
        Algorithm::RS256 => {
            let not_rsa = |e: &dyn std::fmt::Display| format!("not an RSA public key in PEM ({e})");
            let decoding = DecodingKey::from_rsa_pem(pem).map_err(|e| not_rsa(&e))?;
            let der = decoding.try_get_as_bytes().map_err(|e| not_rsa(&e))?;
            let key = aws_lc_rs::rsa::PublicKey::from_der(der).map_err(|e| not_rsa(&e))?;
            rsa_key(
                key.modulus().big_endian_without_leading_zero(),
                key.exponent().big_endian_without_leading_zero(),
            )
        }
        Algorithm::ES256 => checked_point(
            DecodingKey::from_ec_pem(pem),
            &ECDSA_P256_SHA256_FIXED,
            "a P-256",
        ),
        Algorithm::EdDSA => checked_point(DecodingKey::from_ed_pem(pem), &ED25519, "an Ed25519"),
        other => Err(format!("{other:?} has no public key")),
    }
}

/// An elliptic-curve key jsonwebtoken read from PEM, its point parsed by
/// aws-lc-rs for `algorithm` (`what` names the curve in a refusal).
fn checked_point(
    read: jsonwebtoken::errors::Result<DecodingKey>,
    algorithm: &'static dyn aws_lc_rs::signature::VerificationAlgorithm,
    what: &str,
) -> Result<DecodingKey, String> {
    let refused = |e: &dyn std::fmt::Display| format!("not {what} public key in PEM ({e})");
    let decoding = read.map_err(|e| refused(&e))?;
    let point = decoding.try_get_as_bytes().map_err(|e| refused(&e))?;
    aws_lc_rs::signature::ParsedPublicKey::new(algorithm, point).map_err(|e| refused(&e))?;
    Ok(decoding)
}

/// An RSA verification key from its modulus and exponent (big-endian),
/// refused under [`MIN_RSA_BITS`].
pub fn rsa_key(modulus: &[u8], exponent: &[u8]) -> Result<DecodingKey, String> {
    let leading_zeros = modulus.iter().take_while(|b| **b == 0).count();
    let significant = &modulus[leading_zeros..];
    let bits = significant
        .first()
        .map_or(0, |b| significant.len() * 8 - b.leading_zeros() as usize);
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "the RSA key has {bits} bits; at least {MIN_RSA_BITS} are needed"
        ));
    }
    Ok(DecodingKey::from_rsa_raw_components(significant, exponent))
}

/// An HS256 secret from an environment variable or a file (`at` names the
/// table the source keys are in).
fn read_secret(env: Option<&str>, file: Option<&Path>, at: &str) -> Result<Vec<u8>, ConfigError> {
    let (key, secret) = match (env, file) {
        (Some(var), None) => {
            let key = format!("{at}.secret_env");
            let value =
                crate::config::env::value(var).map_err(|m| ConfigError::invalid(&key, m))?;
            (key, value.into_encoded_bytes())
        }
        (None, Some(path)) => {
            let key = format!("{at}.secret_file");
            let mut bytes = std::fs::read(path).map_err(|e| {
                ConfigError::invalid(&key, format!("cannot read {}: {e}", path.display()))
            })?;
            // Files written by editors and `echo` end with a newline that is
            // not part of the secret.
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
            (key, bytes)
        }
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(
                at,
                "set one of secret_env and secret_file, not both",
            ))
        }
        (None, None) => {
            return Err(ConfigError::invalid(
                at,
                "set secret_env or secret_file (the secret itself never goes in this file)",
            ))
        }
    };
    if secret.len() < MIN_SECRET_BYTES {
        return Err(ConfigError::invalid(
            key,
            format!(
                "the secret is {} bytes; HS256 needs at least {MIN_SECRET_BYTES}",
                secret.len()
            ),
        ));
    }
    Ok(secret)
}

/// The HS key `token` signs with: the one with `kid`, or the first.
pub fn signing_key<'a>(
    keys: &'a [SigningKey],
    kid: Option<&str>,
) -> Result<&'a SigningKey, String> {
    let mut hs = keys.iter().filter(|k| k.secret.is_some());
    match kid {
        None => hs
            .next()
            .ok_or_else(|| "no HS256 key is configured to sign with".to_owned()),
        Some(kid) => hs
            .find(|k| k.kid.as_deref() == Some(kid))
            .ok_or_else(|| format!("no HS256 key has kid '{kid}'")),
    }
}

/// Mints an HS256 token for `username` with `key`, valid for
/// `ttl_seconds` (dev tool); the header names the key's `kid`.
pub fn mint(
    auth: &AuthConfig,
    key: &SigningKey,
    username: &str,
    ttl_seconds: u64,
) -> Result<String, String> {
    let secret = key.secret.as_deref().ok_or("only HS256 keys can sign")?;
    let now = unix_now();
    let mut claims = Map::new();
    claims.insert(auth.username_claim.clone(), username.into());
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), (now + ttl_seconds).into());
    if let Some(iss) = &auth.issuer {
        claims.insert("iss".into(), iss.as_str().into());
    }
    if let Some(aud) = &auth.audience {
        claims.insert("aud".into(), aud.as_str().into());
    }
    let mut header = Header::new(Algorithm::HS256);
    header.kid = key.kid.as_deref().map(str::to_owned);
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_rsa_moduli_are_refused() {
        let small = [0xffu8; 128]; // 1024 bits
        assert!(rsa_key(&small, &[1, 0, 1])
            .err()
            .unwrap()
            .contains("1024 bits"));
        let mut padded = vec![0u8; 3];
        padded.extend_from_slice(&[0x80u8; 256]); // 2048 bits after zeros
        assert!(rsa_key(&padded, &[1, 0, 1]).is_ok());
        assert!(rsa_key(&[], &[1, 0, 1]).is_err());
    }

    #[test]
    fn a_public_key_of_another_kind_is_refused() {
        let garbage = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
            assert!(public_key_from_pem(alg, garbage).is_err(), "{alg:?}");
        }
        assert!(public_key_from_pem(Algorithm::HS256, garbage).is_err());
    }
}

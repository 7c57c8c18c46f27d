//! The signing key material: the HS256 secret, read from the environment
//! variable or file the configuration names (never from the file itself),
//! and dev-token minting with it.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Map;

use super::token::unix_now;
use crate::config::{AuthConfig, ConfigError};

/// The shortest HS256 secret the gateway accepts (RFC 7518 §3.2).
pub const MIN_SECRET_BYTES: usize = 32;

/// Reads the signing secret named by `[auth]` from the environment or a file.
pub fn load_secret(auth: &AuthConfig) -> Result<Vec<u8>, ConfigError> {
    let (key, secret) = if let Some(var) = &auth.secret_env {
        let value = std::env::var_os(var).ok_or_else(|| {
            ConfigError::invalid(
                "auth.secret_env",
                format!("environment variable {var} is not set"),
            )
        })?;
        ("auth.secret_env", value.into_encoded_bytes())
    } else if let Some(path) = &auth.secret_file {
        let mut bytes = std::fs::read(path).map_err(|e| {
            ConfigError::invalid(
                "auth.secret_file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        // Files written by editors and `echo` end with a newline that is not
        // part of the secret.
        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            bytes.pop();
        }
        ("auth.secret_file", bytes)
    } else {
        return Err(ConfigError::invalid("auth", "no secret source configured"));
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

/// Mints an HS256 token for `username`, valid for `ttl_seconds` (dev tool).
pub fn mint(
    auth: &AuthConfig,
    secret: &[u8],
    username: &str,
    ttl_seconds: u64,
) -> Result<String, jsonwebtoken::errors::Error> {
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
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
}

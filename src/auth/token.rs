//! Bearer-token verification against the configured keys
//! ([`crate::auth::keys`] and [`crate::auth::jwks`]).
//!
//! Each key is pinned to one algorithm, never taken from the token: a
//! token with a `kid` is checked against that key only (with the one-key
//! shorthand, whose key has no id, the `kid` is not looked at), and its `alg` must
//! be the key's; without a `kid`, the static keys of the token's `alg` are
//! tried in configuration order (one signature check each). Keys the token
//! names or carries (`jku`, `jwk`, `x5u`, `x5c`) are refused, never
//! fetched. `exp` is required, `nbf` honored, both with the configured
//! leeway; `iss` and `aud` are checked when configured. Oversized tokens are
//! refused before any decoding.
//!
//! Tokens that verified are remembered, keyed by their exact bytes, with
//! their username, time window and key: a client sends the same token on
//! every request, and the cache turns signature + base64 + JSON (about
//! 2 µs for HS256) into one hash lookup. `exp`/`nbf` and the key's
//! `verify_until` are still checked on every hit; a token of a JWKS key is
//! verified again once the set changed; a reload builds a new verifier, so
//! a removed key's tokens are refused at once.

use std::sync::Arc;

use http::HeaderValue;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::claims::{ClaimRules, TokenClaims};
use super::jwks::Jwks;
use super::keys::{unix_now, SigningKey, VerifyCounters};
use crate::config::AuthConfig;
use crate::config::MAX_KID_BYTES;
use crate::errors::GatewayError;

/// The longest username accepted from a token, in bytes.
pub const MAX_USERNAME_BYTES: usize = 256;

/// What the `Authorization` header holds.
#[derive(Debug, PartialEq, Eq)]
pub enum BearerToken<'a> {
    Missing,
    /// Present but not a usable bearer token (repeated header, empty, not text).
    Malformed,
    Present(&'a str),
}

/// Reads the bearer token from the request's `Authorization` header(s).
pub fn bearer_token(headers: &http::HeaderMap) -> BearerToken<'_> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return BearerToken::Missing;
    };
    if values.next().is_some() {
        // Two Authorization headers: which one would the upstream believe?
        return BearerToken::Malformed;
    }
    let Ok(text) = value.to_str() else {
        return BearerToken::Malformed;
    };
    let Some((scheme, token)) = text.trim().split_once(' ') else {
        return BearerToken::Missing;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return BearerToken::Missing;
    }
    match token.trim() {
        "" => BearerToken::Malformed,
        t => BearerToken::Present(t),
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("token invalid")]
    Invalid,
    /// A `kid` for the JWKS set, which has never been fetched.
    #[error("signing keys unavailable")]
    KeysUnavailable,
    /// A token seen for the first time while its client's first-sight
    /// budget is spent: refused without checking its signature.
    #[error("too many new tokens from this client")]
    FirstSightLimited,
}

impl From<TokenError> for GatewayError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Expired => GatewayError::TokenExpired,
            TokenError::Invalid => GatewayError::InvalidToken,
            TokenError::KeysUnavailable => GatewayError::SigningKeysUnavailable,
            TokenError::FirstSightLimited => GatewayError::RateLimitExceeded,
        }
    }
}

/// The claims of a token. `exp` and `nbf` are validated by jsonwebtoken
/// before this is built; the username claim's name is configurable, so it is
/// taken from the remaining claims.
#[derive(Debug, serde::Deserialize)]
pub struct Claims {
    pub exp: u64,
    #[serde(default)]
    pub nbf: Option<u64>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl Claims {
    /// Takes the username out of the claim named `claim`, if it is sane.
    fn take_username(mut self, claim: &str) -> Option<String> {
        match self.other.remove(claim) {
            Some(Value::String(name)) if is_sane_username(&name) => Some(name),
            _ => None,
        }
    }
}

/// Verifies tokens against the configured keys (static and JWKS) and
/// claims.
pub struct JwtVerifier {
    /// Static keys, in configuration order.
    keys: Vec<SigningKey>,
    jwks: Option<Arc<Jwks>>,
    username_claim: String,
    max_token_bytes: usize,
    leeway: u64,
    verified: Option<quick_cache::sync::Cache<Box<str>, VerifiedToken>>,
    /// Refusals no key is to blame for (unknown `kid`, no candidate key).
    no_key: VerifyCounters,
    /// Keys have ids (`[[auth.keys]]` or JWKS): a token's `kid` selects one.
    selects_by_kid: bool,
    /// The claims taken from a token when it is first verified.
    claim_rules: ClaimRules,
}

/// A verified token: its user and what else it says.
#[derive(Debug, Clone)]
pub struct VerifiedUser {
    pub username: Arc<str>,
    pub claims: Arc<TokenClaims>,
}

/// Longer tokens are verified every time rather than remembered, which
/// bounds the cache's memory at capacity × this.
const MAX_CACHED_TOKEN_BYTES: usize = 1024;

/// What a verified token says, kept until it expires.
#[derive(Debug, Clone)]
struct VerifiedToken {
    username: Arc<str>,
    claims: Arc<TokenClaims>,
    exp: u64,
    nbf: Option<u64>,
    /// The `verify_until` of the key that verified it.
    key_until: Option<u64>,
    /// The JWKS generation it was verified with; 0 for a static key.
    generation: u64,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the keys.
        f.debug_struct("JwtVerifier")
            .field("keys", &self.keys.len())
            .field("username_claim", &self.username_claim)
            .finish_non_exhaustive()
    }
}

/// The claim checks of `[auth]` (the algorithm is each key's own).
pub fn base_validation(auth: &AuthConfig) -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = auth.leeway_seconds;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    // A configured `aud` or `iss` must be present, not just right when
    // present: a token without `aud` is not a token for this audience.
    let required: Vec<&str> = [
        Some("exp"),
        auth.audience.as_ref().map(|_| "aud"),
        auth.issuer.as_ref().map(|_| "iss"),
    ]
    .into_iter()
    .flatten()
    .collect();
    validation.set_required_spec_claims(&required);
    match &auth.audience {
        Some(aud) => validation.set_audience(&[aud]),
        // jsonwebtoken refuses any `aud` unless told which it expects.
        None => validation.validate_aud = false,
    }
    if let Some(iss) = &auth.issuer {
        validation.set_issuer(&[iss]);
    }
    validation
}

/// A verification that got as far as a key.
struct Verified {
    username: Arc<str>,
    claims: Arc<TokenClaims>,
    exp: u64,
    nbf: Option<u64>,
    key_until: Option<u64>,
}

impl JwtVerifier {
    pub fn new(auth: &AuthConfig, keys: Vec<SigningKey>, jwks: Option<Arc<Jwks>>) -> Self {
        let selects_by_kid = jwks.is_some() || keys.iter().any(|k| k.kid.is_some());
        Self {
            selects_by_kid,
            keys,
            jwks,
            username_claim: auth.username_claim.clone(),
            max_token_bytes: auth.max_token_bytes,
            leeway: auth.leeway_seconds,
            verified: (auth.verified_token_cache > 0)
                .then(|| quick_cache::sync::Cache::new(auth.verified_token_cache)),
            no_key: VerifyCounters::new("none"),
            claim_rules: ClaimRules::default(),
        }
    }

    /// The claims to take from each token (claim headers, required claims).
    pub fn with_claim_rules(mut self, rules: ClaimRules) -> Self {
        self.claim_rules = rules;
        self
    }

    /// A verifier with the one-key shorthand: one HS256 key without a
    /// `kid` (tests, benches, fuzzing; not in the release binary).
    #[cfg(any(test, feature = "test-util"))]
    pub fn with_secret(auth: &AuthConfig, secret: &[u8]) -> Self {
        let key = SigningKey::hs256(None, secret.to_vec(), &base_validation(auth), None);
        Self::new(auth, vec![key], None)
    }

    /// The static keys (`token` signs with one of them).
    pub fn keys(&self) -> &[SigningKey] {
        &self.keys
    }

    /// The fetched key set, with `[auth.jwks]`.
    pub fn jwks(&self) -> Option<&Arc<Jwks>> {
        self.jwks.as_ref()
    }

    /// Verifies `token` and returns the username claim.
    pub fn verify(&self, token: &str) -> Result<Arc<str>, TokenError> {
        self.verify_gated(token, || true).map(|v| v.username)
    }

    /// [`Self::verify`], but a token not remembered as verified is checked
    /// only if `first_sight` allows (it spends the client's budget): a
    /// signature check costs up to 400 µs, a remembered token nothing.
    pub fn verify_gated(
        &self,
        token: &str,
        first_sight: impl FnOnce() -> bool,
    ) -> Result<VerifiedUser, TokenError> {
        if token.len() > self.max_token_bytes {
            return Err(TokenError::Invalid);
        }
        if let Some(hit) = self.verified.as_ref().and_then(|c| c.get(token)) {
            // `None`: verified with a JWKS set since replaced; verify again.
            if let Some(result) = self.check_remembered(&hit) {
                return result.map(|()| VerifiedUser {
                    username: hit.username,
                    claims: hit.claims,
                });
            }
        }
        if !first_sight() {
            return Err(TokenError::FirstSightLimited);
        }
        let (verified, generation) = self.verify_signed(token)?;
        if let Some(cache) = &self.verified {
            if token.len() <= MAX_CACHED_TOKEN_BYTES {
                let entry = VerifiedToken {
                    username: verified.username.clone(),
                    claims: verified.claims.clone(),
                    exp: verified.exp,
                    nbf: verified.nbf,
                    key_until: verified.key_until,
                    generation,
                };
                cache.insert(token.into(), entry);
            }
        }
        Ok(VerifiedUser {
            username: verified.username,
            claims: verified.claims,
        })
    }

    /// First sight of a token: the key its header selects, then the
    /// signature and claims. Returns the JWKS generation used (0: static).
    fn verify_signed(&self, token: &str) -> Result<(Verified, u64), TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        // Keys named or carried by the token itself are never fetched nor
        // trusted: only configured keys verify.
        if header.jku.is_some()
            || header.jwk.is_some()
            || header.x5u.is_some()
            || header.x5c.is_some()
        {
            self.no_key.invalid.inc();
            return Err(TokenError::Invalid);
        }
        let now = unix_now();
        // With the one-key shorthand there is nothing to select: a `kid` in
        // the token is not looked at, as before keys had ids.
        let kid = header.kid.as_deref().filter(|_| self.selects_by_kid);
        let Some(kid) = kid else {
            // No `kid`: the static keys of the token's algorithm, in order.
            let mut candidates = self
                .keys
                .iter()
                .filter(|k| k.algorithm == header.alg && k.is_current(now))
                .peekable();
            if candidates.peek().is_none() {
                self.no_key.invalid.inc();
                return Err(TokenError::Invalid);
            }
            let mut last = TokenError::Invalid;
            for key in candidates {
                match self.verify_with(token, key) {
                    Ok(verified) => return Ok((verified, 0)),
                    // Expired under a key that verified the signature: final.
                    Err(TokenError::Expired) => return Err(TokenError::Expired),
                    Err(e) => last = e,
                }
            }
            return Err(last);
        };
        if kid.len() > MAX_KID_BYTES {
            self.no_key.invalid.inc();
            return Err(TokenError::Invalid);
        }
        if let Some(key) = self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)) {
            return self
                .checked_key(token, key, header.alg, now)
                .map(|v| (v, 0));
        }
        let Some(jwks) = &self.jwks else {
            self.no_key.invalid.inc();
            return Err(TokenError::Invalid);
        };
        // Read the generation before the set: a set swapped in between is
        // newer than the generation recorded, so its tokens re-verify once.
        let generation = jwks.generation();
        let Some(set) = jwks.current() else {
            jwks.want_refresh();
            return Err(TokenError::KeysUnavailable);
        };
        match set.find(kid) {
            Some(key) => self
                .checked_key(token, key, header.alg, now)
                .map(|v| (v, generation)),
            None => {
                jwks.want_refresh();
                self.no_key.invalid.inc();
                Err(TokenError::Invalid)
            }
        }
    }

    /// The key the `kid` named: its algorithm must be the token's, and it
    /// must still be current.
    fn checked_key(
        &self,
        token: &str,
        key: &SigningKey,
        alg: Algorithm,
        now: u64,
    ) -> Result<Verified, TokenError> {
        if key.algorithm != alg || !key.is_current(now) {
            key.counters.invalid.inc();
            return Err(TokenError::Invalid);
        }
        self.verify_with(token, key)
    }

    /// Signature and claims with one key; counted under its `kid`.
    fn verify_with(&self, token: &str, key: &SigningKey) -> Result<Verified, TokenError> {
        let result = self.decode(token, key);
        match &result {
            Ok(_) => key.counters.ok.inc(),
            Err(TokenError::Expired) => key.counters.expired.inc(),
            Err(_) => key.counters.invalid.inc(),
        }
        result
    }

    fn decode(&self, token: &str, key: &SigningKey) -> Result<Verified, TokenError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &key.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })?
            .claims;
        // A parser that takes the first of two `username` claims would see
        // another user than this one (serde takes the last): refuse both.
        if has_duplicate_members(token) {
            return Err(TokenError::Invalid);
        }
        let (exp, nbf) = (claims.exp, claims.nbf);
        let found = self.claim_rules.extract(&claims.other);
        let username: Arc<str> = claims
            .take_username(&self.username_claim)
            .ok_or(TokenError::Invalid)?
            .into();
        Ok(Verified {
            username,
            claims: found,
            exp,
            nbf,
            key_until: key.verify_until,
        })
    }

    /// A remembered token: its key still current, then `exp`/`nbf` as
    /// jsonwebtoken checks them. `None` when it was verified with a JWKS
    /// set that has been replaced since (its key may be gone).
    fn check_remembered(&self, token: &VerifiedToken) -> Option<Result<(), TokenError>> {
        if token.generation != 0
            && self
                .jwks
                .as_ref()
                .is_none_or(|j| j.generation() != token.generation)
        {
            return None;
        }
        let now = unix_now();
        let leeway = self.leeway;
        Some(if token.key_until.is_some_and(|until| now >= until) {
            Err(TokenError::Invalid)
        } else if token.exp < now.saturating_sub(leeway) {
            Err(TokenError::Expired)
        } else if token
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(leeway))
        {
            Err(TokenError::Invalid)
        } else {
            Ok(())
        })
    }
}

/// True when the token's header or payload names a member twice.
fn has_duplicate_members(token: &str) -> bool {
    use base64::Engine as _;
    token.split('.').take(2).any(|part| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .map_or(true, |json| {
                serde_json::from_slice::<UniqueMembers>(&json).is_err()
            })
    })
}

/// Deserializes only from a JSON object whose member names are distinct.
struct UniqueMembers;

impl<'de> serde::Deserialize<'de> for UniqueMembers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = UniqueMembers;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<UniqueMembers, A::Error> {
                let mut seen: Vec<std::borrow::Cow<'de, str>> = Vec::new();
                while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if seen.contains(&name) {
                        return Err(serde::de::Error::custom("duplicate member"));
                    }
                    map.next_value::<serde::de::IgnoredAny>()?;
                    seen.push(name);
                }
                Ok(UniqueMembers)
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// Non-empty, bounded, and free of control characters (it becomes a header).
pub fn is_sane_username(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_USERNAME_BYTES
        && !name.chars().any(char::is_control)
        && HeaderValue::from_bytes(name.as_bytes()).is_ok()
}

#[cfg(test)]
mod tests;

//! Keys fetched from `[auth.jwks]`: the set is fetched while the
//! configuration is built (so a new process has it before it takes over),
//! then refreshed every `refresh_seconds` by [`JwksRefresh`], a background
//! service, and at most once per `refresh_seconds / 10` (at least 1 s) when
//! a token names a `kid` the set does not have.
//!
//! A fetch is bounded: `timeout_ms` for the whole exchange, [`MAX_BYTES`]
//! of body, no redirects, no proxy from the environment, status 200 only.
//! A fetch that fails keeps the last good set (`gateway_jwks_up` 0, one
//! log line per failure streak); a process that never got a set answers
//! tokens with a `kid` it does not know 503 `SIGNING_KEYS_UNAVAILABLE`.
//!
//! Each key is pinned to its algorithm: the JWK's `alg`, or, without one,
//! RS256 for RSA, ES256 for P-256, EdDSA for Ed25519. Symmetric keys,
//! encryption keys, keys without a `kid` and RSA keys under 2048 bits are
//! left out.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::Notify;

use super::keys::{rsa_key, SigningKey};
use crate::config::is_valid_kid;
use crate::config::JwksConfig;
use crate::live::Live;
use crate::observe::metrics::metrics;

/// The largest key set accepted, in bytes.
pub const MAX_BYTES: u64 = 1 << 20;

/// The most keys taken from one set.
pub const MAX_KEYS: usize = 64;

/// The shortest time between two fetches asked for by unknown `kid`s.
pub const MIN_GAP: Duration = Duration::from_secs(1);

/// The keys of one good fetch.
pub struct KeySet {
    pub keys: Vec<SigningKey>,
    /// The body they came from: a fetch of the same bytes changes nothing.
    body: Vec<u8>,
}

impl KeySet {
    pub fn find(&self, kid: &str) -> Option<&SigningKey> {
        self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))
    }
}

/// The fetched keys of one configuration, shared with the refresher.
pub struct Jwks {
    pub config: JwksConfig,
    base: Validation,
    set: ArcSwapOption<KeySet>,
    /// Bumped whenever the set changes: a remembered token verified with
    /// an older set is verified again.
    generation: AtomicU64,
    /// A token named a `kid` the set lacks.
    wanted: AtomicBool,
    /// The last fetch failed (its streak has been logged).
    failing: AtomicBool,
    wake: Notify,
    /// Milliseconds since `origin` of the last fetch attempt.
    last_attempt_ms: AtomicU64,
    origin: Instant,
}

impl Jwks {
    /// Fetches the set once now (a failure is logged, not fatal: the
    /// refresher tries again).
    pub fn start(config: &JwksConfig, base: &Validation) -> Arc<Self> {
        let jwks = Arc::new(Self {
            config: config.clone(),
            base: base.clone(),
            set: ArcSwapOption::empty(),
            generation: AtomicU64::new(1),
            wanted: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            wake: Notify::new(),
            last_attempt_ms: AtomicU64::new(0),
            origin: Instant::now(),
        });
        jwks.refresh_blocking();
        jwks
    }

    /// The claim checks its keys were built with.
    pub fn base(&self) -> &Validation {
        &self.base
    }

    /// The current set, `None` until a fetch succeeded.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.set.load_full()
    }

    /// Whether the last fetch succeeded (the dependency probe).
    pub fn is_up(&self) -> bool {
        self.current().is_some() && !self.failing.load(Ordering::Acquire)
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Asks the refresher for a fetch (an unknown `kid`); it comes at most
    /// once per gap however many tokens ask.
    pub fn want_refresh(&self) {
        if !self.wanted.swap(true, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }

    fn min_gap(&self) -> Duration {
        Duration::from_secs(self.config.refresh_seconds / 10).max(MIN_GAP)
    }

    fn since_attempt(&self) -> Duration {
        let now = self.origin.elapsed();
        now.saturating_sub(Duration::from_millis(
            self.last_attempt_ms.load(Ordering::Acquire),
        ))
    }

    /// One fetch, blocking this thread for at most the timeout.
    pub fn refresh_blocking(&self) {
        self.last_attempt_ms
            .store(self.origin.elapsed().as_millis() as u64, Ordering::Release);
        self.wanted.store(false, Ordering::Release);
        let m = metrics();
        match fetch(&self.config).and_then(|body| {
            if self.current().is_some_and(|set| set.body == body) {
                return Ok(None);
            }
            parse_set(&body, &self.base).map(|keys| Some(KeySet { keys, body }))
        }) {
            Ok(changed) => {
                m.jwks_fetches.with_label_values(&["ok"]).inc();
                m.jwks_up.set(1);
                if self.failing.swap(false, Ordering::AcqRel) {
                    log::info!("JWKS {}: fetched again", self.config.url);
                }
                if let Some(set) = changed {
                    log::info!("JWKS {}: {} usable keys", self.config.url, set.keys.len());
                    m.jwks_keys.set(set.keys.len() as i64);
                    self.set.store(Some(Arc::new(set)));
                    self.generation.fetch_add(1, Ordering::AcqRel);
                }
            }
            Err(e) => {
                m.jwks_fetches.with_label_values(&["error"]).inc();
                m.jwks_up.set(0);
                // One line per failure streak, not per try.
                if !self.failing.swap(true, Ordering::AcqRel) {
                    log::warn!(
                        "JWKS {}: {e}; {}",
                        self.config.url,
                        if self.current().is_some() {
                            "keeping the last good set"
                        } else {
                            "tokens of its keys are refused with 503 until a fetch succeeds"
                        }
                    );
                }
            }
        }
    }

    /// How long until the next fetch is due.
    fn next_due(&self) -> Duration {
        let since = self.since_attempt();
        let wait = if self.current().is_none() || self.wanted.load(Ordering::Acquire) {
            self.min_gap()
        } else {
            Duration::from_secs(self.config.refresh_seconds)
        };
        wait.saturating_sub(since)
    }
}

/// GET the set's bytes, bounded in time and size.
fn fetch(config: &JwksConfig) -> Result<Vec<u8>, String> {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_millis(config.timeout_ms)))
            .max_redirects(0)
            .proxy(None)
            .tls_config(crate::tls::crypto::ureq_tls())
            .http_status_as_error(false)
            .build(),
    );
    let mut response = agent
        .get(&config.url)
        .call()
        .map_err(|e| format!("fetch failed: {e}"))?;
    if response.status() != 200 {
        return Err(format!("answered {}", response.status()));
    }
    response
        .body_mut()
        .with_config()
        .limit(MAX_BYTES)
        .read_to_vec()
        .map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => format!("the set is over {MAX_BYTES} bytes"),
            e => format!("reading the set failed: {e}"),
        })
}

/// The usable keys of a JWKS document; keys that are not are left out.
pub fn parse_set(body: &[u8], base: &Validation) -> Result<Vec<SigningKey>, String> {
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let document: Document =
        serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
    let keys: Vec<SigningKey> = document
        .keys
        .into_iter()
        // One key of an unknown kind must not spoil the others.
        .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
        .filter_map(|jwk| signing_key(&jwk, base))
        .take(MAX_KEYS)
        .collect();
    Ok(keys)
}

/// A JWK as a key pinned to one algorithm, if it is a usable public key.
fn signing_key(jwk: &Jwk, base: &Validation) -> Option<SigningKey> {
    let kid = jwk.common.key_id.as_deref().filter(|k| is_valid_kid(k))?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let (algorithm, decoding) = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            pinned(jwk, KeyAlgorithm::RS256)?;
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let n = b64.decode(&rsa.n).ok()?;
            let e = b64.decode(&rsa.e).ok()?;
            (Algorithm::RS256, rsa_key(&n, &e).ok()?)
        }
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            pinned(jwk, KeyAlgorithm::ES256)?;
            (Algorithm::ES256, DecodingKey::from_jwk(jwk).ok()?)
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            pinned(jwk, KeyAlgorithm::EdDSA)?;
            (Algorithm::EdDSA, DecodingKey::from_jwk(jwk).ok()?)
        }
        // Symmetric keys have no place in a published set; other curves
        // and key types are not supported.
        _ => return None,
    };
    Some(SigningKey::new(
        Some(kid.into()),
        algorithm,
        decoding,
        base,
        None,
    ))
}

/// `Some` when the JWK names no `alg` or exactly `expected`.
fn pinned(jwk: &Jwk, expected: KeyAlgorithm) -> Option<()> {
    match jwk.common.key_algorithm {
        None => Some(()),
        Some(alg) if alg == expected => Some(()),
        Some(_) => None,
    }
}

/// The background service that keeps the running configuration's set
/// fresh (README, "Signing keys").
pub struct JwksRefresh {
    /// The running configuration's set, if it has one.
    jwks: Live<Option<Arc<Jwks>>>,
}

impl JwksRefresh {
    pub fn new(jwks: Live<Option<Arc<Jwks>>>) -> Self {
        Self { jwks }
    }
}

#[async_trait]
impl BackgroundService for JwksRefresh {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let Some(jwks) = self.jwks.get() else {
                // No JWKS configured (a SIGHUP may add one).
                tokio::select! {
                    _ = tokio::time::sleep(MIN_GAP) => continue,
                    _ = shutdown.changed() => return,
                }
            };
            // At most a second at a time: a SIGHUP may have replaced the set.
            tokio::select! {
                _ = tokio::time::sleep(jwks.next_due().min(MIN_GAP)) => {}
                _ = jwks.wake.notified() => continue,
                _ = shutdown.changed() => return,
            }
            if jwks.next_due() > Duration::ZERO {
                continue;
            }
            let fetching = jwks.clone();
            let _ = tokio::task::spawn_blocking(move || fetching.refresh_blocking()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Validation {
        Validation::new(Algorithm::RS256)
    }

    #[test]
    fn unusable_keys_are_left_out() {
        let n = format!("w{}", "A".repeat(341)); // 2048 bits of base64url
        let body = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "good", "n": n, "e": "AQAB"},
            {"kty": "RSA", "kid": "small", "n": format!("w{}", "A".repeat(170)), "e": "AQAB"},
            {"kty": "RSA", "n": n, "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": n, "e": "AQAB"},
            {"kty": "RSA", "kid": "other-alg", "alg": "RS512", "n": n, "e": "AQAB"},
            {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},
            {"kty": "weird", "kid": "x"},
        ]});
        let keys = parse_set(body.to_string().as_bytes(), &base()).unwrap();
        let kids: Vec<_> = keys.iter().map(|k| k.kid.as_deref().unwrap()).collect();
        assert_eq!(kids, ["good"]);
        assert_eq!(keys[0].algorithm, Algorithm::RS256);
        assert!(parse_set(b"[]", &base()).is_err());
        assert!(parse_set(b"{\"keys\": []}", &base()).unwrap().is_empty());
    }
}

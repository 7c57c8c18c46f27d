//! Slack request signatures, verified at the edge for routes that set
//! `slack_signing_secret_env`: v0 HMAC-SHA256 over `v0:{timestamp}:{raw
//! body}`, compared in constant time, with the timestamp within 5 minutes.
//!
//! The timestamp is checked from the headers before the upstream is
//! contacted. The signature needs the whole body: the proxy holds the body
//! back (bounded), verifies it at its end, and only then forwards exactly
//! the bytes received.
//!
//! Anyone can send a fresh timestamp and a well-formed signature, so what
//! is held is bounded for the whole process, not just per request: each
//! signed request reserves its declared length (the route's limit when it
//! declares none) from `server.max_buffered_body_bytes` when it is
//! admitted, and gives it back when it ends ([`HeldBytes`]). A request that
//! does not fit is refused at once (503), before a byte of body is read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use pingora::{Error, ErrorType};

/// The error type a request-body filter raises for a bad signature.
pub const INVALID_SIGNATURE: &str = "invalid_signature";

/// How far the request timestamp may be from now, either way.
pub const MAX_CLOCK_SKEW_SECONDS: u64 = 300;
/// Body bytes held for verification unless the route sets `max_body_bytes`.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;

/// A route's signing secret (never printed).
pub struct SlackVerifier {
    key: hmac::Key,
    pub max_body_bytes: u64,
}

impl std::fmt::Debug for SlackVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackVerifier").finish_non_exhaustive()
    }
}

/// What the headers promise, to be checked against the body.
#[derive(Debug)]
pub struct PendingSignature {
    timestamp: String,
    signature: Vec<u8>,
}

impl SlackVerifier {
    pub fn new(secret: Vec<u8>, max_body_bytes: u64) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            max_body_bytes,
        }
    }

    /// Checks the headers: a fresh timestamp and a well-formed signature.
    pub fn check_headers(&self, headers: &HeaderMap, now: SystemTime) -> Option<PendingSignature> {
        let one = |name: &str| {
            let mut values = headers.get_all(name).iter();
            let value = values.next()?;
            values.next().is_none().then_some(value)?.to_str().ok()
        };
        let timestamp = one("x-slack-request-timestamp")?;
        let sent: u64 = timestamp.parse().ok()?;
        let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
        if now.abs_diff(sent) > MAX_CLOCK_SKEW_SECONDS {
            return None;
        }
        let signature = hex::decode(one("x-slack-signature")?.strip_prefix("v0=")?).ok()?;
        Some(PendingSignature {
            timestamp: timestamp.to_owned(),
            signature,
        })
    }

    /// Whether `body` is what was signed (constant-time comparison).
    pub fn verify(&self, pending: &PendingSignature, body: &[u8]) -> bool {
        let mut mac = hmac::Context::with_key(&self.key);
        mac.update(b"v0:");
        mac.update(pending.timestamp.as_bytes());
        mac.update(b":");
        mac.update(body);
        // aws-lc-rs compares in constant time.
        aws_lc_rs::constant_time::verify_slices_are_equal(mac.sign().as_ref(), &pending.signature)
            .is_ok()
    }
}

/// Body bytes reserved by every signed request of the process.
static RESERVED_BYTES: AtomicU64 = AtomicU64::new(0);

/// The bytes reserved by signed requests now (the `gateway_buffered_body_bytes`
/// gauge).
pub fn reserved_bytes() -> u64 {
    RESERVED_BYTES.load(Ordering::Relaxed)
}

/// One request's share of `server.max_buffered_body_bytes`, given back
/// when dropped (the request ended, however).
#[derive(Debug)]
pub struct HeldBytes(u64);

impl HeldBytes {
    /// Reserves `bytes` if the process then holds at most `cap`.
    pub fn reserve(bytes: u64, cap: u64) -> Option<Self> {
        RESERVED_BYTES
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |held| {
                held.checked_add(bytes).filter(|total| *total <= cap)
            })
            .ok()
            .map(|_| Self(bytes))
    }
}

impl Drop for HeldBytes {
    fn drop(&mut self) {
        RESERVED_BYTES.fetch_sub(self.0, Ordering::AcqRel);
    }
}

/// A signed request's body, held back until its signature is verified.
#[derive(Debug)]
pub struct SlackGate {
    /// The route's verifier, held by the gate: a gate without one cannot
    /// exist.
    verifier: std::sync::Arc<SlackVerifier>,
    pending: PendingSignature,
    held: BytesMut,
    /// What the body may grow to: its reservation.
    reserved: HeldBytes,
}

impl SlackGate {
    pub fn new(
        verifier: std::sync::Arc<SlackVerifier>,
        pending: PendingSignature,
        reserved: HeldBytes,
    ) -> Self {
        Self {
            verifier,
            pending,
            held: BytesMut::new(),
            reserved,
        }
    }

    /// `request_body_filter`: holds each chunk (bounded); at the end,
    /// verifies and releases exactly the bytes received, in one piece.
    pub fn on_body(
        &mut self,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
    ) -> pingora::Result<()> {
        if let Some(chunk) = body.take() {
            // The reservation is at most the route's limit, and no more
            // than the declared length a body may not exceed anyway.
            if (self.held.len() + chunk.len()) as u64 > self.reserved.0 {
                return Error::e_explain(ErrorType::HTTPStatus(413), "slack body over the limit");
            }
            if self.held.capacity() == 0 {
                // Once, the whole reservation: growing by doubling would
                // hold up to twice the body.
                self.held.reserve(self.reserved.0 as usize);
            }
            self.held.extend_from_slice(&chunk);
        }
        // An empty chunk sends nothing (None would end the upstream body).
        *body = Some(Bytes::new());
        if end_of_stream {
            if !self.verifier.verify(&self.pending, &self.held) {
                return Error::e_explain(ErrorType::Custom(INVALID_SIGNATURE), "slack signature");
            }
            *body = Some(std::mem::take(&mut self.held).freeze());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sign(secret: &[u8], ts: &str, body: &[u8]) -> String {
        // RustCrypto's HMAC, a second implementation beside the gateway's.
        use ::hmac::Mac as _;
        let mut mac = ::hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
        mac.update(format!("v0:{ts}:").as_bytes());
        mac.update(body);
        format!("v0={}", hex::encode(mac.finalize().into_bytes()))
    }

    fn headers(ts: &str, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-slack-request-timestamp", ts.parse().unwrap());
        h.insert("x-slack-signature", sig.parse().unwrap());
        h
    }

    #[test]
    fn valid_signatures_pass_and_anything_else_fails() {
        let v = SlackVerifier::new(b"8f742231b10e8888abcd99yyyzzz85a5".to_vec(), 1024);
        let now = UNIX_EPOCH + Duration::from_secs(1_531_420_618);
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J";
        let sig = sign(b"8f742231b10e8888abcd99yyyzzz85a5", "1531420618", body);
        let pending = v.check_headers(&headers("1531420618", &sig), now).unwrap();
        assert!(v.verify(&pending, body));
        assert!(!v.verify(&pending, b"token=other"));
        // Stale or future timestamps, malformed signatures: refused early.
        let later = now + Duration::from_secs(301);
        assert!(v
            .check_headers(&headers("1531420618", &sig), later)
            .is_none());
        assert!(v
            .check_headers(&headers("1531420618", "v1=abcd"), now)
            .is_none());
        assert!(v.check_headers(&headers("soon", &sig), now).is_none());
        assert!(v.check_headers(&HeaderMap::new(), now).is_none());
    }

    #[test]
    fn reservations_are_bounded_and_given_back() {
        // Other tests of this binary may hold some: count from here.
        let cap = reserved_bytes() + 1000;
        let a = HeldBytes::reserve(600, cap).unwrap();
        assert!(HeldBytes::reserve(500, cap).is_none());
        let b = HeldBytes::reserve(400, cap).unwrap();
        drop(a);
        let c = HeldBytes::reserve(500, cap).unwrap();
        drop((b, c));
        assert!(HeldBytes::reserve(1000, cap).is_some());
    }
}

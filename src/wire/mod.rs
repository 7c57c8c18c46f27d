//! The gateway's shared vocabulary, at the bottom of the layers (it
//! imports nothing of the crate): the header names it writes, the request
//! id (its validation and generation), and the normalized path ([`path`]:
//! the one form routing decides on and the upstream receives; `config`
//! checks route patterns with it), and the W3C trace context ([`trace`]). `errors`, `edge`, `process`, `routing`
//! and `proxy` all use it.

pub mod path;
pub mod trace;

use http::{HeaderMap, HeaderName, HeaderValue};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");
pub const X_USERNAME: HeaderName = HeaderName::from_static("x-username");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The same names as written on the wire, for `insert_header`: Pingora keeps
/// a `&'static str` name as it is, but copies a `HeaderName` on every insert
/// (two allocations per header the gateway sets).
pub mod names {
    pub const X_REQUEST_ID: &str = "X-Request-Id";
    pub const X_USER_ID: &str = "X-User-Id";
    pub const X_USERNAME: &str = "X-Username";
    pub const X_FORWARDED_FOR: &str = "X-Forwarded-For";
    pub const X_FORWARDED_PROTO: &str = "X-Forwarded-Proto";
    pub const GRPC_STATUS: &str = "grpc-status";
    pub const GRPC_MESSAGE: &str = "grpc-message";
    pub const TRACEPARENT: &str = "traceparent";
}

/// The longest client request id that is kept.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// A client `X-Request-Id` is kept when it is 1..=128 of `[A-Za-z0-9._:-]`.
pub fn is_valid_request_id(value: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&value.len())
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// The client's request id when valid, else a fresh `req_<32 hex>`.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    match headers.get(&X_REQUEST_ID) {
        Some(v) if is_valid_request_id(v.as_bytes()) => v.clone(),
        _ => generate_request_id(),
    }
}

pub fn generate_request_id() -> HeaderValue {
    let mut buf = [0u8; 4 + 32];
    buf[..4].copy_from_slice(b"req_");
    uuid::Uuid::new_v4().simple().encode_lower(&mut buf[4..]);
    // Only ASCII letters, digits and '_': always a valid header value.
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("req_unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_rules() {
        assert!(is_valid_request_id(b"req_123456"));
        assert!(is_valid_request_id(b"a.b:c-d_e"));
        assert!(!is_valid_request_id(b""));
        assert!(!is_valid_request_id(b"has space"));
        assert!(!is_valid_request_id(b"semi;colon"));
        assert!(!is_valid_request_id(&[b'a'; 129]));
        assert!(is_valid_request_id(&[b'a'; 128]));
        let generated = generate_request_id();
        assert!(generated.to_str().unwrap().starts_with("req_"));
        assert_eq!(generated.len(), 36);
        assert!(is_valid_request_id(generated.as_bytes()));
        assert_ne!(generated, generate_request_id());
    }
}

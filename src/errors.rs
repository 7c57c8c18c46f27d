//! The errors the gateway answers itself, and the one place they become HTTP
//! responses (the JSON envelope; README, "Error codes").
//!
//! Every phase of the proxy returns a [`GatewayError`]; only
//! [`render_envelope`] turns one into status, headers and body, so the
//! envelope cannot drift between call sites.

use crate::wire::names as wire;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::HeaderValue;
use pingora::http::ResponseHeader;
use serde::Serialize;
use std::time::SystemTime;

/// An error the gateway answers itself, with its code and status (README,
/// "Error codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// The request cannot be handled safely; the reason is safe to show clients.
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("Authorization bearer token is required")]
    MissingToken,
    #[error("Token is invalid")]
    InvalidToken,
    #[error("Token has expired")]
    TokenExpired,
    /// Issued before the user's `tokens_valid_after` ("log out everywhere").
    #[error("Token has been revoked")]
    TokenRevoked,
    /// Authenticated, but the token lacks a claim the route requires.
    #[error("Token does not grant access to this route")]
    Forbidden,
    #[error("Slack request signature is missing, stale or wrong")]
    InvalidSignature,
    #[error("User not found")]
    UserNotFound,
    #[error("No route matches this path")]
    RouteNotFound,
    #[error("Request body is larger than this route accepts")]
    PayloadTooLarge,
    #[error("Request header did not arrive in time")]
    RequestTimeout,
    #[error("Request target is too long")]
    UriTooLong,
    #[error("Request header section is too large")]
    HeadersTooLarge,
    #[error("Too many requests; retry after the time in Retry-After")]
    RateLimitExceeded,
    #[error("Upstream service is unavailable")]
    ServiceUnavailable,
    #[error("User directory is unavailable")]
    UserDirectoryUnavailable,
    #[error("Signing keys are unavailable")]
    SigningKeysUnavailable,
    #[error("Upstream service did not answer in time")]
    GatewayTimeout,
}

impl GatewayError {
    /// The machine-readable code of the envelope.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "BAD_REQUEST",
            Self::MissingToken => "MISSING_TOKEN",
            Self::InvalidToken => "INVALID_TOKEN",
            Self::TokenExpired => "TOKEN_EXPIRED",
            Self::TokenRevoked => "TOKEN_REVOKED",
            Self::Forbidden => "FORBIDDEN",
            Self::InvalidSignature => "INVALID_SIGNATURE",
            Self::UserNotFound => "USER_NOT_FOUND",
            Self::RouteNotFound => "ROUTE_NOT_FOUND",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::RequestTimeout => "REQUEST_TIMEOUT",
            Self::UriTooLong => "URI_TOO_LONG",
            Self::HeadersTooLarge => "HEADERS_TOO_LARGE",
            Self::RateLimitExceeded => "RATE_LIMIT_EXCEEDED",
            Self::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            Self::UserDirectoryUnavailable => "USER_DIRECTORY_UNAVAILABLE",
            Self::SigningKeysUnavailable => "SIGNING_KEYS_UNAVAILABLE",
            Self::GatewayTimeout => "GATEWAY_TIMEOUT",
        }
    }

    /// The HTTP status the code maps to.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::MissingToken
            | Self::InvalidToken
            | Self::TokenExpired
            | Self::TokenRevoked
            | Self::InvalidSignature => 401,
            Self::Forbidden => 403,
            Self::UserNotFound | Self::RouteNotFound => 404,
            Self::PayloadTooLarge => 413,
            Self::RequestTimeout => 408,
            Self::UriTooLong => 414,
            Self::HeadersTooLarge => 431,
            Self::RateLimitExceeded => 429,
            Self::ServiceUnavailable
            | Self::UserDirectoryUnavailable
            | Self::SigningKeysUnavailable => 503,
            Self::GatewayTimeout => 504,
        }
    }

    /// The `reason` label of `gateway_auth_failures_total`, for errors that
    /// refuse a request on authentication grounds.
    pub fn auth_failure_reason(&self) -> Option<&'static str> {
        match self {
            Self::MissingToken => Some("missing_token"),
            Self::InvalidToken => Some("invalid_token"),
            Self::TokenExpired => Some("token_expired"),
            Self::TokenRevoked => Some("token_revoked"),
            Self::UserNotFound => Some("user_not_found"),
            Self::UserDirectoryUnavailable => Some("directory_unavailable"),
            Self::SigningKeysUnavailable => Some("keys_unavailable"),
            Self::InvalidSignature => Some("invalid_signature"),
            _ => None,
        }
    }

    /// The gRPC status a gRPC client gets instead of the envelope
    /// (README, "gRPC"): the code a gRPC server would have used.
    pub fn grpc_status(&self) -> u8 {
        match self {
            Self::BadRequest(_) => 3, // INVALID_ARGUMENT
            Self::MissingToken
            | Self::InvalidToken
            | Self::TokenExpired
            | Self::TokenRevoked
            | Self::InvalidSignature
            | Self::UserNotFound => 16, // UNAUTHENTICATED
            Self::Forbidden => 7,     // PERMISSION_DENIED
            Self::RouteNotFound => 12, // UNIMPLEMENTED
            Self::PayloadTooLarge
            | Self::UriTooLong
            | Self::HeadersTooLarge
            | Self::RateLimitExceeded => 8, // RESOURCE_EXHAUSTED
            Self::RequestTimeout | Self::GatewayTimeout => 4, // DEADLINE_EXCEEDED
            Self::ServiceUnavailable
            | Self::UserDirectoryUnavailable
            | Self::SigningKeysUnavailable => 14, // UNAVAILABLE
        }
    }

    /// The `WWW-Authenticate` challenge for 401s (RFC 6750), `None` otherwise.
    fn challenge(&self) -> Option<&'static str> {
        match self {
            Self::MissingToken | Self::InvalidSignature => Some("Bearer"),
            Self::InvalidToken => Some("Bearer error=\"invalid_token\""),
            Self::TokenExpired => {
                Some("Bearer error=\"invalid_token\", error_description=\"token expired\"")
            }
            Self::TokenRevoked => {
                Some("Bearer error=\"invalid_token\", error_description=\"token revoked\"")
            }
            _ => None,
        }
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: EnvelopeBody<'a>,
}

#[derive(Serialize)]
struct EnvelopeBody<'a> {
    code: &'static str,
    message: String,
    timestamp: String,
    request_id: &'a str,
}

/// The JSON body of the envelope for `err`, stamped with `now`.
pub fn envelope_body(err: &GatewayError, request_id: &str, now: SystemTime) -> Bytes {
    let envelope = Envelope {
        error: EnvelopeBody {
            code: err.code(),
            message: err.to_string(),
            timestamp: humantime::format_rfc3339_seconds(now).to_string(),
            request_id,
        },
    };
    // Serializing plain strings into a Vec cannot fail.
    Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default())
}

/// Status, headers and body of the envelope response for `err`.
pub fn render_envelope(
    err: &GatewayError,
    request_id: &HeaderValue,
) -> pingora_core::Result<(ResponseHeader, Bytes)> {
    let body = envelope_body(
        err,
        request_id.to_str().unwrap_or_default(),
        SystemTime::now(),
    );
    let mut resp = ResponseHeader::build(err.status(), Some(5))?;
    resp.insert_header(CONTENT_TYPE, "application/json")?;
    resp.insert_header(CONTENT_LENGTH, body.len())?;
    resp.insert_header(CACHE_CONTROL, "no-store")?;
    resp.insert_header(wire::X_REQUEST_ID, request_id.clone())?;
    if let Some(challenge) = err.challenge() {
        resp.insert_header(WWW_AUTHENTICATE, challenge)?;
    }
    Ok((resp, body))
}

/// Whether a request is a gRPC call (`application/grpc`, `+proto`, `+json`...):
/// its errors are answered the gRPC way, not with the JSON envelope.
pub fn is_grpc(req: &pingora::http::RequestHeader) -> bool {
    req.headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// `err` for a gRPC client: a trailers-only response (HTTP 200, no body)
/// whose `grpc-status` and `grpc-message` carry the error, as gRPC
/// clients expect from a proxy; the envelope's code leads the message.
pub fn render_grpc(
    err: &GatewayError,
    request_id: &HeaderValue,
) -> pingora_core::Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(200, Some(5))?;
    resp.insert_header(CONTENT_TYPE, "application/grpc")?;
    resp.insert_header(wire::GRPC_STATUS, u16::from(err.grpc_status()))?;
    // Codes and messages are ASCII without '%': valid as they are.
    resp.insert_header(wire::GRPC_MESSAGE, format!("{}: {err}", err.code()))?;
    resp.insert_header(CACHE_CONTROL, "no-store")?;
    resp.insert_header(wire::X_REQUEST_ID, request_id.clone())?;
    Ok(resp)
}

/// The envelope of `err` as HTTP/1.1 bytes, for the one response written
/// below Pingora's HTTP layer (the header deadline's 408): the same status,
/// headers and body as [`render_envelope`], and `Connection: close`.
pub fn envelope_wire(
    err: &GatewayError,
    request_id: &HeaderValue,
) -> pingora_core::Result<Vec<u8>> {
    let (mut resp, body) = render_envelope(err, request_id)?;
    resp.insert_header(http::header::CONNECTION, "close")?;
    let status = resp.status;
    let mut wire = Vec::with_capacity(256 + body.len());
    wire.extend_from_slice(b"HTTP/1.1 ");
    wire.extend_from_slice(status.as_str().as_bytes());
    wire.push(b' ');
    wire.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    wire.extend_from_slice(b"\r\n");
    for (name, value) in resp.headers.iter() {
        wire.extend_from_slice(name.as_str().as_bytes());
        wire.extend_from_slice(b": ");
        wire.extend_from_slice(value.as_bytes());
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"\r\n");
    wire.extend_from_slice(&body);
    Ok(wire)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_the_status_of_the_design() {
        let table = [
            (GatewayError::BadRequest("x"), "BAD_REQUEST", 400),
            (GatewayError::MissingToken, "MISSING_TOKEN", 401),
            (GatewayError::InvalidToken, "INVALID_TOKEN", 401),
            (GatewayError::TokenExpired, "TOKEN_EXPIRED", 401),
            (GatewayError::InvalidSignature, "INVALID_SIGNATURE", 401),
            (GatewayError::UserNotFound, "USER_NOT_FOUND", 404),
            (GatewayError::RouteNotFound, "ROUTE_NOT_FOUND", 404),
            (GatewayError::PayloadTooLarge, "PAYLOAD_TOO_LARGE", 413),
            (GatewayError::RequestTimeout, "REQUEST_TIMEOUT", 408),
            (GatewayError::UriTooLong, "URI_TOO_LONG", 414),
            (GatewayError::HeadersTooLarge, "HEADERS_TOO_LARGE", 431),
            (GatewayError::RateLimitExceeded, "RATE_LIMIT_EXCEEDED", 429),
            (GatewayError::ServiceUnavailable, "SERVICE_UNAVAILABLE", 503),
            (
                GatewayError::UserDirectoryUnavailable,
                "USER_DIRECTORY_UNAVAILABLE",
                503,
            ),
            (
                GatewayError::SigningKeysUnavailable,
                "SIGNING_KEYS_UNAVAILABLE",
                503,
            ),
            (GatewayError::GatewayTimeout, "GATEWAY_TIMEOUT", 504),
            (GatewayError::TokenRevoked, "TOKEN_REVOKED", 401),
            (GatewayError::Forbidden, "FORBIDDEN", 403),
        ];
        for (err, code, status) in table {
            assert_eq!(err.code(), code);
            assert_eq!(err.status(), status);
            assert_eq!(err.challenge().is_some(), status == 401, "{code}");
        }
    }

    #[test]
    fn grpc_errors_are_trailers_only_with_the_status() {
        let id = HeaderValue::from_static("abc");
        let resp = render_grpc(&GatewayError::ServiceUnavailable, &id).unwrap();
        assert_eq!(resp.status.as_u16(), 200);
        assert_eq!(resp.headers["content-type"], "application/grpc");
        assert_eq!(resp.headers["grpc-status"], "14");
        assert_eq!(
            resp.headers["grpc-message"],
            "SERVICE_UNAVAILABLE: Upstream service is unavailable"
        );
        assert_eq!(GatewayError::MissingToken.grpc_status(), 16);
        assert_eq!(GatewayError::GatewayTimeout.grpc_status(), 4);
        // No message needs percent-encoding.
        for err in [
            GatewayError::BadRequest("x"),
            GatewayError::RateLimitExceeded,
        ] {
            assert!(!err.to_string().contains('%'));
        }
        let mut req = pingora::http::RequestHeader::build("POST", b"/s/M", None).unwrap();
        assert!(!is_grpc(&req));
        req.insert_header("content-type", "application/grpc+proto")
            .unwrap();
        assert!(is_grpc(&req));
    }

    #[test]
    fn envelope_has_the_design_shape() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_755_772_200);
        let body = envelope_body(&GatewayError::TokenExpired, "req_123456", at);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "TOKEN_EXPIRED");
        assert_eq!(v["error"]["message"], "Token has expired");
        assert_eq!(v["error"]["timestamp"], "2025-08-21T10:30:00Z");
        assert_eq!(v["error"]["request_id"], "req_123456");
    }

    #[test]
    fn response_carries_request_id_and_challenge() {
        let id = HeaderValue::from_static("abc");
        let (resp, body) = render_envelope(&GatewayError::MissingToken, &id).unwrap();
        assert_eq!(resp.status.as_u16(), 401);
        assert_eq!(resp.headers["x-request-id"], "abc");
        assert_eq!(resp.headers["www-authenticate"], "Bearer");
        assert_eq!(
            resp.headers["content-length"],
            body.len().to_string().as_str()
        );
    }

    #[test]
    fn the_wire_form_carries_the_rendered_headers() {
        let id = HeaderValue::from_static("req_1");
        let wire = envelope_wire(&GatewayError::RequestTimeout, &id).unwrap();
        let text = String::from_utf8(wire).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{head}"
        );
        for line in [
            "content-type: application/json",
            "cache-control: no-store",
            "x-request-id: req_1",
            "connection: close",
        ] {
            assert!(head.to_ascii_lowercase().contains(line), "{line} in {head}");
        }
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        assert!(body.contains("REQUEST_TIMEOUT"));
    }
}

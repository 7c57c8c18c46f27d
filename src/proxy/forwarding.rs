//! The header rules (README, "What happens to a request"): identity-header
//! stripping and the headers the upstream receives (their names and the
//! request id are in [`crate::wire`]).

use http::{HeaderMap, HeaderName, HeaderValue};
use pingora::http::RequestHeader;

use crate::auth::claims::TokenClaims;
use crate::auth::identity::Identity;
use crate::wire::trace::{keeps_tracestate, TraceContext, TRACEPARENT, TRACESTATE};
use crate::wire::{X_FORWARDED_FOR, X_FORWARDED_PROTO, X_REQUEST_ID, X_USERNAME, X_USER_ID};

/// `RateLimit-Limit`, `-Remaining`, `-Reset` (and `Retry-After` when the
/// request was refused), in whole seconds.
pub fn insert_rate_limit_headers(
    resp: &mut pingora::http::ResponseHeader,
    decision: &crate::edge::limits::Decision,
) -> pingora::Result<()> {
    let mut buf = itoa::Buffer::new();
    resp.insert_header("ratelimit-limit", buf.format(decision.limit))?;
    resp.insert_header("ratelimit-remaining", buf.format(decision.remaining))?;
    resp.insert_header("ratelimit-reset", buf.format(decision.reset_seconds))?;
    if !decision.allowed {
        resp.insert_header(
            http::header::RETRY_AFTER,
            buf.format(decision.retry_after_seconds),
        )?;
    }
    Ok(())
}

/// True when `name` reads as `want` (lower case) to an upstream: any case,
/// with `_` standing for `-` (CGI-style servers merge the two).
fn reads_as(name: &str, want: &str) -> bool {
    name.len() == want.len()
        && name.bytes().zip(want.bytes()).all(|(a, b)| {
            let a = if a == b'_' { b'-' } else { a };
            a.eq_ignore_ascii_case(&b)
        })
}

/// True for names that an upstream could read as `X-User-Id`/`X-Username`
/// or as one of the claim headers (`claim_headers`, lower case).
pub fn is_identity_header(name: &str, claim_headers: &[HeaderName]) -> bool {
    reads_as(name, "x-user-id")
        || reads_as(name, "x-username")
        || claim_headers.iter().any(|h| reads_as(name, h.as_str()))
}

/// Removes every client-sent identity and claim header, in any case, count
/// or spelling.
pub fn strip_identity_headers(req: &mut RequestHeader, claim_headers: &[HeaderName]) {
    for name in spoofed_names(&req.headers, claim_headers) {
        req.remove_header(&name);
    }
}

/// The identity and claim header names a client sent (the common case:
/// none, and nothing allocated).
fn spoofed_names(headers: &HeaderMap, claim_headers: &[HeaderName]) -> Vec<HeaderName> {
    // Names are lower-cased by the parser.
    headers
        .keys()
        .filter(|name| is_identity_header(name.as_str(), claim_headers))
        .cloned()
        .collect()
}

/// Who the request is from, as the upstream is told: the user and the
/// claim headers of their verified token.
pub struct Caller<'a> {
    pub identity: Option<&'a Identity>,
    pub claims: Option<&'a TokenClaims>,
    /// Every configured claim header (stripped whether set or not).
    pub claim_headers: &'a [HeaderName],
}

/// `upstream_request_filter`: the headers that leave for the upstream,
/// written into the map of the request made over (`header_room`), by
/// name constants: through Pingora's `insert_header` each name was parsed
/// and copied again on every request. Identity and claim headers are
/// stripped again (in `request_filter` already; this header is the one
/// that leaves), then only the gateway sets them, from a verified token.
pub fn set_upstream_headers(
    headers: &mut HeaderMap,
    caller: &Caller,
    request_id: HeaderValue,
    client_ip: Option<std::net::IpAddr>,
    https: bool,
) -> pingora::Result<()> {
    for name in spoofed_names(headers, caller.claim_headers) {
        headers.remove(&name);
    }
    if let Some(identity) = caller.identity {
        insert(headers, X_USER_ID, identity.user_id.clone())?;
        insert(headers, X_USERNAME, identity.username.clone())?;
        for (name, value) in caller.claims.map_or(&[][..], |c| &c.headers) {
            insert(headers, name.clone(), value.clone())?;
        }
    }
    insert(headers, X_REQUEST_ID, request_id)?;
    if let Some(xff) = forwarded_for(headers, client_ip) {
        insert(headers, X_FORWARDED_FOR, xff)?;
    }
    let proto = if https { "https" } else { "http" };
    insert(headers, X_FORWARDED_PROTO, HeaderValue::from_static(proto))
}

/// `upstream_request_filter`, every try: exactly one `traceparent` (the
/// request's trace, this gateway's span as the parent), whatever the
/// client sent; the client's `tracestate` only beside a valid parent and
/// within its bound.
pub fn set_trace_headers(
    headers: &mut HeaderMap,
    trace: Option<&TraceContext>,
) -> pingora::Result<()> {
    let Some(trace) = trace else {
        return Ok(());
    };
    insert(headers, TRACEPARENT, trace.traceparent())?;
    // A lookup first: most requests carry no tracestate, and removing
    // costs more than looking.
    if headers.contains_key(TRACESTATE) && !keeps_tracestate(headers, trace) {
        headers.remove(TRACESTATE);
    }
    Ok(())
}

/// Replaces every value of `name` with `value`; a map at `http`'s size
/// limit is an error, never a panic.
fn insert(headers: &mut HeaderMap, name: HeaderName, value: HeaderValue) -> pingora::Result<()> {
    headers.try_insert(name, value).map(drop).map_err(|_| {
        pingora::Error::explain(
            pingora::ErrorType::InvalidHTTPHeader,
            "too many headers to add the gateway's",
        )
    })
}

/// `X-Forwarded-For` with the client address appended to what came in.
pub fn forwarded_for(
    headers: &HeaderMap,
    client_ip: Option<std::net::IpAddr>,
) -> Option<HeaderValue> {
    let mut prior = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .peekable();
    if prior.peek().is_none() {
        // The common case: just the client address, formatted on the stack.
        let ip = crate::text::IpText::new(client_ip?);
        return HeaderValue::from_bytes(ip.as_bytes()).ok();
    }
    let mut value = prior.collect::<Vec<_>>().join(", ");
    if let Some(ip) = client_ip {
        value.push_str(", ");
        value.push_str(&ip.to_string());
    }
    HeaderValue::from_str(&value).ok()
}

/// An IP address's octets without allocating (the affinity key of
/// anonymous requests on `consistent` pools).
pub struct IpBytes([u8; 16], usize);

impl IpBytes {
    pub fn of(ip: Option<std::net::IpAddr>) -> Self {
        let mut bytes = [0; 16];
        match ip {
            Some(std::net::IpAddr::V4(ip)) => {
                bytes[..4].copy_from_slice(&ip.octets());
                Self(bytes, 4)
            }
            Some(std::net::IpAddr::V6(ip)) => Self(ip.octets(), 16),
            None => Self(bytes, 0),
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.0[..self.1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_header_spellings() {
        for n in [
            "x-user-id",
            "X-USER-ID",
            "x_user_id",
            "X_Username",
            "x-username",
        ] {
            assert!(is_identity_header(n, &[]), "{n}");
        }
        for n in ["x-user-ids", "x-user", "user-id", "x-usernamex"] {
            assert!(!is_identity_header(n, &[]), "{n}");
        }
        let claims = [HeaderName::from_static("x-tenant")];
        for n in ["x-tenant", "X_Tenant", "X-TENANT"] {
            assert!(is_identity_header(n, &claims), "{n}");
        }
        assert!(!is_identity_header("x-tenants", &claims));
    }

    #[test]
    fn stripping_removes_every_copy() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("X-User-Id", "a").unwrap();
        req.append_header("x-user-id", "b").unwrap();
        req.append_header("X_USERNAME", "c").unwrap();
        req.append_header("Accept", "d").unwrap();
        strip_identity_headers(&mut req, &[]);
        assert_eq!(req.headers.len(), 1);
        assert_eq!(req.headers["accept"], "d");
    }

    #[test]
    fn forwarded_for_appends() {
        let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(forwarded_for(&h, Some(ip)).unwrap(), "127.0.0.1");
        h.append("x-forwarded-for", HeaderValue::from_static("127.0.0.9"));
        h.append("x-forwarded-for", HeaderValue::from_static("127.0.0.8"));
        assert_eq!(
            forwarded_for(&h, Some(ip)).unwrap(),
            "127.0.0.9, 127.0.0.8, 127.0.0.1"
        );
    }
}

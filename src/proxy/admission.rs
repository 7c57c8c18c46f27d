//! Admission, in `request_filter`: everything that decides whether and
//! where a request may go, in the order of the request path. Each check
//! returns the [`GatewayError`] the client gets when it fails.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::SystemTime;

use http::Uri;
use pingora::http::RequestHeader;
use pingora::prelude::Session;
use pingora::{Error, ErrorType};

use crate::auth::claims::TokenClaims;
use crate::auth::identity::Identity;
use crate::auth::token::{bearer_token, BearerToken, VerifiedUser};
use crate::config::Keyword;
use crate::config::StoreFallback;
use crate::edge::limits::{self, Decision, LimitKey, Subject, FIRST_SIGHT_SCOPE};
use crate::edge::slack::{HeldBytes, SlackGate, SlackVerifier};
use crate::errors::GatewayError;
use crate::gateway::Gateway;
use crate::observe::metrics::metrics;
use crate::proxy::context::RequestCtx;
use crate::proxy::forwarding::strip_identity_headers;
use crate::routing::table::Route;
use crate::wire::path::{has_path_parameters, normalize_path};

/// Decides whether and where the request may go: size limits, the
/// normalized path and its route, the Slack headers, identity headers
/// stripped, then token, identity and rate limit. On `Ok` the context holds
/// the route, the upstream target and the identity (if any).
pub async fn admit(session: &mut Session, ctx: &mut RequestCtx) -> Result<(), GatewayError> {
    let gateway = ctx.gateway.clone();
    let req = session.req_header();
    check_request_size(req, gateway.max_uri_bytes, gateway.max_header_bytes)?;
    let path = normalize_path(req.uri.path()).map_err(|e| GatewayError::BadRequest(e.reason()))?;
    if !gateway.allow_path_parameters && has_path_parameters(&path) {
        return Err(GatewayError::BadRequest(
            "request path contains ';' parameters",
        ));
    }
    let route = gateway
        .routes
        .lookup(&path)
        .ok_or(GatewayError::RouteNotFound)?
        .clone();
    ctx.upstream_uri = upstream_target(req.raw_path(), &req.uri, &path)?;
    check_declared_body(req, route.policy.max_body_bytes)?;
    if let Some(verifier) = &route.policy.slack {
        ctx.slack = Some(slack_gate(req, verifier, gateway.max_buffered_body_bytes)?);
    }
    strip_identity_headers(session.req_header_mut(), &gateway.claim_headers);
    // Set before authentication, so refusals are counted on their route.
    ctx.route = Some(route.clone());
    // Limits key an IPv6 address by its prefix.
    let resolved = ctx.client_ip(session);
    let client_ip = || {
        let ip = resolved.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        limits::client_key(ip, gateway.ipv6_prefix_length)
    };
    // A token seen for the first time spends its client's first-sight
    // budget before its signature is checked (refused: 429 unverified).
    let mut first_sight = None;
    let verified = verify_bearer(&gateway, session.req_header(), || {
        first_sight = first_sight_budget(&gateway, &route, client_ip());
        first_sight.is_none_or(|d| d.allowed)
    });
    if let Some(decision) = first_sight.filter(|d| !d.allowed) {
        // Its RateLimit-* and Retry-After headers tell the client when.
        ctx.rate_limit = Some(decision);
        return Err(GatewayError::RateLimitExceeded);
    }
    // On a public route a valid token still gets identity;
    // a missing, bad or revoked one, or a user the directory cannot vouch
    // for, goes on anonymously.
    let identity = match verified {
        Ok(token) => match resolve_user(&gateway, &token).await {
            Ok(identity) => {
                check_claims(&route, &token.claims)?;
                ctx.token_claims = Some(token.claims);
                Some(identity)
            }
            Err(e) if route.policy.auth_required => return Err(e),
            Err(_) => None,
        },
        Err(e) => {
            // Anonymous: limited per client IP before anything else.
            check_limit(&gateway, &route, Subject::Ip(client_ip()), ctx).await?;
            if route.policy.auth_required {
                return Err(e);
            }
            return Ok(());
        }
    };
    let subject = match &identity {
        Some(identity) => Subject::User(identity.id.as_u128()),
        None => Subject::Ip(client_ip()),
    };
    check_limit(&gateway, &route, subject, ctx).await?;
    ctx.identity = identity;
    Ok(())
}

/// A Slack-signed request's gate: a fresh timestamp and a well-formed
/// signature in the headers (else 401 before the upstream is contacted), a
/// declared body within the limit, and its body's room reserved from the
/// process-wide budget (else 503 at once).
fn slack_gate(
    req: &RequestHeader,
    verifier: &Arc<SlackVerifier>,
    budget: u64,
) -> Result<SlackGate, GatewayError> {
    let pending = verifier
        .check_headers(&req.headers, SystemTime::now())
        .ok_or(GatewayError::InvalidSignature)?;
    check_declared_body(req, verifier.max_body_bytes)?;
    let reserve = declared_length(req).unwrap_or(verifier.max_body_bytes);
    let reserved = HeldBytes::reserve(reserve, budget).ok_or_else(|| {
        metrics().buffered_body_refused.inc();
        GatewayError::ServiceUnavailable
    })?;
    Ok(SlackGate::new(verifier.clone(), pending, reserved))
}

/// The origin-form URI to send upstream, if the request's differs from it.
fn upstream_target(
    raw_target: &[u8],
    uri: &Uri,
    normalized_path: &str,
) -> Result<Option<Uri>, GatewayError> {
    // What Pingora would forward is the raw target as received (it keeps an
    // absolute-form target as it is): rewrite unless it is already exactly
    // the normalized origin-form target.
    let rest = raw_target.strip_prefix(normalized_path.as_bytes());
    let forwarded_as_is = match (rest, uri.query()) {
        (Some(b""), None) => true,
        (Some(rest), Some(q)) => rest.strip_prefix(b"?") == Some(q.as_bytes()),
        _ => false,
    };
    if forwarded_as_is {
        return Ok(None);
    }
    let target = match uri.query() {
        Some(q) => format!("{normalized_path}?{q}"),
        None => normalized_path.to_owned(),
    };
    target
        .parse::<Uri>()
        .map(Some)
        .map_err(|_| GatewayError::BadRequest("request target cannot be forwarded"))
}

/// The body length the request declares (`Content-Length`), if any.
fn declared_length(req: &RequestHeader) -> Option<u64> {
    req.headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// Refuses a declared body larger than the route accepts (413).
fn check_declared_body(req: &RequestHeader, limit: u64) -> Result<(), GatewayError> {
    match declared_length(req) {
        Some(len) if len > limit => Err(GatewayError::PayloadTooLarge),
        _ => Ok(()),
    }
}

/// Oversized targets (414) and header sections (431), refused before any
/// other work. The header size counts names, values and the `: `/CRLF of
/// each line, as on the wire.
fn check_request_size(
    req: &RequestHeader,
    max_uri_bytes: usize,
    max_header_bytes: usize,
) -> Result<(), GatewayError> {
    let target = req.raw_path().len() + req.uri.authority().map_or(0, |a| a.as_str().len());
    if target > max_uri_bytes {
        return Err(GatewayError::UriTooLong);
    }
    let mut header_bytes = 0;
    for (name, value) in &req.headers {
        header_bytes += name.as_str().len() + value.len() + 4;
        if header_bytes > max_header_bytes {
            return Err(GatewayError::HeadersTooLarge);
        }
    }
    Ok(())
}

/// A valid bearer token's user and claims; `first_sight` is asked before
/// a token not remembered as verified is checked.
fn verify_bearer(
    gateway: &Gateway,
    req: &RequestHeader,
    first_sight: impl FnOnce() -> bool,
) -> Result<VerifiedUser, GatewayError> {
    match bearer_token(&req.headers) {
        BearerToken::Missing => Err(GatewayError::MissingToken),
        BearerToken::Malformed => Err(GatewayError::InvalidToken),
        BearerToken::Present(token) => gateway
            .jwt
            .verify_gated(token, first_sight)
            .map_err(Into::into),
    }
}

/// The token's user, unless they logged out everywhere after the token
/// was issued (`tokens_valid_after`; checked on every request, so a
/// remembered token is refused too).
async fn resolve_user(gateway: &Gateway, token: &VerifiedUser) -> Result<Identity, GatewayError> {
    let identity = gateway.identity.resolve(&token.username).await?;
    if identity.accepts_token_issued(token.claims.iat) {
        Ok(identity)
    } else {
        Err(GatewayError::TokenRevoked)
    }
}

/// The route's `require_claims`: every listed claim must pass (403, counted
/// by route).
fn check_claims(route: &Route, claims: &TokenClaims) -> Result<(), GatewayError> {
    if route.policy.require_claims.iter().all(|r| r.holds(claims)) {
        return Ok(());
    }
    metrics()
        .claims_refused
        .with_label_values(&[route.pattern.as_str()])
        .inc();
    Err(GatewayError::Forbidden)
}

/// Spends one of `client`'s first-sight tokens (`None`: the budget is
/// off); a refusal is counted on the route.
fn first_sight_budget(gateway: &Gateway, route: &Route, client: IpAddr) -> Option<Decision> {
    let per_minute = gateway.first_sight_per_minute;
    if per_minute == 0 {
        return None;
    }
    let key = LimitKey {
        scope: FIRST_SIGHT_SCOPE,
        subject: Subject::Ip(client),
    };
    let decision = gateway.limiter.check(key, per_minute);
    if !decision.allowed {
        metrics()
            .rate_limited
            .with_label_values(&[route.pattern.as_str(), "first_sight"])
            .inc();
    }
    Some(decision)
}

/// Counts the request against its route's limit (in Redis when the
/// configuration shares limits, else here); refuses it when over.
async fn check_limit(
    gateway: &Gateway,
    route: &Route,
    subject: Subject,
    ctx: &mut RequestCtx,
) -> Result<(), GatewayError> {
    let Some(limit) = route.policy.rate_limit else {
        return Ok(());
    };
    let key = LimitKey {
        scope: limit.scope,
        subject,
    };
    let decision = match &gateway.shared_limiter {
        None => gateway.limiter.check(key, limit.per_minute),
        Some(shared) => match shared.check(key, limit.per_minute).await {
            Ok(decision) => decision,
            Err(_) => {
                metrics()
                    .rate_limit_store_fallbacks
                    .with_label_values(&[shared.fallback.word()])
                    .inc();
                match shared.fallback {
                    StoreFallback::Local => gateway.limiter.check(key, limit.per_minute),
                    StoreFallback::Allow => return Ok(()),
                    StoreFallback::Deny => return Err(GatewayError::ServiceUnavailable),
                }
            }
        },
    };
    ctx.rate_limit = Some(decision);
    if decision.allowed {
        return Ok(());
    }
    let kind = match subject {
        Subject::User(_) => "user",
        Subject::Ip(_) => "ip",
    };
    metrics()
        .rate_limited
        .with_label_values(&[route.pattern.as_str(), kind])
        .inc();
    Err(GatewayError::RateLimitExceeded)
}

/// `request_body_filter`: counts body bytes against the route's limit
/// (catches chunked bodies that declared no length); the bytes pass as
/// they are.
pub fn count_body(ctx: &mut RequestCtx, chunk: Option<&bytes::Bytes>) -> pingora::Result<()> {
    if let (Some(chunk), Some(route)) = (chunk, ctx.route.as_ref()) {
        ctx.body_bytes += chunk.len() as u64;
        if ctx.body_bytes > route.policy.max_body_bytes {
            return Error::e_explain(
                ErrorType::HTTPStatus(413),
                "request body over the route limit",
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_target_only_when_needed() {
        let target = |raw: &str, path| {
            let uri: Uri = raw.parse().unwrap();
            upstream_target(raw.as_bytes(), &uri, path).unwrap()
        };
        assert_eq!(target("/api/x?a=1", "/api/x"), None);
        assert_eq!(target("/api/x", "/api/x"), None);
        assert_eq!(target("/api/y/../x?a=1", "/api/x").unwrap(), "/api/x?a=1");
        assert_eq!(
            target("http://127.0.0.1/api/x", "/api/x").unwrap(),
            "/api/x"
        );
        assert_eq!(
            target("http://127.0.0.1/api/x?q", "/api/x").unwrap(),
            "/api/x?q"
        );
    }

    #[test]
    fn declared_body_limit() {
        let mut req = RequestHeader::build("POST", b"/", None).unwrap();
        assert!(check_declared_body(&req, 10).is_ok());
        req.insert_header("content-length", "11").unwrap();
        assert_eq!(
            check_declared_body(&req, 10),
            Err(GatewayError::PayloadTooLarge)
        );
        assert!(check_declared_body(&req, 11).is_ok());
    }
}

//! The `ProxyHttp` implementation: each phase is one step of DESIGN.md's
//! request path and calls small functions from the concern modules.
//!
//! - `request_filter`: request id, path normalization and route match,
//!   identity-header stripping, token, identity;
//! - `upstream_peer`: the peer of the chosen route;
//! - `upstream_request_filter`: identity and forwarding headers;
//! - no body filter changes bytes: bodies stream as they came;
//! - `fail_to_proxy`: upstream failures become envelopes.

pub mod forwarding;

use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Uri};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::{HttpPeer, Session};
use pingora::proxy::{FailToProxy, ProxyHttp};
use pingora::{Error, ErrorSource, ErrorType, OrErr, Result};

use crate::auth::identity::Identity;
use crate::auth::token::{bearer_token, BearerToken};
use crate::config::plan::{Gateway, SharedGateway};
use crate::edge::compression;
use crate::edge::cors::CorsPolicy;
use crate::edge::limits::{self, Decision, LimitKey, Subject};
use crate::edge::slack::PendingSignature;
use crate::errors::{render_envelope, GatewayError};
use crate::observe::access_log::{AccessEntry, AccessLog};
use crate::observe::metrics::{method_label, metrics};
use crate::process::connection;
use crate::process::lifecycle::InFlight;
use crate::proxy::forwarding::{
    forwarded_for, insert_rate_limit_headers, request_id, strip_identity_headers, wire,
};
use crate::routing::path::normalize_path;
use crate::routing::table::Route;

/// The gateway's proxy service.
pub struct GatewayProxy {
    gateway: SharedGateway,
    /// Set once this process is handing over or stopping: responses then
    /// close their connection, so clients move to the successor.
    draining: Arc<AtomicBool>,
    access_log: Arc<AccessLog>,
}

impl GatewayProxy {
    pub fn new(
        gateway: SharedGateway,
        draining: Arc<AtomicBool>,
        access_log: Arc<AccessLog>,
    ) -> Self {
        Self {
            gateway,
            draining,
            access_log,
        }
    }
}

/// Per-request state. A fresh one per request, so nothing (identity above
/// all) carries over between requests of a keep-alive connection.
pub struct RequestCtx {
    /// Keeps a draining process alive until this request is done.
    _in_flight: InFlight,
    /// The configuration this request is served with, even if SIGHUP swaps.
    gateway: Option<Arc<Gateway>>,
    /// The request's `Origin`, when CORS allows it.
    cors_origin: Option<HeaderValue>,
    started: Instant,
    request_id: Option<HeaderValue>,
    route: Option<Arc<Route>>,
    /// The origin-form target the upstream must receive, when it differs
    /// from what the client sent (normalized path, absolute-form target).
    upstream_uri: Option<Uri>,
    identity: Option<Identity>,
    upstream_status: Option<u16>,
    /// The rate-limit decision, for the RateLimit-* response headers.
    rate_limit: Option<Decision>,
    /// A Slack signature awaiting the body it signs, and the body so far.
    slack: Option<(PendingSignature, BytesMut)>,
    /// Brotli is the client's first choice (encoded here, not by the module).
    wants_brotli: bool,
    /// The brotli encoder of this response's body, when used. Boxed: the
    /// encoder is 5.6 KB and the context is moved with every request.
    brotli: Option<Box<compression::BrotliStream>>,
    /// The client's `Accept-Encoding`, when the compression module was shown
    /// a q-value-ordered one instead; restored before forwarding.
    original_accept_encoding: Option<HeaderValue>,
    body_bytes: u64,
}

impl RequestCtx {
    fn new() -> Self {
        Self {
            _in_flight: InFlight::start(),
            gateway: None,
            cors_origin: None,
            started: Instant::now(),
            request_id: None,
            route: None,
            upstream_uri: None,
            identity: None,
            upstream_status: None,
            rate_limit: None,
            slack: None,
            wants_brotli: false,
            brotli: None,
            original_accept_encoding: None,
            body_bytes: 0,
        }
    }

    fn request_id(&mut self) -> &HeaderValue {
        self.request_id
            .get_or_insert_with(crate::proxy::forwarding::generate_request_id)
    }
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

/// Refuses a declared body larger than the route accepts (413).
fn check_declared_body(req: &RequestHeader, limit: u64) -> Result<(), GatewayError> {
    let declared = req
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
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

/// Step 4: the username of a valid bearer token.
fn verify_bearer(
    gateway: &Gateway,
    req: &RequestHeader,
) -> Result<std::sync::Arc<str>, GatewayError> {
    match bearer_token(&req.headers) {
        BearerToken::Missing => Err(GatewayError::MissingToken),
        BearerToken::Malformed => Err(GatewayError::InvalidToken),
        BearerToken::Present(token) => gateway.jwt.verify(token).map_err(Into::into),
    }
}

/// Counts the request against its route's limit; refuses it when over.
fn check_limit(
    gateway: &Gateway,
    route: &Route,
    subject: Subject,
    ctx: &mut RequestCtx,
) -> Result<(), GatewayError> {
    let Some(limit) = route.rate_limit else {
        return Ok(());
    };
    let key = LimitKey {
        scope: limit.scope,
        subject,
    };
    let decision = gateway.limiter.check(key, limit.per_minute);
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

/// The error type a request-body filter raises for a bad Slack signature.
const INVALID_SIGNATURE: &str = "invalid_signature";

/// The `kind` label of `gateway_proxy_errors_total`.
fn proxy_error_kind(e: &Error) -> &'static str {
    use ErrorType::*;
    match (e.esource(), e.etype()) {
        (_, Custom(INVALID_SIGNATURE)) => "invalid_signature",
        (_, HTTPStatus(413)) => "body_too_large",
        (ErrorSource::Upstream, ConnectRefused) => "connect_refused",
        (ErrorSource::Upstream, ConnectTimedout) => "connect_timeout",
        (ErrorSource::Upstream, ReadTimedout) => "read_timeout",
        (ErrorSource::Upstream, WriteTimedout) => "write_timeout",
        (ErrorSource::Upstream, ConnectionClosed | ReadError | WriteError) => "upstream_closed",
        (ErrorSource::Upstream, _) => "upstream_other",
        (ErrorSource::Downstream, _) => "downstream",
        _ => "internal",
    }
}

/// The gateway error for a Pingora error that ended a proxied request, or
/// `None` when the client is gone and nothing can be sent.
fn classify_proxy_error(e: &Error) -> Option<GatewayError> {
    use ErrorType::*;
    match (e.esource(), e.etype()) {
        (_, Custom(INVALID_SIGNATURE)) => Some(GatewayError::InvalidSignature),
        (_, HTTPStatus(413)) => Some(GatewayError::PayloadTooLarge),
        (ErrorSource::Downstream, ReadError | WriteError | ConnectionClosed) => None,
        (ErrorSource::Downstream, _) => Some(GatewayError::BadRequest("malformed request")),
        (ErrorSource::Upstream, ReadTimedout | WriteTimedout) => Some(GatewayError::GatewayTimeout),
        _ => Some(GatewayError::ServiceUnavailable),
    }
}

impl GatewayProxy {
    /// Steps 2 to 5: decides whether and where the request may go.
    async fn admit(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        gateway: Arc<Gateway>,
    ) -> Result<(), GatewayError> {
        let req = session.req_header();
        check_request_size(req, gateway.max_uri_bytes, gateway.max_header_bytes)?;
        let path =
            normalize_path(req.uri.path()).map_err(|e| GatewayError::BadRequest(e.reason()))?;
        let route = gateway
            .routes
            .lookup(&path)
            .ok_or(GatewayError::RouteNotFound)?
            .clone();
        ctx.upstream_uri = upstream_target(req.raw_path(), &req.uri, &path)?;
        check_declared_body(req, route.max_body_bytes)?;
        if let Some(verifier) = &route.slack {
            // Stale or missing: refused before the upstream is contacted.
            let pending = verifier
                .check_headers(&req.headers, SystemTime::now())
                .ok_or(GatewayError::InvalidSignature)?;
            check_declared_body(req, verifier.max_body_bytes)?;
            ctx.slack = Some((pending, BytesMut::new()));
        }
        strip_identity_headers(session.req_header_mut());
        // Set before authentication, so refusals are counted on their route.
        ctx.route = Some(route.clone());
        let client_ip = || {
            let peer = session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip());
            limits::client_ip(
                peer,
                &session.req_header().headers,
                &gateway.trusted_proxies,
            )
            .unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED))
        };
        // Steps 4 and 5. On a public route a valid token still gets identity;
        // a missing or bad one, or a user the directory cannot vouch for,
        // goes on anonymously.
        let identity = match verify_bearer(&gateway, session.req_header()) {
            Ok(username) => match gateway.identity.resolve(&username).await {
                Ok(identity) => Some(identity),
                Err(e) if route.auth_required => return Err(e),
                Err(_) => None,
            },
            Err(e) => {
                // Anonymous: limited per client IP before anything else.
                check_limit(&gateway, &route, Subject::Ip(client_ip()), ctx)?;
                if route.auth_required {
                    return Err(e);
                }
                return Ok(());
            }
        };
        let subject = match &identity {
            Some(identity) => Subject::User(identity.id.as_u128()),
            None => Subject::Ip(client_ip()),
        };
        check_limit(&gateway, &route, subject, ctx)?;
        ctx.identity = identity;
        Ok(())
    }

    /// Sends the envelope for `err` unless a response has already started.
    async fn respond_error(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        err: GatewayError,
        after: AfterError,
    ) {
        let rendered = render_envelope(&err, ctx.request_id()).and_then(|(mut resp, body)| {
            if let Some(decision) = &ctx.rate_limit {
                insert_rate_limit_headers(&mut resp, decision)?;
            }
            if let Some(cors) = ctx.gateway.as_ref().and_then(|g| g.cors.as_ref()) {
                cors.apply(&mut resp, ctx.cors_origin.as_ref())?;
            }
            Ok((resp, body))
        });
        let (resp, body) = match rendered {
            Ok(rendered) => rendered,
            Err(e) => {
                log::error!("cannot render error envelope: {e}");
                return;
            }
        };
        let downstream = session.as_downstream_mut();
        // A refused request without a body leaves nothing unread behind it:
        // the connection stays usable (a client refused with 401 or 429
        // does not have to reconnect). Otherwise, or while draining, close.
        let keep_alive = after == AfterError::KeepIfNoBody
            && !self.draining.load(Ordering::Relaxed)
            && downstream.is_body_empty();
        let sent = if keep_alive {
            match downstream.write_response_header(Box::new(resp)).await {
                Ok(()) => downstream.write_response_body(body, true).await,
                Err(e) => Err(e),
            }
        } else {
            downstream.write_error_response(resp, body).await
        };
        if let Err(e) = sent {
            log::debug!("cannot send error response: {e}");
        }
    }
}

/// What happens to the client connection after an error the gateway sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterError {
    /// Refused before any upstream work: keep it if no body is unread.
    KeepIfNoBody,
    /// Failed while proxying: close it.
    Close,
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    /// Before Pingora's modules see the request: the configuration snapshot
    /// this request is served with (one for the whole request, even if
    /// SIGHUP swaps meanwhile), its compression level, and `Accept-Encoding`
    /// ordered by q-value.
    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Pipelined requests are served one after another, each through the
        // whole request path with its own token (RFC 9112 §9.3.2); Pingora's
        // default drops every request after the first.
        session.as_downstream_mut().set_pipelining_enabled(true);
        connection::header_complete(session);
        let gateway = self.gateway.load_full();
        let level = gateway.compression.level;
        ctx.gateway = Some(gateway);
        compression::set_level(&mut session.downstream_modules_ctx, level);
        if level > 0 {
            let accept = session
                .req_header()
                .headers
                .get(http::header::ACCEPT_ENCODING);
            ctx.wants_brotli = accept.is_some_and(compression::prefers_brotli);
            if let Some(preferred) = accept.and_then(compression::preferred_encodings) {
                ctx.original_accept_encoding = accept.cloned();
                session
                    .req_header_mut()
                    .insert_header(http::header::ACCEPT_ENCODING, preferred)?;
            }
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.request_id = Some(request_id(&session.req_header().headers));
        let gateway = match &ctx.gateway {
            Some(gateway) => gateway.clone(),
            None => self.gateway.load_full(),
        };
        if let Some(cors) = &gateway.cors {
            ctx.cors_origin = cors.allowed_origin(session.req_header());
            if CorsPolicy::is_preflight(session.req_header()) {
                // Answered here, before authentication: a preflight carries
                // no credentials.
                let mut resp = cors.preflight(session.req_header(), ctx.cors_origin.as_ref())?;
                resp.insert_header(wire::X_REQUEST_ID, ctx.request_id().clone())?;
                session.write_response_header(Box::new(resp), true).await?;
                return Ok(true);
            }
        }
        match self.admit(session, ctx, gateway).await {
            Ok(()) => Ok(false),
            Err(err) => {
                if let Some(reason) = err.auth_failure_reason() {
                    metrics().auth_failures.with_label_values(&[reason]).inc();
                }
                self.respond_error(session, ctx, err, AfterError::KeepIfNoBody)
                    .await;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        match &ctx.route {
            Some(route) => Ok(Box::new(route.peer.clone())),
            None => Error::e_explain(ErrorType::InternalError, "no route chosen"),
        }
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Counts only; the bytes pass unchanged. Catches chunked bodies that
        // declared no length.
        if let (Some(chunk), Some(route)) = (body.as_ref(), ctx.route.as_ref()) {
            ctx.body_bytes += chunk.len() as u64;
            if ctx.body_bytes > route.max_body_bytes {
                return Error::e_explain(
                    ErrorType::HTTPStatus(413),
                    "request body over the route limit",
                );
            }
        }
        if let Some((pending, held)) = ctx.slack.as_mut() {
            let Some(verifier) = ctx.route.as_ref().and_then(|r| r.slack.as_ref()) else {
                return Error::e_explain(
                    ErrorType::InternalError,
                    "slack state without a verifier",
                );
            };
            // Held back until the signature is verified; an empty chunk
            // sends nothing (None would end the upstream body).
            if let Some(chunk) = body.take() {
                if (held.len() + chunk.len()) as u64 > verifier.max_body_bytes {
                    return Error::e_explain(
                        ErrorType::HTTPStatus(413),
                        "slack body over the limit",
                    );
                }
                held.extend_from_slice(&chunk);
            }
            *body = Some(Bytes::new());
            if end_of_stream {
                if !verifier.verify(pending, held) {
                    return Error::e_explain(
                        ErrorType::Custom(INVALID_SIGNATURE),
                        "slack signature",
                    );
                }
                // Exactly the bytes received, in one piece.
                *body = Some(std::mem::take(held).freeze());
            }
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(uri) = ctx.upstream_uri.take() {
            upstream.set_uri(uri);
        }
        if let Some(accept) = ctx.original_accept_encoding.take() {
            upstream.insert_header(http::header::ACCEPT_ENCODING, accept)?;
        }
        // Stripped in request_filter already; stripped again here because
        // this header is the one that leaves.
        strip_identity_headers(upstream);
        if let Some(identity) = &ctx.identity {
            upstream.insert_header(wire::X_USER_ID, identity.user_id.clone())?;
            upstream.insert_header(wire::X_USERNAME, identity.username.clone())?;
        }
        upstream.insert_header(wire::X_REQUEST_ID, ctx.request_id().clone())?;
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        if let Some(xff) = forwarded_for(&upstream.headers, client_ip) {
            upstream.insert_header(wire::X_FORWARDED_FOR, xff)?;
        }
        upstream.insert_header(wire::X_FORWARDED_PROTO, HeaderValue::from_static("http"))?;
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.upstream_status = Some(upstream_response.status.as_u16());
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        upstream_response.insert_header(wire::X_REQUEST_ID, ctx.request_id().clone())?;
        if let Some(decision) = &ctx.rate_limit {
            insert_rate_limit_headers(upstream_response, decision)?;
        }
        if let Some(cors) = ctx.gateway.as_ref().and_then(|g| g.cors.as_ref()) {
            cors.apply(upstream_response, ctx.cors_origin.as_ref())?;
        }
        let raw = ctx.route.as_ref().is_some_and(|r| r.raw);
        let policy = ctx
            .gateway
            .as_ref()
            .map(|g| g.compression.clone())
            .unwrap_or_default();
        let head = session.req_header().method == http::Method::HEAD;
        if compression::keep_uncompressed(upstream_response, raw, policy.min_size_bytes) {
            compression::set_level(&mut session.downstream_modules_ctx, 0);
        } else if ctx.wants_brotli
            && policy.level > 0
            && compression::is_compressible(upstream_response, head)
        {
            compression::set_level(&mut session.downstream_modules_ctx, 0);
            compression::mark_brotli(upstream_response)?;
            ctx.brotli = Some(Box::new(compression::BrotliStream::new(policy.level)));
        }
        if self.draining.load(Ordering::Relaxed) {
            // Answers with `Connection: close`: the client's next request
            // opens a connection that the successor accepts.
            session.set_keepalive(None);
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        let Some(stream) = ctx.brotli.as_mut() else {
            return Ok(None);
        };
        let mut out = match body.take() {
            Some(chunk) => stream
                .push(&chunk)
                .or_err(ErrorType::InternalError, "brotli encoding")?,
            None => Bytes::new(),
        };
        if end_of_stream {
            if let Some(stream) = ctx.brotli.take() {
                let tail = stream.finish();
                out = if out.is_empty() {
                    tail
                } else {
                    [out, tail].concat().into()
                };
            }
        }
        *body = Some(out);
        Ok(None)
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        connection::awaiting_next_header(session);
        let elapsed = ctx.started.elapsed();
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let req = session.req_header();
        let route = ctx
            .route
            .as_ref()
            .map_or("unmatched", |r| r.pattern.as_str());
        let (mut status_buf, mut upstream_buf) = (itoa::Buffer::new(), itoa::Buffer::new());
        let upstream_status = ctx
            .upstream_status
            .map_or("none", |s| upstream_buf.format(s));
        let m = metrics();
        m.requests
            .with_label_values(&[
                route,
                method_label(&req.method),
                status_buf.format(status),
                upstream_status,
            ])
            .inc();
        m.request_duration
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
        if !self.access_log.is_enabled() {
            return;
        }
        let identity = ctx.identity.take();
        self.access_log.record(AccessEntry {
            timestamp: SystemTime::now(),
            request_id: ctx.request_id().clone(),
            method: req.method.clone(),
            path: req.uri.path().to_owned(),
            username: identity.as_ref().map(|i| i.username.clone()),
            user_id: identity.map(|i| i.user_id),
            route: ctx.route.clone(),
            upstream_status: ctx.upstream_status,
            status_code: status,
            response_time: elapsed,
        });
    }

    /// Pingora's own failure lines ("Fail to proxy: ...") name the route
    /// and the request id; the path goes without its query string, which
    /// may carry a token.
    fn request_summary(&self, session: &Session, ctx: &RequestCtx) -> String {
        let req = session.req_header();
        let request_id = ctx.request_id.as_ref().and_then(|id| id.to_str().ok());
        format!(
            "{} {}, route {}, request_id {}",
            req.method,
            req.uri.path(),
            ctx.route
                .as_ref()
                .map_or("unmatched", |r| r.pattern.as_str()),
            request_id.unwrap_or("-"),
        )
    }

    /// ERROR is for what an operator must act on: an upstream that fails.
    /// A client that left or sent what it may not (too large a body) is
    /// counted in `gateway_proxy_errors_total`, not logged.
    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, e: &Error) -> bool {
        *e.esource() == ErrorSource::Downstream
            || classify_proxy_error(e).is_none_or(|err| err.status() < 500)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let route = ctx
            .route
            .as_ref()
            .map_or("unmatched", |r| r.pattern.as_str());
        metrics()
            .proxy_errors
            .with_label_values(&[route, proxy_error_kind(e)])
            .inc();
        let Some(err) = classify_proxy_error(e) else {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        self.respond_error(session, ctx, err, AfterError::Close)
            .await;
        FailToProxy {
            error_code: err.status(),
            can_reuse_downstream: false,
        }
    }
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
    fn proxy_errors_map_to_design_codes() {
        let e = |src, t| {
            let mut e = Error::new(t);
            e.esource = src;
            classify_proxy_error(&e)
        };
        use ErrorType::*;
        assert_eq!(
            e(ErrorSource::Upstream, ConnectRefused),
            Some(GatewayError::ServiceUnavailable)
        );
        assert_eq!(
            e(ErrorSource::Upstream, ConnectTimedout),
            Some(GatewayError::ServiceUnavailable)
        );
        assert_eq!(
            e(ErrorSource::Upstream, ReadTimedout),
            Some(GatewayError::GatewayTimeout)
        );
        assert_eq!(e(ErrorSource::Downstream, ReadError), None);
        assert_eq!(
            e(ErrorSource::Internal, HTTPStatus(413)),
            Some(GatewayError::PayloadTooLarge)
        );
        assert_eq!(
            e(ErrorSource::Downstream, InvalidHTTPHeader),
            Some(GatewayError::BadRequest("malformed request"))
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

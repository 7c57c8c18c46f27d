//! The `ProxyHttp` implementation: the request path, phase by phase, in
//! the order Pingora calls them. Each phase is a few named calls into the
//! concern modules; `docs/architecture.md` has the whole map.
//!
//! | Pingora phase | what the gateway does |
//! |---|---|
//! | `new_ctx` | takes the configuration snapshot this request is served with |
//! | `early_request_filter` | serves pipelined requests in order, stops the header clock, negotiates compression (before Pingora's modules) |
//! | `request_filter` | request id; CORS preflight answered; [`admission`]: sizes, path and route, Slack headers, identity headers stripped, token, identity, rate limit; or the refusal envelope ([`respond`]) |
//! | `upstream_peer` | a peer of the route's pool ([`crate::upstream`]: eligible, not tried yet by this request) |
//! | `fail_to_connect`, `error_while_proxy` | the peer charged; a retry on another peer when it is safe ([`crate::upstream::attempts`]) |
//! | `request_body_filter` | counts the body against the route's limit; the Slack gate holds it until verified |
//! | `upstream_request_filter` | the header made over ([`header_room`]), normalized target, identity and forwarding headers ([`forwarding`]), the client's own `Accept-Encoding` |
//! | `upstream_response_filter` | notes the upstream status; the peer answered |
//! | `response_filter` | the header made over ([`header_room`]); request id, rate-limit and CORS headers; compression choice; `Connection: close` while draining |
//! | `response_body_filter` | brotli encoding, when chosen |
//! | `fail_to_proxy` | upstream failures become envelopes ([`failures`]) |
//! | `request_summary`, `suppress_error_log` | what Pingora's own failure lines say, and which it writes |
//! | `logging` | metrics and the access-log hand-off ([`outcome`]); re-arms the header clock |
//!
//! Phases the gateway leaves to Pingora: `proxy_upstream_filter`,
//! `connected_to_upstream`, the cache phases.

pub mod admission;
pub mod context;
pub mod failures;
pub mod forwarding;
pub mod header_room;
pub mod outcome;
pub mod respond;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::{HttpPeer, Session};
use pingora::proxy::{FailToProxy, ProxyHttp};
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::edge::cors::CorsPolicy;
use crate::errors::GatewayError;
use crate::gateway::SharedGateway;
use crate::observe::access_log::AccessLog;
use crate::observe::metrics::metrics;
use crate::process::connection;
use crate::wire::{names as wire, request_id};
use context::RequestCtx;
use failures::{classify_proxy_error, proxy_error_kind};
use respond::{respond_error, AfterError};

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

    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// A CORS preflight, answered here before authentication (it carries no
    /// credentials). Also notes the request's allowed `Origin`.
    async fn answer_preflight(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let Some(cors) = &ctx.gateway.cors else {
            return Ok(false);
        };
        ctx.cors_origin = cors.allowed_origin(session.req_header());
        if !CorsPolicy::is_preflight(session.req_header()) {
            return Ok(false);
        }
        let mut resp = cors.preflight(session.req_header(), ctx.cors_origin.as_ref())?;
        resp.insert_header(wire::X_REQUEST_ID, ctx.request_id().clone())?;
        respond::transport_headers(&mut resp, ctx.connection(session).hsts.clone())?;
        session.write_response_header(Box::new(resp), true).await?;
        Ok(true)
    }

    /// A refused request: counted, answered with its envelope.
    async fn refuse(&self, session: &mut Session, ctx: &mut RequestCtx, err: GatewayError) {
        if let Some(reason) = err.auth_failure_reason() {
            metrics().auth_failures.with_label_values(&[reason]).inc();
        }
        let draining = self.is_draining();
        respond_error(session, ctx, err, AfterError::KeepIfNoBody, draining).await;
    }
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    // Boxed: Pingora keeps the context in its per-request future, which it
    // boxes (copies) once per request; a pointer there instead of 512 bytes.
    type CTX = Box<RequestCtx>;

    fn new_ctx(&self) -> Box<RequestCtx> {
        Box::new(RequestCtx::new(self.gateway.load_full()))
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        // Pipelined requests are served one after another, each through the
        // whole request path with its own token (RFC 9112 §9.3.2); Pingora's
        // default drops every request after the first.
        session.as_downstream_mut().set_pipelining_enabled(true);
        connection::header_complete(session);
        ctx.compression
            .on_request(session, &ctx.gateway.compression)
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<bool> {
        ctx.request_id = Some(request_id(&session.req_header().headers));
        ctx.start_trace(&session.req_header().headers);
        if self.answer_preflight(session, ctx).await? {
            return Ok(true);
        }
        match admission::admit(session, ctx).await {
            Ok(()) => Ok(false),
            Err(err) => {
                self.refuse(session, ctx, err).await;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<Box<HttpPeer>> {
        let ctx = &mut **ctx;
        // `consistent` pools: one user, one peer; anonymous: one client
        // address, the same one the limits and the access log use (resolved
        // through `trusted_proxies`: behind a balancer, the socket address
        // would send every anonymous client to one peer). Admission has
        // resolved it already.
        let client = forwarding::IpBytes::of(ctx.client_ip(session));
        let Some(route) = &ctx.route else {
            return Error::e_explain(ErrorType::InternalError, "no route chosen");
        };
        let pool = ctx.pool.get_or_insert_with(|| route.pool.load_full());
        if pool.members.len() == 1 {
            return ctx.attempts.next_peer(pool, b"");
        }
        let key = match &ctx.identity {
            Some(identity) => identity.user_id.as_bytes(),
            None => client.as_slice(),
        };
        ctx.attempts.next_peer(pool, key)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Box<RequestCtx>,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(pool) = &ctx.pool {
            ctx.attempts
                .after_connect_failure(pool, ctx.started, &mut e);
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Box<RequestCtx>,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer {}", peer._address));
        let replayable = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated();
        if let Some(pool) = &ctx.pool {
            ctx.attempts
                .after_proxy_error(pool, ctx.started, &mut e, replayable, client_reused);
        }
        e
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        admission::count_body(ctx, body.as_ref())?;
        match ctx.slack.as_mut() {
            Some(gate) => gate.on_body(body, end_of_stream),
            None => Ok(()),
        }
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        // Every try: Pingora rebuilds `upstream` from the client's original
        // header for a retry and calls this filter again, so the target and
        // every header are set again (cloned, never taken) or the retry
        // would go out raw.
        let request_id = ctx.request_id().clone();
        let (peer_ip, https) = {
            let connection = ctx.connection(session);
            (connection.peer_ip, connection.https)
        };
        ctx.upstream_sent = Some(std::time::Instant::now());
        let caller = forwarding::Caller {
            identity: ctx.identity.as_ref(),
            claims: ctx.token_claims.as_deref(),
            claim_headers: &ctx.gateway.claim_headers,
        };
        let trace = ctx.trace.as_ref();
        header_room::upstream_request(
            upstream,
            ctx.upstream_uri.as_ref(),
            ctx.gateway.claim_headers.len(),
            |headers| {
                forwarding::set_upstream_headers(headers, &caller, request_id, peer_ip, https)?;
                forwarding::set_trace_headers(headers, trace)
            },
        )?;
        ctx.compression.on_upstream_request(upstream)
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        ctx.upstream_status = Some(upstream_response.status.as_u16());
        ctx.upstream_time = ctx.upstream_sent.map(|sent| sent.elapsed());
        ctx.attempts.answered();
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        header_room::downstream_response(upstream_response);
        upstream_response.insert_header(wire::X_REQUEST_ID, ctx.request_id().clone())?;
        let hsts = ctx.connection(session).hsts.clone();
        respond::decorate(upstream_response, ctx, hsts)?;
        let raw = ctx.route.as_ref().is_some_and(|r| r.policy.raw);
        ctx.compression
            .on_response(session, upstream_response, raw, &ctx.gateway.compression)?;
        if self.is_draining() {
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
        ctx: &mut Box<RequestCtx>,
    ) -> Result<Option<std::time::Duration>> {
        ctx.compression.on_body(body, end_of_stream)?;
        Ok(None)
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Box<RequestCtx>) {
        connection::awaiting_next_header(session);
        outcome::record(session, e, ctx, &self.access_log);
    }

    /// Pingora's own failure lines ("Fail to proxy: ...") name the route
    /// and the request id; the path goes without its query string, which
    /// may carry a token.
    fn request_summary(&self, session: &Session, ctx: &Box<RequestCtx>) -> String {
        let req = session.req_header();
        let request_id = ctx.request_id.as_ref().and_then(|id| id.to_str().ok());
        format!(
            "{} {}, route {}, request_id {}",
            req.method,
            req.uri.path(),
            ctx.route_label(),
            request_id.unwrap_or("-"),
        )
    }

    /// ERROR is for what an operator must act on: an upstream that fails.
    /// A client that left or sent what it may not (too large a body) is
    /// counted in `gateway_proxy_errors_total`, not logged.
    fn suppress_error_log(&self, _session: &Session, _ctx: &Box<RequestCtx>, e: &Error) -> bool {
        *e.esource() == ErrorSource::Downstream
            || classify_proxy_error(e).is_none_or(|err| err.status() < 500)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Box<RequestCtx>,
    ) -> FailToProxy {
        metrics()
            .proxy_errors
            .with_label_values(&[ctx.route_label(), proxy_error_kind(e)])
            .inc();
        let Some(err) = classify_proxy_error(e) else {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        respond_error(session, ctx, err, AfterError::Close, self.is_draining()).await;
        FailToProxy {
            error_code: err.status(),
            can_reuse_downstream: false,
        }
    }
}

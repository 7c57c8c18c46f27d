//! The `logging` phase: one finished request counted in the metrics and
//! its access line formatted into this thread's log buffer (written out by
//! the access-log writer thread, never here).

use std::sync::Arc;
use std::time::SystemTime;

use pingora::prelude::Session;
use pingora::{Error, ErrorSource, ErrorType};

use crate::observe::access_log::{AccessEntry, AccessLog};
use crate::observe::metrics::{count_request, method_label, RouteMetrics};
use crate::observe::traces::SpanRecord;
use crate::proxy::context::RequestCtx;
use crate::upstream::peer::PeerState;

/// nginx's status for a request whose client closed the connection before
/// the response was complete.
pub const CLIENT_CLOSED: u16 = 499;

/// The status the request ended with: what was sent, or 499 when the
/// client went away first (0: nothing was sent and the client did not
/// leave, which a finished request never shows).
fn final_status(session: &Session, e: Option<&Error>) -> u16 {
    let client_left = e.is_some_and(|e| {
        *e.esource() == ErrorSource::Downstream
            && matches!(
                e.etype(),
                ErrorType::ConnectionClosed
                    | ErrorType::ReadError
                    | ErrorType::WriteError
                    | ErrorType::H2Error
            )
    });
    if client_left {
        return CLIENT_CLOSED;
    }
    session.response_written().map_or(0, |r| r.status.as_u16())
}

/// `Host` (or HTTP/2's `:authority`) and `User-Agent`, the first of each,
/// in one pass over the few headers of a request (two map look-ups cost
/// more).
fn host_and_user_agent(req: &pingora::http::RequestHeader) -> (Option<&[u8]>, Option<&[u8]>) {
    let (mut host, mut user_agent) = (None, None);
    for (name, value) in &req.headers {
        if *name == http::header::HOST {
            host = host.or(Some(value.as_bytes()));
        } else if *name == http::header::USER_AGENT {
            user_agent = user_agent.or(Some(value.as_bytes()));
        }
    }
    let host = host.or_else(|| req.uri.authority().map(|a| a.as_str().as_bytes()));
    (host, user_agent)
}

/// The request's span, when it is sampled and `[tracing]` exports: its
/// values copied for the exporter thread (only for a sampled request).
fn record_span(
    session: &Session,
    ctx: &mut RequestCtx,
    (status, elapsed): (u16, std::time::Duration),
    (peer, tries): (Option<&Arc<PeerState>>, u32),
) {
    let (Some(trace), Some(_)) = (ctx.trace.filter(|t| t.sampled()), &ctx.gateway.traces) else {
        return;
    };
    let Some(export) = ctx.gateway.traces.clone() else {
        return;
    };
    let req = session.req_header();
    let end = SystemTime::now();
    let path = ctx
        .upstream_uri
        .as_ref()
        .map_or(req.uri.path(), |u| u.path());
    // Copied: a clone of the header value would share, and so keep alive
    // until the span is exported, the whole buffer the request was read into.
    let (host, _) = host_and_user_agent(req);
    let host = host.map(|host| String::from_utf8_lossy(host).into_owned());
    let user_id = match (&ctx.identity, export.config.record_user_id) {
        (Some(identity), true) => identity.user_id.to_str().ok().map(str::to_owned),
        _ => None,
    };
    export.record(SpanRecord {
        trace,
        start: end.checked_sub(elapsed).unwrap_or(end),
        end,
        route: ctx.route.clone(),
        method: req.method.clone(),
        path: path.to_owned(),
        protocol: req.version,
        status,
        host,
        client_address: ctx.client_ip(session),
        upstream_peer: peer.cloned(),
        tries,
        error_code: ctx.error_code,
        user_id,
    });
}

/// Counts the request and queues its access-log entry.
pub fn record(session: &Session, e: Option<&Error>, ctx: &mut RequestCtx, access_log: &AccessLog) {
    let elapsed = ctx.started.elapsed();
    let status = final_status(session, e);
    let req = session.req_header();
    let route = ctx.route_label();
    count_request(
        route,
        method_label(&req.method),
        status,
        ctx.upstream_status,
    );
    // A matched route's histograms are looked up already; an unmatched
    // request looks them up now.
    let unmatched;
    let histograms = match &ctx.route {
        Some(route) => &route.metrics,
        None => {
            unmatched = RouteMetrics::of(route);
            &unmatched
        }
    };
    histograms.request_duration.observe(elapsed.as_secs_f64());
    let (request_bytes, response_bytes) = (
        session.body_bytes_read() as u64,
        session.body_bytes_sent() as u64,
    );
    histograms.request_body_bytes.observe(request_bytes as f64);
    histograms
        .response_body_bytes
        .observe(response_bytes as f64);
    if let Some(time) = ctx.upstream_time {
        histograms.upstream_response.observe(time.as_secs_f64());
    }
    let (upstream_peer, tries) = ctx.attempts.finish();
    let peer_label = upstream_peer.as_ref().map(|p| p.label.as_str());
    record_span(
        session,
        ctx,
        (status, elapsed),
        (upstream_peer.as_ref(), tries),
    );
    if !access_log.is_enabled() {
        return;
    }
    // A request that ended before it was read has none yet.
    ctx.request_id();
    let client_ip = ctx.client_ip(session);
    let identity = ctx.identity.as_ref();
    let route = ctx.route.as_deref();
    let (host, user_agent) = host_and_user_agent(req);
    // Borrowed from the request: the line is formatted now, into this
    // thread's buffer (nothing is cloned for it).
    access_log.record(&AccessEntry {
        timestamp: SystemTime::now(),
        request_id: ctx.request_id.as_ref().map_or(b"", |id| id.as_bytes()),
        trace_id: ctx.trace.as_ref().map(|t| t.trace_id),
        method: req.method.as_str(),
        path: req.uri.path().as_bytes(),
        protocol: req.version,
        host,
        client_ip,
        user_agent,
        username: identity.map(|i| i.username.as_bytes()),
        user_id: identity.map(|i| i.user_id.as_bytes()),
        service: route.map(|r| r.service.as_str()),
        route: route.map(|r| r.pattern.as_str()),
        upstream_status: ctx.upstream_status,
        upstream_peer: peer_label,
        tries,
        upstream_time: ctx.upstream_time,
        status_code: status,
        response_time: elapsed,
        request_bytes,
        response_bytes,
    });
}

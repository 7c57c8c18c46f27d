//! The `logging` phase: one finished request counted in the metrics and
//! handed to the access-log writer (never written on the proxy thread).

use std::time::SystemTime;

use pingora::prelude::Session;

use crate::observe::access_log::{AccessEntry, AccessLog};
use crate::observe::metrics::{method_label, metrics};
use crate::proxy::context::RequestCtx;
use crate::proxy::forwarding::generate_request_id;

/// Counts the request and queues its access-log entry.
pub fn record(session: &Session, ctx: &mut RequestCtx, access_log: &AccessLog) {
    let elapsed = ctx.started.elapsed();
    let status = session.response_written().map_or(0, |r| r.status.as_u16());
    let req = session.req_header();
    let (mut status_buf, mut upstream_buf) = (itoa::Buffer::new(), itoa::Buffer::new());
    let upstream_status = ctx
        .upstream_status
        .map_or("none", |s| upstream_buf.format(s));
    let m = metrics();
    let route = ctx.route_label();
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
    let (upstream_peer, tries) = ctx.attempts.finish();
    if !access_log.is_enabled() {
        return;
    }
    // Logging is the request's last phase: the entry takes what the
    // context holds instead of cloning it.
    let identity = ctx.identity.take();
    access_log.record(AccessEntry {
        timestamp: SystemTime::now(),
        request_id: ctx.request_id.take().unwrap_or_else(generate_request_id),
        method: req.method.clone(),
        path: req.uri.path().to_owned(),
        protocol: req.version,
        username: identity.as_ref().map(|i| i.username.clone()),
        user_id: identity.map(|i| i.user_id),
        route: ctx.route.take(),
        upstream_status: ctx.upstream_status,
        upstream_peer,
        tries,
        status_code: status,
        response_time: elapsed,
    });
}

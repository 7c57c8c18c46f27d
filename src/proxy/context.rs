//! The per-request context: a fresh one per request, so nothing (identity
//! above all) carries over between requests of a keep-alive connection.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, Uri};

use crate::auth::claims::TokenClaims;
use crate::auth::identity::Identity;
use crate::edge::compression::Compression;
use crate::edge::limits::Decision;
use crate::edge::slack::SlackGate;
use crate::gateway::Gateway;
use crate::process::readiness::InFlight;
use crate::routing::table::Route;
use crate::upstream::Attempts;
use crate::wire::generate_request_id;
use crate::wire::trace::TraceContext;

/// What the client's connection says, read once per request.
#[derive(Debug, Clone, Default)]
pub struct ClientConnection {
    /// The socket's peer (`X-Forwarded-For` appends it); none on a Unix
    /// socket.
    pub peer_ip: Option<IpAddr>,
    /// It came over one of the TLS listeners.
    pub https: bool,
    /// That listener's `Strict-Transport-Security` value, if it sets one.
    pub hsts: Option<HeaderValue>,
}

/// What one request carries through the phases.
pub struct RequestCtx {
    /// Keeps a draining process alive until this request is done.
    _in_flight: InFlight,
    /// The configuration this request is served with, taken once when it
    /// starts, even if SIGHUP swaps meanwhile.
    pub gateway: Arc<Gateway>,
    pub started: Instant,
    /// The client's (when valid) or a generated id; see [`Self::request_id`].
    pub request_id: Option<HeaderValue>,
    /// The request's place in its trace (the `traceparent` the upstream
    /// gets on every try and a gateway-written error carries); see
    /// [`Self::start_trace`].
    pub trace: Option<TraceContext>,
    /// The envelope's code of a gateway-written error (its span's
    /// `gateway.error.code`).
    pub error_code: Option<&'static str>,
    /// The request's `Origin`, when CORS allows it.
    pub cors_origin: Option<HeaderValue>,
    /// The matched route (set before authentication, so refusals are
    /// counted on their route).
    pub route: Option<Arc<Route>>,
    /// The origin-form target the upstream must receive, when it differs
    /// from what the client sent (normalized path, absolute-form target).
    pub upstream_uri: Option<Uri>,
    pub identity: Option<Identity>,
    /// What the verified token says beyond its user (claim headers, `iat`).
    pub token_claims: Option<Arc<TokenClaims>>,
    /// The rate-limit decision, for the RateLimit-* response headers.
    pub rate_limit: Option<Decision>,
    /// The body gate of a Slack-signed request.
    pub slack: Option<SlackGate>,
    pub compression: Compression,
    pub body_bytes: u64,
    /// The client as resolved through `trusted_proxies`; see
    /// [`Self::client_ip`].
    client: Option<Option<IpAddr>>,
    /// The socket's peer, TLS and HSTS of the client's connection; see
    /// [`Self::connection`].
    connection: Option<ClientConnection>,
    /// When the current try's request went upstream, and how long its
    /// response header took (the access log's `upstream_time_ms`).
    pub upstream_sent: Option<Instant>,
    pub upstream_time: Option<Duration>,
    pub upstream_status: Option<u16>,
    /// The route's pool as this request found it: every try picks from
    /// the same one, even if a name's re-resolution swaps it meanwhile.
    pub pool: Option<Arc<crate::upstream::Pool>>,
    /// The tries at the route's pool.
    pub attempts: Attempts,
}

impl RequestCtx {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self {
            _in_flight: InFlight::start(),
            gateway,
            started: Instant::now(),
            request_id: None,
            trace: None,
            error_code: None,
            cors_origin: None,
            route: None,
            upstream_uri: None,
            identity: None,
            token_claims: None,
            rate_limit: None,
            slack: None,
            compression: Compression::default(),
            body_bytes: 0,
            client: None,
            connection: None,
            upstream_sent: None,
            upstream_time: None,
            upstream_status: None,
            pool: None,
            attempts: Attempts::default(),
        }
    }

    /// The request id, generated if the request ended before it was read
    /// (a malformed request).
    pub fn request_id(&mut self) -> &HeaderValue {
        self.request_id.get_or_insert_with(generate_request_id)
    }

    /// The socket's peer, TLS and HSTS of the client's connection, read
    /// from the session the first time a phase asks and kept for the others.
    pub fn connection(&mut self, session: &pingora::proxy::Session) -> &ClientConnection {
        let listeners = &self.gateway.tls;
        self.connection.get_or_insert_with(|| {
            let https = session.digest().is_some_and(|d| d.ssl_digest.is_some());
            let local = session.server_addr().and_then(|a| a.as_inet()).copied();
            ClientConnection {
                peer_ip: session
                    .client_addr()
                    .and_then(|a| a.as_inet())
                    .map(|a| a.ip()),
                https,
                hsts: local
                    .filter(|_| https)
                    .and_then(|local| crate::tls::hsts_of(listeners, local)),
            }
        })
    }

    /// The client: the socket's peer, or what a trusted proxy says it
    /// forwarded for (`server.trusted_proxies`). Resolved the first time
    /// a phase asks; the limits, the `consistent` pools and the access log
    /// all use this one.
    pub fn client_ip(&mut self, session: &pingora::proxy::Session) -> Option<IpAddr> {
        if let Some(client) = self.client {
            return client;
        }
        let peer = self.connection(session).peer_ip;
        let headers = &session.req_header().headers;
        let client = crate::edge::limits::client_ip(peer, headers, &self.gateway.trusted_proxies);
        self.client = Some(client);
        client
    }

    /// Joins the caller's trace (a valid `traceparent`) or starts one,
    /// sampled by `[tracing]`'s ratio; without `[tracing]` a fresh trace is
    /// not sampled.
    pub fn start_trace(&mut self, headers: &http::HeaderMap) {
        let export = self.gateway.traces.as_deref();
        self.trace = Some(TraceContext::of_request(headers, |id| {
            export.is_some_and(|e| e.samples(id))
        }));
    }

    /// The `route` label of metrics and logs.
    pub fn route_label(&self) -> &str {
        self.route
            .as_ref()
            .map_or("unmatched", |r| r.pattern.as_str())
    }
}

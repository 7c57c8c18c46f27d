//! The admin listener: `GET /metrics` (Prometheus text), `GET /healthz`
//! (the process is alive), `GET /readyz` (it should get traffic: it
//! serves, is not draining and got no SIGTERM), `GET /readyz?verbose` (the
//! same, then one line per dependency from
//! [`crate::observe::dependencies`]) and `GET /upstreams` (each route's
//! pool with its peers' health, JSON).
//!
//! Readiness is about the gateway itself: a route whose peers are all down
//! answers 503 on that route, and a dependency that is down fails the
//! requests that need it, but the gateway stays ready for the others. A
//! poll of `/readyz` asks nothing of PostgreSQL, Redis or the JWKS server.
//!
//! [`AllowFrom`] closes connections from outside `admin.allow_from` before
//! a byte of HTTP is read.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::apps::ServerApp;
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

use crate::auth::identity::IdentityCache;
use crate::live::Live;
use crate::observe::dependencies::DependencyStatus;
use crate::observe::metrics::metrics;
use crate::process::readiness::{InFlight, Readiness};
use crate::upstream::UpstreamRegistry;

pub struct AdminApp {
    /// The running configuration's identity cache (its gauges) and peers.
    identity: Live<Arc<IdentityCache>>,
    upstreams: Live<Arc<UpstreamRegistry>>,
    readiness: Readiness,
    dependencies: Arc<DependencyStatus>,
}

impl AdminApp {
    pub fn new(
        (identity, upstreams): (Live<Arc<IdentityCache>>, Live<Arc<UpstreamRegistry>>),
        readiness: Readiness,
        dependencies: Arc<DependencyStatus>,
    ) -> Self {
        Self {
            identity,
            upstreams,
            readiness,
            dependencies,
        }
    }

    fn readiness(&self) -> (StatusCode, &'static str) {
        match self.readiness.unready_because() {
            Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
            None => (StatusCode::OK, "ready"),
        }
    }

    /// `/readyz?verbose`: the verdict, then `NAME up` or `NAME down: WHY`
    /// per dependency (text, for people and `grep`).
    fn verbose_readiness(&self) -> Response<Vec<u8>> {
        let (status, text) = self.readiness();
        let mut body = format!("{text}\n");
        for report in self.dependencies.reports().iter() {
            match &report.status {
                Ok(()) => body += &format!("{} up\n", report.name),
                Err(why) => body += &format!("{} down: {why}\n", report.name),
            }
        }
        respond(status, "text/plain; charset=utf-8", body.into_bytes())
    }
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(body)
        .unwrap_or_default()
}

fn status_json(status: StatusCode, text: &str) -> Response<Vec<u8>> {
    let body = serde_json::json!({ "status": text })
        .to_string()
        .into_bytes();
    respond(status, "application/json", body)
}

/// `verbose` among the query's parameters (`?verbose`, `?verbose=1`).
fn wants_verbose(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|p| p == "verbose" || p.starts_with("verbose="))
    })
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.method != Method::GET {
            return status_json(StatusCode::METHOD_NOT_ALLOWED, "use GET");
        }
        match req.uri.path() {
            "/metrics" => {
                self.identity.get().export_gauges();
                metrics().requests_in_flight.set(InFlight::count() as i64);
                metrics()
                    .buffered_body_bytes
                    .set(crate::edge::slack::reserved_bytes() as i64);
                respond(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    metrics().render(),
                )
            }
            "/healthz" => status_json(StatusCode::OK, "alive"),
            "/upstreams" => {
                let body = self.upstreams.get().to_json().to_string();
                respond(StatusCode::OK, "application/json", body.into_bytes())
            }
            "/readyz" if wants_verbose(req.uri.query()) => self.verbose_readiness(),
            "/readyz" => {
                let (status, text) = self.readiness();
                status_json(status, text)
            }
            _ => status_json(StatusCode::NOT_FOUND, "not found"),
        }
    }
}

/// The admin app behind `admin.allow_from`: a connection from another
/// address is closed at accept, before HTTP (an empty list allows all, which
/// the configuration permits only on a loopback `admin.listen`).
pub struct AllowFrom<A> {
    app: Arc<A>,
    allow: Vec<ipnet::IpNet>,
}

impl<A> AllowFrom<A> {
    pub fn new(app: A, allow: Vec<ipnet::IpNet>) -> Self {
        Self {
            app: Arc::new(app),
            allow,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for AllowFrom<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if !self.allow.is_empty() {
            let peer = crate::process::connection::client_ip(&stream);
            if !peer.is_some_and(|ip| self.allow.iter().any(|net| net.contains(&ip))) {
                metrics()
                    .connections_refused
                    .with_label_values(&["admin_not_allowed"])
                    .inc();
                return None;
            }
        }
        self.app.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}

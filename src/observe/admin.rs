//! The admin listener: `GET /metrics` (Prometheus text), `GET /healthz`
//! (the process is alive), `GET /readyz` (it should get traffic: not
//! draining, and the user directory answers or the cache can serve) and
//! `GET /upstreams` (each route's pool with its peers' health, JSON).
//! Readiness is about the gateway itself: a route whose peers are all down
//! answers 503 on that route, but the gateway stays ready for the others.
//! Its dependency check runs at most once a second ([`READINESS_CHECK_EVERY`]);
//! pollers in between get the last answer, so polling costs PostgreSQL
//! nothing more.
//!
//! [`AllowFrom`] closes connections from outside `admin.allow_from` before
//! a byte of HTTP is read.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::apps::ServerApp;
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

use crate::config::plan::SharedGateway;
use crate::observe::metrics::metrics;
use crate::process::lifecycle::InFlight;

/// The most often `/readyz` asks its dependencies.
pub const READINESS_CHECK_EVERY: Duration = Duration::from_secs(1);

pub struct AdminApp {
    gateway: SharedGateway,
    draining: Arc<AtomicBool>,
    /// When the dependencies were last asked, and their answer. An async
    /// mutex: pollers arriving during a check wait for its answer instead
    /// of starting their own.
    last_check: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

impl AdminApp {
    pub fn new(gateway: SharedGateway, draining: Arc<AtomicBool>) -> Self {
        Self {
            gateway,
            draining,
            last_check: tokio::sync::Mutex::new(None),
        }
    }

    /// The directory can serve (cached users, or it answers), asked at
    /// most once per [`READINESS_CHECK_EVERY`].
    async fn directory_ready(&self) -> bool {
        let mut last = self.last_check.lock().await;
        if let Some((at, ready)) = *last {
            if at.elapsed() < READINESS_CHECK_EVERY {
                return ready;
            }
        }
        metrics().readiness_checks.inc();
        let ready = self.gateway.load_full().identity.is_ready().await;
        *last = Some((Instant::now(), ready));
        ready
    }

    async fn readiness(&self) -> (StatusCode, &'static str) {
        if self.draining.load(Ordering::Relaxed) {
            return (StatusCode::SERVICE_UNAVAILABLE, "draining");
        }
        if self.directory_ready().await {
            (StatusCode::OK, "ready")
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "user directory unavailable",
            )
        }
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

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.method != Method::GET {
            return status_json(StatusCode::METHOD_NOT_ALLOWED, "use GET");
        }
        match req.uri.path() {
            "/metrics" => {
                self.gateway.load().identity.export_gauges();
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
                let body = self.gateway.load().upstreams.to_json().to_string();
                respond(StatusCode::OK, "application/json", body.into_bytes())
            }
            "/readyz" => {
                let (status, text) = self.readiness().await;
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

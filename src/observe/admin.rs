//! The admin listener: `GET /metrics` (Prometheus text), `GET /healthz`
//! (the process is alive), `GET /readyz` (it should get traffic: not
//! draining, and the user directory answers or the cache can serve) and
//! `GET /upstreams` (each route's pool with its peers' health, JSON).
//! Readiness is about the gateway itself: a route whose peers are all down
//! answers 503 on that route, but the gateway stays ready for the others.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::config::plan::SharedGateway;
use crate::observe::metrics::metrics;
use crate::process::lifecycle::InFlight;

pub struct AdminApp {
    gateway: SharedGateway,
    draining: Arc<AtomicBool>,
}

impl AdminApp {
    pub fn new(gateway: SharedGateway, draining: Arc<AtomicBool>) -> Self {
        Self { gateway, draining }
    }

    async fn readiness(&self) -> (StatusCode, &'static str) {
        if self.draining.load(Ordering::Relaxed) {
            return (StatusCode::SERVICE_UNAVAILABLE, "draining");
        }
        if self.gateway.load_full().identity.is_ready().await {
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

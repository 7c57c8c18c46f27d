//! Prometheus metrics of the gateway (served by the admin listener).
//!
//! One process-wide set, created on first use. Label values are bounded:
//! `route` is a configured pattern (or `unmatched`), `method` one of the
//! standard methods (others fold into `OTHER`), statuses are numbers.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Request latency buckets: sub-millisecond to 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub auth_failures: IntCounterVec,
    pub proxy_errors: IntCounterVec,
    pub identity_cache_hits: IntCounter,
    pub identity_cache_misses: IntCounter,
    pub identity_stale_served: IntCounter,
    pub identity_cache_entries: IntGauge,
    pub directory_query_duration: Histogram,
    pub directory_errors: IntCounter,
    pub directory_pool_size: IntGauge,
    pub directory_pool_available: IntGauge,
    pub directory_pool_waiting: IntGauge,
    pub requests_in_flight: IntGauge,
    pub access_log_dropped: IntCounter,
    pub connections_refused: IntCounterVec,
    pub header_timeouts: IntCounter,
    pub config_reloads: IntCounterVec,
    pub rate_limited: IntCounterVec,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

impl Metrics {
    // Names and labels are constants: failures here are programming errors
    // caught by the first test that touches metrics, never request-time.
    fn new() -> Self {
        let r = Registry::new();
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "gateway_request_duration_seconds",
                "Time from request start to the end of the response, by route",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        r.register(Box::new(request_duration.clone()))
            .expect("unique metric");
        let directory_query_duration = Histogram::with_opts(
            HistogramOpts::new(
                "gateway_directory_query_duration_seconds",
                "Duration of user-directory lookups (cache misses)",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        r.register(Box::new(directory_query_duration.clone()))
            .expect("unique metric");
        Self {
            requests: counter_vec(
                &r,
                "gateway_requests_total",
                "Requests by route, method, status sent and upstream status",
                &["route", "method", "status", "upstream_status"],
            ),
            request_duration,
            auth_failures: counter_vec(
                &r,
                "gateway_auth_failures_total",
                "Requests refused by authentication, by reason",
                &["reason"],
            ),
            proxy_errors: counter_vec(
                &r,
                "gateway_proxy_errors_total",
                "Failures talking to upstreams or clients, by route and kind",
                &["route", "kind"],
            ),
            identity_cache_hits: counter(
                &r,
                "gateway_identity_cache_hits_total",
                "Identity cache hits",
            ),
            identity_cache_misses: counter(
                &r,
                "gateway_identity_cache_misses_total",
                "Identity cache misses (each one directory query)",
            ),
            identity_stale_served: counter(
                &r,
                "gateway_identity_stale_served_total",
                "Cached identities used past their TTL because the directory failed",
            ),
            identity_cache_entries: gauge(
                &r,
                "gateway_identity_cache_entries",
                "Entries in the identity cache",
            ),
            directory_query_duration,
            directory_errors: counter(
                &r,
                "gateway_directory_errors_total",
                "Failed user-directory lookups",
            ),
            directory_pool_size: gauge(
                &r,
                "gateway_directory_pool_connections",
                "Open PostgreSQL connections",
            ),
            directory_pool_available: gauge(
                &r,
                "gateway_directory_pool_available",
                "Idle PostgreSQL connections",
            ),
            directory_pool_waiting: gauge(
                &r,
                "gateway_directory_pool_waiting",
                "Lookups waiting for a PostgreSQL connection",
            ),
            requests_in_flight: gauge(&r, "gateway_requests_in_flight", "Requests being served"),
            access_log_dropped: counter(
                &r,
                "gateway_access_log_dropped_total",
                "Access-log lines dropped because the writer fell behind",
            ),
            connections_refused: counter_vec(
                &r,
                "gateway_connections_refused_total",
                "Client connections closed at accept, by reason",
                &["reason"],
            ),
            header_timeouts: counter(
                &r,
                "gateway_header_timeouts_total",
                "Connections closed because a request header took longer than header_timeout_ms",
            ),
            config_reloads: counter_vec(
                &r,
                "gateway_config_reloads_total",
                "In-place configuration reloads (SIGHUP), by result",
                &["result"],
            ),
            rate_limited: counter_vec(
                &r,
                "gateway_rate_limited_total",
                "Requests refused by a rate limit, by route and subject (user or ip)",
                &["route", "subject"],
            ),
            registry: r,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding our own families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// The `method` label: standard methods as themselves, the rest `OTHER`.
pub fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_fold_into_a_bounded_set() {
        assert_eq!(method_label(&http::Method::GET), "GET");
        let odd = http::Method::from_bytes(b"PROPFIND").unwrap();
        assert_eq!(method_label(&odd), "OTHER");
    }

    #[test]
    fn every_design_series_is_exposed() {
        let m = metrics();
        m.requests
            .with_label_values(&["/a/*", "GET", "200", "200"])
            .inc();
        m.request_duration
            .with_label_values(&["/a/*"])
            .observe(0.0001);
        m.auth_failures.with_label_values(&["missing_token"]).inc();
        m.proxy_errors
            .with_label_values(&["/a/*", "connect_refused"])
            .inc();
        let text = String::from_utf8(m.render()).unwrap();
        for name in [
            "gateway_requests_total{",
            "gateway_request_duration_seconds_bucket{route=\"/a/*\",le=\"0.0005\"} 1",
            "gateway_request_duration_seconds_bucket{route=\"/a/*\",le=\"30\"} 1",
            "gateway_auth_failures_total{reason=\"missing_token\"}",
            "gateway_proxy_errors_total{",
            "gateway_identity_cache_hits_total",
            "gateway_directory_query_duration_seconds_bucket",
        ] {
            assert!(text.contains(name), "{name} missing");
        }
    }
}

//! Prometheus metrics of the gateway (served by the admin listener).
//!
//! One process-wide set, created on first use. Label values are bounded:
//! `route` is a configured pattern (or `unmatched`), `method` one of the
//! standard methods (others fold into `OTHER`), statuses are numbers.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Body-size buckets: empty to 64 MiB, by powers of 4 from 64 B.
const SIZE_BUCKETS: &[f64] = &[
    0.0,
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];

/// Request latency buckets: sub-millisecond to 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_response: HistogramVec,
    pub request_body_bytes: HistogramVec,
    pub response_body_bytes: HistogramVec,
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
    pub claims_refused: IntCounterVec,
    pub upstream_peer_healthy: IntGaugeVec,
    pub upstream_peer_requests: IntCounterVec,
    pub upstream_peer_failures: IntCounterVec,
    pub upstream_retries: IntCounterVec,
    pub dns_failures: IntCounterVec,
    pub trace_spans_dropped: IntCounter,
    pub rate_limit_store_up: IntGauge,
    pub rate_limit_store_fallbacks: IntCounterVec,
    pub rate_limit_store_round_trips: IntCounter,
    pub rate_limit_store_sent_alone: IntCounter,
    pub jwt_verifications: IntCounterVec,
    pub jwks_fetches: IntCounterVec,
    pub jwks_up: IntGauge,
    pub jwks_keys: IntGauge,
    pub user_notify_up: IntGauge,
    pub user_notify_evictions: IntCounter,
    pub dependency_checks: IntCounter,
    pub dependency_up: IntGaugeVec,
    pub buffered_body_bytes: IntGauge,
    pub buffered_body_refused: IntCounter,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// One route's histograms, looked up once when the route is built: a
/// label lookup per request cost about 110 instructions each, four per
/// request.
#[derive(Clone)]
pub struct RouteMetrics {
    pub request_duration: Histogram,
    pub upstream_response: Histogram,
    pub request_body_bytes: Histogram,
    pub response_body_bytes: Histogram,
}

impl RouteMetrics {
    /// The histograms of the route labelled `route`.
    pub fn of(route: &str) -> Self {
        let m = metrics();
        Self {
            request_duration: m.request_duration.with_label_values(&[route]),
            upstream_response: m.upstream_response.with_label_values(&[route]),
            request_body_bytes: m.request_body_bytes.with_label_values(&[route]),
            response_body_bytes: m.response_body_bytes.with_label_values(&[route]),
        }
    }
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMetrics").finish_non_exhaustive()
    }
}

/// A metric's name and help text.
type Family = (&'static str, &'static str);

const REQUESTS: Family = (
    "gateway_requests_total",
    "Requests by route, method, status sent and upstream status",
);
const REQUEST_DURATION: Family = (
    "gateway_request_duration_seconds",
    "Time from request start to the end of the response, by route",
);
const AUTH_FAILURES: Family = (
    "gateway_auth_failures_total",
    "Requests refused by authentication, by reason",
);
const PROXY_ERRORS: Family = (
    "gateway_proxy_errors_total",
    "Failures talking to upstreams or clients, by route and kind",
);
const IDENTITY_CACHE_HITS: Family = ("gateway_identity_cache_hits_total", "Identity cache hits");
const IDENTITY_CACHE_MISSES: Family = (
    "gateway_identity_cache_misses_total",
    "Identity cache misses (each one directory query)",
);
const IDENTITY_STALE_SERVED: Family = (
    "gateway_identity_stale_served_total",
    "Cached identities used past their TTL because the directory failed",
);
const IDENTITY_CACHE_ENTRIES: Family = (
    "gateway_identity_cache_entries",
    "Entries in the identity cache",
);
const DIRECTORY_QUERY_DURATION: Family = (
    "gateway_directory_query_duration_seconds",
    "Duration of user-directory lookups (cache misses)",
);
const DIRECTORY_ERRORS: Family = (
    "gateway_directory_errors_total",
    "Failed user-directory lookups",
);
const DIRECTORY_POOL_SIZE: Family = (
    "gateway_directory_pool_connections",
    "Open PostgreSQL connections",
);
const DIRECTORY_POOL_AVAILABLE: Family = (
    "gateway_directory_pool_available",
    "Idle PostgreSQL connections",
);
const DIRECTORY_POOL_WAITING: Family = (
    "gateway_directory_pool_waiting",
    "Lookups waiting for a PostgreSQL connection",
);
const REQUESTS_IN_FLIGHT: Family = ("gateway_requests_in_flight", "Requests being served");
const ACCESS_LOG_DROPPED: Family = (
    "gateway_access_log_dropped_total",
    "Access-log lines dropped because the writer fell behind",
);
const CONNECTIONS_REFUSED: Family = (
    "gateway_connections_refused_total",
    "Client connections closed at accept, by reason",
);
const HEADER_TIMEOUTS: Family = (
    "gateway_header_timeouts_total",
    "Connections closed because a request header took longer than header_timeout_ms",
);
const CONFIG_RELOADS: Family = (
    "gateway_config_reloads_total",
    "In-place configuration reloads (SIGHUP), by result",
);
const CLAIMS_REFUSED: Family = (
    "gateway_claims_refused_total",
    "Authenticated requests refused 403 because the token lacks a claim the route requires, by route",
);
const RATE_LIMITED: Family = (
    "gateway_rate_limited_total",
    "Requests refused by a rate limit, by route and subject (user or ip)",
);
const UPSTREAM_PEER_HEALTHY: Family = (
    "gateway_upstream_peer_healthy",
    "1 while a route's peer may get requests (checks pass or have not run, not ejected), else 0",
);
const UPSTREAM_PEER_REQUESTS: Family = (
    "gateway_upstream_peer_requests_total",
    "Tries sent to each upstream peer (a retried request counts at each peer it tried)",
);
const UPSTREAM_PEER_FAILURES: Family = (
    "gateway_upstream_peer_failures_total",
    "Tries that failed at a peer before any response (connect errors, resets, timeouts)",
);
const UPSTREAM_RETRIES: Family = (
    "gateway_upstream_retries_total",
    "Requests sent again to another peer, by reason",
);
const RATE_LIMIT_STORE_UP: Family = (
    "gateway_rate_limit_store_up",
    "1 while the shared rate-limit store (Redis) decides, 0 while on_store_error does",
);
const RATE_LIMIT_STORE_FALLBACKS: Family = (
    "gateway_rate_limit_store_fallbacks_total",
    "Rate-limit decisions made by on_store_error because the store could not, by mode",
);
const RATE_LIMIT_STORE_ROUND_TRIPS: Family = (
    "gateway_rate_limit_store_round_trips_total",
    "Script calls sent to the shared rate-limit store; each decides a batch of requests",
);
const RATE_LIMIT_STORE_SENT_ALONE: Family = (
    "gateway_rate_limit_store_sent_alone_total",
    "Script calls a request sent itself, no call being in flight (the others are the driver's batches)",
);
const JWT_VERIFICATIONS: Family = (
    "gateway_jwt_verifications_total",
    "Token signature checks (first sight; a remembered token is not checked again), by key id and result",
);
const JWKS_FETCHES: Family = (
    "gateway_jwks_fetches_total",
    "Fetches of the [auth.jwks] key set, by result",
);
const JWKS_UP: Family = (
    "gateway_jwks_up",
    "1 while the last fetch of the [auth.jwks] key set succeeded",
);
const JWKS_KEYS: Family = (
    "gateway_jwks_keys",
    "Usable keys in the current [auth.jwks] set",
);
const USER_NOTIFY_UP: Family = (
    "gateway_user_notify_up",
    "1 while the LISTEN connection for user changes (users.notify_channel) is up",
);
const USER_NOTIFY_EVICTIONS: Family = (
    "gateway_user_notify_evictions_total",
    "Users evicted from the identity cache by a change notification",
);

const UPSTREAM_RESPONSE: Family = (
    "gateway_upstream_response_seconds",
    "From sending a request upstream to its response header (the last try), by route",
);
const REQUEST_BODY_BYTES: Family = (
    "gateway_request_body_bytes",
    "Request body bytes received from clients, by route",
);
const RESPONSE_BODY_BYTES: Family = (
    "gateway_response_body_bytes",
    "Response body bytes sent to clients (after compression), by route",
);
const DNS_FAILURES: Family = (
    "gateway_dns_failures_total",
    "Re-resolutions of a route's upstream names that failed (its last addresses are kept)",
);
const TRACE_SPANS_DROPPED: Family = (
    "gateway_trace_spans_dropped_total",
    "Spans not exported: the queue to the exporter was full, or the collector failed",
);
const BUILD_INFO: Family = (
    "gateway_build_info",
    "1, labelled with the release and the commit the binary was built from",
);
const DEPENDENCY_CHECKS: Family = (
    "gateway_dependency_checks_total",
    "Rounds of dependency checks (one a second, off the request path; /readyz asks none)",
);
const DEPENDENCY_UP: Family = (
    "gateway_dependency_up",
    "1 while a dependency answers its check (postgres, redis, jwks), 0 while it does not",
);
const BUFFERED_BODY_BYTES: Family = (
    "gateway_buffered_body_bytes",
    "Request-body bytes held for signature checks (Slack routes), process-wide",
);
const BUFFERED_BODY_REFUSED: Family = (
    "gateway_buffered_body_refused_total",
    "Signed requests refused with 503 because server.max_buffered_body_bytes was held",
);

/// Registers metrics. Names and labels are constants: a failure here is a
/// programming error caught by the first test that touches metrics, never
/// a request-time one.
struct Register(Registry);

impl Register {
    fn add<M: prometheus::core::Collector + Clone + 'static>(&self, metric: M) -> M {
        self.0
            .register(Box::new(metric.clone()))
            .expect("unique metric");
        metric
    }

    fn counter(&self, (name, help): Family) -> IntCounter {
        self.add(IntCounter::new(name, help).expect("valid metric"))
    }

    fn counter_vec(&self, (name, help): Family, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn gauge_vec(&self, (name, help): Family, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn gauge(&self, (name, help): Family) -> IntGauge {
        self.add(IntGauge::new(name, help).expect("valid metric"))
    }

    fn latency(&self, (name, help): Family) -> Histogram {
        let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
        self.add(Histogram::with_opts(opts).expect("valid metric"))
    }

    fn size_vec(&self, (name, help): Family, labels: &[&str]) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(SIZE_BUCKETS.to_vec());
        self.add(HistogramVec::new(opts, labels).expect("valid metric"))
    }

    /// `process_*` (Linux `/proc`) and `gateway_build_info`.
    fn process_and_build(&self) {
        self.0
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");
        let build = IntGaugeVec::new(
            Opts::new(BUILD_INFO.0, BUILD_INFO.1),
            &["version", "git_sha"],
        )
        .expect("valid metric");
        build
            .with_label_values(&[crate::VERSION, crate::GIT_SHA])
            .set(1);
        self.add(build);
    }

    fn latency_vec(&self, (name, help): Family, labels: &[&str]) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
        self.add(HistogramVec::new(opts, labels).expect("valid metric"))
    }
}

impl Metrics {
    fn new() -> Self {
        let r = Register(Registry::new());
        r.process_and_build();
        Self {
            requests: r.counter_vec(REQUESTS, &["route", "method", "status", "upstream_status"]),
            request_duration: r.latency_vec(REQUEST_DURATION, &["route"]),
            upstream_response: r.latency_vec(UPSTREAM_RESPONSE, &["route"]),
            request_body_bytes: r.size_vec(REQUEST_BODY_BYTES, &["route"]),
            response_body_bytes: r.size_vec(RESPONSE_BODY_BYTES, &["route"]),
            auth_failures: r.counter_vec(AUTH_FAILURES, &["reason"]),
            proxy_errors: r.counter_vec(PROXY_ERRORS, &["route", "kind"]),
            identity_cache_hits: r.counter(IDENTITY_CACHE_HITS),
            identity_cache_misses: r.counter(IDENTITY_CACHE_MISSES),
            identity_stale_served: r.counter(IDENTITY_STALE_SERVED),
            identity_cache_entries: r.gauge(IDENTITY_CACHE_ENTRIES),
            directory_query_duration: r.latency(DIRECTORY_QUERY_DURATION),
            directory_errors: r.counter(DIRECTORY_ERRORS),
            directory_pool_size: r.gauge(DIRECTORY_POOL_SIZE),
            directory_pool_available: r.gauge(DIRECTORY_POOL_AVAILABLE),
            directory_pool_waiting: r.gauge(DIRECTORY_POOL_WAITING),
            requests_in_flight: r.gauge(REQUESTS_IN_FLIGHT),
            access_log_dropped: r.counter(ACCESS_LOG_DROPPED),
            connections_refused: r.counter_vec(CONNECTIONS_REFUSED, &["reason"]),
            header_timeouts: r.counter(HEADER_TIMEOUTS),
            config_reloads: r.counter_vec(CONFIG_RELOADS, &["result"]),
            rate_limited: r.counter_vec(RATE_LIMITED, &["route", "subject"]),
            claims_refused: r.counter_vec(CLAIMS_REFUSED, &["route"]),
            upstream_peer_healthy: r.gauge_vec(UPSTREAM_PEER_HEALTHY, &["route", "peer"]),
            upstream_peer_requests: r.counter_vec(UPSTREAM_PEER_REQUESTS, &["peer"]),
            upstream_peer_failures: r.counter_vec(UPSTREAM_PEER_FAILURES, &["peer"]),
            upstream_retries: r.counter_vec(UPSTREAM_RETRIES, &["reason"]),
            dns_failures: r.counter_vec(DNS_FAILURES, &["route"]),
            trace_spans_dropped: r.counter(TRACE_SPANS_DROPPED),
            rate_limit_store_up: r.gauge(RATE_LIMIT_STORE_UP),
            rate_limit_store_fallbacks: r.counter_vec(RATE_LIMIT_STORE_FALLBACKS, &["mode"]),
            rate_limit_store_round_trips: r.counter(RATE_LIMIT_STORE_ROUND_TRIPS),
            rate_limit_store_sent_alone: r.counter(RATE_LIMIT_STORE_SENT_ALONE),
            jwt_verifications: r.counter_vec(JWT_VERIFICATIONS, &["kid", "result"]),
            jwks_fetches: r.counter_vec(JWKS_FETCHES, &["result"]),
            jwks_up: r.gauge(JWKS_UP),
            jwks_keys: r.gauge(JWKS_KEYS),
            user_notify_up: r.gauge(USER_NOTIFY_UP),
            user_notify_evictions: r.counter(USER_NOTIFY_EVICTIONS),
            dependency_checks: r.counter(DEPENDENCY_CHECKS),
            dependency_up: r.gauge_vec(DEPENDENCY_UP, &["dependency"]),
            buffered_body_bytes: r.gauge(BUFFERED_BODY_BYTES),
            buffered_body_refused: r.counter(BUFFERED_BODY_REFUSED),
            registry: r.0,
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

/// Counts one finished request in `gateway_requests_total`. The counter of
/// a label set is kept in a small per-thread list of the sets seen last:
/// the vector's own look-up hashes the four values and takes its lock on
/// every request. Series of this family are never removed, so a kept
/// counter stays the exported one.
pub fn count_request(route: &str, method: &'static str, status: u16, upstream: Option<u16>) {
    /// Label sets kept per thread; the oldest gives way.
    const KEPT: usize = 16;
    struct Kept {
        route: Box<str>,
        method: &'static str,
        status: u16,
        upstream: Option<u16>,
        counter: IntCounter,
    }
    thread_local! {
        static RECENT: std::cell::RefCell<(Vec<Kept>, usize)> =
            const { std::cell::RefCell::new((Vec::new(), 0)) };
    }
    RECENT.with_borrow_mut(|(kept, next)| {
        let found = kept.iter().find(|k| {
            k.status == status && k.upstream == upstream && k.method == method && *k.route == *route
        });
        if let Some(k) = found {
            k.counter.inc();
            return;
        }
        let (mut status_text, mut upstream_text) = (itoa::Buffer::new(), itoa::Buffer::new());
        let upstream_label = upstream.map_or("none", |s| upstream_text.format(s));
        let counter = metrics().requests.with_label_values(&[
            route,
            method,
            status_text.format(status),
            upstream_label,
        ]);
        counter.inc();
        let entry = Kept {
            route: route.into(),
            method,
            status,
            upstream,
            counter,
        };
        if kept.len() < KEPT {
            kept.push(entry);
        } else {
            kept[*next] = entry;
            *next = (*next + 1) % KEPT;
        }
    });
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
    fn requests_are_counted_in_their_own_series_past_the_kept_sets() {
        let series = |route: &str, status: &str, upstream: &str| {
            metrics()
                .requests
                .with_label_values(&[route, "GET", status, upstream])
                .get()
        };
        // More label sets than a thread keeps, twice over, in turns.
        for round in 0..3 {
            for i in 0..40u16 {
                let route = format!("/count-{i}/*");
                count_request(&route, "GET", 200 + i, (i % 2 == 0).then_some(200));
                let upstream = if i % 2 == 0 { "200" } else { "none" };
                assert_eq!(series(&route, &(200 + i).to_string(), upstream), round + 1);
            }
        }
        count_request("/count-0/*", "POST", 200, Some(200));
        assert_eq!(series("/count-0/*", "200", "200"), 3);
    }

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

//! Spans over OTLP (`[tracing]`): one server span per sampled request,
//! handed by the proxy thread to a bounded queue (never waiting: a full
//! queue drops the span and counts it), and exported in batches by one
//! thread of its own through `opentelemetry-otlp`'s HTTP/protobuf exporter.
//! Its transport is the blocking `ureq` client the JWKS fetches already
//! use, so no async runtime runs beside Pingora's and none on the proxy
//! threads. A collector that is down or hung costs dropped spans (counted,
//! one WARN per failure streak), never a request's time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use opentelemetry_sdk::Resource;

use crate::config::TracingConfig;
use crate::observe::metrics::metrics;
use crate::wire::trace::TraceContext;

/// Spans waiting for the exporter thread; more are dropped.
pub const QUEUE_CAPACITY: usize = 4096;
/// Spans in one export request.
const MAX_BATCH: usize = 512;
/// A span waits at most this long for its batch to fill.
const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// One export request's deadline (a hung collector costs this, on the
/// exporter thread only).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer read from the collector.
const MAX_ANSWER_BYTES: u64 = 64 * 1024;

/// What one request leaves for its span, taken on the proxy thread (only
/// for a sampled request) and turned into OpenTelemetry's form on the
/// exporter thread.
#[derive(Debug)]
pub struct SpanRecord {
    pub trace: TraceContext,
    pub start: SystemTime,
    pub end: SystemTime,
    /// The route pattern (`unmatched` for none): the span's name.
    pub route: Option<String>,
    pub method: http::Method,
    /// The normalized path the upstream received.
    pub path: String,
    pub protocol: http::Version,
    pub status: u16,
    pub server_address: Option<String>,
    pub client_address: Option<IpAddr>,
    pub upstream_peer: Option<String>,
    pub tries: u32,
    /// The envelope's code of a gateway-written error.
    pub error_code: Option<&'static str>,
    /// Only with `record_user_id = true`.
    pub user_id: Option<String>,
}

/// The export of one `[tracing]` section: its sampling and the queue to its
/// thread. Kept across SIGHUP while the section is unchanged.
pub struct SpanExport {
    pub config: TracingConfig,
    /// Fresh traces whose id's low 64 bits fall below this are sampled
    /// (`sample_ratio` of them).
    threshold: u64,
    queue: SyncSender<SpanRecord>,
}

impl std::fmt::Debug for SpanExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanExport")
            .field("endpoint", &self.config.otlp_endpoint)
            .finish()
    }
}

impl SpanExport {
    /// Starts the exporter thread for `config`, with the collector headers
    /// read from `headers_env`.
    pub fn start(config: &TracingConfig, headers: HashMap<String, String>) -> Result<Self, String> {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .timeout_global(Some(EXPORT_TIMEOUT))
                .max_redirects(0)
                .proxy(None)
                .http_status_as_error(false)
                .build(),
        );
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(config.otlp_endpoint.clone())
            .with_protocol(Protocol::HttpBinary)
            .with_timeout(EXPORT_TIMEOUT)
            .with_http_client(UreqClient(agent))
            .with_headers(headers)
            .build()
            .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
        exporter.set_resource(
            &Resource::builder_empty()
                .with_service_name(config.service_name.clone())
                .build(),
        );
        let (queue, spans) = sync_channel(QUEUE_CAPACITY);
        let endpoint = config.otlp_endpoint.clone();
        let record_user_id = config.record_user_id;
        std::thread::Builder::new()
            .name("span export".into())
            .spawn(move || export_loop(&exporter, &spans, &endpoint, record_user_id))
            .map_err(|e| format!("cannot start the span exporter: {e}"))?;
        Ok(Self {
            config: config.clone(),
            threshold: (config.sample_ratio.clamp(0.0, 1.0) * u64::MAX as f64) as u64,
            queue,
        })
    }

    /// Whether a fresh trace with this id is recorded (`sample_ratio`).
    pub fn samples(&self, trace_id: &[u8; 16]) -> bool {
        let mut low = [0u8; 8];
        low.copy_from_slice(&trace_id[8..]);
        self.threshold == u64::MAX || u64::from_le_bytes(low) < self.threshold
    }

    /// Hands a finished span to the exporter thread; a full queue drops it
    /// (counted): the request does not wait.
    pub fn record(&self, span: SpanRecord) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.queue.try_send(span)
        {
            metrics().trace_spans_dropped.inc();
        }
    }
}

/// `key=value,...` (the form of `OTEL_EXPORTER_OTLP_HEADERS`), as read from
/// the variable `headers_env` names.
pub fn parse_headers(text: &str) -> Result<HashMap<String, String>, String> {
    text.split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            let (key, value) = pair
                .split_once('=')
                .ok_or("is not key=value,... (a pair has no '=')")?;
            let key = key.trim();
            http::HeaderName::from_bytes(key.as_bytes())
                .map_err(|_| format!("'{key}' is not a header name"))?;
            http::HeaderValue::from_str(value.trim())
                .map_err(|_| format!("the value of '{key}' is not a header value"))?;
            Ok((key.to_owned(), value.trim().to_owned()))
        })
        .collect()
}

/// Batches spans and exports them until every sender is gone.
fn export_loop(
    exporter: &opentelemetry_otlp::SpanExporter,
    spans: &Receiver<SpanRecord>,
    endpoint: &str,
    record_user_id: bool,
) {
    let scope = InstrumentationScope::builder("robeing-gateway")
        .with_version(crate::VERSION)
        .build();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut failing = false;
    loop {
        let deadline = Instant::now() + FLUSH_EVERY;
        let mut closed = false;
        while batch.len() < MAX_BATCH {
            let wait = deadline.saturating_duration_since(Instant::now());
            match spans.recv_timeout(wait) {
                Ok(span) => batch.push(span_data(span, &scope, record_user_id)),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        if !batch.is_empty() {
            let count = batch.len() as u64;
            let sent = futures::executor::block_on(exporter.export(std::mem::take(&mut batch)));
            batch = Vec::with_capacity(MAX_BATCH);
            match sent {
                Ok(()) if failing => {
                    failing = false;
                    log::info!("spans reach {endpoint} again");
                }
                Ok(()) => {}
                Err(e) => {
                    metrics().trace_spans_dropped.inc_by(count);
                    if !failing {
                        failing = true;
                        log::warn!(
                            "cannot export spans to {endpoint}: {e}; dropping them (counted in \
                             gateway_trace_spans_dropped_total) until it answers again"
                        );
                    }
                }
            }
        }
        if closed {
            return;
        }
    }
}

/// OpenTelemetry's span of one request, with the HTTP semantic
/// conventions' attributes.
fn span_data(span: SpanRecord, scope: &InstrumentationScope, record_user_id: bool) -> SpanData {
    let mut attributes = vec![
        KeyValue::new("http.request.method", span.method.as_str().to_owned()),
        KeyValue::new("url.path", span.path),
        KeyValue::new("http.response.status_code", i64::from(span.status)),
        KeyValue::new("network.protocol.version", protocol_version(span.protocol)),
        KeyValue::new("gateway.upstream.tries", i64::from(span.tries)),
    ];
    let mut optional = |key: &'static str, value: Option<String>| {
        if let Some(value) = value {
            attributes.push(KeyValue::new(key, value));
        }
    };
    optional("http.route", span.route.clone());
    optional("server.address", span.server_address);
    optional(
        "client.address",
        span.client_address.map(|ip| ip.to_string()),
    );
    optional("gateway.upstream.peer", span.upstream_peer);
    optional("gateway.error.code", span.error_code.map(str::to_owned));
    optional("enduser.id", span.user_id.filter(|_| record_user_id));
    let status = if span.status >= 500 {
        Status::error(format!("HTTP {}", span.status))
    } else {
        Status::Unset
    };
    let trace = span.trace;
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(trace.trace_id),
            SpanId::from_bytes(trace.span_id),
            TraceFlags::new(trace.flags),
            false,
            TraceState::default(),
        ),
        parent_span_id: trace.parent_id.map_or(SpanId::INVALID, SpanId::from_bytes),
        parent_span_is_remote: trace.parent_id.is_some(),
        span_kind: SpanKind::Server,
        name: span.route.unwrap_or_else(|| "unmatched".to_owned()).into(),
        start_time: span.start,
        end_time: span.end,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    }
}

fn protocol_version(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// The exporter's transport: ureq, blocking, on the exporter thread.
#[derive(Debug)]
struct UreqClient(ureq::Agent);

#[async_trait]
impl HttpClient for UreqClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let response = self.0.run(Request::from_parts(parts, body.to_vec()))?;
        let (parts, mut body) = response.into_parts();
        let answer = body.with_config().limit(MAX_ANSWER_BYTES).read_to_vec()?;
        Ok(Response::from_parts(parts, Bytes::from(answer)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_pairs_of_names_and_values() {
        let parsed = parse_headers("x-api-key=abc, x-team = core,").unwrap();
        assert_eq!(parsed["x-api-key"], "abc");
        assert_eq!(parsed["x-team"], "core");
        assert!(parse_headers("no-equals").is_err());
        assert!(parse_headers("bad name=1").is_err());
        assert!(parse_headers("").unwrap().is_empty());
    }

    #[test]
    fn the_ratio_samples_that_share_of_fresh_traces() {
        let config = |ratio: f64| TracingConfig {
            otlp_endpoint: "http://127.0.0.1:1/v1/traces".into(),
            sample_ratio: ratio,
            service_name: "t".into(),
            headers_env: None,
            record_user_id: false,
        };
        let share = |ratio: f64| {
            let export = SpanExport::start(&config(ratio), HashMap::new()).unwrap();
            (0..10_000)
                .filter(|_| export.samples(&crate::wire::trace::random_trace_id()))
                .count()
        };
        assert_eq!(share(1.0), 10_000);
        assert_eq!(share(0.0), 0);
        let tenth = share(0.1);
        assert!((800..1200).contains(&tenth), "{tenth}");
    }
}

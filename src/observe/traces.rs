//! Spans over OTLP (`[tracing]`): one server span per sampled request,
//! handed by the proxy thread to a bounded queue (never waiting: a full
//! queue drops the span and counts it), and exported in batches by one
//! thread of its own as OTLP/HTTP protobuf: `opentelemetry-proto`'s
//! messages, encoded by prost, posted with the blocking `ureq` client the
//! JWKS fetches already use, so no async runtime runs beside Pingora's and
//! none on the proxy threads. The exporter thread sleeps between batches
//! rather than waiting on the queue, so handing a span over never wakes it.
//! A collector that is down or hung costs dropped spans (counted, one WARN
//! per failure streak), never a request's time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, SystemTime};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message;

use crate::config::TracingConfig;
use crate::observe::metrics::metrics;
use crate::wire::trace::TraceContext;

/// Spans waiting for the exporter thread; more are dropped.
pub const QUEUE_CAPACITY: usize = 4096;
/// Spans in one export request.
const MAX_BATCH: usize = 512;
/// How often the exporter thread takes what the queue holds.
const FLUSH_EVERY: Duration = Duration::from_millis(200);
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
        let collector = Collector {
            agent,
            endpoint: config.otlp_endpoint.clone(),
            headers,
            resource: Resource {
                attributes: vec![text("service.name", config.service_name.clone())],
                ..Default::default()
            },
            record_user_id: config.record_user_id,
        };
        let (queue, spans) = sync_channel(QUEUE_CAPACITY);
        std::thread::Builder::new()
            .name("span export".into())
            .spawn(move || export_loop(&collector, &spans))
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

/// Where and how spans go: the collector's URL and headers, this
/// process's resource.
struct Collector {
    agent: ureq::Agent,
    endpoint: String,
    headers: HashMap<String, String>,
    resource: Resource,
    record_user_id: bool,
}

impl Collector {
    /// One export request: the batch as `ExportTraceServiceRequest`,
    /// protobuf, POSTed; any answer but 2xx is a failure.
    fn export(&self, spans: Vec<Span>) -> Result<(), String> {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "robeing-gateway".into(),
                        version: crate::VERSION.into(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let mut post = self
            .agent
            .post(&self.endpoint)
            .header("content-type", "application/x-protobuf");
        for (name, value) in &self.headers {
            post = post.header(name, value);
        }
        let mut answer = post
            .send(&request.encode_to_vec()[..])
            .map_err(|e| e.to_string())?;
        // Read (bounded) so the connection goes back to the agent's pool.
        let _ = answer
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_vec();
        match answer.status().as_u16() {
            200..=299 => Ok(()),
            status => Err(format!("the collector answered {status}")),
        }
    }
}

/// Takes what the queue holds every [`FLUSH_EVERY`] and exports it in
/// batches, until every sender is gone.
fn export_loop(collector: &Collector, spans: &Receiver<SpanRecord>) {
    let mut failing = false;
    loop {
        std::thread::sleep(FLUSH_EVERY);
        let mut closed = false;
        loop {
            // Sized at once: growing a vector of spans reallocates and
            // copies it over and over.
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while batch.len() < MAX_BATCH {
                match spans.try_recv() {
                    Ok(span) => batch.push(otlp_span(span, collector.record_user_id)),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            if batch.is_empty() {
                break;
            }
            let count = batch.len() as u64;
            match collector.export(batch) {
                Ok(()) if failing => {
                    failing = false;
                    log::info!("spans reach {} again", collector.endpoint);
                }
                Ok(()) => {}
                Err(e) => {
                    metrics().trace_spans_dropped.inc_by(count);
                    if !failing {
                        failing = true;
                        log::warn!(
                            "cannot export spans to {}: {e}; dropping them (counted in \
                             gateway_trace_spans_dropped_total) until it answers again",
                            collector.endpoint
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

/// The OTLP span of one request, with the HTTP semantic conventions'
/// attributes.
fn otlp_span(span: SpanRecord, record_user_id: bool) -> Span {
    let mut attributes = Vec::with_capacity(13);
    attributes.push(text("http.request.method", span.method.as_str().to_owned()));
    attributes.push(text("url.path", span.path));
    attributes.push(integer("http.response.status_code", i64::from(span.status)));
    attributes.push(text(
        "network.protocol.version",
        protocol_version(span.protocol).to_owned(),
    ));
    attributes.push(integer("gateway.upstream.tries", i64::from(span.tries)));
    let mut optional = |key: &str, value: Option<String>| {
        if let Some(value) = value {
            attributes.push(text(key, value));
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
    let status = (span.status >= 500).then(|| Status {
        message: format!("HTTP {}", span.status),
        code: status::StatusCode::Error as i32,
    });
    let trace = span.trace;
    // The low byte: the W3C flags; then "is the parent remote" and that
    // this span says so.
    let remote = if trace.parent_id.is_some() {
        0x300
    } else {
        0x100
    };
    Span {
        trace_id: trace.trace_id.to_vec(),
        span_id: trace.span_id.to_vec(),
        parent_span_id: trace.parent_id.map(|p| p.to_vec()).unwrap_or_default(),
        flags: u32::from(trace.flags) | remote,
        name: span.route.unwrap_or_else(|| "unmatched".to_owned()),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: unix_nanos(span.start),
        end_time_unix_nano: unix_nanos(span.end),
        attributes,
        status,
        ..Default::default()
    }
}

fn text(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value)),
        }),
        ..Default::default()
    }
}

fn integer(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
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

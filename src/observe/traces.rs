//! Spans over OTLP (`[tracing]`): one server span per sampled request,
//! handed by the proxy thread to a bounded queue (never waiting: a full
//! queue drops the span and counts it), and exported in batches by one
//! thread of its own as OTLP/HTTP protobuf: `opentelemetry-proto`'s
//! messages, encoded by prost span by span (see [`Batch`]), posted with the blocking `ureq` client the
//! JWKS fetches already use, so no async runtime runs beside Pingora's and
//! none on the proxy threads. The exporter thread sleeps between batches
//! (`export_interval_ms`) rather than waiting on the queue, so handing a
//! span over never wakes it; only the span that fills a batch does. A
//! collector that is down or hung costs dropped spans (counted, one WARN
//! per failure streak), never a request's time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::bytes::BufMut;
use prost::Message;

use crate::config::TracingConfig;
use crate::observe::metrics::metrics;
use crate::routing::table::Route;
use crate::upstream::peer::PeerState;
use crate::wire::trace::TraceContext;

/// Spans waiting for the exporter thread; more are dropped.
pub const QUEUE_CAPACITY: usize = 4096;
/// Spans in one export request.
const MAX_BATCH: usize = 512;
/// The deadline of each phase of an export request (a hung collector costs
/// this, on the exporter thread only).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer read from the collector.
const MAX_ANSWER_BYTES: u64 = 64 * 1024;

/// What one request leaves for its span, taken on the proxy thread (only
/// for a sampled request) and turned into OpenTelemetry's form on the
/// exporter thread. The route and the peer are shared, not copied.
pub struct SpanRecord {
    pub trace: TraceContext,
    pub start: SystemTime,
    pub end: SystemTime,
    /// The matched route: its pattern is the span's name (`unmatched` for
    /// none).
    pub route: Option<Arc<Route>>,
    pub method: http::Method,
    /// The normalized path the upstream received.
    pub path: String,
    pub protocol: http::Version,
    pub status: u16,
    /// `Host` (HTTP/2: `:authority`), whose name without the port is
    /// `server.address`.
    pub host: Option<String>,
    pub client_address: Option<IpAddr>,
    pub upstream_peer: Option<Arc<PeerState>>,
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
    progress: Arc<Progress>,
    exporter: std::thread::Thread,
}

/// What the proxy threads and the exporter thread share besides the queue.
#[derive(Default)]
struct Progress {
    /// Spans queued or being exported: a full batch wakes the exporter,
    /// and none left means a flush is done.
    waiting: AtomicUsize,
    /// The export is going away (a new `[tracing]` section, or the process
    /// exits): the exporter sends what is queued and stops.
    closing: AtomicBool,
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
                // Each phase bounded, not the whole call: a global deadline
                // makes ureq resolve the endpoint's name on a new thread for
                // every export, even an IP address. A name is resolved by the
                // system, within its resolver's own timeouts.
                .timeout_connect(Some(EXPORT_TIMEOUT))
                .timeout_send_request(Some(EXPORT_TIMEOUT))
                .timeout_send_body(Some(EXPORT_TIMEOUT))
                .timeout_recv_response(Some(EXPORT_TIMEOUT))
                .timeout_recv_body(Some(EXPORT_TIMEOUT))
                .max_redirects(0)
                .proxy(None)
                .tls_config(crate::tls::crypto::ureq_tls())
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
        let progress = Arc::new(Progress::default());
        let interval = Duration::from_millis(config.export_interval_ms);
        let exporter = {
            let progress = progress.clone();
            std::thread::Builder::new()
                .name("span export".into())
                .spawn(move || export_loop(&collector, &spans, &progress, interval))
                .map_err(|e| format!("cannot start the span exporter: {e}"))?
                .thread()
                .clone()
        };
        Ok(Self {
            config: config.clone(),
            threshold: (config.sample_ratio.clamp(0.0, 1.0) * u64::MAX as f64) as u64,
            queue,
            progress,
            exporter,
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
        // Counted before it is sent, so the exporter never takes more
        // than was counted.
        let waiting = self.progress.waiting.fetch_add(1, Ordering::Relaxed) + 1;
        match self.queue.try_send(span) {
            Ok(()) if waiting == MAX_BATCH => self.exporter.unpark(),
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.progress.waiting.fetch_sub(1, Ordering::Relaxed);
                metrics().trace_spans_dropped.inc();
            }
        }
    }

    /// Sends what is queued now and waits for it, at most `limit` (the
    /// process is about to exit).
    pub fn flush(&self, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        self.exporter.unpark();
        while self.progress.waiting.load(Ordering::Relaxed) > 0
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A replaced `[tracing]` section's exporter sends what its queue holds
/// and stops, without waiting for its next turn.
impl Drop for SpanExport {
    fn drop(&mut self) {
        self.progress.closing.store(true, Ordering::Relaxed);
        self.exporter.unpark();
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
    /// One export request: the batch's spans as `ExportTraceServiceRequest`,
    /// protobuf, POSTed; any answer but 2xx is a failure.
    fn export(&self, body: &[u8]) -> Result<(), String> {
        let mut post = self
            .agent
            .post(&self.endpoint)
            .header("content-type", "application/x-protobuf");
        for (name, value) in &self.headers {
            post = post.header(name, value);
        }
        let mut answer = post.send(body).map_err(|e| e.to_string())?;
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

/// One export request in the making. Each span is encoded by prost as it
/// is taken from the queue, straight into the request's buffer, and the
/// request is framed around them when sent: the same bytes as prost's
/// encoding of the whole `ExportTraceServiceRequest` (a test checks),
/// without its cost. Encoding the whole message computes every nested
/// length once per level above it (four times for a span, six for an
/// attribute's value), which cost more than the rest of the span's export
/// together. The framing goes into room left before the spans, so they are
/// never copied; the span written over for each record keeps its strings'
/// and attributes' room, so a batch in steady state allocates nothing.
struct Batch {
    /// The `ResourceSpans.resource` and `ScopeSpans.scope` fields, encoded
    /// once.
    resource_field: Vec<u8>,
    scope_field: Vec<u8>,
    /// The span every record is written into before it is encoded.
    span: Span,
    /// `room` bytes for the framing, then the batch's spans, each a
    /// `ScopeSpans.spans` field.
    buf: Vec<u8>,
    room: usize,
    count: usize,
}

/// A protobuf field's key: its number and the length-delimited wire type.
const fn length_delimited_key(field: u8) -> u8 {
    field << 3 | 2
}
/// `ExportTraceServiceRequest.resource_spans`, `ResourceSpans.scope_spans`,
/// `ScopeSpans.spans`: the fields that frame a batch.
const RESOURCE_SPANS_KEY: u8 = length_delimited_key(1);
const SCOPE_SPANS_KEY: u8 = length_delimited_key(2);
const SPANS_KEY: u8 = length_delimited_key(2);
/// The longest length prefix (a 64-bit varint).
const MAX_LENGTH_PREFIX: usize = 10;

impl Batch {
    fn new(resource: Resource) -> Self {
        let scope = InstrumentationScope {
            name: "robeing-gateway".into(),
            version: crate::VERSION.into(),
            ..Default::default()
        };
        // A message with its repeated field empty encodes only the other
        // fields: exactly the field that precedes the spans.
        let resource_field = ResourceSpans {
            resource: Some(resource),
            ..Default::default()
        }
        .encode_to_vec();
        let scope_field = ScopeSpans {
            scope: Some(scope),
            ..Default::default()
        }
        .encode_to_vec();
        let room = 2 * (1 + MAX_LENGTH_PREFIX) + resource_field.len() + scope_field.len();
        Self {
            resource_field,
            scope_field,
            span: Span::default(),
            buf: vec![0; room],
            room,
            count: 0,
        }
    }

    fn len(&self) -> usize {
        self.count
    }

    fn clear(&mut self) {
        self.buf.truncate(self.room);
        self.count = 0;
    }

    fn push(&mut self, record: SpanRecord, record_user_id: bool) {
        fill_span(&mut self.span, record, record_user_id);
        self.buf.push(SPANS_KEY);
        // Encoding into a Vec cannot run out of room.
        self.span.encode_length_delimited(&mut self.buf).ok();
        self.count += 1;
    }

    /// The request's protobuf bytes: the framing written into the room
    /// just before the spans.
    fn encode(&mut self) -> &[u8] {
        let spans_len = self.buf.len() - self.room;
        let scope_spans_len = self.scope_field.len() + spans_len;
        let resource_spans_len = self.resource_field.len()
            + 1
            + prost::length_delimiter_len(scope_spans_len)
            + scope_spans_len;
        let framing_len = 1 + prost::length_delimiter_len(resource_spans_len) + resource_spans_len
            - scope_spans_len
            + self.scope_field.len();
        let start = self.room - framing_len;
        let mut framing = &mut self.buf[start..self.room];
        framing.put_u8(RESOURCE_SPANS_KEY);
        prost::encode_length_delimiter(resource_spans_len, &mut framing).ok();
        framing.put_slice(&self.resource_field);
        framing.put_u8(SCOPE_SPANS_KEY);
        prost::encode_length_delimiter(scope_spans_len, &mut framing).ok();
        framing.put_slice(&self.scope_field);
        &self.buf[start..]
    }
}

/// Takes what the queue holds every `interval`, or as soon as a batch is
/// full, and exports it in batches (a closed export: everything), until the
/// export is closed.
fn export_loop(
    collector: &Collector,
    spans: &Receiver<SpanRecord>,
    progress: &Progress,
    interval: Duration,
) {
    let mut failing = false;
    let mut batch = Batch::new(collector.resource.clone());
    loop {
        std::thread::park_timeout(interval);
        let mut closed = progress.closing.load(Ordering::Relaxed);
        loop {
            batch.clear();
            while batch.len() < MAX_BATCH {
                match spans.try_recv() {
                    Ok(span) => batch.push(span, collector.record_user_id),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            let count = batch.len() as u64;
            if count == 0 {
                break;
            }
            let exported = collector.export(batch.encode());
            let left = progress.waiting.fetch_sub(batch.len(), Ordering::Relaxed) - batch.len();
            match exported {
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
            // Under load, go on while a full batch waits; a part batch
            // waits for its turn (sending every part batch as it comes would
            // send one request per few spans, the queue never full).
            if !closed && left < MAX_BATCH {
                break;
            }
        }
        if closed {
            return;
        }
    }
}

/// Writes one request's span over `span` (a reused one), with the HTTP
/// semantic conventions' attributes. Integer attributes come first and
/// in a fixed order, so every slot keeps the kind of value it held.
fn fill_span(span: &mut Span, record: SpanRecord, record_user_id: bool) {
    let trace = record.trace;
    set_bytes(&mut span.trace_id, &trace.trace_id);
    set_bytes(&mut span.span_id, &trace.span_id);
    match trace.parent_id {
        Some(parent) => set_bytes(&mut span.parent_span_id, &parent),
        None => span.parent_span_id.clear(),
    }
    // The low byte: the W3C flags; then "is the parent remote" and that
    // this span says so.
    let remote = if trace.parent_id.is_some() {
        0x300
    } else {
        0x100
    };
    span.flags = u32::from(trace.flags) | remote;
    set_text(
        &mut span.name,
        record
            .route
            .as_ref()
            .map_or("unmatched", |r| r.pattern.as_str()),
    );
    span.kind = span::SpanKind::Server as i32;
    span.start_time_unix_nano = unix_nanos(record.start);
    span.end_time_unix_nano = unix_nanos(record.end);
    span.status = (record.status >= 500).then(|| Status {
        message: format!("HTTP {}", record.status),
        code: status::StatusCode::Error as i32,
    });
    let mut slots = Slots {
        attributes: &mut span.attributes,
        used: 0,
    };
    slots.integer("http.response.status_code", i64::from(record.status));
    slots.integer("gateway.upstream.tries", i64::from(record.tries));
    slots.text("http.request.method", record.method.as_str());
    slots.text("url.path", &record.path);
    slots.text(
        "network.protocol.version",
        protocol_version(record.protocol),
    );
    if let Some(route) = &record.route {
        slots.text("http.route", &route.pattern);
    }
    if let Some(host) = &record.host {
        slots.text("server.address", server_address(host));
    }
    if let Some(ip) = record.client_address {
        let ip = crate::text::IpText::new(ip);
        slots.text(
            "client.address",
            std::str::from_utf8(ip.as_bytes()).unwrap_or_default(),
        );
    }
    if let Some(peer) = &record.upstream_peer {
        slots.text("gateway.upstream.peer", &peer.label);
    }
    if let Some(code) = record.error_code {
        slots.text("gateway.error.code", code);
    }
    if let Some(user) = record.user_id.as_deref().filter(|_| record_user_id) {
        slots.text("enduser.id", user);
    }
    let used = slots.used;
    span.attributes.truncate(used);
}

/// A span's attribute list, written slot by slot over what it held.
struct Slots<'a> {
    attributes: &'a mut Vec<KeyValue>,
    used: usize,
}

impl Slots<'_> {
    fn next(&mut self, key: &str) -> &mut Option<AnyValue> {
        if self.attributes.len() == self.used {
            self.attributes.push(KeyValue::default());
        }
        let slot = &mut self.attributes[self.used];
        self.used += 1;
        set_text(&mut slot.key, key);
        &mut slot.value
    }

    fn text(&mut self, key: &str, value: &str) {
        match self.next(key) {
            Some(AnyValue {
                value: Some(any_value::Value::StringValue(text)),
            }) => set_text(text, value),
            other => {
                *other = Some(AnyValue {
                    value: Some(any_value::Value::StringValue(value.to_owned())),
                })
            }
        }
    }

    fn integer(&mut self, key: &str, value: i64) {
        *self.next(key) = Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        });
    }
}

fn set_text(text: &mut String, value: &str) {
    text.clear();
    text.push_str(value);
}

fn set_bytes(bytes: &mut Vec<u8>, value: &[u8]) {
    bytes.clear();
    bytes.extend_from_slice(value);
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

/// `server.address`: the `Host` without its port (and an IPv6 address
/// without its brackets).
fn server_address(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            name.trim_start_matches('[').trim_end_matches(']')
        }
        _ => host,
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
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

    fn record(trace: TraceContext, n: u8, route: Option<&str>, status: u16) -> SpanRecord {
        SpanRecord {
            trace,
            start: SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(n)),
            end: SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(n) + 1),
            route: route.map(|r| Arc::new(crate::routing::table::test_route(r))),
            method: http::Method::GET,
            path: format!("/api/x/{n}"),
            protocol: http::Version::HTTP_11,
            status,
            host: Some("localhost:8080".into()),
            client_address: Some(IpAddr::from([127, 0, 0, n])),
            upstream_peer: (status < 500)
                .then(|| Arc::new(PeerState::new("127.0.0.1:9".parse().unwrap(), None))),
            tries: 1,
            error_code: (status >= 500).then_some("UPSTREAM_UNAVAILABLE"),
            user_id: Some("u".into()),
        }
    }

    /// The framed batch is byte for byte prost's encoding of the whole
    /// request, over reused spans whose attributes change in number and kind.
    #[test]
    fn a_framed_batch_is_the_whole_requests_encoding() {
        let resource = Resource {
            attributes: vec![text("service.name", "gw".into())],
            ..Default::default()
        };
        let mut batch = Batch::new(resource.clone());
        for round in 0..2 {
            batch.clear();
            let mut expected = Vec::new();
            for n in 0..(3 + round) {
                let (route, status) = match n % 3 {
                    0 => (Some("/api/x/*"), 200),
                    1 => (None, 502),
                    _ => (Some("/a"), 404),
                };
                let trace = TraceContext::of_request(&http::HeaderMap::new(), |_| true);
                let mut span = Span::default();
                fill_span(&mut span, record(trace, n, route, status), n % 2 == 0);
                expected.push(span);
                batch.push(record(trace, n, route, status), n % 2 == 0);
            }
            let whole = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(resource.clone()),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "robeing-gateway".into(),
                            version: crate::VERSION.into(),
                            ..Default::default()
                        }),
                        spans: expected,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            };
            assert_eq!(batch.len(), 3 + usize::from(round));
            assert_eq!(batch.encode(), whole.encode_to_vec().as_slice());
            let decoded = ExportTraceServiceRequest::decode(batch.encode()).unwrap();
            assert_eq!(decoded, whole);
        }
    }

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
            export_interval_ms: 5000,
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

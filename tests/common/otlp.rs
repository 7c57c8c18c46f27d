//! A real OTLP/HTTP trace receiver on a free loopback port: it decodes
//! every export request with `opentelemetry-proto` (protobuf), keeps the
//! spans, and answers 200, or, told to hang, accepts and never answers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
pub use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// One received span with its resource's `service.name`.
#[derive(Debug, Clone)]
pub struct Received {
    pub service: String,
    pub span: Span,
}

impl Received {
    /// The attribute `key` as text (strings, integers), if present.
    pub fn attr(&self, key: &str) -> Option<String> {
        self.span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .map(|v| match v {
                Value::StringValue(s) => s.clone(),
                Value::IntValue(i) => i.to_string(),
                Value::BoolValue(b) => b.to_string(),
                Value::DoubleValue(d) => d.to_string(),
                other => format!("{other:?}"),
            })
    }

    pub fn trace_id_hex(&self) -> String {
        hex(&self.span.trace_id)
    }

    pub fn span_id_hex(&self) -> String {
        hex(&self.span.span_id)
    }

    pub fn parent_id_hex(&self) -> String {
        hex(&self.span.parent_span_id)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub struct Collector {
    pub port: u16,
    spans: Arc<Mutex<Vec<Received>>>,
    hang: Arc<AtomicBool>,
    /// Export requests received (answered or not).
    requests: Arc<Mutex<usize>>,
}

impl Collector {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("collector bind");
        let port = listener.local_addr().expect("collector addr").port();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let hang = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(0));
        let (s, h, r) = (spans.clone(), hang.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (s, h, r) = (s.clone(), h.clone(), r.clone());
                std::thread::spawn(move || serve(stream, &s, &h, &r));
            }
        });
        Self {
            port,
            spans,
            hang,
            requests,
        }
    }

    /// The traces URL the gateway exports to.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/traces", self.port)
    }

    /// From now on: accept, read nothing, never answer.
    pub fn hang(&self) {
        self.hang.store(true, Ordering::SeqCst);
    }

    pub fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }

    pub fn requests(&self) -> usize {
        *self.requests.lock().unwrap()
    }

    /// Waits until at least `n` spans arrived (or `limit` passed).
    pub fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        let deadline = Instant::now() + limit;
        loop {
            let spans = self.spans();
            if spans.len() >= n || Instant::now() > deadline {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One connection: requests one after another (the exporter keeps its
/// connection), each decoded and answered 200.
fn serve(
    stream: TcpStream,
    spans: &Mutex<Vec<Received>>,
    hang: &AtomicBool,
    requests: &Mutex<usize>,
) {
    let mut reader = BufReader::new(stream);
    loop {
        if hang.load(Ordering::SeqCst) {
            *requests.lock().unwrap() += 1;
            // Held open, never answered.
            std::thread::sleep(Duration::from_secs(3600));
            return;
        }
        let mut length = None;
        let mut content_type = String::new();
        let mut first = String::new();
        if reader.read_line(&mut first).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse::<usize>().ok(),
                    "content-type" => content_type = value.trim().to_owned(),
                    _ => {}
                }
            }
        }
        *requests.lock().unwrap() += 1;
        let mut body = vec![0u8; length.unwrap_or(0)];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        assert!(first.starts_with("POST /v1/traces "), "{first}");
        assert_eq!(content_type, "application/x-protobuf");
        let request = ExportTraceServiceRequest::decode(body.as_slice()).expect("OTLP protobuf");
        let mut found = Vec::new();
        for resource_spans in request.resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    found.push(Received {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
        spans.lock().unwrap().extend(found);
        let answer =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if reader.get_mut().write_all(answer).is_err() {
            return;
        }
    }
}

//! The access log: one line per request, written off the proxy threads.
//!
//! The proxy thread only moves an [`AccessEntry`] (cheap clones) into a
//! bounded channel; a writer thread drains it every 50 ms, formats and
//! writes the lines, then flushes. When the channel is full the line is dropped
//! and counted (`gateway_access_log_dropped_total`): logging never blocks a
//! request. Lines carry no token, no query string and no secret; strings are
//! JSON-escaped, so control characters cannot forge lines.

use std::borrow::Cow;
use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::HeaderValue;
use serde::Serialize;

use crate::config::{ConfigError, LogConfig, LogFormat};
use crate::observe::metrics::metrics;
use crate::routing::table::Route;

/// What one request leaves in the log.
pub struct AccessEntry {
    pub timestamp: SystemTime,
    pub request_id: HeaderValue,
    pub method: http::Method,
    pub path: String,
    pub username: Option<HeaderValue>,
    pub user_id: Option<HeaderValue>,
    pub route: Option<Arc<Route>>,
    pub upstream_status: Option<u16>,
    pub status_code: u16,
    pub response_time: Duration,
}

type Sink = Box<dyn Write + Send>;

/// The sending side, shared by the proxy threads.
pub struct AccessLog {
    sender: Option<SyncSender<AccessEntry>>,
    /// Taken by the writer thread when the server starts (after any fork).
    writer: Mutex<Option<(Receiver<AccessEntry>, Sink, LogFormat)>>,
}

fn open_file(path: &str) -> Result<std::fs::File, ConfigError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| ConfigError::invalid("log.destination", format!("cannot open {path}: {e}")))
}

impl AccessLog {
    /// Opens the destination now, so a bad path fails at start-up.
    /// Whether the destination can be opened (a file is created if
    /// missing), without starting anything: the check of `-t` and `reload`.
    pub fn check(config: &LogConfig) -> Result<(), ConfigError> {
        match config.destination.as_str() {
            "off" | "stdout" | "stderr" => Ok(()),
            path => open_file(path).map(drop),
        }
    }

    pub fn new(config: &LogConfig) -> Result<Self, ConfigError> {
        let sink: Sink = match config.destination.as_str() {
            "off" => {
                return Ok(Self {
                    sender: None,
                    writer: Mutex::new(None),
                })
            }
            "stdout" => Box::new(std::io::stdout()),
            "stderr" => Box::new(std::io::stderr()),
            path => Box::new(open_file(path)?),
        };
        let (sender, receiver) = sync_channel(config.queue_capacity);
        Ok(Self {
            sender: Some(sender),
            writer: Mutex::new(Some((receiver, sink, config.format))),
        })
    }

    /// Whether lines are written at all (`destination = "off"`: no).
    pub fn is_enabled(&self) -> bool {
        self.sender.is_some()
    }

    /// Hands a line to the writer; drops and counts it if the queue is full.
    pub fn record(&self, entry: AccessEntry) {
        let Some(sender) = &self.sender else {
            return;
        };
        match sender.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                metrics().access_log_dropped.inc();
            }
        }
    }

    /// Starts the writer thread (once).
    pub fn start_writer(&self) {
        let taken = self.writer.lock().ok().and_then(|mut w| w.take());
        let Some((receiver, sink, format)) = taken else {
            return;
        };
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(receiver, sink, format))
            .map(|_| ())
            .unwrap_or_else(|e| log::error!("cannot start the access-log writer: {e}"));
    }
}

/// How often the writer drains the queue. It polls rather than blocking on
/// `recv`, so that a request never pays for waking it up (a context switch
/// per line when proxy and writer share a core).
const DRAIN_INTERVAL: Duration = Duration::from_millis(50);

fn write_lines(receiver: Receiver<AccessEntry>, sink: Sink, format: LogFormat) {
    let mut out = BufWriter::with_capacity(64 * 1024, sink);
    loop {
        std::thread::sleep(DRAIN_INTERVAL);
        loop {
            match receiver.try_recv() {
                Ok(entry) => {
                    let _ = write_line(&mut out, &entry, format);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            }
        }
        let _ = out.flush();
    }
}

#[derive(Serialize)]
struct Line<'a> {
    timestamp: String,
    level: &'static str,
    service: &'static str,
    request_id: Cow<'a, str>,
    method: &'a str,
    path: &'a str,
    username: Option<Cow<'a, str>>,
    user_id: Option<Cow<'a, str>>,
    backend_service: Option<&'a str>,
    route: Option<&'a str>,
    upstream_status: Option<u16>,
    response_time_ms: f64,
    status_code: u16,
}

fn text(value: &HeaderValue) -> Cow<'_, str> {
    String::from_utf8_lossy(value.as_bytes())
}

impl<'a> Line<'a> {
    fn of(e: &'a AccessEntry) -> Self {
        Line {
            timestamp: humantime::format_rfc3339_millis(e.timestamp).to_string(),
            level: if e.status_code >= 500 || e.status_code == 0 {
                "WARN"
            } else {
                "INFO"
            },
            service: "gateway",
            request_id: text(&e.request_id),
            method: e.method.as_str(),
            path: &e.path,
            username: e.username.as_ref().map(text),
            user_id: e.user_id.as_ref().map(text),
            backend_service: e.route.as_ref().map(|r| r.service.as_str()),
            route: e.route.as_ref().map(|r| r.pattern.as_str()),
            upstream_status: e.upstream_status,
            response_time_ms: (e.response_time.as_secs_f64() * 1_000_000.0).round() / 1000.0,
            status_code: e.status_code,
        }
    }
}

/// Writes one line of `entry` in `format`.
pub fn write_line(
    out: &mut impl Write,
    entry: &AccessEntry,
    format: LogFormat,
) -> std::io::Result<()> {
    let line = Line::of(entry);
    match format {
        LogFormat::Json => {
            serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::other)?
        }
        LogFormat::Text => {
            // key=value pairs; values JSON-encoded, so quotes and control
            // characters are escaped.
            let value = serde_json::to_value(&line).map_err(std::io::Error::other)?;
            let mut first = true;
            if let Some(fields) = value.as_object() {
                for (k, v) in fields {
                    if !first {
                        out.write_all(b" ")?;
                    }
                    first = false;
                    write!(out, "{k}={v}")?;
                }
            }
        }
    }
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> AccessEntry {
        AccessEntry {
            timestamp: SystemTime::UNIX_EPOCH + Duration::from_millis(1_755_772_200_123),
            request_id: HeaderValue::from_static("req_1"),
            method: http::Method::POST,
            path: "/api/robeing/chat".into(),
            username: Some(HeaderValue::from_static("o\"neil")),
            user_id: Some(HeaderValue::from_static(
                "6f1c1d0e-4a7b-4c43-9a0e-2b8f1c9d7e01",
            )),
            route: None,
            upstream_status: Some(200),
            status_code: 200,
            response_time: Duration::from_micros(1500),
        }
    }

    #[test]
    fn json_line_has_the_design_fields() {
        let mut out = Vec::new();
        write_line(&mut out, &entry(), LogFormat::Json).unwrap();
        assert!(out.ends_with(b"\n"));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["timestamp"], "2025-08-21T10:30:00.123Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["service"], "gateway");
        assert_eq!(v["username"], "o\"neil");
        assert_eq!(v["response_time_ms"], 1.5);
        assert_eq!(v["backend_service"], serde_json::Value::Null);
        for key in [
            "request_id",
            "method",
            "path",
            "user_id",
            "upstream_status",
            "status_code",
        ] {
            assert!(!v[key].is_null(), "{key}");
        }
    }

    #[test]
    fn text_line_escapes_values() {
        let mut out = Vec::new();
        write_line(&mut out, &entry(), LogFormat::Text).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert!(line.contains("username=\"o\\\"neil\""), "{line}");
        assert_eq!(line.matches('\n').count(), 1);
    }
}

//! The access log: one line per request, written off the proxy threads.
//!
//! The proxy thread only moves an [`AccessEntry`] (cheap clones) into a
//! bounded channel; a writer thread drains it every 50 ms, formats and
//! writes the lines, then flushes. When the channel is full the line is dropped
//! and counted (`gateway_access_log_dropped_total`): logging never blocks a
//! request. Lines carry no token, no query string and no secret; strings are
//! JSON-escaped, so control characters cannot forge lines.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::HeaderValue;

use crate::config::{ConfigError, LogConfig, LogFormat};
use crate::observe::metrics::metrics;
use crate::routing::table::Route;
use crate::upstream::peer::PeerState;

/// What one request leaves in the log.
pub struct AccessEntry {
    pub timestamp: SystemTime,
    pub request_id: HeaderValue,
    pub method: http::Method,
    pub path: String,
    /// The client's HTTP version (HTTP/2 streams log one line each).
    pub protocol: http::Version,
    pub username: Option<HeaderValue>,
    pub user_id: Option<HeaderValue>,
    pub route: Option<Arc<Route>>,
    pub upstream_status: Option<u16>,
    /// The peer of the last try, and how many tries there were.
    pub upstream_peer: Option<Arc<PeerState>>,
    pub tries: u32,
    pub status_code: u16,
    pub response_time: Duration,
}

type Sink = Box<dyn Write + Send>;

/// The sending side, shared by the proxy threads.
pub struct AccessLog {
    sender: Option<SyncSender<AccessEntry>>,
    /// Taken by the writer thread when the server starts (after any fork).
    writer: Mutex<Option<(Receiver<AccessEntry>, Sink, LogFormat)>>,
    /// A file destination, opened anew when [`Self::reopen`] asks (SIGUSR1:
    /// logrotate renamed it); shared with the writer thread.
    reopen: Arc<Reopen>,
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
                    reopen: Arc::new(Reopen::new(None)),
                })
            }
            "stdout" => Box::new(std::io::stdout()),
            "stderr" => Box::new(std::io::stderr()),
            path => Box::new(open_file(path)?),
        };
        let (sender, receiver) = sync_channel(config.queue_capacity);
        let file = match config.destination.as_str() {
            "stdout" | "stderr" => None,
            path => Some(path.to_owned()),
        };
        Ok(Self {
            sender: Some(sender),
            writer: Mutex::new(Some((receiver, sink, config.format))),
            reopen: Arc::new(Reopen::new(file)),
        })
    }

    /// SIGUSR1: a file destination is opened anew by its path at the
    /// writer's next drain (within 50 ms). Lines written before stay in
    /// the file that was renamed; nothing queued is lost.
    pub fn reopen(&self) {
        if self.reopen.file.is_some() {
            self.reopen.requested.store(true, Ordering::Relaxed);
        }
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
        let reopen = self.reopen.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(receiver, sink, format, reopen))
            .map(|_| ())
            .unwrap_or_else(|e| log::error!("cannot start the access-log writer: {e}"));
    }
}

/// How often the writer drains the queue. It polls rather than blocking on
/// `recv`, so that a request never pays for waking it up (a context switch
/// per line when proxy and writer share a core).
const DRAIN_INTERVAL: Duration = Duration::from_millis(50);

/// Lines are formatted straight into this buffer, written out when it is
/// full and at the end of every drain.
const BATCH_BYTES: usize = 64 * 1024;

/// The writer's side of [`AccessLog::reopen`].
struct Reopen {
    file: Option<String>,
    requested: AtomicBool,
}

impl Reopen {
    fn new(file: Option<String>) -> Self {
        Self {
            file,
            requested: AtomicBool::new(false),
        }
    }

    /// The file opened anew, when asked; on failure the old one is kept
    /// (lines go on to the renamed file) and the operator is told.
    fn take(&self) -> Option<Sink> {
        if !self.requested.swap(false, Ordering::Relaxed) {
            return None;
        }
        let path = self.file.as_deref()?;
        match open_file(path) {
            Ok(file) => Some(Box::new(file)),
            Err(e) => {
                log::error!(
                    "SIGUSR1: cannot reopen the access log, still writing to the old file: {e}"
                );
                None
            }
        }
    }
}

fn write_lines(
    receiver: Receiver<AccessEntry>,
    mut sink: Sink,
    format: LogFormat,
    reopen: Arc<Reopen>,
) {
    let mut batch = Vec::with_capacity(BATCH_BYTES + 1024);
    let mut lines = LineFormatter::new(format);
    let write_out = |sink: &mut Sink, batch: &mut Vec<u8>| {
        let _ = sink.write_all(batch).and_then(|()| sink.flush());
        batch.clear();
    };
    loop {
        std::thread::sleep(DRAIN_INTERVAL);
        if let Some(reopened) = reopen.take() {
            sink = reopened;
        }
        loop {
            match receiver.try_recv() {
                Ok(entry) => {
                    lines.append(&entry, &mut batch);
                    if batch.len() >= BATCH_BYTES {
                        write_out(&mut sink, &mut batch);
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    write_out(&mut sink, &mut batch);
                    return;
                }
            }
        }
        if !batch.is_empty() {
            write_out(&mut sink, &mut batch);
        }
    }
}

/// Formats access lines into one reused buffer.
///
/// Written by hand rather than through serde_json: the line has a fixed
/// set of fields, and the generic path (a `String` per timestamp, UTF-8
/// checks, float formatting, per-field escaping) was most of the log's
/// cost per request (README, "Instructions per request"). Strings are
/// escaped as JSON in both formats, so no value can forge a line.
pub struct LineFormatter {
    format: LogFormat,
    /// The Unix second of `second_prefix`.
    second: u64,
    /// `YYYY-MM-DDTHH:MM:SS.` of `second`: formatted once a second.
    second_prefix: String,
}

impl LineFormatter {
    pub fn new(format: LogFormat) -> Self {
        Self {
            format,
            second: u64::MAX,
            second_prefix: String::new(),
        }
    }

    /// The line of `entry`, newline included.
    pub fn format(&mut self, e: &AccessEntry) -> Vec<u8> {
        let mut line = Vec::new();
        self.append(e, &mut line);
        line
    }

    /// Appends the line of `entry` to `out`, newline included.
    pub fn append(&mut self, e: &AccessEntry, out: &mut Vec<u8>) {
        let since_epoch = e
            .timestamp
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        if since_epoch.as_secs() != self.second {
            self.second = since_epoch.as_secs();
            let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(self.second);
            // "YYYY-MM-DDTHH:MM:SSZ" without its "Z".
            let mut prefix = humantime::format_rfc3339_seconds(whole).to_string();
            prefix.pop();
            prefix.push('.');
            self.second_prefix = prefix;
        }
        let warn = e.status_code >= 500 || e.status_code == 0;
        let json = self.format == LogFormat::Json;
        let mut fields = Fields {
            out,
            prefixes: if json { JSON_PREFIXES } else { TEXT_PREFIXES }.iter(),
        };
        fields.key();
        fields.out.push(b'"');
        fields.out.extend_from_slice(self.second_prefix.as_bytes());
        push_padded3(fields.out, since_epoch.subsec_millis());
        fields.out.extend_from_slice(b"Z\"");
        // `level` and `service`: constants, one copy.
        fields.out.extend_from_slice(match (json, warn) {
            (true, false) => br#","level":"INFO","service":"gateway""#,
            (true, true) => br#","level":"WARN","service":"gateway""#,
            (false, false) => br#" level="INFO" service="gateway""#,
            (false, true) => br#" level="WARN" service="gateway""#,
        });
        fields.string(e.request_id.as_bytes());
        fields.string(e.method.as_str().as_bytes());
        fields.string(e.path.as_bytes());
        fields.string(protocol_name(e.protocol));
        fields.optional_string(e.username.as_ref().map(HeaderValue::as_bytes));
        fields.optional_string(e.user_id.as_ref().map(HeaderValue::as_bytes));
        let route = e.route.as_deref();
        fields.optional_string(route.map(|r| r.service.as_bytes()));
        fields.optional_string(route.map(|r| r.pattern.as_bytes()));
        fields.key();
        match e.upstream_status {
            Some(status) => fields.integer(status.into()),
            None => fields.out.extend_from_slice(b"null"),
        }
        fields.optional_string(e.upstream_peer.as_ref().map(|p| p.label.as_bytes()));
        fields.key();
        fields.integer(e.tries.into());
        // Milliseconds with three decimals: microsecond resolution.
        let micros = e.response_time.as_micros();
        fields.key();
        fields.integer((micros / 1000) as u64);
        fields.out.push(b'.');
        push_padded3(fields.out, (micros % 1000) as u32);
        fields.key();
        fields.integer(e.status_code.into());
        if json {
            fields.out.push(b'}');
        }
        fields.out.push(b'\n');
    }
}

/// `HTTP/1.1`, `HTTP/2`...: what the client spoke.
fn protocol_name(version: http::Version) -> &'static [u8] {
    match version {
        http::Version::HTTP_2 => b"HTTP/2",
        http::Version::HTTP_10 => b"HTTP/1.0",
        http::Version::HTTP_09 => b"HTTP/0.9",
        http::Version::HTTP_3 => b"HTTP/3",
        _ => b"HTTP/1.1",
    }
}

/// The key prefixes of a line's fields, in order, for both formats:
/// `{"a":` then `,"b":` (JSON) and `a=` then ` b=` (text, values
/// JSON-encoded).
macro_rules! field_prefixes {
    ($first:literal $(, $name:literal)*) => {
        const JSON_PREFIXES: &[&[u8]] = &[
            concat!("{\"", $first, "\":").as_bytes()
            $(, concat!(",\"", $name, "\":").as_bytes())*
        ];
        const TEXT_PREFIXES: &[&[u8]] = &[
            concat!($first, "=").as_bytes()
            $(, concat!(" ", $name, "=").as_bytes())*
        ];
    };
}

// `level` and `service` follow `timestamp` as constants.
field_prefixes!(
    "timestamp",
    "request_id",
    "method",
    "path",
    "protocol",
    "username",
    "user_id",
    "backend_service",
    "route",
    "upstream_status",
    "upstream_peer",
    "tries",
    "response_time_ms",
    "status_code"
);

/// The fields of one line, each written after the next key prefix.
struct Fields<'a> {
    out: &'a mut Vec<u8>,
    prefixes: std::slice::Iter<'static, &'static [u8]>,
}

impl Fields<'_> {
    fn key(&mut self) {
        if let Some(prefix) = self.prefixes.next() {
            self.out.extend_from_slice(prefix);
        }
    }

    fn string(&mut self, value: &[u8]) {
        self.key();
        push_json_string(self.out, value);
    }

    fn optional_string(&mut self, value: Option<&[u8]>) {
        match value {
            Some(value) => self.string(value),
            None => {
                self.key();
                self.out.extend_from_slice(b"null");
            }
        }
    }

    fn integer(&mut self, value: u64) {
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }
}

fn push_padded3(out: &mut Vec<u8>, value: u32) {
    let value = value.min(999);
    out.extend_from_slice(&[
        b'0' + (value / 100) as u8,
        b'0' + (value / 10 % 10) as u8,
        b'0' + (value % 10) as u8,
    ]);
}

/// `value` as a JSON string. Bytes that are not UTF-8 (header values may
/// carry obs-text) become U+FFFD, as `String::from_utf8_lossy` makes them.
fn push_json_string(out: &mut Vec<u8>, value: &[u8]) {
    // Almost every value is plain ASCII: one pass without early exit
    // (which the compiler vectorizes), then one copy.
    let special = value.iter().fold(false, |special, &b| {
        special | !(0x20..0x80).contains(&b) | (b == b'"') | (b == b'\\')
    });
    if !special {
        out.push(b'"');
        out.extend_from_slice(value);
        out.push(b'"');
    } else if value.is_ascii() {
        push_escaped(out, value);
    } else {
        push_escaped(out, String::from_utf8_lossy(value).as_bytes());
    }
}

/// Writes UTF-8 `value` quoted, escaping `"`, `\\` and control characters.
fn push_escaped(out: &mut Vec<u8>, value: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let mut clean_from = 0;
    for (i, &b) in value.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&value[clean_from..i]);
        clean_from = i + 1;
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.extend_from_slice(&[HEX[(b >> 4) as usize], HEX[(b & 0xf) as usize]]);
        } else {
            out.extend_from_slice(escape);
        }
    }
    out.extend_from_slice(&value[clean_from..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> AccessEntry {
        AccessEntry {
            timestamp: SystemTime::UNIX_EPOCH + Duration::from_millis(1_755_772_200_123),
            request_id: HeaderValue::from_static("req_1"),
            method: http::Method::POST,
            protocol: http::Version::HTTP_2,
            path: "/api/robeing/chat".into(),
            username: Some(HeaderValue::from_static("o\"neil")),
            user_id: Some(HeaderValue::from_static(
                "6f1c1d0e-4a7b-4c43-9a0e-2b8f1c9d7e01",
            )),
            route: None,
            upstream_status: Some(200),
            upstream_peer: None,
            tries: 1,
            status_code: 200,
            response_time: Duration::from_micros(1500),
        }
    }

    fn json(e: &AccessEntry) -> serde_json::Value {
        let mut lines = LineFormatter::new(LogFormat::Json);
        let out = lines.format(e);
        assert!(out.ends_with(b"\n"));
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn json_line_has_the_design_fields() {
        let v = json(&entry());
        assert_eq!(v["timestamp"], "2025-08-21T10:30:00.123Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["service"], "gateway");
        assert_eq!(v["username"], "o\"neil");
        assert_eq!(v["response_time_ms"], 1.5);
        assert_eq!(v["backend_service"], serde_json::Value::Null);
        assert_eq!(v["route"], serde_json::Value::Null);
        assert_eq!(v["method"], "POST");
        assert_eq!(v["protocol"], "HTTP/2");
        assert_eq!(v["status_code"], 200);
        assert_eq!(v["upstream_status"], 200);
        assert_eq!(v["upstream_peer"], serde_json::Value::Null);
        assert_eq!(v["tries"], 1);
        for key in ["request_id", "path", "user_id"] {
            assert!(v[key].is_string(), "{key}");
        }
    }

    #[test]
    fn every_byte_value_round_trips_through_json() {
        // Each control character, quote and backslash; then bytes that are
        // not UTF-8 (obs-text in a header value) and a multi-byte character.
        let mut raw: Vec<u8> = (0u8..0x20).collect();
        raw.extend_from_slice(b"\"\\/ plain");
        let mut e = entry();
        e.path = String::from_utf8(raw.clone()).unwrap() + "\u{00e9}";
        e.username = Some(HeaderValue::from_bytes(b"caf\xe9\x80").unwrap());
        e.upstream_status = None;
        e.status_code = 502;
        e.response_time = Duration::from_micros(12_345_678);
        let v = json(&e);
        assert_eq!(v["path"].as_str().unwrap().as_bytes()[..raw.len()], raw[..]);
        assert!(v["path"].as_str().unwrap().ends_with('\u{00e9}'));
        // A truncated sequence is one replacement character.
        assert_eq!(v["username"], "caf\u{fffd}");
        assert_eq!(v["upstream_status"], serde_json::Value::Null);
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["response_time_ms"], 12_345.678);
    }

    #[test]
    fn the_timestamp_follows_the_clock_across_seconds() {
        let mut lines = LineFormatter::new(LogFormat::Json);
        let mut e = entry();
        for (millis, want) in [
            (1_755_772_200_123u64, "2025-08-21T10:30:00.123Z"),
            (1_755_772_200_999, "2025-08-21T10:30:00.999Z"),
            (1_755_772_201_000, "2025-08-21T10:30:01.000Z"),
            (1_755_772_199_007, "2025-08-21T10:29:59.007Z"),
        ] {
            e.timestamp = SystemTime::UNIX_EPOCH + Duration::from_millis(millis);
            let v: serde_json::Value = serde_json::from_slice(&lines.format(&e)).unwrap();
            assert_eq!(v["timestamp"], want);
        }
    }

    #[test]
    fn text_line_escapes_values() {
        let mut lines = LineFormatter::new(LogFormat::Text);
        let mut e = entry();
        e.path = "/a b\n".into();
        let line = String::from_utf8(lines.format(&e)).unwrap();
        assert!(
            line.starts_with("timestamp=\"2025-08-21T10:30:00.123Z\" level=\"INFO\""),
            "{line}"
        );
        assert!(line.contains(" username=\"o\\\"neil\""), "{line}");
        assert!(line.contains(" path=\"/a b\\n\""), "{line}");
        assert!(line.contains(" route=null "), "{line}");
        assert!(line.ends_with(" status_code=200\n"), "{line}");
        assert_eq!(line.matches('\n').count(), 1);
    }
}

//! One access line, formatted by hand into a reused buffer (JSON or
//! `key=value` text).

use std::time::{Duration, SystemTime};

use super::AccessEntry;
use crate::config::LogFormat;

/// Formats access lines into one reused buffer.
///
/// Written by hand rather than through serde_json: the line has a fixed
/// set of fields, and the generic path (a `String` per timestamp, UTF-8
/// checks, float formatting, per-field escaping) was most of the log's
/// cost per request (docs/benchmarks.md, "Instructions per request"). Strings are
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
    pub fn format(&mut self, e: &AccessEntry<'_>) -> Vec<u8> {
        let mut line = Vec::new();
        self.append(e, &mut line);
        line
    }

    /// Appends the line of `entry` to `out`, newline included.
    pub fn append(&mut self, e: &AccessEntry<'_>, out: &mut Vec<u8>) {
        let since_epoch = e
            .timestamp
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        self.enter_second(since_epoch.as_secs());
        let warn = e.status_code >= 500 || e.status_code == 0 || e.status_code == 499;
        let json = self.format == LogFormat::Json;
        // Room for a typical line at once: no growth check fires below.
        out.reserve(LINE_BYTES);
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
        fields.string(e.request_id);
        fields.key();
        push_hex_string(fields.out, &e.trace_id.unwrap_or_else(random_trace_id));
        match quoted_method(e.method) {
            Some(quoted) => fields.raw(quoted),
            None => fields.string(e.method.as_bytes()),
        }
        fields.string(e.path);
        fields.raw(quoted_protocol(e.protocol));
        fields.optional_string(e.host.map(|h| cut(h, MAX_HOST_BYTES)));
        fields.optional_ip(e.client_ip);
        fields.optional_string(e.user_agent.map(|ua| cut(ua, MAX_USER_AGENT_BYTES)));
        fields.optional_string(e.username);
        fields.optional_string(e.user_id);
        fields.optional_string(e.service.map(str::as_bytes));
        fields.optional_string(e.route.map(str::as_bytes));
        fields.optional_integer(e.upstream_status.map(u64::from));
        fields.optional_string(e.upstream_peer.map(str::as_bytes));
        fields.key();
        fields.integer(e.tries.into());
        fields.key();
        push_optional_millis(fields.out, e.upstream_time);
        fields.key();
        push_millis(fields.out, e.response_time);
        fields.key();
        fields.integer(e.status_code.into());
        fields.key();
        fields.integer(e.request_bytes);
        fields.key();
        fields.integer(e.response_bytes);
        if json {
            fields.out.push(b'}');
        }
        fields.out.push(b'\n');
    }
}

impl LineFormatter {
    /// The cached "YYYY-MM-DDTHH:MM:SS." of `second`, rendered once per
    /// second.
    #[inline(always)]
    fn enter_second(&mut self, second: u64) {
        if second != self.second {
            self.second = second;
            let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(second);
            // "YYYY-MM-DDTHH:MM:SSZ" without its "Z".
            let mut prefix = humantime::format_rfc3339_seconds(whole).to_string();
            prefix.pop();
            prefix.push('.');
            self.second_prefix = prefix;
        }
    }
}

/// A trace id for a request that has none. Not a secret: fastrand's
/// generator (wyrand, seeded per thread) is enough for an id that only
/// needs to be unique.
fn random_trace_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&fastrand::u64(..).to_le_bytes());
    id[8..].copy_from_slice(&fastrand::u64(..).to_le_bytes());
    id
}

fn push_optional_millis(out: &mut Vec<u8>, time: Option<Duration>) {
    match time {
        Some(time) => push_millis(out, time),
        None => out.extend_from_slice(b"null"),
    }
}

/// What a typical line needs (reserved once per line).
const LINE_BYTES: usize = 768;

/// `"HTTP/1.1"`, `"HTTP/2"`...: what the client spoke, quoted (a constant:
/// nothing to escape).
fn quoted_protocol(version: http::Version) -> &'static [u8] {
    match version {
        http::Version::HTTP_2 => b"\"HTTP/2\"",
        http::Version::HTTP_10 => b"\"HTTP/1.0\"",
        http::Version::HTTP_09 => b"\"HTTP/0.9\"",
        http::Version::HTTP_3 => b"\"HTTP/3\"",
        _ => b"\"HTTP/1.1\"",
    }
}

/// A standard method, quoted; another one goes through escaping.
fn quoted_method(method: &str) -> Option<&'static [u8]> {
    Some(match method {
        "GET" => b"\"GET\"",
        "POST" => b"\"POST\"",
        "PUT" => b"\"PUT\"",
        "DELETE" => b"\"DELETE\"",
        "PATCH" => b"\"PATCH\"",
        "HEAD" => b"\"HEAD\"",
        "OPTIONS" => b"\"OPTIONS\"",
        _ => return None,
    })
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
    "trace_id",
    "method",
    "path",
    "protocol",
    "host",
    "client_ip",
    "user_agent",
    "username",
    "user_id",
    "backend_service",
    "route",
    "upstream_status",
    "upstream_peer",
    "tries",
    "upstream_time_ms",
    "response_time_ms",
    "status_code",
    "request_bytes",
    "response_bytes"
);

/// The longest `user_agent` and `host` logged (README, "Access log"): a
/// client's 10 KB header must not make a 10 KB line.
pub const MAX_USER_AGENT_BYTES: usize = 512;
pub const MAX_HOST_BYTES: usize = 256;

/// `value` cut to `max` bytes, back to a UTF-8 character boundary.
fn cut(value: &[u8], max: usize) -> &[u8] {
    if value.len() <= max {
        return value;
    }
    let mut end = max;
    while end > 0 && (value[end] & 0xc0) == 0x80 {
        end -= 1;
    }
    &value[..end]
}

/// Milliseconds with three decimals: microsecond resolution.
fn push_millis(out: &mut Vec<u8>, time: Duration) {
    // In u64 (as_micros is u128, and its division a library call).
    let millis = time.as_secs() * 1000 + u64::from(time.subsec_millis());
    out.extend_from_slice(itoa::Buffer::new().format(millis).as_bytes());
    out.push(b'.');
    push_padded3(out, time.subsec_micros() % 1000);
}

/// `"0af7..."`: lower-case hex, as W3C trace context writes ids (built on
/// the stack, then one copy).
fn push_hex_string(out: &mut Vec<u8>, bytes: &[u8; 16]) {
    let mut text = [b'"'; 34];
    crate::text::hex_lower(bytes, &mut text[1..33]);
    out.extend_from_slice(&text);
}

/// The fields of one line, each written after the next key prefix.
struct Fields<'a> {
    out: &'a mut Vec<u8>,
    prefixes: std::slice::Iter<'static, &'static [u8]>,
}

impl Fields<'_> {
    #[inline(always)]
    fn key(&mut self) {
        if let Some(prefix) = self.prefixes.next() {
            self.out.extend_from_slice(prefix);
        }
    }

    /// A value that is already JSON (a constant).
    #[inline(always)]
    fn raw(&mut self, value: &[u8]) {
        self.key();
        self.out.extend_from_slice(value);
    }

    #[inline(always)]
    fn string(&mut self, value: &[u8]) {
        self.key();
        push_json_string(self.out, value);
    }

    #[inline(always)]
    fn optional_string(&mut self, value: Option<&[u8]>) {
        match value {
            Some(value) => self.string(value),
            None => {
                self.key();
                self.out.extend_from_slice(b"null");
            }
        }
    }

    #[inline(always)]
    fn optional_integer(&mut self, value: Option<u64>) {
        self.key();
        match value {
            Some(value) => self.integer(value),
            None => self.out.extend_from_slice(b"null"),
        }
    }

    /// An address written without `fmt` (`text::IpText`), quoted.
    #[inline(always)]
    fn optional_ip(&mut self, ip: Option<std::net::IpAddr>) {
        self.key();
        match ip {
            Some(ip) => {
                self.out.push(b'"');
                self.out
                    .extend_from_slice(crate::text::IpText::new(ip).as_bytes());
                self.out.push(b'"');
            }
            None => self.out.extend_from_slice(b"null"),
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
#[inline(always)]
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
    } else {
        push_special(out, value);
    }
}

/// The rare value that needs escaping (kept out of line).
#[inline(never)]
fn push_special(out: &mut Vec<u8>, value: &[u8]) {
    if value.is_ascii() {
        push_escaped(out, value);
    } else {
        push_escaped(out, String::from_utf8_lossy(value).as_bytes());
    }
}

/// Writes UTF-8 `value` quoted, escaping `"`, `\\` and control characters.
fn push_escaped(out: &mut Vec<u8>, value: &[u8]) {
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
            let mut code = *b"\\u0000";
            crate::text::hex_lower(&[b], &mut code[4..]);
            out.extend_from_slice(&code);
        } else {
            out.extend_from_slice(escape);
        }
    }
    out.extend_from_slice(&value[clean_from..]);
    out.push(b'"');
}

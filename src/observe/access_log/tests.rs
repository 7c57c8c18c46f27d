//! The access line's fields and escaping, formatted without a server.

use super::*;

fn entry<'a>() -> AccessEntry<'a> {
    AccessEntry {
        timestamp: SystemTime::UNIX_EPOCH + Duration::from_millis(1_755_772_200_123),
        request_id: b"req_1",
        trace_id: Some([0x0a; 16]),
        method: "POST",
        protocol: http::Version::HTTP_2,
        path: b"/api/robeing/chat",
        host: Some(b"api.example.test"),
        client_ip: Some("2001:db8::7".parse().unwrap()),
        user_agent: Some(b"curl/8.5.0"),
        username: Some(b"o\"neil"),
        user_id: Some(b"6f1c1d0e-4a7b-4c43-9a0e-2b8f1c9d7e01"),
        service: None,
        route: None,
        upstream_status: Some(200),
        upstream_peer: None,
        tries: 1,
        upstream_time: Some(Duration::from_micros(1234)),
        status_code: 200,
        response_time: Duration::from_micros(1500),
        request_bytes: 17,
        response_bytes: 4096,
    }
}

fn json(e: &AccessEntry<'_>) -> serde_json::Value {
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
    assert_eq!(v["trace_id"], "0a".repeat(16));
    assert_eq!(v["host"], "api.example.test");
    assert_eq!(v["client_ip"], "2001:db8::7");
    assert_eq!(v["user_agent"], "curl/8.5.0");
    assert_eq!(v["upstream_time_ms"], 1.234);
    assert_eq!(v["request_bytes"], 17);
    assert_eq!(v["response_bytes"], 4096);
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
    let path = [raw.clone(), "\u{00e9}".as_bytes().to_vec()].concat();
    e.path = &path;
    e.username = Some(b"caf\xe9\x80");
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
    e.path = b"/a b\n";
    let line = String::from_utf8(lines.format(&e)).unwrap();
    assert!(
        line.starts_with("timestamp=\"2025-08-21T10:30:00.123Z\" level=\"INFO\""),
        "{line}"
    );
    assert!(line.contains(" username=\"o\\\"neil\""), "{line}");
    assert!(line.contains(" path=\"/a b\\n\""), "{line}");
    assert!(line.contains(" route=null "), "{line}");
    assert!(
        line.ends_with(" status_code=200 request_bytes=17 response_bytes=4096\n"),
        "{line}"
    );
    assert!(line.contains(" client_ip=\"2001:db8::7\" "), "{line}");
    assert_eq!(line.matches('\n').count(), 1);
}

#[test]
fn absent_values_are_null_and_a_trace_id_is_generated() {
    let mut e = entry();
    e.trace_id = None;
    e.host = None;
    e.client_ip = None;
    e.user_agent = None;
    e.upstream_time = None;
    e.status_code = 499;
    let v = json(&e);
    for key in ["host", "client_ip", "user_agent", "upstream_time_ms"] {
        assert!(v[key].is_null(), "{key}: {}", v[key]);
    }
    let trace = v["trace_id"].as_str().unwrap();
    assert_eq!(trace.len(), 32);
    assert!(trace
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    assert_ne!(json(&e)["trace_id"], v["trace_id"], "one per request");
    assert_eq!(v["status_code"], 499);
    assert_eq!(v["level"], "WARN");
}

#[test]
fn long_client_fields_are_cut_and_escaped() {
    let mut e = entry();
    // 10 KB of a two-byte character: cut on a character boundary.
    let agent = "\u{00e9}".repeat(5 * 1024);
    let host = "h".repeat(1000);
    e.user_agent = Some(agent.as_bytes());
    e.host = Some(host.as_bytes());
    let v = json(&e);
    let logged = v["user_agent"].as_str().unwrap();
    assert_eq!(logged.len(), MAX_USER_AGENT_BYTES);
    assert!(logged.chars().all(|c| c == '\u{00e9}'));
    assert_eq!(v["host"].as_str().unwrap().len(), MAX_HOST_BYTES);
    // Quotes and control characters cannot end the value or the line.
    // (A header value holds no control character but tab.)
    e.user_agent = Some(b"a\"b\tc\\");
    assert_eq!(json(&e)["user_agent"], "a\"b\tc\\");
}

#[test]
fn methods_and_protocols_read_as_sent() {
    for method in ["GET", "OPTIONS", "PROPFIND", "M\"X"] {
        let mut e = entry();
        e.method = method;
        assert_eq!(json(&e)["method"], method);
    }
    for (version, name) in [
        (http::Version::HTTP_10, "HTTP/1.0"),
        (http::Version::HTTP_11, "HTTP/1.1"),
        (http::Version::HTTP_2, "HTTP/2"),
    ] {
        let mut e = entry();
        e.protocol = version;
        assert_eq!(json(&e)["protocol"], name);
    }
}

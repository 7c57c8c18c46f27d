//! The access line's fields and escaping, formatted without a server.

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

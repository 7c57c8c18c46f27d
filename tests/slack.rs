//! Slack signature verification at the edge: valid
//! requests reach the upstream byte for byte (bodies above 64 KiB too),
//! bad or stale ones are refused with 401 INVALID_SIGNATURE.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn slack_routes(up: &Upstream) -> String {
    route(
        "/gateway/slack/*",
        up.port,
        false,
        "raw = true\nslack_signing_secret_env = \"SLACK_SIGNING_SECRET\"\nmax_body_bytes = 400000",
    )
}

fn start(up: &Upstream) -> Gateway {
    let routes = slack_routes(up);
    Gateway::start_with(GatewayOptions {
        env: vec![("SLACK_SIGNING_SECRET".into(), SLACK_SECRET.into())],
        ..GatewayOptions::new(&routes)
    })
}

fn signed(ts: &str, body: &[u8]) -> Vec<(String, String)> {
    h(&[
        ("Content-Type", "application/json"),
        ("X-Slack-Request-Timestamp", ts),
        ("X-Slack-Signature", &slack_signature(ts, body)),
    ])
}

fn json_body(len: usize) -> Vec<u8> {
    let mut body = b"{\"type\":\"event_callback\",\"text\":\"".to_vec();
    while body.len() < len - 2 {
        body.extend_from_slice("caf\u{e9} \\u00e9 ".as_bytes());
    }
    body.extend_from_slice(b"\"}");
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_requests_pass_byte_for_byte() {
    let up = Upstream::start();
    let gw = start(&up);
    let ts = in_seconds(0).to_string();
    for len in [100, 70 * 1024, 300 * 1024] {
        let body = json_body(len);
        let r = send(
            gw.port,
            "POST",
            "/gateway/slack/events",
            &signed(&ts, &body),
            &body,
        )
        .await;
        assert_eq!(
            r.status,
            200,
            "{len} bytes: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.json()["signature_valid"], true);
        assert_eq!(r.json()["body_len"], body.len());
        assert_eq!(r.json()["body_sha256"], sha256_hex(&body));
    }
    // Chunked upload of 150 KiB.
    let body = json_body(150 * 1024);
    let mut conn = Conn::connect(gw.port).await;
    let mut raw =
        b"POST /gateway/slack/events HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
            .to_vec();
    for (n, v) in signed(&ts, &body) {
        raw.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    raw.extend_from_slice(&chunked(&body, 7000));
    conn.send_raw(&raw).await;
    let r = conn.read_response().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_sha256"], sha256_hex(&body));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_or_stale_signatures_are_refused() {
    let up = Upstream::start();
    let gw = start(&up);
    let ts = in_seconds(0).to_string();
    let body = json_body(100 * 1024);

    // Tampered body (above 64 KiB): refused once the body is complete.
    let mut tampered = body.clone();
    tampered[90_000] ^= 1;
    let r = send(
        gw.port,
        "POST",
        "/gateway/slack/events",
        &signed(&ts, &body),
        &tampered,
    )
    .await;
    assert_envelope(&r, 401, "INVALID_SIGNATURE");

    // Stale, future, missing, malformed: refused before the upstream is
    // contacted at all. (A clear margin past 300 s: the exact boundary is
    // the unit test's, with a fixed clock; here a second may tick between
    // signing and checking.)
    let before = up.received().await.len();
    let stale = in_seconds(-360).to_string();
    let future = in_seconds(360).to_string();
    let cases = [
        signed(&stale, &body),
        signed(&future, &body),
        h(&[("X-Slack-Signature", &slack_signature(&ts, &body))]),
        h(&[
            ("X-Slack-Request-Timestamp", &ts),
            ("X-Slack-Signature", "v0=zz"),
        ]),
        vec![],
    ];
    for headers in &cases {
        let r = send(gw.port, "POST", "/gateway/slack/events", headers, &body).await;
        assert_envelope(&r, 401, "INVALID_SIGNATURE");
    }
    assert_eq!(
        up.received().await.len(),
        before,
        "a refused request reached the upstream"
    );

    // Over the route's limit: 413, declared or streamed.
    let big = json_body(400_001);
    let r = send(
        gw.port,
        "POST",
        "/gateway/slack/events",
        &signed(&ts, &big),
        &big,
    )
    .await;
    assert_envelope(&r, 413, "PAYLOAD_TOO_LARGE");
}

#[test]
fn a_configured_but_missing_secret_stops_startup() {
    let dir = std::env::temp_dir().join(unique("robeing-slack"));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("gateway.toml");
    std::fs::write(
        &conf,
        format!(
            "[server]\nlisten = [\"127.0.0.1:1\"]\n[auth]\nsecret_env = \"GATEWAY_JWT_SECRET\"\n\
             [users]\nsource = \"file\"\nusers = \"{}/conf/users.toml\"\n{}",
            env!("CARGO_MANIFEST_DIR"),
            route(
                "/gateway/slack/*",
                9,
                false,
                "slack_signing_secret_env = \"NO_SUCH_SLACK_SECRET\""
            )
        ),
    )
    .unwrap();
    for args in [vec!["-t"], vec![]] {
        let out = Command::new(env!("CARGO_BIN_EXE_robeing-gateway"))
            .args(&args)
            .arg("-c")
            .arg(&conf)
            .env("GATEWAY_JWT_SECRET", JWT_SECRET)
            .env_remove("NO_SUCH_SLACK_SECRET")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(
                ".slack_signing_secret_env: environment variable NO_SUCH_SLACK_SECRET is not set"
            ),
            "{stderr}"
        );
    }
}

// Bodies held for signature checks are bounded for the whole process
// (SECURITY.md, "Bounded resources"): anyone can send a fresh timestamp and
// a well-formed signature, so 300 stalled 1 MiB Slack bodies, half over
// HTTP/1.1 and half as HTTP/2 streams, hold at most
// `server.max_buffered_body_bytes` (64 MiB by default); the rest are refused
// with 503 at once. A signed request is answered at once meanwhile (503
// while the budget is held) and passes once the stalled clients are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bodies_held_for_signatures_are_bounded_in_total() {
    use tokio::io::AsyncWriteExt;
    const MIB: usize = 1024 * 1024;
    let up = Upstream::start();
    let dir = cert_dir();
    let (cert, key) = make_cert(&dir, "slack");
    let tls_port = free_port();
    let server_extra = tls_block(tls_port, &cert, &key, "");
    let routes = route(
        "/gateway/slack/*",
        up.port,
        false,
        "slack_signing_secret_env = \"SLACK_SIGNING_SECRET\"\nmax_body_bytes = 1048576",
    );
    let gw = Gateway::start_with(GatewayOptions {
        server_extra: &server_extra,
        env: vec![("SLACK_SIGNING_SECRET".into(), SLACK_SECRET.into())],
        ..GatewayOptions::new(&routes)
    });
    let before = rss_kib(gw.pid());
    let ts = in_seconds(0).to_string();
    let body = vec![b'x'; MIB];
    let stalled_part = &body[..MIB - 1];
    let signature = slack_signature(&ts, &body);
    let length = MIB.to_string();

    // 150 over HTTP/1.1: the head and all but the last byte, then nothing.
    let mut h1 = Vec::new();
    for _ in 0..150 {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
            .await
            .unwrap();
        let head = format!(
            "POST /gateway/slack/events HTTP/1.1\r\nHost: a\r\nContent-Length: {length}\r\n\
             X-Slack-Request-Timestamp: {ts}\r\nX-Slack-Signature: {signature}\r\n\r\n"
        );
        let _ = conn.write_all(head.as_bytes()).await;
        let part = stalled_part.to_vec();
        h1.push(tokio::spawn(async move {
            // A refused one is answered and closed while this writes.
            let _ = tokio::time::timeout(Duration::from_secs(15), conn.write_all(&part)).await;
            conn
        }));
    }
    // 150 as HTTP/2 streams on two connections.
    let headers = [
        ("content-length", length.as_str()),
        ("x-slack-request-timestamp", ts.as_str()),
        ("x-slack-signature", signature.as_str()),
    ];
    let mut h2_streams = Vec::new();
    for _ in 0..2 {
        let client = H2Client::connect(tls_port, &cert).await;
        for _ in 0..75 {
            if let Ok(upload) = client
                .start_upload("/gateway/slack/events", &headers, stalled_part)
                .await
            {
                h2_streams.push(upload);
            }
        }
    }
    let mut h1_conns = Vec::new();
    for task in h1 {
        h1_conns.push(task.await.unwrap());
    }
    // Let the gateway take in what it accepted.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let refused = loop {
        let refused = metric_value(gw.admin_port, "gateway_buffered_body_refused_total").await;
        let held = metric_value(gw.admin_port, "gateway_buffered_body_bytes").await;
        if (refused >= 300 - 64 && held > 0) || std::time::Instant::now() > deadline {
            break refused;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = metric_value(gw.admin_port, "gateway_buffered_body_bytes").await;
    assert!(held <= 64 * MIB as u64, "held {held}");
    assert!(refused >= 300 - 64, "refused {refused}");
    let grown_mib = (rss_kib(gw.pid()).saturating_sub(before)) / 1024;
    eprintln!("held {held} bytes, refused {refused}, RSS grew by {grown_mib} MiB");
    assert!(grown_mib < 64 + 32, "RSS grew by {grown_mib} MiB");

    // A signed request now: answered at once, with the envelope.
    let small = b"{\"type\":\"url_verification\"}";
    let small_headers = signed(&ts, small);
    let post_small = || {
        send(
            gw.port,
            "POST",
            "/gateway/slack/events",
            &small_headers,
            small,
        )
    };
    let started = std::time::Instant::now();
    let r = post_small().await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_envelope(&r, 503, "SERVICE_UNAVAILABLE");

    // The stalled clients leave: their reservations are given back.
    drop(h1_conns);
    drop(h2_streams);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metric_value(gw.admin_port, "gateway_buffered_body_bytes").await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "reservations were not given back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = post_small().await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

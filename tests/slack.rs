//! Slack signature verification at the edge: valid
//! requests reach the upstream byte for byte (bodies above 64 KiB too),
//! bad or stale ones are refused with 401 INVALID_SIGNATURE.

mod common;

use std::process::Command;

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

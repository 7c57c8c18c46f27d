//! Response compression through the real binary.

mod common;

use std::io::Read;

use common::*;

fn decode(encoding: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        "gzip" => {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
        }
        "zstd" => out = zstd::decode_all(body).unwrap(),
        // Strict: fails on a stream without its final meta-block.
        "br" => {
            brotli::Decompressor::new(body, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        other => panic!("unexpected encoding {other}"),
    }
    out
}

fn routes(up: &Upstream) -> String {
    "\n[compression]\nlevel = 6\n".to_owned()
        + &route("/api/auth/*", up.port, false, "")
        + &route("/gateway/slack/*", up.port, false, "raw = true")
}

#[tokio::test(flavor = "multi_thread")]
async fn encodings_follow_accept_encoding_and_q_values() {
    let up = Upstream::start();
    let gw = Gateway::start_with(GatewayOptions::new(&routes(&up)));
    let cases = [
        ("gzip", Some("gzip")),
        ("zstd", Some("zstd")),
        ("gzip;q=0.2, zstd;q=0.9", Some("zstd")),
        ("zstd;q=0, gzip", Some("gzip")),
        ("zstd;q=0.1, gzip;q=0.1", Some("zstd")),
        ("gzip;q=0", None),
        ("identity", None),
        // Brotli, encoded by the gateway itself (cloudflare/pingora#1013).
        ("br", Some("br")),
        ("br, gzip", Some("br")),
        ("gzip;q=0.2, br;q=1, zstd;q=0.5", Some("br")),
        ("br;q=0, gzip", Some("gzip")),
        // What Chromium sends: its first choice is gzip.
        ("gzip, deflate, br, zstd", Some("gzip")),
    ];
    for (accept, want) in cases {
        let r = get(
            gw.port,
            "/api/auth/echo",
            &h(&[("Accept-Encoding", accept)]),
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("content-encoding"),
            want,
            "Accept-Encoding: {accept}"
        );
        let body = match want {
            Some(enc) => {
                assert!(
                    r.header_all("vary")
                        .iter()
                        .any(|v| v.to_ascii_lowercase().contains("accept-encoding")),
                    "no Vary for {accept}"
                );
                decode(enc, &r.body)
            }
            None => r.body.clone(),
        };
        let echoed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        // The upstream got the client's own header, not the gateway's ordering.
        let sent = echoed["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p[0] == "accept-encoding")
            .map(|p| p[1].as_str().unwrap().to_owned());
        assert_eq!(sent.as_deref(), Some(accept));
    }
    // Without Accept-Encoding: identity.
    assert_eq!(
        get(gw.port, "/api/auth/echo", &[])
            .await
            .header("content-encoding"),
        None
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn what_is_never_compressed() {
    let up = Upstream::start();
    let gw = Gateway::start_with(GatewayOptions::new(&routes(&up)));
    let gzip = h(&[("Accept-Encoding", "gzip, br")]);
    let br = h(&[("Accept-Encoding", "br")]);

    // Small bodies (under min_size_bytes = 256), and large ones are.
    let small = get(gw.port, "/api/auth/download/200", &gzip).await;
    assert_eq!(small.header("content-encoding"), None);
    assert_eq!(small.body.len(), 200);
    let large = get(gw.port, "/api/auth/download/5000", &gzip).await;
    assert_eq!(large.header("content-encoding"), Some("gzip"));

    let small = get(gw.port, "/api/auth/download/200", &br).await;
    assert_eq!(small.header("content-encoding"), None);
    let large = get(gw.port, "/api/auth/download/5000", &br).await;
    assert_eq!(large.header("content-encoding"), Some("br"));
    let want: Vec<u8> = (0..5000usize).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(decode("br", &large.body), want);
    // Framed for keep-alive: two brotli responses on one connection.
    let mut conn = Conn::connect(gw.port).await;
    for _ in 0..2 {
        let r = conn
            .request("GET", "/api/auth/download/5000", &br, b"")
            .await;
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        assert_ne!(r.header("connection"), Some("close"));
        assert_eq!(decode("br", &r.body), want);
    }

    // Raw routes: bytes exactly as the upstream sent them.
    for accept in [&gzip, &br] {
        let raw = get(gw.port, "/gateway/slack/download/5000", accept).await;
        assert_eq!(raw.header("content-encoding"), None);
        assert_eq!(raw.body, want);
    }

    // Already encoded upstream: passed through, not encoded twice.
    let direct = get(up.port, "/api/auth/encoded", &[]).await;
    for accept in ["gzip", "br"] {
        let r = get(
            gw.port,
            "/api/auth/encoded",
            &h(&[("Accept-Encoding", accept)]),
        )
        .await;
        assert_eq!(r.header_all("content-encoding"), ["gzip"], "{accept}");
        assert_eq!(r.body, direct.body, "{accept}");
    }

    // Server-sent events stream uncompressed.
    let mut conn = Conn::connect(gw.port).await;
    conn.send_raw(b"GET /api/auth/sse HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n")
        .await;
    let (status, headers) = conn.read_head().await;
    assert_eq!(status, 200);
    assert!(!headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-encoding")));
    let first = conn.read_chunk().await.unwrap();
    assert_eq!(first, b"data: event-0\n\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn compression_is_off_unless_configured() {
    let up = Upstream::start();
    let gw = Gateway::start_with(GatewayOptions::new(&route(
        "/api/auth/*",
        up.port,
        false,
        "",
    )));
    let r = get(
        gw.port,
        "/api/auth/download/5000",
        &h(&[("Accept-Encoding", "gzip")]),
    )
    .await;
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.body.len(), 5000);
}

//! HTTP/2 at the edge (README, "TLS and HTTP/2"): many streams on one
//! connection, each with its own identity; what the HTTP/1 suite checks,
//! over h2; requests no conforming client sends, as raw frames; abuse
//! (rapid reset, floods, too many streams) while a well-behaved client is
//! served. Clients: the `h2` crate over rustls, and a raw frame writer.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;

struct Edge {
    gw: Gateway,
    tls_port: u16,
    ca: PathBuf,
    up: Upstream,
}

/// A gateway with a TLS listener in front of one echo upstream: `/api/*`
/// protected, `/public/*` not, `extra_routes` added, `sections` (e.g.
/// `[cors]`) before the routes.
fn edge(sections: &str, extra_routes: &dyn Fn(u16) -> String, env: Vec<(String, String)>) -> Edge {
    let dir = cert_dir();
    let (cert, key) = make_cert(&dir, "edge");
    let up = Upstream::start();
    let tls_port = free_port();
    let server_extra = tls_block(tls_port, &cert, &key, "hsts_max_age_seconds = 900");
    let routes = format!(
        "{sections}\n{}{}{}",
        route("/api/*", up.port, true, ""),
        route("/public/*", up.port, false, ""),
        extra_routes(up.port)
    );
    let gw = Gateway::start_with(GatewayOptions {
        server_extra: &server_extra,
        env,
        ..GatewayOptions::new(&routes)
    });
    Edge {
        gw,
        tls_port,
        ca: cert,
        up,
    }
}

fn no_routes(_: u16) -> String {
    String::new()
}

// 100 concurrent streams on one connection, each its own user (or no
// token, or a bad one), each sending spoofed identity headers: every
// upstream request carries exactly its own stream's identity, refusals
// are per stream, and the connection stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_streams_each_carry_their_own_identity() {
    let e = edge("", &no_routes, Vec::new());
    let users: Vec<(String, String)> = (0..40)
        .map(|i| {
            let name = unique(&format!("h2u{i}"));
            let id = add_user(&name);
            (name, id)
        })
        .collect();
    let client = H2Client::connect(e.tls_port, &e.ca).await;
    let calls = (0..100).map(|i| {
        let client = client.clone();
        let user = users[i % users.len()].clone();
        async move {
            let token = match i % 10 {
                7 => None,
                8 => Some("not.a.token".to_owned()),
                _ => Some(token_for(&user.0)),
            };
            let auth = token.as_ref().map(|t| format!("Bearer {t}"));
            let mut headers = vec![
                ("x-user-id", "00000000-0000-0000-0000-000000000000"),
                ("x-username", "root"),
                ("x_user_id", "spoofed"),
            ];
            if let Some(auth) = &auth {
                headers.push(("authorization", auth));
            }
            let r = client
                .request("GET", &format!("/api/s{i}"), &headers, b"")
                .await
                .unwrap_or_else(|err| panic!("stream {i}: {err}"));
            (i, user, r)
        }
    });
    let results = futures_util::future::join_all(calls).await;
    let mut served = 0;
    for (i, (name, id), r) in results {
        match i % 10 {
            7 => {
                assert_eq!(r.status, 401, "stream {i}");
                assert_eq!(r.json()["error"]["code"], "MISSING_TOKEN");
            }
            8 => {
                assert_eq!(r.status, 401, "stream {i}");
                assert_eq!(r.json()["error"]["code"], "INVALID_TOKEN");
            }
            _ => {
                assert_eq!(r.status, 200, "stream {i}: {:?}", r.body);
                assert_eq!(r.upstream_header("x-user-id"), [id], "stream {i}");
                assert_eq!(r.upstream_header("x-username"), [name], "stream {i}");
                assert!(r.upstream_header("x_user_id").is_empty(), "stream {i}");
                assert_eq!(r.upstream_header("x-forwarded-proto"), ["https"]);
                assert_eq!(r.json()["uri"], format!("/api/s{i}"));
                served += 1;
            }
        }
    }
    assert_eq!(served, 80);
    // The refusals left the connection usable.
    let after = client
        .get(
            "/api/after",
            &[(
                "authorization",
                &format!("Bearer {}", token_for(&users[0].0)),
            )],
        )
        .await;
    assert_eq!(after.status, 200);
    // One access-log line per stream, each saying HTTP/2.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let h2_lines =
            e.gw.access_log()
                .iter()
                .filter(|l| l["protocol"] == "HTTP/2")
                .count();
        if h2_lines == 101 {
            break;
        }
        assert!(Instant::now() < deadline, "{h2_lines} HTTP/2 lines of 101");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The access line of a stream: `:authority` as its host, the client,
    // the upstream's time and the bytes sent, a trace id of its own.
    let lines: Vec<_> =
        e.gw.access_log()
            .into_iter()
            .filter(|l| l["protocol"] == "HTTP/2")
            .collect();
    let mut traces = std::collections::HashSet::new();
    for l in &lines {
        assert!(l["host"].as_str().is_some_and(|h| !h.is_empty()), "{l}");
        assert_eq!(l["client_ip"], "127.0.0.1", "{l}");
        // Timed exactly when an upstream answered (some streams are 401).
        assert_eq!(
            l["upstream_time_ms"].as_f64().is_some(),
            l["upstream_status"].is_u64(),
            "{l}"
        );
        assert!(l["response_bytes"].as_u64().is_some_and(|b| b > 0), "{l}");
        traces.insert(l["trace_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(traces.len(), lines.len(), "one trace id per stream");
}

/// The status of a response HEADERS frame whose block starts with an
/// indexed `:status` (RFC 7541 Appendix A: 8 = 200 ... 14 = 500), as the
/// gateway's HPACK encoder writes them.
fn indexed_status(block: &[u8]) -> Option<u16> {
    match block.first()? {
        0x88 => Some(200),
        0x89 => Some(204),
        0x8a => Some(206),
        0x8b => Some(304),
        0x8c => Some(400),
        0x8d => Some(404),
        0x8e => Some(500),
        _ => None,
    }
}

// Requests no conforming client sends: upper-case names, pseudo-headers
// twice, missing or after regular ones, connection-specific headers. Each
// is refused on its stream (reset, or a 4xx) and never reaches the
// upstream; a correct request on the same kind of connection is served.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_header_blocks_never_reach_the_upstream() {
    let e = edge("", &no_routes, Vec::new());
    let name = unique("h2raw");
    add_user(&name);
    let auth = format!("Bearer {}", token_for(&name));
    let base = |path: &'static str| {
        vec![
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", "localhost"),
            (":path", path),
        ]
    };
    let tricks: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("upper-case name", {
            let mut f = base("/api/trick-upper");
            f.push(("authorization", &auth));
            f.push(("X-User-Id", "00000000-0000-0000-0000-000000000000"));
            f
        }),
        ("pseudo-header twice", {
            let mut f = base("/api/trick-twice");
            f.push((":path", "/public/trick-twice"));
            f
        }),
        ("pseudo-header after a regular one", {
            let mut f = base("/api/trick-late");
            f.insert(2, ("x-late", "1"));
            f
        }),
        ("no :path", {
            let mut f = base("/api/trick-nopath");
            f.retain(|(n, _)| *n != ":path");
            f
        }),
        ("unknown pseudo-header", {
            let mut f = base("/api/trick-pseudo");
            f.push((":x-user-id", "00000000-0000-0000-0000-000000000000"));
            f
        }),
        ("connection-specific header", {
            let mut f = base("/public/trick-conn");
            f.push(("connection", "x-user-id"));
            f
        }),
        ("transfer-encoding", {
            let mut f = base("/public/trick-te");
            f.push(("transfer-encoding", "chunked"));
            f
        }),
    ];
    for (what, fields) in &tricks {
        let mut raw = RawH2::connect(e.tls_port, &e.ca).await;
        raw.send_headers(1, fields, true).await.expect("send");
        let frames = raw.read_frames(Duration::from_millis(500)).await;
        let answered_ok = frames.iter().any(|f| {
            f.kind == frame::HEADERS && f.stream == 1 && indexed_status(&f.payload) == Some(200)
        });
        let refused = frames.iter().any(|f| {
            (f.kind == frame::RST_STREAM && f.stream == 1)
                || f.kind == frame::GOAWAY
                || (f.kind == frame::HEADERS
                    && f.stream == 1
                    && indexed_status(&f.payload).is_some_and(|s| s >= 400))
        });
        assert!(!answered_ok && refused, "{what}: {frames:?}");
    }
    // The same raw client, well-formed: served (the checks above can fail).
    let mut raw = RawH2::connect(e.tls_port, &e.ca).await;
    let mut fields = base("/api/raw-ok");
    fields.push(("authorization", &auth));
    raw.send_headers(1, &fields, true).await.expect("send");
    let frames = raw.read_frames(Duration::from_millis(500)).await;
    assert!(
        frames.iter().any(|f| f.kind == frame::HEADERS
            && f.stream == 1
            && indexed_status(&f.payload) == Some(200)),
        "{frames:?}"
    );
    let received = e.up.received().await;
    assert!(received.iter().any(|t| t == "/api/raw-ok"), "{received:?}");
    assert!(
        !received.iter().any(|t| t.contains("trick")),
        "a malformed request reached the upstream: {received:?}"
    );
}

fn limited_and_slack(port: u16) -> String {
    route("/limited/*", port, false, "requests_per_minute = 3")
        + &route(
            "/gateway/slack/*",
            port,
            false,
            "raw = true\nslack_signing_secret_env = \"SLACK_SIGNING_SECRET\"",
        )
}

// What the HTTP/1 suite checks, over h2: byte-exact bodies both ways
// (multi-MiB), Slack signatures, SSE event by event, a CORS preflight,
// rate limits, compression and the error envelope.
#[tokio::test(flavor = "multi_thread")]
async fn the_http1_suite_holds_over_h2() {
    let sections = "[compression]\nlevel = 6\n\n[cors]\nallow_origins = [\"https://app.example\"]\nallow_methods = [\"GET\", \"POST\"]\n";
    let e = edge(
        sections,
        &limited_and_slack,
        vec![("SLACK_SIGNING_SECRET".into(), SLACK_SECRET.into())],
    );
    let name = unique("h2suite");
    add_user(&name);
    let auth = format!("Bearer {}", token_for(&name));
    let client = H2Client::connect(e.tls_port, &e.ca).await;

    // Upload: 3 MiB arrive byte for byte (the echo hashes what it got).
    let upload: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i * 31 % 253) as u8)
        .collect();
    let r = client
        .request("POST", "/api/upload", &[("authorization", &auth)], &upload)
        .await
        .expect("upload");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_sha256"], sha256_hex(&upload));
    // Download: 5 MiB, the same bytes as over HTTP/1.
    let r = client.get("/public/download/5242880", &[]).await;
    assert_eq!(r.status, 200);
    let plain = get(e.gw.port, "/public/download/5242880", &[]).await;
    assert_eq!(r.body.len(), 5_242_880);
    assert!(r.body == plain.body, "h2 and HTTP/1 bodies differ");

    // Slack: a signed body passes byte for byte (the upstream checks the
    // signature itself); a bad signature is refused at the edge.
    let ts = now().to_string();
    let body = br#"{"type":"event_callback","text":"caf\u00e9"}"#;
    let sig = slack_signature(&ts, body);
    let slack_headers = [
        ("content-type", "application/json"),
        ("x-slack-request-timestamp", ts.as_str()),
        ("x-slack-signature", sig.as_str()),
    ];
    let r = client
        .request("POST", "/gateway/slack/events", &slack_headers, body)
        .await
        .expect("slack");
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    let mut bad = slack_headers;
    bad[2].1 = "v0=0000";
    let r = client
        .request("POST", "/gateway/slack/events", &bad, body)
        .await
        .expect("slack");
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "INVALID_SIGNATURE");

    // SSE: events arrive one by one, not at the end.
    let (status, _, mut events) = client
        .open("GET", "/public/sse", &[], b"")
        .await
        .expect("sse");
    assert_eq!(status, 200);
    let started = Instant::now();
    let mut arrivals = Vec::new();
    while let Some(chunk) = events.data().await {
        let chunk = chunk.expect("event");
        let _ = events.flow_control().release_capacity(chunk.len());
        if !chunk.is_empty() {
            arrivals.push(started.elapsed());
        }
    }
    assert!(arrivals.len() >= 3, "{arrivals:?}");
    assert!(
        arrivals[arrivals.len() - 1] - arrivals[0] >= Duration::from_millis(600),
        "events were buffered: {arrivals:?}"
    );

    // CORS preflight, answered at the edge.
    let r = client
        .request(
            "OPTIONS",
            "/api/x",
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "POST"),
            ],
            b"",
        )
        .await
        .expect("preflight");
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(r.header("strict-transport-security"), Some("max-age=900"));

    // Rate limits: 3 a minute, the fourth is refused with its headers.
    let statuses: Vec<u16> = {
        let mut s = Vec::new();
        for _ in 0..4 {
            let r = client.get("/limited/x", &[]).await;
            if r.status == 429 {
                assert!(r.header("retry-after").is_some());
                assert_eq!(r.json()["error"]["code"], "RATE_LIMIT_EXCEEDED");
            }
            s.push(r.status);
        }
        s
    };
    assert_eq!(statuses, [200, 200, 200, 429]);

    // Compression: gzip when asked for, and it decodes to the plain body.
    let r = client
        .request(
            "POST",
            "/public/echo",
            &[("accept-encoding", "gzip")],
            &vec![b'a'; 4096],
        )
        .await
        .expect("echo");
    assert_eq!(
        r.header("content-encoding"),
        Some("gzip"),
        "{:?}",
        r.headers
    );
    let mut plain = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&r.body[..]), &mut plain)
        .expect("gzip");
    assert!(plain.contains("\"body_sha256\""), "{plain}");

    // The error envelope, with HSTS like every TLS response.
    let r = client.get("/nowhere", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "ROUTE_NOT_FOUND");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("strict-transport-security"), Some("max-age=900"));
    let r = client.get("/api/x", &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("strict-transport-security"), Some("max-age=900"));
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// Abuse: rapid reset, SETTINGS and PING floods, a header block over the
// limit, more streams than the connection allows. The gateway stays up and
// a well-behaved client on its own connection is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abusive_clients_do_not_starve_a_well_behaved_one() {
    let e = edge("", &no_routes, Vec::new());
    let port = e.tls_port;
    let ca = e.ca.clone();
    let abuse = tokio::spawn(async move {
        let get = |path: &'static str| {
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":authority", "localhost"),
                (":path", path),
            ]
        };
        // Rapid reset: HEADERS then RST_STREAM, 2,000 times.
        let mut raw = RawH2::connect(port, &ca).await;
        let block = hpack_literals(&get("/public/delay/200/reset"));
        for i in 0..2000u32 {
            let id = 1 + 2 * i;
            if raw
                .send_frame(
                    frame::HEADERS,
                    frame::END_HEADERS | frame::END_STREAM,
                    id,
                    &block,
                )
                .await
                .is_err()
                || raw
                    .send_frame(frame::RST_STREAM, 0, id, &8u32.to_be_bytes())
                    .await
                    .is_err()
            {
                break; // the gateway may close such a connection
            }
        }
        let _ = raw.read_frames(Duration::from_millis(200)).await;
        // SETTINGS and PING floods.
        let mut raw = RawH2::connect(port, &ca).await;
        for _ in 0..5000 {
            if raw.send_frame(frame::SETTINGS, 0, 0, &[]).await.is_err()
                || raw.send_frame(frame::PING, 0, 0, &[0; 8]).await.is_err()
            {
                break;
            }
        }
        let _ = raw.read_frames(Duration::from_millis(200)).await;
        // A header block over the limit: refused, never forwarded.
        let mut raw = RawH2::connect(port, &ca).await;
        let huge = "a".repeat(200_000);
        let mut fields = get("/public/huge-header");
        fields.push(("x-huge", &huge));
        let _ = raw.send_headers(1, &fields, true).await;
        let _ = raw.read_frames(Duration::from_millis(300)).await;
        // More streams than allowed: open 1,000 that never finish.
        let mut raw = RawH2::connect(port, &ca).await;
        let block = hpack_literals(&get("/public/hang"));
        for i in 0..1000u32 {
            if raw
                .send_frame(frame::HEADERS, frame::END_HEADERS, 1 + 2 * i, &block)
                .await
                .is_err()
            {
                break;
            }
        }
        raw.read_frames(Duration::from_millis(500)).await
    });
    let client = H2Client::connect(e.tls_port, &e.ca).await;
    let mut slowest = Duration::ZERO;
    let mut served = 0;
    while !abuse.is_finished() || served < 50 {
        let t = Instant::now();
        let r = client.get(&format!("/public/ok{served}"), &[]).await;
        assert_eq!(r.status, 200);
        slowest = slowest.max(t.elapsed());
        served += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let last_frames = abuse.await.expect("abuse task");
    // More than max_concurrent_streams: the excess is refused, not queued.
    assert!(
        last_frames
            .iter()
            .any(|f| f.kind == frame::RST_STREAM || f.kind == frame::GOAWAY),
        "1,000 open streams were all accepted"
    );
    assert!(
        slowest < Duration::from_millis(500),
        "slowest {slowest:?} of {served}"
    );
    // Still up, and the oversized header never reached the upstream.
    let r = get(e.gw.port, "/public/still-up", &[]).await;
    assert_eq!(r.status, 200);
    let received = e.up.received().await;
    assert!(!received.iter().any(|t| t.contains("huge-header")));
}

// `protocol = "h2"`: HTTP/2 over TLS to the peers, their certificate
// checked against `tls_ca_file` and the name. The peer here is a second
// gateway's TLS listener; its access log shows what arrived.
#[tokio::test(flavor = "multi_thread")]
async fn h2_over_tls_to_upstreams_checks_their_certificate() {
    let inner = edge("", &no_routes, Vec::new());
    let (other_ca, _) = make_cert(&cert_dir(), "stranger");
    let peer = inner.tls_port;
    let ca = inner.ca.display().to_string();
    let routes = format!(
        "{}{}{}",
        route(
            "/public/*",
            peer,
            false,
            &format!("protocol = \"h2\"\ntls_ca_file = \"{ca}\"")
        ),
        route(
            "/wrong-ca/*",
            peer,
            false,
            &format!(
                "protocol = \"h2\"\ntls_ca_file = \"{}\"",
                other_ca.display()
            )
        ),
        route(
            "/wrong-name/*",
            peer,
            false,
            &format!(
                "protocol = \"h2\"\ntls_ca_file = \"{ca}\"\ntls_server_name = \"other.example\""
            )
        ),
    );
    let outer = Gateway::start_with(GatewayOptions::new(&routes));
    let r = get(outer.port, "/public/through-h2", &[]).await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["uri"], "/public/through-h2");
    // The inner gateway got it over TLS, as HTTP/2.
    assert_eq!(r.upstream_header("x-forwarded-proto"), ["https"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !inner
        .gw
        .access_log()
        .iter()
        .any(|l| l["path"] == "/public/through-h2" && l["protocol"] == "HTTP/2")
    {
        assert!(Instant::now() < deadline, "{:?}", inner.gw.access_log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A certificate the CA did not sign, or a name it does not carry: 503,
    // and nothing reaches the upstream.
    for path in ["/wrong-ca/x", "/wrong-name/x"] {
        let r = get(outer.port, path, &[]).await;
        assert_envelope(&r, 503, "SERVICE_UNAVAILABLE");
    }
    let received = inner.up.received().await;
    assert!(
        !received.iter().any(|t| t.starts_with("/wrong")),
        "{received:?}"
    );
}

// Client connections have deadlines on both protocols (SECURITY.md,
// "Bounded resources"): an HTTP/1.1 connection idle between requests and an
// HTTP/2 connection with no open stream close after
// `client_idle_timeout_seconds`; an HTTP/2 header block that never ends
// (HEADERS without END_HEADERS, then nothing) closes its connection after
// `header_timeout_ms`. A well-behaved client stays fast meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_and_unfinished_connections_are_closed() {
    let dir = cert_dir();
    let (cert, key) = make_cert(&dir, "idle");
    let up = Upstream::start();
    let tls_port = free_port();
    let server_extra = format!(
        "client_idle_timeout_seconds = 3\nheader_timeout_ms = 500\n{}",
        tls_block(tls_port, &cert, &key, "")
    );
    let routes = route("/public/*", up.port, false, "");
    let gw = Gateway::start_with(GatewayOptions {
        server_extra: &server_extra,
        ..GatewayOptions::new(&routes)
    });
    let well_behaved = {
        let client = H2Client::connect(tls_port, &cert).await;
        tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            for _ in 0..20 {
                let started = std::time::Instant::now();
                assert_eq!(client.get("/public/x", &[]).await.status, 200);
                slowest = slowest.max(started.elapsed());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            slowest
        })
    };
    let idle_h1 = async {
        let mut conn = Conn::connect(gw.port).await;
        assert_eq!(conn.request("GET", "/public/x", &[], b"").await.status, 200);
        let started = std::time::Instant::now();
        let mut stream = conn.into_inner();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(
            Duration::from_secs(8),
            tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut rest),
        )
        .await;
        assert!(read.is_ok(), "an idle HTTP/1.1 connection was kept");
        started.elapsed()
    };
    let idle_h2 = async {
        let mut raw = RawH2::connect(tls_port, &cert).await;
        raw.closed_within(Duration::from_secs(8))
            .await
            .expect("an idle HTTP/2 connection was kept")
    };
    let unfinished_h2 = async {
        let mut raw = RawH2::connect(tls_port, &cert).await;
        let block = hpack_literals(&[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/public/x"),
        ]);
        // No END_HEADERS: a CONTINUATION is owed, and never comes.
        raw.send_frame(frame::HEADERS, frame::END_STREAM, 1, &block)
            .await
            .unwrap();
        raw.closed_within(Duration::from_secs(8))
            .await
            .expect("an unfinished header block was kept")
    };
    let (h1, h2, unfinished) = tokio::join!(idle_h1, idle_h2, unfinished_h2);
    assert!(
        h1 >= Duration::from_millis(2500) && h1 < Duration::from_secs(6),
        "idle HTTP/1.1 closed after {h1:?}"
    );
    assert!(
        h2 >= Duration::from_millis(2500) && h2 < Duration::from_secs(6),
        "idle HTTP/2 closed after {h2:?}"
    );
    assert!(
        unfinished < Duration::from_millis(2000),
        "unfinished header block closed after {unfinished:?}"
    );
    let slowest = well_behaved.await.unwrap();
    assert!(slowest < Duration::from_millis(500), "slowest {slowest:?}");
    assert!(
        metric_value(gw.admin_port, "gateway_header_timeouts_total").await >= 1,
        "the unfinished block is counted"
    );
}

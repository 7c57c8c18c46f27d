//! End-to-end tests of the request path: the real gateway binary,
//! real echo-upstream processes and a real PostgreSQL.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;

// 1. Identity headers come only from the gateway.
#[tokio::test(flavor = "multi_thread")]
async fn identity_headers_come_only_from_the_gateway() {
    let s = setup();
    let spoofed = [
        ("X-User-Id", "spoofed-1"),
        ("x-user-id", "spoofed-2"),
        ("X-USER-ID", "spoofed-3"),
        ("x_user_id", "spoofed-4"),
        ("X-Username", "mallory"),
        ("x-username", "mallory2"),
        ("X_USERNAME", "mallory3"),
    ];
    let mut headers = h(&spoofed);
    headers.push(bearer(&token_for("alice")));

    let r = get(s.gw.port, "/api/robeing/echo", &headers).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-user-id"), [ALICE_ID]);
    assert_eq!(r.upstream_header("x-username"), ["alice"]);
    assert!(r.upstream_header("x_user_id").is_empty());
    assert!(r.upstream_header("x_username").is_empty());

    // Public route, no token: every copy is gone and none is added.
    let r = get(s.gw.port, "/api/auth/echo", &h(&spoofed)).await;
    assert_eq!(r.status, 200);
    for name in ["x-user-id", "x-username", "x_user_id", "x_username"] {
        assert!(
            r.upstream_header(name).is_empty(),
            "{name} reached upstream"
        );
    }

    // A client nominating the identity headers as hop-by-hop cannot make
    // the gateway's own copies vanish.
    let mut nominating = headers.clone();
    nominating.push((
        "Connection".into(),
        "keep-alive, X-User-Id, X-Username".into(),
    ));
    let r = get(s.gw.port, "/api/robeing/echo", &nominating).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-user-id"), [ALICE_ID]);
    assert_eq!(r.upstream_header("x-username"), ["alice"]);

    // Public route with a valid token: identity is still injected.
    let r = get(s.gw.port, "/api/auth/echo", &headers).await;
    assert_eq!(r.upstream_header("x-user-id"), [ALICE_ID]);
    assert_eq!(r.upstream_header("x-username"), ["alice"]);
}

// 2. Every error code, in the envelope, with X-Request-Id.
#[tokio::test(flavor = "multi_thread")]
async fn every_error_code_is_an_envelope() {
    let public = Upstream::start();
    let protected = Upstream::start();
    let routes = standard_routes(&public, &protected)
        + &route("/api/small/*", protected.port, false, "max_body_bytes = 16")
        + &route("/api/down/*", closed_port(), false, "")
        + &route(
            "/api/slow/*",
            protected.port,
            false,
            "read_timeout_ms = 500",
        );
    let gw = Gateway::start_with(GatewayOptions::new(&routes));
    let port = gw.port;
    let alice = bearer(&token_for("alice"));

    assert_envelope(
        &get(port, "/api/robeing/%2f", &[]).await,
        400,
        "BAD_REQUEST",
    );
    assert_envelope(
        &get(port, "/api/robeing/x", &[]).await,
        401,
        "MISSING_TOKEN",
    );
    let garbage = bearer("garbage");
    assert_envelope(
        &get(port, "/api/robeing/x", &[garbage]).await,
        401,
        "INVALID_TOKEN",
    );
    let expired = bearer(&expired_token_for("alice"));
    assert_envelope(
        &get(port, "/api/robeing/x", &[expired]).await,
        401,
        "TOKEN_EXPIRED",
    );
    let stranger = bearer(&token_for(&unique("nobody")));
    assert_envelope(
        &get(port, "/api/robeing/x", &[stranger]).await,
        404,
        "USER_NOT_FOUND",
    );
    assert_envelope(
        &get(port, "/nothing/here", &[]).await,
        404,
        "ROUTE_NOT_FOUND",
    );
    let big = send(port, "POST", "/api/small/x", &[], &[b'x'; 17]).await;
    assert_envelope(&big, 413, "PAYLOAD_TOO_LARGE");
    let mut chunked = Conn::connect(port).await;
    chunked
        .send_raw(b"POST /api/small/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n")
        .await;
    assert_envelope(&chunked.read_response().await, 413, "PAYLOAD_TOO_LARGE");
    assert_envelope(
        &get(port, "/api/down/x", &[]).await,
        503,
        "SERVICE_UNAVAILABLE",
    );
    assert_envelope(
        &get(port, "/api/slow/hang", &[]).await,
        504,
        "GATEWAY_TIMEOUT",
    );
    let ok = send(port, "POST", "/api/small/x", &[alice], &[b'x'; 16]).await;
    assert_eq!(ok.status, 200, "a body at the limit passes");

    // Directory down and nothing cached: fail closed.
    let no_db = format!(
        "host=127.0.0.1 port={} user=x dbname=x connect_timeout=1",
        closed_port()
    );
    let routes = standard_routes(&public, &protected);
    let gw2 = Gateway::start_with(GatewayOptions {
        database_url: no_db,
        ..GatewayOptions::new(&routes)
    });
    let r = get(gw2.port, "/api/robeing/x", &[bearer(&token_for("alice"))]).await;
    assert_envelope(&r, 503, "USER_DIRECTORY_UNAVAILABLE");
    assert!(protected
        .received()
        .await
        .iter()
        .all(|t| !t.starts_with("/api/robeing")));
}

// 3. Bad tokens: the right 401 on protected routes, anonymous on public ones.
#[tokio::test(flavor = "multi_thread")]
async fn bad_tokens_are_refused_with_the_right_code() {
    let s = setup();
    let key = JWT_SECRET.as_bytes();
    let exp = in_seconds(600);
    let hs256 = json!({"alg": "HS256", "typ": "JWT"});
    let good_claims = json!({"username": "alice", "exp": exp});
    let valid = token_for("alice");
    let mut wrong_sig = valid.clone();
    let last = wrong_sig.pop().unwrap();
    wrong_sig.push(if last == 'A' { 'B' } else { 'A' });
    let cases: Vec<(&str, String, &str)> = vec![
        ("expired", expired_token_for("alice"), "TOKEN_EXPIRED"),
        ("wrong signature", wrong_sig, "INVALID_TOKEN"),
        (
            "signed with another key",
            signed_token(
                hs256.clone(),
                good_claims.clone(),
                b"another-key-another-key-another-key",
            ),
            "INVALID_TOKEN",
        ),
        (
            "alg none",
            signed_token(
                json!({"alg": "none", "typ": "JWT"}),
                good_claims.clone(),
                key,
            ),
            "INVALID_TOKEN",
        ),
        (
            "alg None",
            signed_token(json!({"alg": "None"}), good_claims.clone(), key),
            "INVALID_TOKEN",
        ),
        (
            "HS384",
            signed_token(json!({"alg": "HS384"}), good_claims.clone(), key),
            "INVALID_TOKEN",
        ),
        (
            "HS512",
            signed_token(json!({"alg": "HS512"}), good_claims.clone(), key),
            "INVALID_TOKEN",
        ),
        (
            "RS256 header",
            signed_token(json!({"alg": "RS256"}), good_claims.clone(), key),
            "INVALID_TOKEN",
        ),
        ("malformed", "not-a-jwt".into(), "INVALID_TOKEN"),
        ("two parts", "abc.def".into(), "INVALID_TOKEN"),
        (
            "no exp",
            signed_token(hs256.clone(), json!({"username": "alice"}), key),
            "INVALID_TOKEN",
        ),
        (
            "future nbf",
            signed_token(
                hs256.clone(),
                json!({"username": "alice", "exp": exp, "nbf": in_seconds(300)}),
                key,
            ),
            "INVALID_TOKEN",
        ),
        (
            "numeric username",
            signed_token(hs256.clone(), json!({"username": 42, "exp": exp}), key),
            "INVALID_TOKEN",
        ),
        (
            "array username",
            signed_token(
                hs256.clone(),
                json!({"username": ["alice"], "exp": exp}),
                key,
            ),
            "INVALID_TOKEN",
        ),
        (
            "empty username",
            signed_token(hs256.clone(), json!({"username": "", "exp": exp}), key),
            "INVALID_TOKEN",
        ),
        (
            "no username",
            signed_token(hs256.clone(), json!({"sub": "alice", "exp": exp}), key),
            "INVALID_TOKEN",
        ),
        (
            "string exp",
            signed_token(
                hs256.clone(),
                json!({"username": "alice", "exp": "later"}),
                key,
            ),
            "INVALID_TOKEN",
        ),
        ("huge", "a".repeat(9000), "INVALID_TOKEN"),
    ];
    for (what, token, code) in &cases {
        let r = get(s.gw.port, "/api/robeing/x", &[bearer(token)]).await;
        assert_eq!(r.status, 401, "{what}");
        assert_envelope(&r, 401, code);
    }
    assert!(
        s.protected.received().await.is_empty(),
        "a bad token reached the protected upstream"
    );

    // Public route: a stale or bad token is forwarded without identity.
    for (what, token, _) in &cases {
        let r = get(s.gw.port, "/api/auth/refresh", &[bearer(token)]).await;
        assert_eq!(r.status, 200, "{what}");
        assert!(r.upstream_header("x-user-id").is_empty(), "{what}");
        assert_eq!(
            r.upstream_header("authorization"),
            [format!("Bearer {token}")],
            "{what}"
        );
    }
}

// 4. Path tricks never reach a protected upstream unauthenticated.
#[tokio::test(flavor = "multi_thread")]
async fn path_tricks_do_not_bypass_authentication() {
    let s = setup();
    let port = s.gw.port;
    let unauthenticated_attempts = [
        "/api/auth/../robeing/x",
        "/api/auth/%2e%2e/robeing/x",
        "/api/auth/%2E%2E/robeing/x",
        "/api/auth/.%2e/robeing/x",
        "/api/auth//..//robeing/x",
        "/api/auth/./../robeing/x",
        "//api/robeing/x",
        "/api//robeing/x",
        "/api/%72obeing/x",
    ];
    for target in unauthenticated_attempts {
        let r = get(port, target, &[]).await;
        assert_envelope(&r, 401, "MISSING_TOKEN");
    }
    for target in [
        "/api/auth/..%2frobeing/x",
        "/api/auth/%2f..%2frobeing/x",
        "/api/auth%2f..%2frobeing/x",
        "/api/auth/..%5crobeing/x",
        "/api/auth/..;/robeing/x",
        "/api/auth/../../../robeing/x",
    ] {
        assert_envelope(&get(port, target, &[]).await, 400, "BAD_REQUEST");
    }
    assert_envelope(
        &get(port, "/api/authx/x", &[]).await,
        404,
        "ROUTE_NOT_FOUND",
    );
    assert!(
        s.protected.received().await.is_empty(),
        "a trick reached the protected upstream"
    );

    // With a token, the upstream receives the very path the decision used.
    let alice = bearer(&token_for("alice"));
    let r = get(
        port,
        "/api/auth/%2e%2e/robeing/./a/../x?q=%2e%2e",
        std::slice::from_ref(&alice),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["uri"], "/api/robeing/x?q=%2e%2e");
    let r = get(port, "/api/robeing//y/%7euser", &[alice]).await;
    assert_eq!(r.json()["uri"], "/api/robeing/y/~user");
    assert_eq!(
        s.protected.received().await,
        ["/api/robeing/x?q=%2e%2e", "/api/robeing/y/~user"]
    );
    // The public upstream saw none of it either.
    assert!(s.public.received().await.is_empty());
}

// 5. Bodies are byte-identical, streamed both ways.
#[tokio::test(flavor = "multi_thread")]
async fn slack_bodies_arrive_byte_identical() {
    let s = setup();
    let ts = in_seconds(0).to_string();
    let form: &[u8] = b"token=x&team_id=T1&payload=%7B%22type%22%3A%22block_actions%22%2C%22a%22%3A%20%5B1%2C2%5D%7D";
    let json_body: &[u8] =
        b"{\"type\":\"event_callback\",  \"event\":{\"text\":\"caf\xc3\xa9 \\u00e9\",\"n\":1.50}}";
    for (content_type, body) in [
        ("application/x-www-form-urlencoded", form),
        ("application/json", json_body),
    ] {
        let sig = slack_signature(&ts, body);
        let headers = h(&[
            ("Content-Type", content_type),
            ("X-Slack-Signature", &sig),
            ("X-Slack-Request-Timestamp", &ts),
        ]);
        let r = send(s.gw.port, "POST", "/api/auth/slack/events", &headers, body).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        assert_eq!(v["signature_valid"], true);
        assert_eq!(v["body_sha256"], sha256_hex(body));
        assert_eq!(r.upstream_header("content-type"), [content_type]);
        assert_eq!(r.upstream_header("x-slack-signature"), [sig.as_str()]);
        assert_eq!(
            r.upstream_header("x-slack-request-timestamp"),
            [ts.as_str()]
        );
    }
    // The upstream's check is real: a tampered body fails it.
    let sig = slack_signature(&ts, form);
    let headers = h(&[
        ("X-Slack-Signature", &sig),
        ("X-Slack-Request-Timestamp", &ts),
    ]);
    let r = send(
        s.gw.port,
        "POST",
        "/api/auth/slack/events",
        &headers,
        b"token=y",
    )
    .await;
    assert_eq!(r.status, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn large_and_chunked_bodies_arrive_byte_identical() {
    let s = setup();
    let alice = bearer(&token_for("alice"));
    let upload: Vec<u8> = (0..5 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let r = send(
        s.gw.port,
        "PUT",
        "/api/robeing/upload",
        std::slice::from_ref(&alice),
        &upload,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_len"], upload.len());
    assert_eq!(r.json()["body_sha256"], sha256_hex(&upload));

    let n = 6 * 1024 * 1024 + 3;
    let r = get(
        s.gw.port,
        &format!("/api/robeing/download/{n}"),
        std::slice::from_ref(&alice),
    )
    .await;
    assert_eq!(r.status, 200);
    let want: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(r.body.len(), n);
    assert!(r.body == want, "download differs");

    let mut conn = Conn::connect(s.gw.port).await;
    let mut raw = format!(
        "POST /api/robeing/chunked HTTP/1.1\r\nHost: t\r\n{}: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        alice.0, alice.1
    )
    .into_bytes();
    let mut sent = Vec::new();
    for i in 0..40u32 {
        let chunk: Vec<u8> = (0..(1000 + i * 777)).map(|j| (j ^ i) as u8).collect();
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(&chunk);
        raw.extend_from_slice(b"\r\n");
        sent.extend_from_slice(&chunk);
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    conn.send_raw(&raw).await;
    let r = conn.read_response().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_sha256"], sha256_hex(&sent));
}

#[tokio::test(flavor = "multi_thread")]
async fn server_sent_events_arrive_one_by_one() {
    let s = setup();
    let mut conn = Conn::connect(s.gw.port).await;
    let alice = bearer(&token_for("alice"));
    let start = Instant::now();
    conn.send_raw(
        format!(
            "GET /api/robeing/sse HTTP/1.1\r\nHost: t\r\n{}: {}\r\n\r\n",
            alice.0, alice.1
        )
        .as_bytes(),
    )
    .await;
    let (status, headers) = conn.read_head().await;
    assert_eq!(status, 200);
    assert!(headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("content-type") && v == "text/event-stream"));
    let mut arrivals = Vec::new();
    let mut text = String::new();
    while let Some(chunk) = conn.read_chunk().await {
        text.push_str(&String::from_utf8_lossy(&chunk));
        arrivals.push(start.elapsed());
    }
    assert_eq!(text, "data: event-0\n\ndata: event-1\n\ndata: event-2\n\n");
    // The upstream spaces events 400 ms apart: the first must arrive long
    // before the last was even produced.
    assert!(arrivals.len() >= 3, "events were merged: {arrivals:?}");
    assert!(
        arrivals[arrivals.len() - 1] - arrivals[0] >= Duration::from_millis(600),
        "{arrivals:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_upgrade_carries_identity() {
    let s = setup();
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", s.gw.port))
        .await
        .unwrap();
    let request = tokio_tungstenite::tungstenite::http::Request::builder()
        .uri(format!("ws://127.0.0.1:{}/api/robeing/ws", s.gw.port))
        .header("Host", format!("127.0.0.1:{}", s.gw.port))
        .header("Authorization", format!("Bearer {}", token_for("alice")))
        .header("X-User-Id", "spoofed")
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header(
            "Sec-WebSocket-Key",
            tokio_tungstenite::tungstenite::handshake::client::generate_key(),
        )
        .body(())
        .unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("websocket handshake");
    assert_eq!(resp.status(), 101);
    let first = ws.next().await.unwrap().unwrap().into_text().unwrap();
    let headers: Vec<(String, String)> = serde_json::from_str(&first).unwrap();
    let ids: Vec<_> = headers
        .iter()
        .filter(|(n, _)| n == "x-user-id")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(ids, [ALICE_ID]);
    assert!(headers
        .iter()
        .any(|(n, v)| n == "x-username" && v == "alice"));
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        "ping through gateway",
    ))
    .await
    .unwrap();
    let echo = ws.next().await.unwrap().unwrap().into_text().unwrap();
    assert_eq!(echo.as_str(), "ping through gateway");

    // No token on a protected WebSocket route: refused before any upgrade.
    let r = get(
        s.gw.port,
        "/api/robeing/ws",
        &h(&[("Connection", "Upgrade"), ("Upgrade", "websocket")]),
    )
    .await;
    assert_envelope(&r, 401, "MISSING_TOKEN");
}

// 6. Upstream status, headers and non-JSON bodies pass through unchanged.
#[tokio::test(flavor = "multi_thread")]
async fn upstream_responses_pass_through_unchanged() {
    let s = setup();
    for code in [200u16, 201, 400, 403, 404, 418, 500, 502, 503] {
        let r = get(s.gw.port, &format!("/api/auth/status/{code}"), &[]).await;
        assert_eq!(r.status, code);
        assert_eq!(r.body, b"not json \x00\xff\xfe", "{code}");
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
        assert_eq!(r.header("x-upstream"), Some("echo"));
        assert_eq!(r.header_all("set-cookie"), ["a=1", "b=2"]);
    }
}

// 7. Refused upstream: 503 at once; hanging upstream: 504 after the timeout.
#[tokio::test(flavor = "multi_thread")]
async fn upstream_failures_have_their_codes_and_timing() {
    let up = Upstream::start();
    let routes = route("/api/down/*", closed_port(), false, "")
        + &route("/api/slow/*", up.port, false, "read_timeout_ms = 700");
    let gw = Gateway::start_with(GatewayOptions::new(&routes));
    let t = Instant::now();
    assert_envelope(
        &get(gw.port, "/api/down/x", &[]).await,
        503,
        "SERVICE_UNAVAILABLE",
    );
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "refusal took {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    assert_envelope(
        &get(gw.port, "/api/slow/hang", &[]).await,
        504,
        "GATEWAY_TIMEOUT",
    );
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(3),
        "timeout after {took:?}"
    );
}

// 8. Many concurrent first requests for one user: one directory query.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_requests_share_one_directory_query() {
    let public = Upstream::start();
    let protected = Upstream::start();
    let routes = standard_routes(&public, &protected);
    let gw = Gateway::start_with(GatewayOptions {
        users_extra: "query = 'SELECT id FROM counted_user_lookup($1)'",
        ..GatewayOptions::new(&routes)
    });
    let username = unique("herd");
    let user_id = add_user(&username);
    let token = token_for(&username);
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let token = token.clone();
            let port = gw.port;
            tokio::spawn(async move { get(port, "/api/robeing/x", &[bearer(&token)]).await })
        })
        .collect();
    for task in tasks {
        let r = task.await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.upstream_header("x-user-id"), [user_id.as_str()]);
    }
    let queries = psql(&format!(
        "SELECT n FROM gateway_lookups WHERE username = '{username}'"
    ));
    assert_eq!(
        queries, "1",
        "directory queries for 200 concurrent first requests"
    );
}

// 9. Identity never carries over on a keep-alive connection.
#[tokio::test(flavor = "multi_thread")]
async fn keep_alive_does_not_carry_identity() {
    let s = setup();
    let mut conn = Conn::connect(s.gw.port).await;
    let r = conn
        .request(
            "GET",
            "/api/auth/first",
            &[bearer(&token_for("alice"))],
            b"",
        )
        .await;
    assert_eq!(r.upstream_header("x-user-id"), [ALICE_ID]);
    assert_ne!(r.header("connection"), Some("close"));
    let r = conn.request("GET", "/api/auth/second", &[], b"").await;
    assert_eq!(r.status, 200, "the connection was reused");
    assert!(r.upstream_header("x-user-id").is_empty());
    assert!(r.upstream_header("x-username").is_empty());
    let r = conn.request("GET", "/api/robeing/third", &[], b"").await;
    assert_envelope(&r, 401, "MISSING_TOKEN");
    // A refusal without a request body keeps the connection usable...
    assert_ne!(r.header("connection"), Some("close"));
    let r = conn.request("GET", "/api/auth/fourth", &[], b"").await;
    assert_eq!(r.status, 200, "the connection survived the 401");
    assert!(r.upstream_header("x-user-id").is_empty());
    // ...one with an unread body closes it.
    let r = conn
        .request("POST", "/api/robeing/fifth", &[], b"unread body")
        .await;
    assert_envelope(&r, 401, "MISSING_TOKEN");
    assert_eq!(r.header("connection"), Some("close"));
}

// 10. Request id, X-Forwarded-For and X-Forwarded-Proto.
#[tokio::test(flavor = "multi_thread")]
async fn request_id_and_forwarding_headers() {
    let s = setup();
    let r = get(
        s.gw.port,
        "/api/auth/x",
        &h(&[("X-Request-Id", "client-id_1.2:3")]),
    )
    .await;
    assert_eq!(r.header("x-request-id"), Some("client-id_1.2:3"));
    assert_eq!(r.upstream_header("x-request-id"), ["client-id_1.2:3"]);

    for bad in ["has space", "semi;colon", &"a".repeat(129)] {
        let r = get(s.gw.port, "/api/auth/x", &h(&[("X-Request-Id", bad)])).await;
        let id = r.header("x-request-id").unwrap().to_owned();
        assert!(id.starts_with("req_") && id.len() == 36, "{id}");
        assert_eq!(r.upstream_header("x-request-id"), [id]);
    }
    let a = get(s.gw.port, "/api/auth/x", &[]).await;
    let b = get(s.gw.port, "/api/auth/x", &[]).await;
    assert_ne!(a.header("x-request-id"), b.header("x-request-id"));

    let r = get(
        s.gw.port,
        "/api/auth/x",
        &h(&[
            ("X-Forwarded-For", "127.0.0.9"),
            ("X-Forwarded-Proto", "https"),
        ]),
    )
    .await;
    assert_eq!(
        r.upstream_header("x-forwarded-for"),
        ["127.0.0.9, 127.0.0.1"]
    );
    assert_eq!(r.upstream_header("x-forwarded-proto"), ["http"]);
    let r = get(s.gw.port, "/api/auth/x", &[]).await;
    assert_eq!(r.upstream_header("x-forwarded-for"), ["127.0.0.1"]);
}

// Header names leave lower-case both ways (common ones title-cased), the
// values and the count of each unchanged: what an upstream reads on the
// wire and what the client gets back (README, "What happens to a request").
#[tokio::test(flavor = "multi_thread")]
async fn header_names_leave_lower_case_with_values_unchanged() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_port = upstream.local_addr().unwrap().port();
    let (head_tx, mut head_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = upstream.accept().await {
            let head_tx = head_tx.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if sock.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                head_tx
                    .send(String::from_utf8_lossy(&head).into_owned())
                    .ok();
                let answer = "HTTP/1.1 200 Fine Thanks\r\nContent-Type: text/plain\r\n\
                              X-Upstream-Note: Mixed Case Value\r\nX-Upstream-Note: second\r\n\
                              Content-Length: 2\r\nConnection: close\r\n\r\nok";
                sock.write_all(answer.as_bytes()).await.ok();
            });
        }
    });
    let gw = Gateway::start_with(GatewayOptions::new(&route(
        "/api/raw/*",
        upstream_port,
        false,
        "",
    )));
    let mut conn = Conn::connect(gw.port).await;
    let r = conn
        .request(
            "GET",
            "/api/raw/x",
            &h(&[
                ("X-Client-Note", "Keep This Case"),
                ("X-Client-Note", "and this"),
                ("Accept", "text/plain"),
            ]),
            b"",
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"ok");
    let names: Vec<&str> = r.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"x-upstream-note"), "{names:?}");
    assert!(names.contains(&"Content-Type"), "{names:?}");
    assert_eq!(
        r.header_all("x-upstream-note"),
        ["Mixed Case Value", "second"]
    );

    let head = head_rx.recv().await.expect("the upstream saw the request");
    let lines: Vec<&str> = head.split("\r\n").collect();
    assert_eq!(lines[0], "GET /api/raw/x HTTP/1.1", "{head}");
    assert!(lines.contains(&"Host: gateway.test"), "{head}");
    assert!(lines.contains(&"accept: text/plain"), "{head}");
    let notes: Vec<&str> = lines
        .iter()
        .filter(|l| l.to_ascii_lowercase().starts_with("x-client-note:"))
        .copied()
        .collect();
    assert_eq!(
        notes,
        ["x-client-note: Keep This Case", "x-client-note: and this"],
        "{head}"
    );
    for gateway_header in [
        "x-request-id:",
        "x-forwarded-for:",
        "x-forwarded-proto:",
        "traceparent:",
    ] {
        let count = lines
            .iter()
            .filter(|l| l.starts_with(gateway_header))
            .count();
        assert_eq!(count, 1, "{gateway_header} in {head}");
    }
}

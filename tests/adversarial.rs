//! The adversarial suite: identity spoofing, hostile tokens, path
//! encodings, request framing and oversized requests, against the real
//! binary and a real upstream that records what it receives. The gateway
//! fails closed, answers 4xx (never 500), and the upstream only ever sees
//! what the gateway decided on.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BOB_ID: &str = "0b7e3c52-91d4-4f0e-8a63-5d2c7e9f1a02";

/// Everything the connection sends until it closes or `wait` passes quietly.
async fn read_all(conn: Conn, wait: Duration) -> String {
    let mut stream = conn.into_inner();
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match tokio::time::timeout(wait, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends `bytes` on a new connection; everything that comes back.
async fn exchange(port: u16, bytes: &[u8]) -> String {
    let mut conn = Conn::connect(port).await;
    conn.send_raw(bytes).await;
    read_all(conn, Duration::from_millis(800)).await
}

fn statuses(raw: &str) -> Vec<u16> {
    raw.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| raw.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

// ---------------------------------------------------------------- spoofing

#[tokio::test(flavor = "multi_thread")]
async fn identity_spoofing_in_every_shape_is_stripped() {
    let s = setup();
    let alice = bearer(&token_for("alice"));
    let shapes: Vec<Vec<(String, String)>> = vec![
        h(&[("X-User-Id", "evil-1"), ("X-User-Id", "evil-2")]),
        h(&[
            ("X-User-Id", "evil-1, evil-2"),
            ("X-Username", "root, admin"),
        ]),
        h(&[("x-UsEr-iD", "evil"), ("X-USERNAME", "root")]),
        h(&[
            ("X_User_Id", "evil"),
            ("x_username", "root"),
            ("X-User_Id", "evil"),
        ]),
        h(&[
            ("Connection", "X-User-Id, X-Username"),
            ("X-User-Id", "evil"),
        ]),
        h(&[("Connection", "close, x-username"), ("X-Username", "root")]),
    ];
    for shape in &shapes {
        // Anonymous on the public route: nothing at all arrives.
        let r = get(s.gw.port, "/api/auth/x", shape).await;
        assert_eq!(r.status, 200, "{shape:?}");
        for name in [
            "x-user-id",
            "x-username",
            "x_user_id",
            "x_username",
            "x-user_id",
        ] {
            assert!(r.upstream_header(name).is_empty(), "{name} from {shape:?}");
        }
        // Authenticated: exactly the gateway's one value.
        let mut with_token = shape.clone();
        with_token.push(alice.clone());
        let r = get(s.gw.port, "/api/robeing/x", &with_token).await;
        assert_eq!(r.status, 200, "{shape:?}");
        assert_eq!(r.upstream_header("x-user-id"), [ALICE_ID], "{shape:?}");
        assert_eq!(r.upstream_header("x-username"), ["alice"], "{shape:?}");
        assert!(r.upstream_header("x_user_id").is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_requests_each_carry_their_own_identity() {
    let s = setup();
    let (alice, bob) = (token_for("alice"), token_for("bob"));
    let mut wire = String::new();
    // A request with a body among them: the keep-alive loop cannot rule out
    // carried-over bytes by its count and asks Pingora's settings.
    for (target, token, body) in [
        ("/api/robeing/1", Some(&alice), ""),
        ("/api/robeing/2", Some(&bob), "hello"),
        ("/api/auth/3", None, ""),
        ("/api/robeing/4", None, ""),
        ("/api/robeing/5", Some(&alice), ""),
    ] {
        let method = if body.is_empty() { "GET" } else { "POST" };
        wire.push_str(&format!(
            "{method} {target} HTTP/1.1\r\nHost: t\r\nX-User-Id: evil\r\n"
        ));
        if let Some(token) = token {
            wire.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        if !body.is_empty() {
            wire.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        wire.push_str("\r\n");
        wire.push_str(body);
    }
    let mut conn = Conn::connect(s.gw.port).await;
    conn.send_raw(wire.as_bytes()).await;
    let want: [(u16, Option<&str>); 5] = [
        (200, Some(ALICE_ID)),
        (200, Some(BOB_ID)),
        (200, None),
        (401, None),
        (200, Some(ALICE_ID)),
    ];
    for (i, (status, id)) in want.into_iter().enumerate() {
        let r = conn
            .try_read_response()
            .await
            .unwrap_or_else(|e| panic!("pipelined request {}: {e:?}", i + 1));
        assert_eq!(r.status, status, "pipelined request {}", i + 1);
        if status == 200 {
            let ids = r.upstream_header("x-user-id");
            assert_eq!(ids.first().map(String::as_str), id, "request {}", i + 1);
            assert!(ids.len() <= 1);
        }
    }
}

// ---------------------------------------------------------------- tokens

#[tokio::test(flavor = "multi_thread")]
async fn hostile_tokens_are_401_never_500() {
    let s = setup();
    let key = JWT_SECRET.as_bytes();
    let exp = in_seconds(600);
    let claims = json!({"username": "alice", "exp": exp});
    let attacker = b"attacker-key-attacker-key-attacker-key";
    let mut cases: Vec<(String, String)> = Vec::new();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let t = signed_token(json!({"alg": alg}), claims.clone(), key);
        let unsigned = format!("{}.", t.rsplit_once('.').unwrap().0);
        cases.push((format!("alg {alg}"), t));
        cases.push((format!("alg {alg} unsigned"), unsigned));
    }
    for alg in ["HS384", "HS512", "RS256", "ES256", "PS256", "hs256", ""] {
        cases.push((
            format!("alg {alg:?}"),
            signed_token(json!({"alg": alg}), claims.clone(), key),
        ));
    }
    // Key-selection headers pointing at the attacker's key change nothing.
    for header in [
        json!({"alg": "HS256", "jku": "http://127.0.0.1:1/keys.json"}),
        json!({"alg": "HS256", "kid": "../../../../dev/null"}),
        json!({"alg": "HS256", "jwk": {"kty": "oct", "k": "YXR0YWNrZXI"}}),
        json!({"alg": "HS256", "x5u": "http://127.0.0.1:1/cert.pem"}),
    ] {
        cases.push((
            format!("{header} attacker-signed"),
            signed_token(header, claims.clone(), attacker),
        ));
    }
    for (what, bad) in [
        (
            "exp string",
            json!({"username": "alice", "exp": "tomorrow"}),
        ),
        ("exp float", json!({"username": "alice", "exp": 9.9e12})),
        ("exp negative", json!({"username": "alice", "exp": -1})),
        ("exp bool", json!({"username": "alice", "exp": true})),
        ("exp null", json!({"username": "alice", "exp": null})),
        (
            "exp object",
            json!({"username": "alice", "exp": {"at": exp}}),
        ),
        (
            "nbf string",
            json!({"username": "alice", "exp": exp, "nbf": "now"}),
        ),
        (
            "nbf float",
            json!({"username": "alice", "exp": exp, "nbf": 1.5}),
        ),
        (
            "nbf array",
            json!({"username": "alice", "exp": exp, "nbf": [1]}),
        ),
        ("username empty", json!({"username": "", "exp": exp})),
        (
            "username NUL",
            json!({"username": "ali\u{0}ce", "exp": exp}),
        ),
        ("username CR", json!({"username": "alice\r", "exp": exp})),
        (
            "username LF",
            json!({"username": "alice\nX-User-Id: evil", "exp": exp}),
        ),
        (
            "username DEL",
            json!({"username": "alice\u{7f}", "exp": exp}),
        ),
        (
            "username overlong",
            json!({"username": "a".repeat(300), "exp": exp}),
        ),
        (
            "username object",
            json!({"username": {"name": "alice"}, "exp": exp}),
        ),
        ("username null", json!({"username": null, "exp": exp})),
    ] {
        cases.push((what.into(), signed_token(json!({"alg": "HS256"}), bad, key)));
    }
    // Duplicate claims: serde would take the last, another parser the first.
    let raw_signed = |header: &str, payload: &str| signed_raw("HS256", header, payload, key);
    cases.push((
        "duplicate username".into(),
        raw_signed(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"username":"bob","username":"alice","exp":{exp}}}"#),
        ),
    ));
    cases.push((
        "duplicate exp".into(),
        raw_signed(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"username":"alice","exp":1,"exp":{exp}}}"#),
        ),
    ));
    cases.push((
        "duplicate alg".into(),
        raw_signed(
            r#"{"alg":"none","alg":"HS256"}"#,
            &format!(r#"{{"username":"alice","exp":{exp}}}"#),
        ),
    ));
    cases.push((
        "8 KiB + 1 token".into(),
        format!("{}.{}", "a".repeat(8192), "b"),
    ));
    cases.push(("empty segments".into(), "..".into()));
    cases.push(("four segments".into(), format!("{}.x", token_for("alice"))));

    let mut conn = Conn::connect(s.gw.port).await;
    for (what, token) in &cases {
        let r = conn
            .request("GET", "/api/robeing/x", &[bearer(token)], b"")
            .await;
        assert_eq!(
            r.status,
            401,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_envelope(&r, 401, "INVALID_TOKEN");
    }
    assert!(
        s.protected.received().await.is_empty(),
        "a hostile token got through"
    );

    // With the one-key shorthand a `kid` selects nothing and is ignored; a
    // token naming or carrying its own key is refused (and nothing fetched).
    let t = signed_token(
        json!({"alg": "HS256", "kid": "whatever"}),
        claims.clone(),
        key,
    );
    let r = conn
        .request("GET", "/api/robeing/x", &[bearer(&t)], b"")
        .await;
    assert_eq!(r.status, 200);
    for header in [
        json!({"alg": "HS256", "jku": "http://127.0.0.1:1/keys.json"}),
        json!({"alg": "HS256", "x5u": "http://127.0.0.1:1/cert.pem"}),
    ] {
        let t = signed_token(header.clone(), claims.clone(), key);
        let r = conn
            .request("GET", "/api/robeing/x", &[bearer(&t)], b"")
            .await;
        assert_envelope(&r, 401, "INVALID_TOKEN");
    }
}

// Every single-byte change of a valid token, over a real connection: 401.
#[tokio::test(flavor = "multi_thread")]
async fn every_byte_of_a_token_matters() {
    let public = Upstream::start();
    let protected = Upstream::start();
    // ~900 distinct tokens from one address: each one verified, not
    // stopped by the first-sight budget.
    let gw = Gateway::start_with(GatewayOptions {
        auth: Some(AUTH_WITHOUT_FIRST_SIGHT),
        ..GatewayOptions::new(&standard_routes(&public, &protected))
    });
    let valid = token_for("alice");
    let mut conn = Conn::connect(gw.port).await;
    let r = conn
        .request("GET", "/api/robeing/x", &[bearer(&valid)], b"")
        .await;
    assert_eq!(r.status, 200);
    let replacements = [b'A', b'-', b'_', b'.', b'0', b'z'];
    let mut tried = 0;
    for position in 0..valid.len() {
        for &byte in &replacements {
            let mut bytes = valid.clone().into_bytes();
            if bytes[position] == byte {
                continue;
            }
            bytes[position] = byte;
            let changed = String::from_utf8(bytes).unwrap();
            let r = conn
                .request("GET", "/api/robeing/x", &[bearer(&changed)], b"")
                .await;
            assert_eq!(
                r.status, 401,
                "byte {position} -> {:?} accepted",
                byte as char
            );
            tried += 1;
        }
    }
    assert!(tried > valid.len() * 5);
    assert_eq!(
        protected.received().await.len(),
        1,
        "only the valid token got through"
    );
}

// ---------------------------------------------------------------- paths

#[tokio::test(flavor = "multi_thread")]
async fn path_encodings_decide_on_what_the_upstream_receives() {
    let s = setup();
    let port = s.gw.port;
    // Refused outright: no safe normalization.
    for target in [
        "/api/auth/%2e%2e%2frobeing/x",
        "/api/auth/%2E%2E%2Frobeing/x",
        "/api/auth/..%2Frobeing/x",
        "/api/auth/..%5Crobeing/x",
        "/api/auth/..%5crobeing/x",
        "/api/auth/%00/x",
        "/api/auth/..;/robeing/x",
        "/api/auth/..%3B/robeing/x",
        "/api/auth/../../robeing/x",
        "/api/auth/%c0%ae%c0%ae/robeing/x",
    ] {
        let r = get(port, target, &[]).await;
        assert!(
            r.status == 400 || r.status == 404,
            "{target}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        assert!(
            r.header("content-type").is_some_and(|c| c.contains("json")),
            "{target}"
        );
    }
    // Normalized into the protected prefix: the token is required there.
    for target in [
        "/api/auth/%2e%2e/robeing/x",
        "/api/auth/.%2E/robeing/x",
        "/api/auth/%2e./robeing/x",
        "/api/./auth/../robeing/x",
        "/api//auth//..//robeing/x",
        "/api/robeing/x#fragment",
        "http://gateway.test/api/auth/../robeing/x",
        "HTTP://gateway.test/api/robeing/x",
    ] {
        let r = get(port, target, &[]).await;
        assert!(
            r.status == 401 || r.status == 400,
            "{target}: {} reached an upstream",
            r.status
        );
    }
    // `;` parameters are refused (see the test below); prefixes match whole
    // segments only.
    assert_envelope(
        &get(port, "/api/robeing;a=b/x", &[]).await,
        400,
        "BAD_REQUEST",
    );
    for target in ["/api/authx", "/api/auth.x/y", "/apix/auth/x"] {
        let r = get(port, target, &[]).await;
        assert_envelope(&r, 404, "ROUTE_NOT_FOUND");
    }
    assert!(
        s.protected.received().await.is_empty(),
        "{:?}",
        s.protected.received().await
    );
    assert!(
        s.public.received().await.is_empty(),
        "{:?}",
        s.public.received().await
    );

    // Double encoding stays what it is: one level is decoded, never two.
    let r = get(port, "/api/auth/%252e%252e/robeing/x", &[]).await;
    assert_eq!(r.status, 200);
    assert!(s.protected.received().await.is_empty());
    let public = s.public.received().await;
    assert_eq!(public.len(), 1);
    assert!(public[0].starts_with("/api/auth/%252"), "{public:?}");

    // With a token, the upstream receives exactly the path that was routed.
    let alice = bearer(&token_for("alice"));
    for (target, received) in [
        ("/api/auth/%2e%2e/robeing/a", "/api/robeing/a"),
        (
            "http://gateway.test/api/robeing/b?x=1",
            "/api/robeing/b?x=1",
        ),
        ("/api/robeing/%7e/c", "/api/robeing/~/c"),
        ("/api/robeing/caf%C3%A9", "/api/robeing/caf%C3%A9"),
    ] {
        let r = get(port, target, std::slice::from_ref(&alice)).await;
        assert_eq!(r.status, 200, "{target}");
        assert_eq!(r.json()["uri"], received, "{target}");
    }
    // An absolute-form target naming another host than Host: ambiguous.
    let r = get(
        port,
        "http://elsewhere.test/api/robeing/b",
        std::slice::from_ref(&alice),
    )
    .await;
    assert_eq!(r.status, 400);
    // Raw non-ASCII bytes in the target: refused or forwarded as routed,
    // never a 500.
    let mut conn = Conn::connect(port).await;
    let token = token_for("alice");
    conn.send_raw(
        format!("GET /api/robeing/caf\u{e9} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\r\n")
            .as_bytes(),
    )
    .await;
    let raw = read_all(conn, Duration::from_millis(500)).await;
    let status = statuses(&raw);
    assert!(status == [400] || status == [200], "raw non-ASCII: {raw:?}");
    if status == [200] {
        assert!(raw.contains("/api/robeing/caf"), "{raw}");
    }
}

// ---------------------------------------------------------------- framing

#[tokio::test(flavor = "multi_thread")]
async fn ambiguous_framing_cannot_smuggle_a_request() {
    let s = setup();
    let port = s.gw.port;
    let smuggled = "GET /api/robeing/smuggled HTTP/1.1\r\nHost: t\r\n\r\n";

    // CL + TE: the chunked body wins, Content-Length is dropped, and the
    // connection closes after the response (RFC 9112 §6.1).
    let body = format!("0\r\n\r\n{smuggled}");
    let raw = exchange(port, format!(
            "POST /api/auth/x HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
            body.len()
        )
        .as_bytes()).await;
    assert!(statuses(&raw).len() <= 1, "two responses: {raw}");

    // TE + CL, other order, and obfuscated transfer codings.
    for te in [
        "Transfer-Encoding: chunked\r\nContent-Length: 4",
        "Transfer-Encoding: xchunked",
        "Transfer-Encoding: chunked, identity",
        "Transfer-Encoding: identity",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity",
        "Transfer-Encoding : chunked",
        "Transfer-Encoding:\u{b}chunked",
        " Transfer-Encoding: chunked",
        "Transfer-Encoding: \"chunked\"",
    ] {
        let raw = exchange(
            port,
            format!("POST /api/auth/x HTTP/1.1\r\nHost: t\r\n{te}\r\n\r\n0\r\n\r\n{smuggled}")
                .as_bytes(),
        )
        .await;
        let got = statuses(&raw);
        assert!(got.len() <= 1, "{te:?}: two responses: {raw}");
        assert!(got.iter().all(|s| *s < 500), "{te:?}: {raw}");
    }

    // Duplicate and odd Content-Length values.
    for cl in [
        "Content-Length: 5\r\nContent-Length: 6",
        "Content-Length: 5, 6",
        "Content-Length: +5",
        "Content-Length: -5",
        "Content-Length: 0x5",
        "Content-Length: 5 5",
        "Content-Length: 5.0",
        "Content-Length: 99999999999999999999999",
        "Content-Length: ",
    ] {
        let raw = exchange(
            port,
            format!("POST /api/auth/x HTTP/1.1\r\nHost: t\r\n{cl}\r\n\r\nhello{smuggled}")
                .as_bytes(),
        )
        .await;
        assert_eq!(statuses(&raw), [400], "{cl:?}: {raw}");
    }
    // Identical duplicates are one value (RFC 9110 §8.6), and nothing more.
    let raw = exchange(port, b"POST /api/auth/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello").await;
    assert_eq!(statuses(&raw), [200], "{raw}");

    // Chunk edge cases: extensions, upper-case hex and leading zeros are
    // decoded; sizes that overflow or lines that lie are refused.
    let mut conn = Conn::connect(port).await;
    conn.send_raw(
        b"POST /api/auth/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0003\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    let r = conn.read_response().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_sha256"], sha256_hex(b"hello0123456789abc"));
    for chunks in [
        "FFFFFFFFFFFFFFFFFFFF\r\nx\r\n0\r\n\r\n",
        "5\r\nhello world\r\n0\r\n\r\n",
        "-1\r\nx\r\n0\r\n\r\n",
        "zz\r\nx\r\n0\r\n\r\n",
    ] {
        let raw = exchange(port, format!("POST /api/auth/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}{smuggled}")
                .as_bytes()).await;
        let got = statuses(&raw);
        assert!(!got.contains(&200) || got.len() == 1, "{chunks:?}: {raw}");
        assert!(got.iter().all(|s| *s != 500), "{chunks:?}: {raw}");
    }

    // An Upgrade request with a body, answered 200 (not 101): the body is a
    // body, and what follows is parsed as the next request, not tunnelled.
    let inner = "GET /api/robeing/tunnelled HTTP/1.1\r\nHost: t\r\n\r\n";
    let raw = exchange(port, format!(
            "POST /api/auth/upgrade HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: {}\r\n\r\n{inner}",
            inner.len()
        )
        .as_bytes()).await;
    assert!(!raw.contains("tunnelled\""), "{raw}");

    assert!(
        s.protected.received().await.is_empty(),
        "smuggled into the protected upstream: {:?}",
        s.protected.received().await
    );
}

// ---------------------------------------------------------------- sizes

#[tokio::test(flavor = "multi_thread")]
async fn oversized_headers_and_uris_are_refused_quickly_with_flat_memory() {
    let s = setup();
    let port = s.gw.port;
    let long_uri = format!("/api/auth/{}", "a".repeat(9 * 1024));
    let t = Instant::now();
    let r = get(port, &long_uri, &[]).await;
    assert_envelope(&r, 414, "URI_TOO_LONG");
    assert!(t.elapsed() < Duration::from_secs(1));

    let big = h(&[("X-Padding", &"p".repeat(40 * 1024))]);
    let t = Instant::now();
    let r = get(port, "/api/auth/x", &big).await;
    assert_envelope(&r, 431, "HEADERS_TOO_LARGE");
    assert!(t.elapsed() < Duration::from_secs(1));
    let many: Vec<(String, String)> = (0..2000)
        .map(|i| (format!("X-H{i}"), "v".repeat(20)))
        .collect();
    let r = get(port, "/api/auth/x", &many).await;
    assert!(
        r.status == 431 || r.status == 400,
        "2,000 headers: {}",
        r.status
    );

    // Past Pingora's own 1 MiB cap: refused and closed, not buffered on.
    let conn = Conn::connect(port).await;
    let huge = format!(
        "GET /api/auth/x HTTP/1.1\r\nHost: t\r\nX-Huge: {}\r\n\r\n",
        "h".repeat(2 << 20)
    );
    let _ = conn.into_inner().get_mut().write_all(huge.as_bytes()).await;

    // Memory stays flat across many refused large requests.
    let pid = s.gw.pid();
    let before = rss_kib(pid);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let big = big.clone();
            tokio::spawn(async move {
                let mut conn = Conn::connect(port).await;
                for _ in 0..50 {
                    match conn.try_request("GET", "/api/auth/x", &big, b"").await {
                        Ok(r) => assert_eq!(r.status, 431),
                        Err(_) => conn = Conn::connect(port).await,
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let after = rss_kib(pid);
    assert!(
        after < before + 32 * 1024,
        "RSS grew from {before} KiB to {after} KiB over 400 refused requests"
    );
    assert!(s.public.received().await.is_empty());
    assert_eq!(get(port, "/api/auth/ok", &[]).await.status, 200);
}

// Path parameters cannot split the route decision from the upstream's
// (SECURITY.md, "One normalized path"): `/api/admin;x/y` is not under
// `/api/admin/*` for the gateway, but Tomcat and Spring strip `;x` and would
// serve `/api/admin/y` through the looser public `/api/*` route, without
// the admin route's token. Refused with 400 unless the operator allows
// path parameters.
#[tokio::test(flavor = "multi_thread")]
async fn path_parameters_are_refused_unless_allowed() {
    let upstream = Upstream::start();
    let routes =
        route("/api/admin/*", upstream.port, true, "") + &route("/api/*", upstream.port, false, "");
    let gw = Gateway::start_with(GatewayOptions::new(&routes));
    for target in [
        "/api/admin;x/y",
        "/api/admin;/y",
        "/api/admin%3Bx/y",
        "/api/admin%3bx/y",
        "/api/x/admin;jsessionid=1",
    ] {
        let r = get(gw.port, target, &[]).await;
        assert_envelope(&r, 400, "BAD_REQUEST");
        assert!(
            String::from_utf8_lossy(&r.body).contains("';' parameters"),
            "{target}"
        );
    }
    assert!(upstream.received().await.is_empty());
    // The admin route itself is unchanged: token required.
    assert_envelope(
        &get(gw.port, "/api/admin/y", &[]).await,
        401,
        "MISSING_TOKEN",
    );

    // Allowed: the operator takes the risk, and the path goes as it came.
    let mut allowed = GatewayOptions::new(&routes);
    allowed.server_extra = "allow_path_parameters = true";
    let gw = Gateway::start_with(allowed);
    let r = get(gw.port, "/api/x;v=1/y", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(upstream.received().await, vec!["/api/x;v=1/y".to_owned()]);
}

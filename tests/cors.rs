//! CORS at the edge: preflights, exact origins, headers
//! on the gateway's own errors, and what pages in a real browser (headless
//! Chromium) can read from an allowed and from a disallowed origin.

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn cors_section(allowed_origin: &str) -> String {
    format!(
        "\n[cors]\nallow_origins = [\"{allowed_origin}\"]\nallow_credentials = true\nallow_methods = [\"GET\", \"POST\"]\n"
    )
}

fn routes(public: &Upstream, protected: &Upstream, allowed_origin: &str) -> String {
    cors_section(allowed_origin)
        + &standard_routes(public, protected)
        + &route(
            "/api/limited/*",
            public.port,
            false,
            "requests_per_minute = 1",
        )
}

#[tokio::test(flavor = "multi_thread")]
async fn preflights_are_answered_before_authentication() {
    let public = Upstream::start();
    let protected = Upstream::start();
    let allowed = "http://127.0.0.1:1234";
    let gw = Gateway::start_with(GatewayOptions::new(&routes(&public, &protected, allowed)));
    let preflight = |origin: &str, method: &str| {
        h(&[
            ("Origin", origin),
            ("Access-Control-Request-Method", method),
            ("Access-Control-Request-Headers", "authorization"),
        ])
    };

    // No token, protected route: the gateway answers the preflight itself.
    let r = send(
        gw.port,
        "OPTIONS",
        "/api/robeing/x",
        &preflight(allowed, "GET"),
        b"",
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some(allowed));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-allow-methods"), Some("GET, POST"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("Authorization, Content-Type")
    );
    assert_eq!(r.header("access-control-max-age"), Some("3600"));
    assert!(r.header_all("vary").contains(&"Origin"));
    assert!(r.header("x-request-id").is_some());

    // Other origins, `null`, a look-alike, or a method not allowed: no CORS.
    for (origin, method) in [
        ("http://127.0.0.1:9999", "GET"),
        ("null", "GET"),
        ("http://127.0.0.1:1234.evil.example", "GET"),
        (allowed, "DELETE"),
    ] {
        let r = send(
            gw.port,
            "OPTIONS",
            "/api/robeing/x",
            &preflight(origin, method),
            b"",
        )
        .await;
        assert_eq!(r.status, 204, "{origin} {method}");
        assert!(
            r.header("access-control-allow-origin").is_none(),
            "{origin} {method}"
        );
        assert!(r.header("access-control-allow-credentials").is_none());
    }
    assert!(
        protected.received().await.is_empty(),
        "a preflight reached the upstream"
    );

    // Actual responses: the gateway's own 401 carries CORS for the allowed
    // origin, and exposes the headers a frontend needs.
    let r = get(gw.port, "/api/robeing/x", &h(&[("Origin", allowed)])).await;
    assert_envelope(&r, 401, "MISSING_TOKEN");
    assert_eq!(r.header("access-control-allow-origin"), Some(allowed));
    assert!(r
        .header("access-control-expose-headers")
        .unwrap()
        .contains("X-Request-Id"));
    let r = get(
        gw.port,
        "/api/auth/x",
        &h(&[("Origin", "http://127.0.0.1:9999")]),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.header("access-control-allow-origin").is_none());
    assert!(r.header_all("vary").contains(&"Origin"));
}

/// Serves `html` on `listener` until the test ends.
fn serve_page(listener: tokio::net::TcpListener, html: String) {
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let html = html.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    html.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(html.as_bytes()).await;
            });
        }
    });
}

async fn page_listener() -> (tokio::net::TcpListener, u16) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

fn page(gateway_port: u16, token: &str) -> String {
    format!(
        r#"<!doctype html><html><body><pre id="out">pending</pre><script>
const gw = "http://127.0.0.1:{gateway_port}";
async function probe(path, opts) {{
  try {{
    const r = await fetch(gw + path, Object.assign({{credentials: "include"}}, opts));
    let body = null;
    try {{ body = await r.json(); }} catch (e) {{}}
    return {{status: r.status, requestId: r.headers.get("x-request-id"),
            retryAfter: r.headers.get("retry-after"), body: body}};
  }} catch (e) {{ return {{error: String(e)}}; }}
}}
(async () => {{
  const out = {{}};
  out.authed = await probe("/api/robeing/echo", {{headers: {{"Authorization": "Bearer {token}"}}}});
  out.unauthorized = await probe("/api/robeing/echo", {{}});
  out.first = await probe("/api/limited/x", {{}});
  out.limited = await probe("/api/limited/x", {{}});
  document.getElementById("out").textContent = JSON.stringify(out);
}})();
</script></body></html>"#
    )
}

/// Loads `url` in headless Chromium and returns what the page wrote.
fn run_in_chromium(url: &str) -> serde_json::Value {
    let (dom, stderr) = chromium_dom(url, &["--virtual-time-budget=15000"]);
    let start = dom
        .find("<pre id=\"out\">")
        .unwrap_or_else(|| panic!("no output in {dom}"))
        + 14;
    let end = start + dom[start..].find("</pre>").unwrap();
    let text = dom[start..end]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("page wrote {text:?} ({e}); stderr: {}", stderr))
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_pages_read_only_what_their_origin_may() {
    let public = Upstream::start();
    let protected = Upstream::start();
    // Two page servers: two origins (the port is part of the origin).
    let (allowed_listener, allowed_port) = page_listener().await;
    let (denied_listener, denied_port) = page_listener().await;
    let allowed_origin = format!("http://127.0.0.1:{allowed_port}");
    let gw = Gateway::start_with(GatewayOptions::new(&routes(
        &public,
        &protected,
        &allowed_origin,
    )));
    let html = page(gw.port, &token_for("alice"));
    serve_page(allowed_listener, html.clone());
    serve_page(denied_listener, html);

    let allowed = tokio::task::spawn_blocking(move || {
        run_in_chromium(&format!("http://127.0.0.1:{allowed_port}/"))
    })
    .await
    .unwrap();
    assert_eq!(allowed["authed"]["status"], 200, "{allowed}");
    let echoed = &allowed["authed"]["body"]["headers"];
    assert!(
        echoed
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p[0] == "x-user-id" && p[1] == ALICE_ID),
        "{allowed}"
    );
    assert!(allowed["authed"]["requestId"]
        .as_str()
        .unwrap()
        .starts_with("req_"));
    // The gateway's own 401 and 429 are readable, body and headers.
    assert_eq!(allowed["unauthorized"]["status"], 401);
    assert_eq!(
        allowed["unauthorized"]["body"]["error"]["code"],
        "MISSING_TOKEN"
    );
    assert!(allowed["unauthorized"]["requestId"].is_string());
    assert_eq!(allowed["first"]["status"], 200);
    assert_eq!(allowed["limited"]["status"], 429);
    assert_eq!(
        allowed["limited"]["body"]["error"]["code"],
        "RATE_LIMIT_EXCEEDED"
    );
    assert_eq!(allowed["limited"]["retryAfter"], "60");

    let denied = tokio::task::spawn_blocking(move || {
        run_in_chromium(&format!("http://127.0.0.1:{denied_port}/"))
    })
    .await
    .unwrap();
    for probe in ["authed", "unauthorized", "first", "limited"] {
        let error = denied[probe]["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{probe} was readable: {denied}"));
        assert!(error.contains("Failed to fetch"), "{probe}: {error}");
    }
    // The credentialed request with a token never left the browser from the
    // denied origin: its preflight got no CORS headers.
    let received = protected.received().await;
    assert_eq!(received, ["/api/robeing/echo"], "{received:?}");
}

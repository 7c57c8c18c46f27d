//! Tracing: W3C trace context on every request (kept, replaced, passed on
//! every try), and spans exported over OTLP/HTTP to a real receiver that
//! decodes them with `opentelemetry-proto`.

mod common;

use std::time::{Duration, Instant};

use common::*;

const VALID: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// The `[tracing]` section (placed before the routes).
/// The `[tracing]` section (placed before the routes); spans are sent
/// every 200 ms unless `extra` says otherwise.
fn tracing_section(endpoint: &str, extra: &str) -> String {
    let interval = if extra.contains("export_interval_ms") {
        ""
    } else {
        "export_interval_ms = 200\n"
    };
    format!("\n[tracing]\notlp_endpoint = \"{endpoint}\"\n{interval}{extra}\n")
}

/// `(version, trace id, parent id, flags)` of a valid `traceparent`.
fn parts(traceparent: &str) -> (String, String, String, String) {
    let p: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(p.len(), 4, "{traceparent}");
    assert_eq!(traceparent.len(), 55, "{traceparent}");
    assert!(
        traceparent
            .bytes()
            .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{traceparent}"
    );
    assert_ne!(p[1], "0".repeat(32));
    assert_ne!(p[2], "0".repeat(16));
    (p[0].into(), p[1].into(), p[2].into(), p[3].into())
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_reach_the_collector_with_their_context_and_attributes() {
    let up = Upstream::start();
    let collector = Collector::start();
    let routes = tracing_section(
        &collector.url(),
        "service_name = \"edge-test\"\nrecord_user_id = true",
    ) + &route("/public/*", up.port, false, "")
        + &route("/private/*", up.port, true, "")
        + &route("/down/*", closed_port(), false, "");
    let gw = Gateway::start_with(GatewayOptions::new(&routes));

    // 100 requests: half join a caller's trace, half start one.
    let mut expected = Vec::new();
    for i in 0..100 {
        let caller = format!("00-{:032x}-{:016x}-01", 0xabc000 + i, 0x5000 + i);
        let headers = if i % 2 == 0 {
            h(&[("traceparent", &caller)])
        } else {
            Vec::new()
        };
        let resp = get(gw.port, &format!("/public/a/../n{i}?q=1"), &headers).await;
        assert_eq!(resp.status, 200);
        let sent = resp.upstream_header("traceparent");
        assert_eq!(sent.len(), 1, "{sent:?}");
        let (_, trace, parent, flags) = parts(&sent[0]);
        if i % 2 == 0 {
            assert_eq!(trace, format!("{:032x}", 0xabc000 + i));
            assert_eq!(flags, "01");
        }
        expected.push((i, trace, parent));
    }
    let spans = collector.wait_for(100, Duration::from_secs(10));
    assert_eq!(spans.len(), 100, "{} spans", spans.len());
    for (i, trace, gateway_span) in &expected {
        let span = spans
            .iter()
            .find(|s| s.trace_id_hex() == *trace)
            .unwrap_or_else(|| panic!("no span for request {i}"));
        // The upstream's parent is the gateway's span; the gateway's parent
        // is the caller's span (none for a fresh trace).
        assert_eq!(span.span_id_hex(), *gateway_span);
        let caller_parent = if i % 2 == 0 {
            format!("{:016x}", 0x5000 + i)
        } else {
            String::new()
        };
        assert_eq!(span.parent_id_hex(), caller_parent, "request {i}");
        assert_eq!(span.service, "edge-test");
        assert_eq!(span.span.name, "/public/*");
        assert_eq!(span.attr("http.request.method").as_deref(), Some("GET"));
        assert_eq!(span.attr("url.path"), Some(format!("/public/n{i}")));
        assert_eq!(span.attr("http.route").as_deref(), Some("/public/*"));
        assert_eq!(
            span.attr("http.response.status_code").as_deref(),
            Some("200")
        );
        assert_eq!(
            span.attr("network.protocol.version").as_deref(),
            Some("1.1")
        );
        assert_eq!(span.attr("server.address").as_deref(), Some("gateway.test"));
        assert_eq!(span.attr("client.address").as_deref(), Some("127.0.0.1"));
        assert_eq!(
            span.attr("gateway.upstream.peer"),
            Some(format!("127.0.0.1:{}", up.port))
        );
        assert_eq!(span.attr("gateway.upstream.tries").as_deref(), Some("1"));
        assert_eq!(span.attr("gateway.error.code"), None);
        assert_eq!(span.attr("enduser.id"), None);
        assert!(span.span.end_time_unix_nano >= span.span.start_time_unix_nano);
    }
    // The access log carries the same trace ids.
    let logged: Vec<String> = gw
        .access_log()
        .iter()
        .filter_map(|l| l["trace_id"].as_str().map(str::to_owned))
        .collect();
    for (_, trace, _) in &expected {
        assert!(logged.contains(trace), "{trace} not in the access log");
    }

    // A gateway-written error carries its traceparent, and its span the code.
    let refused = get(gw.port, "/private/x", &h(&[("traceparent", VALID)])).await;
    assert_envelope(&refused, 401, "MISSING_TOKEN");
    let (_, trace, span_id, _) = parts(refused.header("traceparent").expect("traceparent"));
    assert_eq!(trace, &VALID[3..35]);
    // A user's request: enduser.id with record_user_id; a 5xx: status error.
    let name = unique("tracer");
    let id = add_user(&name);
    let ok = get(gw.port, "/private/me", &[bearer(&token_for(&name))]).await;
    assert_eq!(ok.status, 200);
    let (_, user_trace, _, _) = parts(&ok.upstream_header("traceparent")[0]);
    let down = get(gw.port, "/down/x", &[]).await;
    assert_eq!(down.status, 503);
    let (_, down_trace, _, _) = parts(down.header("traceparent").expect("traceparent"));
    let spans = collector.wait_for(103, Duration::from_secs(10));
    let find = |t: &str| {
        spans
            .iter()
            .find(|s| s.trace_id_hex() == t)
            .cloned()
            .expect("span")
    };
    let refused_span = find(&trace);
    assert_eq!(refused_span.span_id_hex(), span_id);
    assert_eq!(
        refused_span.attr("gateway.error.code").as_deref(),
        Some("MISSING_TOKEN")
    );
    assert_eq!(
        refused_span.attr("http.response.status_code").as_deref(),
        Some("401")
    );
    assert_eq!(find(&user_trace).attr("enduser.id"), Some(id));
    let down_span = find(&down_trace);
    assert_eq!(
        down_span.attr("gateway.error.code").as_deref(),
        Some("SERVICE_UNAVAILABLE")
    );
    // Status code 2 is ERROR in OTLP.
    assert_eq!(down_span.span.status.as_ref().map(|s| s.code), Some(2));
    assert!(!gw.log().contains(&name), "the username is never recorded");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_traceparents_are_replaced_and_a_valid_one_is_kept_with_its_tracestate() {
    // No [tracing]: the context is still propagated.
    let up = Upstream::start();
    let gw = Gateway::start_with(GatewayOptions::new(&route("/public/*", up.port, false, "")));
    for bad in [
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b71692033-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        "garbage",
    ] {
        let resp = get(
            gw.port,
            "/public/x",
            &h(&[("traceparent", bad), ("tracestate", "vendor=1")]),
        )
        .await;
        assert_eq!(resp.status, 200);
        let sent = resp.upstream_header("traceparent");
        assert_eq!(sent.len(), 1, "{bad}: {sent:?}");
        let (version, trace, _, flags) = parts(&sent[0]);
        assert_eq!(version, "00");
        assert_ne!(trace, "0af7651916cd43dd8448eb211c80319c", "{bad} was kept");
        // Nothing records without [tracing]: a fresh trace is not sampled.
        assert_eq!(flags, "00");
        // A tracestate without a valid parent means nothing: dropped.
        assert!(resp.upstream_header("tracestate").is_empty(), "{bad}");
    }
    // Two traceparent headers are not one trace either.
    let two = get(
        gw.port,
        "/public/x",
        &h(&[("traceparent", VALID), ("traceparent", VALID)]),
    )
    .await;
    let sent = two.upstream_header("traceparent");
    assert_eq!(sent.len(), 1);
    assert_ne!(parts(&sent[0]).1, &VALID[3..35]);

    // Valid: the trace and flags kept, the gateway's span as the parent,
    // tracestate passed on unchanged; an oversized one is dropped.
    let state = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";
    let kept = get(
        gw.port,
        "/public/x",
        &h(&[("traceparent", VALID), ("tracestate", state)]),
    )
    .await;
    let (_, trace, parent, flags) = parts(&kept.upstream_header("traceparent")[0]);
    assert_eq!(trace, &VALID[3..35]);
    assert_ne!(parent, &VALID[36..52]);
    assert_eq!(flags, "01");
    assert_eq!(kept.upstream_header("tracestate"), [state]);
    let big = "k=".to_owned() + &"v".repeat(600);
    let over = get(
        gw.port,
        "/public/x",
        &h(&[("traceparent", VALID), ("tracestate", &big)]),
    )
    .await;
    assert_eq!(
        parts(&over.upstream_header("traceparent")[0]).1,
        &VALID[3..35]
    );
    assert!(over.upstream_header("tracestate").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn every_try_carries_one_traceparent_of_the_same_trace() {
    // Peers that drop every reused connection: requests are retried.
    let pool = [
        Upstream::closing_every_second_request(),
        Upstream::closing_every_second_request(),
    ];
    let routes = pool_route("/two/*", &[pool[0].port, pool[1].port], "");
    let gw = Gateway::start_with(GatewayOptions::new(&routes));
    for i in 0..8 {
        let resp = get(
            gw.port,
            &format!("/two/r{i}"),
            &h(&[("traceparent", VALID)]),
        )
        .await;
        assert_eq!(resp.status, 200, "{resp:?}");
    }
    let mut seen = Vec::new();
    for peer in &pool {
        seen.extend(peer.received_traceparents().await);
    }
    assert!(
        seen.len() > 8 + 2,
        "no retries happened: {} tries",
        seen.len()
    );
    for values in &seen {
        assert_eq!(values.len(), 1, "{values:?}");
        assert_eq!(parts(&values[0]).1, &VALID[3..35]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ratio_samples_fresh_traces_and_a_sampled_parent_is_followed() {
    let up = Upstream::start();
    let collector = Collector::start();
    let routes = tracing_section(&collector.url(), "sample_ratio = 0.1")
        + &route("/public/*", up.port, false, "");
    let gw = Gateway::start_with(GatewayOptions::new(&routes));
    let mut sampled_flags = 0;
    let mut conn = Conn::connect(gw.port).await;
    for _ in 0..2000 {
        let resp = conn.request("GET", "/public/x", &[], b"").await;
        assert_eq!(resp.status, 200);
        if parts(&resp.upstream_header("traceparent")[0]).3 == "01" {
            sampled_flags += 1;
        }
    }
    // A sampled parent is always recorded, an unsampled one never.
    for i in 0..50 {
        let sampled = format!("00-{:032x}-{:016x}-01", 0xfeed00 + i, 1 + i);
        let unsampled = format!("00-{:032x}-{:016x}-00", 0xdead00 + i, 1 + i);
        for tp in [sampled, unsampled] {
            assert_eq!(
                conn.request("GET", "/public/x", &h(&[("traceparent", &tp)]), b"")
                    .await
                    .status,
                200
            );
        }
    }
    let spans = collector.wait_for(sampled_flags + 50, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1200));
    let spans = collector.spans().len().max(spans.len());
    let fresh = spans - 50;
    assert!(
        (140..=260).contains(&fresh),
        "{fresh} of 2000 fresh traces exported"
    );
    assert_eq!(
        fresh, sampled_flags,
        "the flag sent on says what was recorded"
    );
    let all = collector.spans();
    for i in 0..50 {
        assert!(all
            .iter()
            .any(|s| s.trace_id_hex() == format!("{:032x}", 0xfeed00 + i)));
        assert!(!all
            .iter()
            .any(|s| s.trace_id_hex() == format!("{:032x}", 0xdead00 + i)));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_collector_down_or_hung_costs_spans_never_requests() {
    let up = Upstream::start();
    let healthy = Collector::start();
    let hung = Collector::start();
    hung.hang();
    let options =
        |endpoint: &str| tracing_section(endpoint, "") + &route("/public/*", up.port, false, "");
    let routes = options(&healthy.url());
    let gw = Gateway::start_with(GatewayOptions::new(&routes));
    async fn p99(port: u16) -> Duration {
        let mut conn = Conn::connect(port).await;
        let mut times = Vec::new();
        for _ in 0..300 {
            let started = Instant::now();
            let resp = conn.request("GET", "/public/x", &[], b"").await;
            times.push(started.elapsed());
            assert_eq!(resp.status, 200, "a request failed");
        }
        times.sort();
        times[times.len() * 99 / 100]
    }
    let baseline = p99(gw.port).await;
    assert_eq!(healthy.wait_for(300, Duration::from_secs(10)).len(), 300);
    let dropped = || metric_value(gw.admin_port, "gateway_trace_spans_dropped_total");
    assert_eq!(dropped().await, 0);

    // Down: nothing listens. Then hung: accepts, never answers.
    let down = format!("http://127.0.0.1:{}/v1/traces", closed_port());
    for (endpoint, wait) in [
        (down.clone(), Duration::from_secs(5)),
        (hung.url(), Duration::from_secs(16)),
    ] {
        gw.write_config(&GatewayOptions::new(&options(&endpoint)));
        gw.signal("HUP");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = dropped().await;
        let slow = p99(gw.port).await;
        assert!(
            slow <= (baseline * 3).max(baseline + Duration::from_millis(30)),
            "{endpoint}: p99 {slow:?} against {baseline:?}"
        );
        // Every span is dropped in the end: at once when nothing listens,
        // after each batch's 5 s deadline when the collector hangs.
        let deadline = Instant::now() + wait;
        let mut after = dropped().await;
        while after < before + 300 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            after = dropped().await;
        }
        assert!(
            after >= before + 300,
            "{endpoint}: {before} → {after} dropped"
        );
        let warnings = gw
            .log()
            .lines()
            .filter(|l| {
                l.contains("WARN") && l.contains(&format!("cannot export spans to {endpoint}"))
            })
            .count();
        assert_eq!(
            warnings,
            1,
            "{endpoint}: one WARN per failure streak\n{}",
            gw.log()
        );
    }
    assert!(hung.requests() >= 1, "the hung collector was asked");
}

#[test]
fn bad_tracing_settings_are_refused_naming_the_key() {
    let up_port = 9;
    for (section, key, message) in [
        ("otlp_endpoint = \"ftp://127.0.0.1/v1/traces\"", "tracing.otlp_endpoint", "not an http:// or https:// URL"),
        ("otlp_endpoint = \"not a url\"", "tracing.otlp_endpoint", "not a URL"),
        ("otlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"\nsample_ratio = 1.5", "tracing.sample_ratio", "must be 0.0 to 1.0"),
        ("otlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"\nsample_ratio = -0.1", "tracing.sample_ratio", "must be 0.0 to 1.0"),
        ("otlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"\nexport_interval_ms = 0", "tracing.export_interval_ms", "must be 10 to 60000"),
        ("otlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"\nexport_interval_ms = 60001", "tracing.export_interval_ms", "must be 10 to 60000"),
        ("otlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"\nheaders_env = \"ROBEING_TEST_NO_SUCH_OTLP_HEADERS\"", "tracing.headers_env", "ROBEING_TEST_NO_SUCH_OTLP_HEADERS"),
    ] {
        let routes = format!("\n[tracing]\n{section}\n") + &route("/public/*", up_port, false, "");
        let out = check_config(&GatewayOptions::new(&routes));
        assert!(!out.status.success(), "{section} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key) && stderr.contains(message), "{section}: {stderr}");
    }
}

// Spans wait for their batch at most `export_interval_ms` (60 s here), yet
// none waits that long when its exporter goes away: a section replaced by
// SIGHUP sends what it holds at once, and so does a process that exits
// (after the handoff, or stopped); a full batch goes at once too.
#[tokio::test(flavor = "multi_thread")]
async fn spans_follow_a_sighup_and_the_handoff() {
    let up = Upstream::start();
    let (first, second) = (Collector::start(), Collector::start());
    let options = |endpoint: &str| {
        tracing_section(endpoint, "export_interval_ms = 60000")
            + &route("/public/*", up.port, false, "")
    };
    let routes = options(&first.url());
    let gw = Gateway::start_with(GatewayOptions::new(&routes));
    assert_eq!(get(gw.port, "/public/a", &[]).await.status, 200);
    // SIGHUP: the replaced exporter sends its span now; the new endpoint
    // takes the next spans.
    gw.write_config(&GatewayOptions::new(&options(&second.url())));
    gw.signal("HUP");
    assert_eq!(first.wait_for(1, Duration::from_secs(5)).len(), 1);
    assert_eq!(get(gw.port, "/public/b", &[]).await.status, 200);
    // The handoff: the predecessor sends its span as it exits; the
    // successor exports to the same endpoint.
    let old = gw.pid();
    let new = assert_reload_ok(&gw.reload());
    assert_ne!(old, new);
    assert_eq!(second.wait_for(1, Duration::from_secs(5)).len(), 1);
    // A full batch (512) goes without waiting for its turn.
    let mut conn = Conn::connect(gw.port).await;
    for i in 0..512 {
        let resp = conn
            .request("GET", &format!("/public/c{i}"), &[], b"")
            .await;
        assert_eq!(resp.status, 200);
    }
    assert_eq!(second.wait_for(513, Duration::from_secs(5)).len(), 513);
    // ... in one export request, and a part batch waits for its turn.
    for i in 0..100 {
        let resp = conn
            .request("GET", &format!("/public/p{i}"), &[], b"")
            .await;
        assert_eq!(resp.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        second.requests(),
        2,
        "one for the predecessor, one full batch"
    );
    // Stopped: what is left goes before the process exits.
    for i in 0..5 {
        assert_eq!(
            get(gw.port, &format!("/public/d{i}"), &[]).await.status,
            200
        );
    }
    gw.signal("TERM");
    wait_for_exit(new, Duration::from_secs(15)).await;
    let spans = second.wait_for(618, Duration::from_secs(2));
    assert_eq!(spans.len(), 618);
    assert_eq!(first.spans().len(), 1);
}

//! Observability: exact metric counts after a known mix of
//! requests, the access-log fields, and health and readiness.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::*;

/// Parses Prometheus text into `name{k="v",...}` (labels sorted) -> value.
fn scrape(admin_port: u16) -> impl Fn(&str, &[(&str, &str)]) -> f64 {
    let text = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async { get(admin_port, "/metrics", &[]).await })
    })
    .join()
    .unwrap();
    assert_eq!(text.status, 200);
    assert!(text
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    let mut series = HashMap::new();
    for line in String::from_utf8(text.body).unwrap().lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match key.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (key, ""),
        };
        let mut sorted = BTreeMap::new();
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap();
            sorted.insert(k.to_owned(), v.trim_matches('"').to_owned());
        }
        series.insert((name.to_owned(), sorted), value.parse::<f64>().unwrap());
    }
    move |name: &str, labels: &[(&str, &str)]| {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        series
            .get(&(name.to_owned(), wanted))
            .copied()
            .unwrap_or(0.0)
    }
}

fn requests(
    route: &str,
    method: &str,
    status: &str,
    upstream: &str,
) -> [(&'static str, String); 4] {
    [
        ("route", route.to_owned()),
        ("method", method.to_owned()),
        ("status", status.to_owned()),
        ("upstream_status", upstream.to_owned()),
    ]
}

fn labels<'a>(pairs: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_a_known_mix_exactly() {
    let public = Upstream::start();
    let protected = Upstream::start();
    let routes = standard_routes(&public, &protected)
        + &route("/gateway/slack/*", public.port, false, "")
        + &route("/api/down/*", closed_port(), false, "");
    let gw = Gateway::start_with(GatewayOptions::new(&routes));
    let port = gw.port;
    let alice = bearer(&token_for("alice"));

    for _ in 0..3 {
        assert_eq!(
            get(port, "/api/robeing/x", std::slice::from_ref(&alice))
                .await
                .status,
            200
        );
    }
    for _ in 0..2 {
        assert_eq!(get(port, "/api/robeing/x", &[]).await.status, 401);
    }
    assert_eq!(
        get(
            port,
            "/api/robeing/x",
            &[bearer(&expired_token_for("alice"))]
        )
        .await
        .status,
        401
    );
    assert_eq!(get(port, "/nothing", &[]).await.status, 404);
    let ts = in_seconds(0).to_string();
    let body = b"payload=%7B%7D";
    let sig = slack_signature(&ts, body);
    let signed = h(&[
        ("X-Slack-Signature", &sig),
        ("X-Slack-Request-Timestamp", &ts),
    ]);
    for _ in 0..2 {
        assert_eq!(
            send(port, "POST", "/gateway/slack/events", &signed, body)
                .await
                .status,
            200
        );
    }
    assert_eq!(
        send(port, "POST", "/gateway/slack/events", &signed, b"tampered")
            .await
            .status,
        403
    );
    assert_eq!(get(port, "/api/auth/status/500", &[]).await.status, 500);
    assert_eq!(get(port, "/api/down/x", &[]).await.status, 503);
    assert_eq!(
        send(port, "PROPFIND", "/api/auth/x", &[], b"").await.status,
        200
    );
    tokio::time::sleep(Duration::from_millis(100)).await;

    let m = scrape(gw.admin_port);
    let total = "gateway_requests_total";
    let expect = [
        (requests("/api/robeing/*", "GET", "200", "200"), 3.0),
        (requests("/api/robeing/*", "GET", "401", "none"), 3.0),
        (requests("unmatched", "GET", "404", "none"), 1.0),
        (requests("/gateway/slack/*", "POST", "200", "200"), 2.0),
        (requests("/gateway/slack/*", "POST", "403", "403"), 1.0),
        (requests("/api/auth/*", "GET", "500", "500"), 1.0),
        (requests("/api/down/*", "GET", "503", "none"), 1.0),
        (requests("/api/auth/*", "OTHER", "200", "200"), 1.0),
    ];
    for (l, want) in &expect {
        assert_eq!(m(total, &labels(l)), *want, "{l:?}");
    }
    assert_eq!(
        m(
            "gateway_auth_failures_total",
            &[("reason", "missing_token")]
        ),
        2.0
    );
    assert_eq!(
        m(
            "gateway_auth_failures_total",
            &[("reason", "token_expired")]
        ),
        1.0
    );
    assert_eq!(
        m(
            "gateway_auth_failures_total",
            &[("reason", "invalid_token")]
        ),
        0.0
    );
    assert_eq!(
        m(
            "gateway_proxy_errors_total",
            &[("route", "/api/down/*"), ("kind", "connect_refused")]
        ),
        1.0
    );
    assert_eq!(
        m(
            "gateway_request_duration_seconds_count",
            &[("route", "/api/robeing/*")]
        ),
        6.0
    );
    assert_eq!(
        m(
            "gateway_request_duration_seconds_bucket",
            &[("route", "/api/robeing/*"), ("le", "30")]
        ),
        6.0
    );
    assert_eq!(
        m(
            "gateway_request_duration_seconds_count",
            &[("route", "/gateway/slack/*")]
        ),
        3.0
    );
    // Upstream time: only requests an upstream answered.
    for (route, want) in [
        ("/api/robeing/*", 3.0),
        ("/api/auth/*", 2.0),
        ("/gateway/slack/*", 3.0),
    ] {
        assert_eq!(
            m(
                "gateway_upstream_response_seconds_count",
                &[("route", route)]
            ),
            want,
            "{route}"
        );
    }
    assert_eq!(
        m(
            "gateway_upstream_response_seconds_count",
            &[("route", "/api/down/*")]
        ),
        0.0
    );
    // Body sizes: two signed bodies and the tampered one.
    assert_eq!(
        m(
            "gateway_request_body_bytes_sum",
            &[("route", "/gateway/slack/*")]
        ),
        (2 * body.len() + b"tampered".len()) as f64
    );
    assert_eq!(
        m(
            "gateway_request_body_bytes_count",
            &[("route", "/gateway/slack/*")]
        ),
        3.0
    );
    assert_eq!(
        m(
            "gateway_response_body_bytes_count",
            &[("route", "/api/robeing/*")]
        ),
        6.0
    );
    assert!(
        m(
            "gateway_response_body_bytes_sum",
            &[("route", "/api/robeing/*")]
        ) > 0.0
    );
    assert_eq!(m("gateway_identity_cache_misses_total", &[]), 1.0);
    assert_eq!(m("gateway_identity_cache_hits_total", &[]), 2.0);
    assert_eq!(m("gateway_identity_cache_entries", &[]), 1.0);
    assert_eq!(
        m("gateway_directory_query_duration_seconds_count", &[]),
        1.0
    );
    assert_eq!(m("gateway_directory_errors_total", &[]), 0.0);
    // One for the lookup; the once-a-second dependency check may have
    // needed a second while the lookup held the first.
    let pool = m("gateway_directory_pool_connections", &[]);
    assert!((1.0..=2.0).contains(&pool), "{pool} pooled connections");
    assert_eq!(m("gateway_access_log_dropped_total", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn access_log_has_every_field_and_no_secret() {
    let public = Upstream::start();
    let protected = Upstream::start();
    let routes =
        standard_routes(&public, &protected) + &route("/api/down/*", closed_port(), false, "");
    let gw = Gateway::start_with(GatewayOptions::new(&routes));
    let quoted = unique("o\"brien");
    let quoted_id = add_user(&quoted);
    let token = token_for("alice");
    let rid = |id: &str| ("X-Request-Id".to_owned(), id.to_owned());
    let port = gw.port;
    get(
        port,
        "/api/robeing/chat?token=secret-in-query",
        &[bearer(&token), rid("log-auth")],
    )
    .await;
    get(port, "/api/auth/login", &[rid("log-anon")]).await;
    get(port, "/api/robeing/chat", &[rid("log-rejected")]).await;
    get(port, "/api/down/x", &[rid("log-failed")]).await;
    get(
        port,
        "/api/robeing/x",
        &[bearer(&token_for(&quoted)), rid("log-quoted")],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let lines = gw.access_log();
    let by_id = |id: &str| {
        lines
            .iter()
            .find(|l| l["request_id"] == id)
            .unwrap_or_else(|| panic!("no line for {id}: {lines:?}"))
            .clone()
    };
    let common_fields = |l: &serde_json::Value| {
        assert_eq!(l["service"], "gateway");
        assert!(l["timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(l["response_time_ms"].as_f64().unwrap() >= 0.0);
        assert_eq!(l["method"], "GET");
        assert_eq!(l["protocol"], "HTTP/1.1");
    };

    let auth = by_id("log-auth");
    common_fields(&auth);
    assert_eq!(auth["level"], "INFO");
    assert_eq!(auth["path"], "/api/robeing/chat");
    assert_eq!(auth["username"], "alice");
    assert_eq!(auth["user_id"], ALICE_ID);
    assert_eq!(auth["backend_service"], "api-robeing");
    assert_eq!(auth["upstream_status"], 200);
    assert_eq!(auth["status_code"], 200);

    let anon = by_id("log-anon");
    common_fields(&anon);
    assert_eq!(anon["path"], "/api/auth/login");
    assert!(anon["username"].is_null() && anon["user_id"].is_null());
    assert_eq!(anon["backend_service"], "api-auth");
    assert_eq!(anon["upstream_status"], 200);
    assert_eq!(anon["status_code"], 200);

    let rejected = by_id("log-rejected");
    common_fields(&rejected);
    assert_eq!(rejected["status_code"], 401);
    assert!(rejected["upstream_status"].is_null());
    assert!(rejected["username"].is_null());
    assert_eq!(rejected["backend_service"], "api-robeing");

    let failed = by_id("log-failed");
    common_fields(&failed);
    assert_eq!(failed["level"], "WARN");
    assert_eq!(failed["status_code"], 503);
    assert!(failed["upstream_status"].is_null());
    assert_eq!(failed["backend_service"], "api-down");

    let q = by_id("log-quoted");
    assert_eq!(q["username"], quoted.as_str());
    assert_eq!(q["user_id"], quoted_id.as_str());

    let text = gw.access_log_text();
    assert_eq!(text.lines().count(), 5, "one line per request");
    assert!(!text.contains(&token), "a token was logged");
    assert!(
        !text.contains("secret-in-query"),
        "a query string was logged"
    );
    assert!(!text.contains(JWT_SECRET));
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_readiness() {
    let public = Upstream::start();
    let protected = Upstream::start();
    let routes = standard_routes(&public, &protected);
    let gw = Gateway::start_with(GatewayOptions {
        server_extra: "grace_period_seconds = 1\ngraceful_shutdown_timeout_seconds = 5",
        ..GatewayOptions::new(&routes)
    });
    let health = get(gw.admin_port, "/healthz", &[]).await;
    assert_eq!(
        (health.status, health.json()["status"].as_str()),
        (200, Some("alive"))
    );
    let ready = get(gw.admin_port, "/readyz", &[]).await;
    assert_eq!(
        (ready.status, ready.json()["status"].as_str()),
        (200, Some("ready"))
    );
    assert_eq!(get(gw.admin_port, "/other", &[]).await.status, 404);

    // Draining after a handoff: the old process, still reachable on a
    // connection opened before, says it is not ready.
    let mut old_admin = Conn::connect(gw.admin_port).await;
    assert_eq!(
        old_admin.request("GET", "/readyz", &[], b"").await.status,
        200
    );
    let out = gw.reload();
    assert!(out.status.success(), "{out:?}");
    let r = old_admin.request("GET", "/readyz", &[], b"").await;
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (503, Some("draining"))
    );
}

// PostgreSQL down with an empty identity cache: the gateway stays ready (a
// database blip must not make every instance unready at once), public
// routes serve, authenticated ones fail closed, and the gauge and
// `/readyz?verbose` tell the truth; the database back is seen within 2 s.
#[tokio::test(flavor = "multi_thread")]
async fn a_dependency_down_never_makes_the_gateway_unready() {
    let hop = FaultProxy::start(pg_port()).await;
    hop.set(Fault::Down);
    let setup_public = Upstream::start();
    let setup_protected = Upstream::start();
    let routes = standard_routes(&setup_public, &setup_protected);
    let gw = Gateway::start_with(GatewayOptions {
        database_url: hop.database_url(),
        ..GatewayOptions::new(&routes)
    });
    const UP: &str = "gateway_dependency_up{dependency=\"postgres\"}";
    wait_for_metric(gw.admin_port, UP, 0, Duration::from_secs(5)).await;

    let ready = get(gw.admin_port, "/readyz", &[]).await;
    assert_eq!(
        (ready.status, ready.json()["status"].as_str()),
        (200, Some("ready"))
    );
    let verbose = get(gw.admin_port, "/readyz?verbose", &[]).await;
    let text = String::from_utf8_lossy(&verbose.body).into_owned();
    assert_eq!(verbose.status, 200, "{text}");
    assert!(text.starts_with("ready\npostgres down: "), "{text}");
    assert_eq!(get(gw.port, "/api/auth/x", &[]).await.status, 200);
    let alice = bearer(&token_for("alice"));
    let r = get(gw.port, "/api/robeing/x", std::slice::from_ref(&alice)).await;
    // 503 in the envelope, with the directory's own code (DESIGN.md).
    assert_envelope(&r, 503, "USER_DIRECTORY_UNAVAILABLE");

    hop.set(Fault::Pass);
    let took = wait_for_metric(gw.admin_port, UP, 1, Duration::from_secs(2)).await;
    eprintln!("postgres seen back after {took:?}");
    let verbose = get(gw.admin_port, "/readyz?verbose", &[]).await;
    assert_eq!(
        String::from_utf8_lossy(&verbose.body),
        "ready\npostgres up\n"
    );
    let r = get(gw.port, "/api/robeing/x", &[alice]).await;
    assert_eq!(r.status, 200);
}

/// One keep-alive client: `n` requests, pausing past the upstream's idle
/// limit every tenth, reconnecting when told to close. Returns failures.
async fn idle_closing_client(port: u16, n: usize, token: String) -> Vec<String> {
    let headers = [bearer(&token)];
    let mut failures = Vec::new();
    let mut conn: Option<Conn> = None;
    for i in 0..n {
        if i % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let reused = conn.is_some();
        let mut c = match conn.take() {
            Some(c) => c,
            None => Conn::connect(port).await,
        };
        let target = format!("/api/robeing/{i}");
        let result = match c.try_request("GET", &target, &headers, b"").await {
            // A reused connection closed before any response byte (the
            // predecessor of the handoff closing it): send again, as
            // clients do.
            Err(ClientError::NoResponse(_)) if reused => {
                c = Conn::connect(port).await;
                c.try_request("GET", &target, &headers, b"").await
            }
            other => other,
        };
        match result {
            Ok(r) if r.status == 200 => {
                if r.header("connection") != Some("close") {
                    conn = Some(c);
                }
            }
            Ok(r) => failures.push(format!("{target}: {}", r.status)),
            Err(e) => failures.push(format!("{target}: {e:?}")),
        }
    }
    failures
}

// ERROR means an operator must act. A reload and 2,000 requests against an
// upstream that closes idle keep-alive connections are routine: no ERROR
// line. A refused upstream is not: one ERROR, naming route and request id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_process_log_has_errors_only_when_someone_must_act() {
    // Idle for 100 ms, the upstream closes: every client pauses 250 ms, so
    // pooled connections go stale. (At 20 ms a *fresh* connection could be
    // closed before a busy debug build wrote its request: a single-peer
    // route does not send that again, and it is not what this tests.)
    let up = Upstream::closing_idle_after_ms(100);
    let dead = closed_port();
    let routes = route("/api/robeing/*", up.port, true, "")
        + &route("/api/dead/*", dead, false, "connect_timeout_ms = 500");
    let gw = Gateway::start_with(GatewayOptions {
        server_extra: "grace_period_seconds = 1\ngraceful_shutdown_timeout_seconds = 5",
        ..GatewayOptions::new(&routes)
    });
    let token = token_for("alice");
    let clients: Vec<_> = (0..8)
        .map(|_| tokio::spawn(idle_closing_client(gw.port, 250, token.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let old_pid = gw.pid();
    assert_reload_ok(&tokio::task::block_in_place(|| gw.reload()));
    let mut failures = Vec::new();
    for client in clients {
        failures.extend(client.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "failed requests: {failures:?}\n{:#?}",
        gw.log()
            .lines()
            .filter(|l| l.contains("Fail to proxy"))
            .collect::<Vec<_>>()
    );
    // The predecessor's last lines (draining, exiting) are in too.
    wait_for_exit(old_pid, Duration::from_secs(15)).await;
    let errors = gw.error_lines();
    assert!(errors.is_empty(), "routine events at ERROR: {errors:#?}");

    let r = get(gw.port, "/api/dead/x?token=secret-in-query", &[]).await;
    assert_envelope(&r, 503, "SERVICE_UNAVAILABLE");
    let request_id = r.header("x-request-id").unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let errors = gw.error_lines();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains("route /api/dead/*"), "{}", errors[0]);
    assert!(errors[0].contains(&request_id), "{}", errors[0]);
    assert!(!errors[0].contains("secret-in-query"), "{}", errors[0]);
}

// The admin listener says who may reach it (SECURITY.md, "The admin
// listener"): a connection from outside `admin.allow_from` is closed before
// a byte of HTTP is answered; one from inside is served.
#[tokio::test(flavor = "multi_thread")]
async fn the_admin_listener_serves_only_allow_from() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::start();
    let routes = route("/api/*", up.port, false, "");
    let gw = Gateway::start_with(GatewayOptions {
        admin_extra: "allow_from = [\"127.0.0.2/32\"]",
        ..GatewayOptions::new(&routes)
    });
    for path in ["/metrics", "/readyz", "/upstreams"] {
        let mut outsider = tokio::net::TcpStream::connect(("127.0.0.1", gw.admin_port))
            .await
            .unwrap();
        let _ = outsider
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .await;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), outsider.read_to_end(&mut answer))
            .await
            .expect("the connection is closed, not left open");
        assert!(
            answer.is_empty(),
            "{path} answered an outsider ({read:?}): {}",
            String::from_utf8_lossy(&answer)
        );
    }
    let stream = connect_from("127.0.0.2", gw.admin_port).await.unwrap();
    let mut allowed = Conn::from_stream(stream);
    let r = allowed.request("GET", "/metrics", &[], b"").await;
    assert_eq!(r.status, 200);
    let text = String::from_utf8_lossy(&r.body);
    // The three above, and the harness's own connect while it waited.
    let refused = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("gateway_connections_refused_total{reason=\"admin_not_allowed\"} ")
        })
        .and_then(|v| v.parse::<u64>().ok());
    assert!(refused.is_some_and(|n| n >= 3), "{text}");
    // The proxy listener is not affected.
    assert_eq!(get(gw.port, "/api/x", &[]).await.status, 200);
}

// However often /readyz is polled, it asks no dependency: PostgreSQL is
// checked once a second in the background, not per poll.
#[tokio::test(flavor = "multi_thread")]
async fn readiness_polls_ask_no_dependency() {
    let up = Upstream::start();
    let routes = route("/api/*", up.port, false, "");
    let gw = Gateway::start_with(GatewayOptions::new(&routes));
    let started = std::time::Instant::now();
    let pollers: Vec<_> = (0..20)
        .map(|_| {
            let port = gw.admin_port;
            tokio::spawn(async move {
                for _ in 0..15 {
                    let r = get(port, "/readyz", &[]).await;
                    assert_eq!(r.status, 200);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        })
        .collect();
    for p in pollers {
        p.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let checks = metric_value(gw.admin_port, "gateway_dependency_checks_total").await;
    assert!(checks >= 1, "no check was made");
    assert!(
        checks as f64 <= elapsed.ceil() + 1.0,
        "{checks} checks for 300 polls in {elapsed:.1} s"
    );
}

// logrotate works (README, "Observability"): the file is renamed, SIGUSR1
// makes the gateway open the path anew, and of 2,000 requests sent around
// the rotation every line is in one of the two files.
#[tokio::test(flavor = "multi_thread")]
async fn sigusr1_reopens_the_access_log_and_loses_nothing() {
    let up = Upstream::start();
    let routes = route("/api/*", up.port, false, "");
    let gw = Gateway::start_with(GatewayOptions::new(&routes));
    let log = gw.config_path().with_file_name("access.log");
    let rotated = gw.config_path().with_file_name("access.log.1");
    let port = gw.port;
    let senders: Vec<_> = (0..4)
        .map(|worker| {
            tokio::spawn(async move {
                let mut conn = Conn::connect(port).await;
                for i in 0..500 {
                    let target = format!("/api/rotate/{worker}/{i}");
                    assert_eq!(conn.request("GET", &target, &[], b"").await.status, 200);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    std::fs::rename(&log, &rotated).unwrap();
    gw.signal("USR1");
    for sender in senders {
        sender.await.unwrap();
    }
    // One more after the rotation, then the writer's next drain.
    assert_eq!(get(gw.port, "/api/after", &[]).await.status, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let read = |path: &std::path::Path| std::fs::read_to_string(path).unwrap_or_default();
    let (old, new) = (read(&rotated), read(&log));
    let paths = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["path"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .filter(|p| p.starts_with("/api/"))
            .collect()
    };
    let (old, new) = (paths(&old), paths(&new));
    assert!(!old.is_empty(), "nothing was written before the rotation");
    assert!(
        new.contains(&"/api/after".to_owned()),
        "the new file has the later line"
    );
    let mut all: Vec<String> = old
        .into_iter()
        .chain(new)
        .filter(|p| p.starts_with("/api/rotate/"))
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 2000, "lines lost across the rotation");
    assert!(gw.log().contains("SIGUSR1: reopening the access log"));
}

// The access line an operator works from: the client as resolved through
// trusted proxies, its user agent (cut) and host, body sizes both ways,
// the upstream's time, and 499 for a client that left first.
#[tokio::test(flavor = "multi_thread")]
async fn the_access_line_has_client_sizes_timing_and_499() {
    let public = Upstream::start();
    let protected = Upstream::start();
    let routes = standard_routes(&public, &protected);
    let gw = Gateway::start_with(GatewayOptions {
        server_extra: "trusted_proxies = [\"127.0.0.1/32\"]",
        ..GatewayOptions::new(&routes)
    });
    let rid = |id: &str| ("X-Request-Id".to_owned(), id.to_owned());
    let header = |n: &str, v: &str| (n.to_owned(), v.to_owned());
    let mut c = Conn::connect(gw.port).await;
    let body = vec![b'x'; 1000];
    let posted = c
        .request(
            "POST",
            "/api/auth/upload",
            &[rid("log-post"), header("User-Agent", "robeing-test/1.0")],
            &body,
        )
        .await;
    assert_eq!(posted.status, 200);
    let forwarded = c
        .request(
            "GET",
            "/api/auth/x",
            &[rid("log-xff"), header("X-Forwarded-For", "203.0.113.9")],
            b"",
        )
        .await;
    assert_eq!(forwarded.status, 200);
    let refused = c
        .request(
            "GET",
            "/api/robeing/x",
            &[rid("log-401"), header("User-Agent", &"a".repeat(10_000))],
            b"",
        )
        .await;
    assert_eq!(refused.status, 401);

    // A client that hangs up while the upstream is still working.
    let mut leaving = Conn::connect(gw.port).await;
    leaving
        .send_raw(
            b"GET /api/auth/delay/1000/x HTTP/1.1\r\nHost: t\r\nX-Request-Id: log-499\r\n\r\n",
        )
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(leaving);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let lines = gw.access_log();
    let by_id = |id: &str| {
        lines
            .iter()
            .find(|l| l["request_id"] == id)
            .unwrap_or_else(|| panic!("no line for {id}: {lines:?}"))
            .clone()
    };
    let post = by_id("log-post");
    assert_eq!(post["client_ip"], "127.0.0.1");
    assert_eq!(post["user_agent"], "robeing-test/1.0");
    assert_eq!(post["host"], "gateway.test");
    assert_eq!(post["request_bytes"], 1000);
    assert_eq!(post["response_bytes"], posted.body.len() as u64);
    let upstream_ms = post["upstream_time_ms"].as_f64().expect("upstream_time_ms");
    assert!(upstream_ms > 0.0 && upstream_ms <= post["response_time_ms"].as_f64().unwrap());
    let trace = post["trace_id"].as_str().unwrap();
    assert_eq!(trace.len(), 32, "{trace}");

    assert_eq!(by_id("log-xff")["client_ip"], "203.0.113.9");

    let unauthorized = by_id("log-401");
    assert!(unauthorized["upstream_time_ms"].is_null());
    assert_eq!(unauthorized["request_bytes"], 0);
    assert_eq!(unauthorized["response_bytes"], refused.body.len() as u64);
    assert_eq!(
        unauthorized["user_agent"].as_str().unwrap(),
        "a".repeat(512)
    );

    let left = by_id("log-499");
    assert_eq!(left["status_code"], 499, "{left}");
    assert!(left["upstream_status"].is_null(), "{left}");
    assert_eq!(left["response_bytes"], 0);
}

// What any Prometheus user expects: the process collector, the build (the
// same one `--version` prints), and every exported series documented in
// the README's table.
#[tokio::test(flavor = "multi_thread")]
async fn process_build_and_every_series_is_documented() {
    let public = Upstream::start();
    let protected = Upstream::start();
    let routes = standard_routes(&public, &protected);
    let gw = Gateway::start_with(GatewayOptions::new(&routes));
    assert_eq!(get(gw.port, "/api/auth/x", &[]).await.status, 200);
    let text = String::from_utf8(get(gw.admin_port, "/metrics", &[]).await.body).unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name}"))
    };
    assert!(value("process_resident_memory_bytes") > 1e6);
    assert!(value("process_virtual_memory_bytes") > value("process_resident_memory_bytes"));
    assert!(value("process_open_fds") >= 3.0);
    assert!(value("process_max_fds") >= value("process_open_fds"));
    assert!(value("process_cpu_seconds_total") >= 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = value("process_start_time_seconds");
    assert!(started <= now && started > now - 600.0, "{started}");

    let build = text
        .lines()
        .find(|l| l.starts_with("gateway_build_info{"))
        .expect("gateway_build_info");
    assert!(build.ends_with("} 1"), "{build}");
    let label = |key: &str| {
        let start = build.find(&format!("{key}=\"")).unwrap() + key.len() + 2;
        build[start..].split('"').next().unwrap().to_owned()
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_robeing-gateway"))
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        version.trim(),
        format!(
            "robeing-gateway {} (git {})",
            label("version"),
            label("git_sha")
        )
    );
    assert_eq!(label("version"), env!("CARGO_PKG_VERSION"));
    assert!(!label("git_sha").is_empty());

    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let undocumented: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .filter(|name| !readme.contains(&format!("`{name}`")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "not in the README's metrics table: {undocumented:?}"
    );
}

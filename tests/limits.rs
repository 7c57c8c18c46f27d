//! Rate limits: exact per-user and per-IP limits, the
//! 429 envelope and RateLimit headers, trusted proxies and per-route
//! overrides, against the real binary.

mod common;

use std::time::Duration;

use common::*;

fn rate_limit(per_minute: u32) -> String {
    format!("\n[rate_limit]\nrequests_per_minute = {per_minute}\n")
}

fn header_u64(r: &Response, name: &str) -> u64 {
    r.header(name)
        .unwrap_or_else(|| panic!("{name} missing"))
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a whole number"))
}

#[tokio::test(flavor = "multi_thread")]
async fn users_get_exactly_their_limit_then_429() {
    let public = Upstream::start();
    let protected = Upstream::start();
    let routes = rate_limit(5) + &standard_routes(&public, &protected);
    let gw = Gateway::start_with(GatewayOptions::new(&routes));
    let alice = [bearer(&token_for("alice"))];

    let mut statuses = Vec::new();
    for i in 0..8u64 {
        let r = get(gw.port, "/api/robeing/x", &alice).await;
        statuses.push(r.status);
        assert_eq!(header_u64(&r, "ratelimit-limit"), 5);
        if r.status == 200 {
            assert_eq!(header_u64(&r, "ratelimit-remaining"), 4 - i);
            assert!(r.header("retry-after").is_none());
        } else {
            assert_envelope(&r, 429, "RATE_LIMIT_EXCEEDED");
            let retry = header_u64(&r, "retry-after");
            assert!((1..=12).contains(&retry), "Retry-After {retry}");
            assert_eq!(header_u64(&r, "ratelimit-remaining"), 0);
            assert!(header_u64(&r, "ratelimit-reset") >= retry);
        }
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    // Only the five that passed reached the upstream.
    assert_eq!(protected.received().await.len(), 5);

    // Another user has a counter of their own.
    let bob = [bearer(&token_for("bob"))];
    for _ in 0..5 {
        assert_eq!(get(gw.port, "/api/robeing/x", &bob).await.status, 200);
    }
    assert_eq!(get(gw.port, "/api/robeing/x", &bob).await.status, 429);

    let metrics = String::from_utf8(get(gw.admin_port, "/metrics", &[]).await.body).unwrap();
    assert!(
        metrics.contains("gateway_rate_limited_total{route=\"/api/robeing/*\",subject=\"user\"} 4"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_clients_are_limited_per_ip_without_the_directory() {
    let public = Upstream::start();
    let protected = Upstream::start();
    let routes = rate_limit(3) + &standard_routes(&public, &protected);
    // The directory is down: anonymous requests never need it.
    let no_db = format!(
        "host=127.0.0.1 port={} user=x dbname=x connect_timeout=1",
        closed_port()
    );
    let gw = Gateway::start_with(GatewayOptions {
        server_extra: "trusted_proxies = [\"127.0.0.1/32\"]",
        database_url: no_db,
        ..GatewayOptions::new(&routes)
    });
    let from = |ip: &str| h(&[("X-Forwarded-For", ip)]);
    for _ in 0..3 {
        assert_eq!(
            get(gw.port, "/api/auth/login", &from("127.0.0.5"))
                .await
                .status,
            200
        );
    }
    assert_envelope(
        &get(gw.port, "/api/auth/login", &from("127.0.0.5")).await,
        429,
        "RATE_LIMIT_EXCEEDED",
    );
    // Another client behind the trusted proxy is counted separately.
    assert_eq!(
        get(gw.port, "/api/auth/login", &from("127.0.0.6"))
            .await
            .status,
        200
    );
    // Unauthenticated requests to a protected route count too, and are
    // refused with 429 once over, before any token or directory work.
    for _ in 0..3 {
        assert_envelope(
            &get(gw.port, "/api/robeing/x", &from("127.0.0.7")).await,
            401,
            "MISSING_TOKEN",
        );
    }
    assert_envelope(
        &get(gw.port, "/api/robeing/x", &from("127.0.0.7")).await,
        429,
        "RATE_LIMIT_EXCEEDED",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_for_from_untrusted_peers_is_ignored() {
    let public = Upstream::start();
    let protected = Upstream::start();
    let routes = rate_limit(3) + &standard_routes(&public, &protected);
    let gw = Gateway::start_with(GatewayOptions::new(&routes));
    // Rotating X-Forwarded-For does not escape the limit of the real peer.
    for i in 0..3 {
        let r = get(
            gw.port,
            "/api/auth/x",
            &h(&[("X-Forwarded-For", &format!("127.0.1.{i}"))]),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    let r = get(
        gw.port,
        "/api/auth/x",
        &h(&[("X-Forwarded-For", "127.0.1.99")]),
    )
    .await;
    assert_envelope(&r, 429, "RATE_LIMIT_EXCEEDED");
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_override_the_limit_and_counters_refill() {
    let up = Upstream::start();
    let routes = rate_limit(3)
        + &route("/api/fast/*", up.port, false, "requests_per_minute = 60")
        + &route("/api/free/*", up.port, false, "requests_per_minute = 0")
        + &route("/api/default/*", up.port, false, "");
    let gw = Gateway::start_with(GatewayOptions::new(&routes));
    let mut conn = Conn::connect(gw.port).await;
    for _ in 0..60 {
        assert_eq!(
            conn.request("GET", "/api/fast/x", &[], b"").await.status,
            200
        );
    }
    let r = get(gw.port, "/api/fast/x", &[]).await;
    assert_envelope(&r, 429, "RATE_LIMIT_EXCEEDED");
    assert_eq!(r.header("retry-after"), Some("1"));
    // One interval later (60/60 s), exactly one more passes.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get(gw.port, "/api/fast/x", &[]).await.status, 200);
    assert_eq!(get(gw.port, "/api/fast/x", &[]).await.status, 429);

    // The route's own counter is separate from the default one.
    for _ in 0..3 {
        assert_eq!(get(gw.port, "/api/default/x", &[]).await.status, 200);
    }
    assert_eq!(get(gw.port, "/api/default/x", &[]).await.status, 429);
    // requests_per_minute = 0: unlimited, and no RateLimit headers.
    for _ in 0..20 {
        let r = get(gw.port, "/api/free/x", &[]).await;
        assert_eq!(r.status, 200);
        assert!(r.header("ratelimit-limit").is_none());
    }
}

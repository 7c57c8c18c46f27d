//! Upstream pools against real upstream processes: rolling restarts, a
//! peer killed hard, a blackholed peer, every peer down, distribution and
//! affinity, health kept across SIGHUP (README, "Upstream pools").

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// Three recording upstreams on fixed ports (so they can restart), one
/// record file.
struct Peers {
    ports: Vec<u16>,
    running: Vec<Option<Upstream>>,
    record: std::path::PathBuf,
}

impl Peers {
    fn start(n: usize) -> Self {
        let record = std::env::temp_dir().join(unique("pool-record"));
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let running = ports
            .iter()
            .map(|&p| Some(Upstream::start_recording(p, &record)))
            .collect();
        Self {
            ports,
            running,
            record,
        }
    }

    fn stop(&mut self, i: usize) {
        if let Some(up) = self.running[i].take() {
            up.stop_gracefully();
        }
    }

    fn kill(&mut self, i: usize) {
        if let Some(up) = self.running[i].take() {
            up.kill_hard();
        }
    }

    fn restart(&mut self, i: usize) {
        self.running[i] = Some(Upstream::start_recording(self.ports[i], &self.record));
    }

    fn recorded(&self) -> String {
        std::fs::read_to_string(&self.record).unwrap_or_default()
    }

    /// Requests each peer received with `prefix` in their target.
    async fn received_with(&self, prefix: &str) -> Vec<Vec<String>> {
        let mut all = Vec::new();
        for up in self.running.iter().flatten() {
            let targets = up.received().await;
            all.push(targets.into_iter().filter(|t| t.contains(prefix)).collect());
        }
        all
    }
}

async fn wait_until_eligible(
    admin_port: u16,
    peer: u16,
    eligible: bool,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    let label = format!("127.0.0.1:{peer}");
    loop {
        let peers = pool_peers(admin_port).await;
        if peers.iter().any(|(p, e)| *p == label && *e == eligible) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{label} not eligible={eligible} after {limit:?}: {peers:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// Every peer in turn stopped (listener closed, requests in flight
// finished), down 2 s, started again, under 4 keep-alive clients: no GET
// and no POST fails, and every POST reached exactly one upstream once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_fails_no_request_and_replays_no_post() {
    let mut peers = Peers::start(3);
    let gw = Gateway::start_with(GatewayOptions::new(&pool_route(
        "/api/pool/*",
        &peers.ports,
        "[routes.health_check]\ninterval_ms = 200\nunhealthy_after = 1\nhealthy_after = 1",
    )));
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let posts_sent = Arc::new(Mutex::new(Vec::<String>::new()));
    let gets = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (stop, failures, posts_sent, gets) = (
                stop.clone(),
                failures.clone(),
                posts_sent.clone(),
                gets.clone(),
            );
            let port = gw.port;
            tokio::spawn(async move {
                let mut conn = Conn::connect(port).await;
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let (method, body) = if n % 2 == 0 {
                        ("POST", format!("post-{c}-{n}"))
                    } else {
                        ("GET", String::new())
                    };
                    let target = format!("/api/pool/{c}/{n}");
                    match conn
                        .try_request(method, &target, &[], body.as_bytes())
                        .await
                    {
                        Ok(r) if r.status == 200 => {}
                        other => {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("{method} {target}: {:?}", other.map(|r| r.status)));
                            conn = Conn::connect(port).await;
                        }
                    }
                    if method == "POST" {
                        posts_sent.lock().unwrap().push(body);
                    } else {
                        gets.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 0..3 {
        let ports = peers.ports.clone();
        tokio::task::block_in_place(|| peers.stop(i));
        tokio::time::sleep(Duration::from_secs(2)).await;
        tokio::task::block_in_place(|| peers.restart(i));
        // Back in rotation before the next one goes down.
        wait_until_eligible(gw.admin_port, ports[i], true, Duration::from_secs(3)).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}\n{:#?}",
        failures.len(),
        gw.log()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect::<Vec<_>>()
    );
    let recorded = peers.recorded();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for line in recorded.lines().filter(|l| l.starts_with("POST ")) {
        let body = line.rsplit(' ').next().unwrap_or("");
        *seen.entry(body).or_default() += 1;
    }
    let sent = posts_sent.lock().unwrap().clone();
    assert!(sent.len() > 200, "only {} POSTs in 20 s", sent.len());
    assert!(gets.load(Ordering::Relaxed) > 200);
    for body in &sent {
        assert_eq!(
            seen.get(body.as_str()),
            Some(&1),
            "{body} reached the upstreams"
        );
    }
    assert_eq!(seen.len(), sent.len(), "no POST the clients did not send");
    // Each peer served traffic after its restart.
    let served = peers.received_with("/api/pool/").await;
    assert!(served.iter().all(|s| !s.is_empty()), "{served:?}");
}

// SIGKILL mid-response: that one client sees a failure, never a complete
// 200; the next requests go elsewhere; the checks take the peer out within
// two intervals and back within two after it returns.
#[tokio::test(flavor = "multi_thread")]
async fn a_peer_killed_mid_response_fails_only_its_request() {
    let mut peers = Peers::start(3);
    let interval = Duration::from_millis(500);
    let gw = Gateway::start_with(GatewayOptions::new(&pool_route(
        "/api/pool/*",
        &peers.ports,
        "[routes.health_check]\npath = \"/healthz\"\ninterval_ms = 500\nunhealthy_after = 1\nhealthy_after = 1",
    )));
    for port in peers.ports.clone() {
        wait_until_eligible(gw.admin_port, port, true, Duration::from_secs(3)).await;
    }
    let mut slow = Conn::connect(gw.port).await;
    slow.send_raw(b"GET /api/pool/trickle/200000 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    let (status, _) = slow.read_head().await;
    assert_eq!(status, 200);
    // Which peer is sending it?
    let mut victim = None;
    for (i, up) in peers.running.iter().enumerate() {
        let up = up.as_ref().unwrap();
        if up.received().await.iter().any(|t| t.contains("/trickle/")) {
            victim = Some(i);
        }
    }
    let victim = victim.expect("a peer got the slow request");
    let killed_at = Instant::now();
    tokio::task::block_in_place(|| peers.kill(victim));
    let mut rest = Vec::new();
    let outcome = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::io::AsyncReadExt::read_to_end(slow.into_inner().get_mut(), &mut rest),
    )
    .await
    .expect("the client is not left hanging");
    // Headers and half of 200,000 bytes came; the connection ends before the rest.
    assert!(
        outcome.map_or(true, |n| n < 150_000),
        "a truncated body must not look complete"
    );

    for n in 0..30 {
        let r = get(gw.port, &format!("/api/pool/after/{n}"), &[]).await;
        assert_eq!(r.status, 200, "request {n} after the kill");
    }
    let out = wait_until_eligible(
        gw.admin_port,
        peers.ports[victim],
        false,
        2 * interval + Duration::from_millis(300),
    )
    .await;
    assert!(killed_at.elapsed() >= out);
    tokio::task::block_in_place(|| peers.restart(victim));
    wait_until_eligible(
        gw.admin_port,
        peers.ports[victim],
        true,
        2 * interval + Duration::from_millis(300),
    )
    .await;
}

// A peer that accepts and never answers: no request waits longer than the
// route's timeout, and passive ejection moves the traffic off it.
#[tokio::test(flavor = "multi_thread")]
async fn a_blackholed_peer_is_bounded_and_ejected() {
    let good = Upstream::start();
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_port = hole.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let accepted = Arc::new(AtomicUsize::new(0));
    {
        let (held, accepted) = (held.clone(), accepted.clone());
        tokio::spawn(async move {
            while let Ok((sock, _)) = hole.accept().await {
                accepted.fetch_add(1, Ordering::Relaxed);
                held.lock().unwrap().push(sock);
            }
        });
    }
    let gw = Gateway::start_with(GatewayOptions::new(&pool_route(
        "/api/pool/*",
        &[good.port, hole_port],
        "read_timeout_ms = 400",
    )));
    let mut statuses = Vec::new();
    for n in 0..24 {
        let t = Instant::now();
        let r = get(gw.port, &format!("/api/pool/{n}"), &[]).await;
        let took = t.elapsed();
        assert!(
            took < Duration::from_millis(400 + 600),
            "request {n} took {took:?} (route timeout 400 ms)"
        );
        if r.status != 200 {
            assert_envelope(&r, 504, "GATEWAY_TIMEOUT");
        }
        statuses.push(r.status);
    }
    let timeouts = statuses.iter().filter(|s| **s == 504).count();
    assert_eq!(timeouts, 3, "ejected after three timeouts: {statuses:?}");
    assert!(
        statuses[statuses.len() - 12..].iter().all(|s| *s == 200),
        "{statuses:?}"
    );
    let peers = pool_peers(gw.admin_port).await;
    let hole_label = format!("127.0.0.1:{hole_port}");
    assert!(
        peers.iter().any(|(p, e)| *p == hole_label && !e),
        "{peers:?}"
    );
}

// Every peer down and known to be: 503 at once, not after a connect
// timeout per request.
#[tokio::test(flavor = "multi_thread")]
async fn all_peers_down_is_an_immediate_503() {
    let ports = [closed_port(), closed_port(), closed_port()];
    let gw = Gateway::start_with(GatewayOptions::new(&pool_route(
        "/api/pool/*",
        &ports,
        "connect_timeout_ms = 2000\n[routes.health_check]\ninterval_ms = 100\nunhealthy_after = 1",
    )));
    for port in ports {
        wait_until_eligible(gw.admin_port, port, false, Duration::from_secs(3)).await;
    }
    let mut took = Vec::new();
    for n in 0..20 {
        let t = Instant::now();
        let r = get(gw.port, &format!("/api/pool/{n}"), &[]).await;
        took.push(t.elapsed());
        assert_envelope(&r, 503, "SERVICE_UNAVAILABLE");
    }
    took.sort();
    assert!(
        took[10] < Duration::from_millis(50),
        "median {:?}",
        took[10]
    );
    // Even the slowest is far from one connect timeout (2 s).
    assert!(
        took[19] < Duration::from_millis(500),
        "slowest {:?}",
        took[19]
    );
    // The gauges follow within their 100 ms refresh.
    let deadline = Instant::now() + Duration::from_secs(2);
    let metrics = loop {
        let text = String::from_utf8(get(gw.admin_port, "/metrics", &[]).await.body).unwrap();
        let all_out = ports.iter().all(|port| {
            text.contains(&format!(
                "gateway_upstream_peer_healthy{{peer=\"127.0.0.1:{port}\",route=\"/api/pool/*\"}} 0"
            ))
        });
        if all_out {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "gauges still say the peers are in:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        metrics.contains("kind=\"no_healthy_peer\""),
        "counted by kind"
    );
}

// Three equal peers share 3,000 requests within ±10 %; `consistent` keeps
// each user on one peer.
#[tokio::test(flavor = "multi_thread")]
async fn requests_spread_evenly_and_users_stick_to_one_peer() {
    let peers = Peers::start(3);
    let routes = pool_route("/api/pool/*", &peers.ports, "")
        + &pool_route(
            "/api/sticky/*",
            &peers.ports,
            "load_balancing = \"consistent\"\nauth_required = true",
        )
        .replace("auth_required = false\n", "");
    let gw = Gateway::start_with(GatewayOptions::new(&routes));
    let tasks: Vec<_> = (0..4)
        .map(|c| {
            let port = gw.port;
            tokio::spawn(async move {
                let mut conn = Conn::connect(port).await;
                for n in 0..750 {
                    let r = conn
                        .request("GET", &format!("/api/pool/{c}/{n}"), &[], b"")
                        .await;
                    assert_eq!(r.status, 200);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let counts: Vec<usize> = peers
        .received_with("/api/pool/")
        .await
        .iter()
        .map(Vec::len)
        .collect();
    assert_eq!(counts.iter().sum::<usize>(), 3000);
    assert!(
        counts.iter().all(|&n| (900..=1100).contains(&n)),
        "{counts:?}"
    );

    let users: Vec<String> = (0..12).map(|_| unique("sticky")).collect();
    for user in &users {
        add_user(user);
        let mut conn = Conn::connect(gw.port).await;
        for n in 0..8 {
            let r = conn
                .request(
                    "GET",
                    &format!("/api/sticky/{user}/{n}"),
                    &[bearer(&token_for(user))],
                    b"",
                )
                .await;
            assert_eq!(r.status, 200);
        }
    }
    let by_peer = peers.received_with("/api/sticky/").await;
    for user in &users {
        let homes: Vec<usize> = by_peer
            .iter()
            .map(|targets| targets.iter().filter(|t| t.contains(user.as_str())).count())
            .collect();
        assert_eq!(
            homes.iter().filter(|&&n| n > 0).count(),
            1,
            "{user}: {homes:?}"
        );
        assert_eq!(homes.iter().sum::<usize>(), 8);
    }
    assert!(
        by_peer.iter().filter(|t| !t.is_empty()).count() >= 2,
        "users spread over peers"
    );
}

// SIGHUP with the same peers keeps what the checks learned: a dead peer
// stays out of rotation without waiting for a new probe.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_keeps_the_health_of_unchanged_peers() {
    let up = Upstream::start();
    let dead = closed_port();
    let check = "[routes.health_check]\ninterval_ms = 60000\nunhealthy_after = 1";
    let routes = pool_route("/api/pool/*", &[up.port, dead], check);
    let gw = Gateway::start_with(GatewayOptions::new(&routes));
    wait_until_eligible(gw.admin_port, dead, false, Duration::from_secs(3)).await;
    let more = routes.clone() + &route("/api/other/*", up.port, false, "");
    gw.write_config(&GatewayOptions::new(&more));
    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(gw.port, "/api/other/x", &[]).await.status != 200 {
        assert!(Instant::now() < deadline, "SIGHUP not applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The next probe is a minute away: only the kept state can say this.
    let peers = pool_peers(gw.admin_port).await;
    assert!(
        peers.contains(&(format!("127.0.0.1:{dead}"), false)),
        "{peers:?}"
    );
    for n in 0..10 {
        assert_eq!(
            get(gw.port, &format!("/api/pool/{n}"), &[]).await.status,
            200
        );
    }
}

// The handoff hands the peers' health to the successor: a peer the
// predecessor's checks took out stays out in the successor, although the
// successor's own first probe of it passes (it needs two in a row).
#[tokio::test(flavor = "multi_thread")]
async fn the_handoff_carries_peer_health_to_the_successor() {
    let up = Upstream::start();
    let mut peers = Peers::start(1);
    let flaky = peers.ports[0];
    let check =
        "[routes.health_check]\ninterval_ms = 60000\nhealthy_after = 2\nunhealthy_after = 1";
    let routes = pool_route("/api/pool/*", &[up.port, flaky], check);
    let options = || GatewayOptions {
        server_extra: "grace_period_seconds = 1\ngraceful_shutdown_timeout_seconds = 5",
        ..GatewayOptions::new(&routes)
    };
    tokio::task::block_in_place(|| peers.stop(0));
    let gw = Gateway::start_with(options());
    wait_until_eligible(gw.admin_port, flaky, false, Duration::from_secs(3)).await;
    tokio::task::block_in_place(|| peers.restart(0));
    let old_pid = gw.pid();
    let new_pid = assert_reload_ok(&gw.reload());
    wait_for_exit(old_pid, Duration::from_secs(15)).await;
    assert_eq!(gw.pid(), new_pid);
    let peers_now = pool_peers(gw.admin_port).await;
    assert!(
        peers_now.contains(&(format!("127.0.0.1:{flaky}"), false)),
        "the successor forgot the predecessor's checks: {peers_now:?}"
    );
    for n in 0..10 {
        assert_eq!(
            get(gw.port, &format!("/api/pool/{n}"), &[]).await.status,
            200
        );
    }
}

// Every try carries the normalized target (SECURITY.md, "One normalized
// path"): Pingora rebuilds a retry from the client's original header, so a
// retry that forgot the rewrite would reach the peer with `..` and `//`.
// The peers close every reused connection without a byte, so every request
// after a connection's first is retried: on the same peer (one-peer route)
// and on another (two-peer pool).
#[tokio::test(flavor = "multi_thread")]
async fn every_try_carries_the_normalized_target() {
    let single = Upstream::closing_every_second_request();
    let pool = [
        Upstream::closing_every_second_request(),
        Upstream::closing_every_second_request(),
    ];
    let routes = route("/one/*", single.port, false, "")
        + &pool_route("/two/*", &[pool[0].port, pool[1].port], "");
    let gw = Gateway::start_with(GatewayOptions::new(&routes));
    for prefix in ["one", "two"] {
        let raw = format!("/{prefix}/a/../b//c/./d?q=1&r=..%2F");
        let normalized = format!("/{prefix}/b/c/d?q=1&r=..%2F");
        for i in 0..8 {
            let resp = get(gw.port, &raw, &[]).await;
            assert_eq!(resp.status, 200, "{prefix} GET {i}: {resp:?}");
            assert_eq!(String::from_utf8_lossy(&resp.body), normalized);
        }
        let peers: &[&Upstream] = match prefix {
            "one" => &[&single],
            _ => &[&pool[0], &pool[1]],
        };
        let mut seen = Vec::new();
        for peer in peers {
            seen.extend(peer.received().await);
        }
        // 8 answered, and the retried ones seen once more each.
        assert!(
            seen.len() > 8 + 2,
            "{prefix}: no retries happened: {seen:?}"
        );
        assert!(
            seen.iter().all(|t| *t == normalized),
            "{prefix}: a try left with another target: {seen:?}"
        );
    }
    let retries = metric_value(
        gw.admin_port,
        "gateway_upstream_retries_total{reason=\"stale_connection\"}",
    )
    .await;
    assert!(retries >= 6, "retries counted: {retries}");
}

/// A `consistent` pool behind a trusted balancer keys anonymous clients by
/// the address the balancer forwarded for (as the limits and the access
/// log do), not by the balancer's socket address: the clients spread over
/// the peers, and each stays on one.
#[tokio::test(flavor = "multi_thread")]
async fn consistent_pools_key_anonymous_clients_behind_a_trusted_proxy() {
    let peers = Peers::start(3);
    let routes = pool_route(
        "/api/sticky/*",
        &peers.ports,
        "load_balancing = \"consistent\"",
    );
    let gw = Gateway::start_with(GatewayOptions {
        server_extra: "trusted_proxies = [\"127.0.0.1/32\"]",
        ..GatewayOptions::new(&routes)
    });
    let clients: Vec<String> = (1..=30).map(|i| format!("203.0.113.{i}")).collect();
    for client in &clients {
        let mut conn = Conn::connect(gw.port).await;
        for n in 0..4 {
            let r = conn
                .request(
                    "GET",
                    &format!("/api/sticky/{client}/{n}"),
                    &[("X-Forwarded-For".to_owned(), client.clone())],
                    b"",
                )
                .await;
            assert_eq!(r.status, 200);
        }
    }
    let by_peer = peers.received_with("/api/sticky/").await;
    for client in &clients {
        let needle = format!("/{client}/");
        let homes = by_peer
            .iter()
            .filter(|targets| targets.iter().any(|t| t.contains(&needle)))
            .count();
        assert_eq!(homes, 1, "{client} went to {homes} peers");
    }
    let used = by_peer.iter().filter(|targets| !targets.is_empty()).count();
    assert!(
        used >= 2,
        "30 clients on {used} peer(s): keyed by the balancer's address"
    );
}

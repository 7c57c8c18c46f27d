//! Faults: the user directory down, hung or slow, and upstreams
//! that refuse, hang or reset mid-request and mid-response. The gateway
//! fails closed, stays bounded, loses nothing and never replays a POST.
//! Real binary, real PostgreSQL behind a switchable TCP hop, real sockets.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn echo_routes(up: &Upstream) -> String {
    route("/api/*", up.port, true, "")
}

async fn status_of(port: u16, token: &str) -> (u16, Duration) {
    let t = Instant::now();
    let r = get(port, "/api/x", &[bearer(token)]).await;
    (r.status, t.elapsed())
}

// PostgreSQL down: cached users keep working for the stale-if-error window,
// uncached users get 503 at once, and the gateway recovers by itself.
#[tokio::test(flavor = "multi_thread")]
async fn directory_down_serves_cached_users_for_a_bounded_window() {
    let up = Upstream::start();
    let hop = FaultProxy::start(pg_port()).await;
    let gw = Gateway::start_with(GatewayOptions {
        users_extra: "cache_ttl_seconds = 1\nstale_if_error_seconds = 3\nquery_timeout_ms = 800",
        database_url: hop.database_url(),
        ..GatewayOptions::new(&echo_routes(&up))
    });
    let cached = unique("cached");
    add_user(&cached);
    let uncached = unique("uncached");
    add_user(&uncached);
    let cached_token = token_for(&cached);
    assert_eq!(status_of(gw.port, &cached_token).await.0, 200);
    let cached_at = Instant::now();

    hop.set(Fault::Down);
    tokio::time::sleep(Duration::from_millis(1300)).await; // past the TTL
    for _ in 0..5 {
        let (status, took) = status_of(gw.port, &cached_token).await;
        assert_eq!(status, 200, "a cached user inside the window");
        // Bounds in this file sit well below the timeout the fault would
        // cost (here 800 ms) so that a shared 2-core machine's scheduling
        // noise (CI saw 270 ms under load) cannot fail them.
        assert!(
            took < Duration::from_millis(500),
            "stale answer took {took:?}"
        );
    }
    let t = Instant::now();
    let r = get(gw.port, "/api/x", &[bearer(&token_for(&uncached))]).await;
    assert_envelope(&r, 503, "USER_DIRECTORY_UNAVAILABLE");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "fail-closed took {:?}",
        t.elapsed()
    );
    let metrics = get(gw.admin_port, "/metrics", &[]).await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        !text.contains("gateway_identity_stale_served_total 0"),
        "stale answers are counted"
    );

    // Past TTL + window: the cached user fails closed too.
    let window_end = cached_at + Duration::from_millis(1000 + 3000 + 300);
    tokio::time::sleep(window_end.saturating_duration_since(Instant::now())).await;
    let r = get(gw.port, "/api/x", &[bearer(&cached_token)]).await;
    assert_envelope(&r, 503, "USER_DIRECTORY_UNAVAILABLE");

    // The directory comes back: both users work, no restart.
    hop.set(Fault::Pass);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (a, _) = status_of(gw.port, &cached_token).await;
        let (b, _) = status_of(gw.port, &token_for(&uncached)).await;
        if (a, b) == (200, 200) {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {a} {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// PostgreSQL closes the gateway's idle pooled connections (a restart,
// `pg_terminate_backend`, `idle_session_timeout`): the pool sees them
// closed before it hands them out and opens new ones, so no lookup is
// refused for it.
#[tokio::test(flavor = "multi_thread")]
async fn directory_connections_closed_while_idle_are_replaced() {
    let up = Upstream::start();
    let application = unique("gwpool");
    let gw = Gateway::start_with(GatewayOptions {
        database_url: format!("{} application_name={application}", database_url()),
        ..GatewayOptions::new(&echo_routes(&up))
    });
    let new_user_status = || async {
        let user = unique("idlepool");
        add_user(&user);
        status_of(gw.port, &token_for(&user)).await.0
    };
    for _ in 0..4 {
        assert_eq!(new_user_status().await, 200);
    }
    let killed = psql(&format!(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = '{application}') AS t"
    ));
    assert_ne!(killed, "0", "the gateway's pooled connections were open");
    tokio::time::sleep(Duration::from_millis(200)).await;
    for n in 0..6 {
        assert_eq!(new_user_status().await, 200, "lookup {n} after the close");
    }
    let log = gw.log();
    assert!(!log.contains("ERROR"), "{log}");
}

// PostgreSQL hung: lookups end at the query timeout, cached users are not
// slowed, and once the server answers again the gateway does too (hung
// connections are dropped, not pooled).
#[tokio::test(flavor = "multi_thread")]
async fn hung_directory_is_bounded_by_the_query_timeout() {
    let up = Upstream::start();
    let hop = FaultProxy::start(pg_port()).await;
    let gw = Gateway::start_with(GatewayOptions {
        users_extra: "query_timeout_ms = 600\npool_size = 2",
        database_url: hop.database_url(),
        ..GatewayOptions::new(&echo_routes(&up))
    });
    let cached = unique("cached");
    add_user(&cached);
    let cached_token = token_for(&cached);
    assert_eq!(status_of(gw.port, &cached_token).await.0, 200);

    hop.set(Fault::Hang);
    let cold: Vec<_> = (0..20)
        .map(|i| {
            let name = unique(&format!("cold{i}"));
            add_user(&name);
            let token = token_for(&name);
            let port = gw.port;
            tokio::spawn(async move { status_of(port, &token).await })
        })
        .collect();
    // While those wait on the hung server, a cached user is served at once.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..10 {
        let (status, took) = status_of(gw.port, &cached_token).await;
        assert_eq!(status, 200);
        assert!(
            // A lookup would wait for the 600 ms query timeout.
            took < Duration::from_millis(350),
            "cached user took {took:?}"
        );
    }
    for task in cold {
        let (status, took) = task.await.unwrap();
        assert_eq!(status, 503);
        assert!(
            took >= Duration::from_millis(550) && took < Duration::from_millis(1500),
            "a lookup against a hung directory took {took:?}"
        );
    }

    hop.set(Fault::Pass);
    let fresh = unique("fresh");
    add_user(&fresh);
    let deadline = Instant::now() + Duration::from_secs(5);
    while status_of(gw.port, &token_for(&fresh)).await.0 != 200 {
        assert!(Instant::now() < deadline, "no recovery after the hang");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// 1,000 cold users at once against a slow directory (0.3 s a query, 4
// connections, 2 s timeout): every request ends by the query timeout, with 200 or 503,
// and a cached user's latency does not move.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pool_exhaustion_under_a_thousand_cold_users_is_bounded() {
    let up = Upstream::start();
    let gw = Gateway::start_with(GatewayOptions {
        users_extra: "query = 'SELECT id FROM counted_user_lookup($1)'\npool_size = 4\nquery_timeout_ms = 2000",
        // All 1,000 clients come from 127.0.0.1, each with a new token.
        server_extra: "max_connections_per_ip = 0",
        auth: Some(AUTH_WITHOUT_FIRST_SIGHT),
        ..GatewayOptions::new(&echo_routes(&up))
    });
    let cached = unique("cached");
    add_user(&cached);
    let cached_token = token_for(&cached);
    assert_eq!(status_of(gw.port, &cached_token).await.0, 200);

    let names: Vec<String> = (0..1000)
        .map(|i| format!("{}-{i}", unique("cold")))
        .collect();
    let started = Instant::now();
    let cold: Vec<_> = names
        .iter()
        .map(|name| {
            let token = token_for(name);
            let port = gw.port;
            tokio::spawn(async move {
                let mut conn = Conn::connect(port).await;
                let t = Instant::now();
                let r = conn
                    .try_request("GET", "/api/x", &[bearer(&token)], b"")
                    .await;
                (r.map(|r| r.status), t.elapsed())
            })
        })
        .collect();
    // Probe once the stampede is parked on the exhausted pool (not while
    // its 1,000 headers are still being read: that is CPU, not the pool).
    let parked = Instant::now() + Duration::from_millis(900);
    while metric_value(gw.admin_port, "gateway_directory_pool_waiting").await < 500 {
        assert!(
            Instant::now() < parked,
            "the stampede never waited on the pool"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut worst_cached = Duration::ZERO;
    for _ in 0..20 {
        let (status, took) = status_of(gw.port, &cached_token).await;
        assert_eq!(status, 200);
        worst_cached = worst_cached.max(took);
    }
    // A cached request queued on the pool would wait behind 500+ lookups
    // for the 2 s query timeout and get 503; the bound leaves a loaded
    // 2-core machine room (a fresh clone measured 720 ms).
    assert!(
        worst_cached < Duration::from_millis(1500),
        "cached user took {worst_cached:?} during the stampede"
    );
    let (mut ok, mut unavailable) = (0, 0);
    for task in cold {
        let (status, took) = task.await.unwrap();
        match status {
            // Unknown users: 404 when the query ran, 503 when it timed out.
            Ok(404) => ok += 1,
            Ok(503) => unavailable += 1,
            other => panic!("cold user got {other:?}"),
        }
        // Unbounded, the queue would take 1,000 x 0.3 s / 4 = 75 s; the
        // bounds leave a loaded 2-core machine room (2.5 s seen on CI).
        assert!(took < Duration::from_secs(7), "a cold user waited {took:?}");
    }
    assert_eq!(ok + unavailable, 1000);
    assert!(
        unavailable > 0,
        "the pool never ran out: the test proves nothing"
    );
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "1,000 cold users took {:?}",
        started.elapsed()
    );
    // The gateway is still healthy afterwards.
    assert_eq!(get(gw.admin_port, "/healthz", &[]).await.status, 200);
}

/// A one-shot upstream that misbehaves on purpose; counts the requests it
/// received (one per connection).
struct EvilUpstream {
    port: u16,
    requests: Arc<AtomicUsize>,
}

#[derive(Clone, Copy)]
enum Evil {
    /// Accept and never answer.
    Blackhole,
    /// Read part of the request body, then reset the connection.
    ResetMidRequest,
    /// Send the head and part of a Content-Length body, then reset.
    ResetMidResponse,
    /// Send the head and a chunk of a chunked body, then reset.
    ResetMidChunkedResponse,
    /// Read the whole request, then close without a byte of response.
    CloseWithoutResponse,
}

impl EvilUpstream {
    async fn start(evil: Evil) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    // Read the request head (and whatever body came with it).
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    // Zero linger: the close is an RST, at once (nothing to
                    // block on, which is what the deprecation warns about).
                    #[allow(deprecated)]
                    let reset = |sock: tokio::net::TcpStream| {
                        sock.set_linger(Some(Duration::ZERO)).ok();
                        drop(sock);
                    };
                    match evil {
                        Evil::Blackhole => std::future::pending::<()>().await,
                        Evil::ResetMidRequest => reset(sock),
                        Evil::ResetMidResponse => {
                            let _ = sock
                                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
                                .await;
                            let _ = sock.write_all(&[b'x'; 100]).await;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            reset(sock);
                        }
                        Evil::ResetMidChunkedResponse => {
                            let _ = sock
                                .write_all(
                                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
                                )
                                .await;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            reset(sock);
                        }
                        Evil::CloseWithoutResponse => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            drop(sock);
                        }
                    }
                });
            }
        });
        Self { port, requests }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

// Upstream faults: the client sees an error or a truncated response, never a
// complete 200, and a POST reaches the upstream at most once.
#[tokio::test(flavor = "multi_thread")]
async fn upstream_faults_never_look_like_success() {
    let blackhole = EvilUpstream::start(Evil::Blackhole).await;
    let reset_req = EvilUpstream::start(Evil::ResetMidRequest).await;
    let reset_resp = EvilUpstream::start(Evil::ResetMidResponse).await;
    let reset_chunked = EvilUpstream::start(Evil::ResetMidChunkedResponse).await;
    let silent = EvilUpstream::start(Evil::CloseWithoutResponse).await;
    let routes = route("/refused/*", closed_port(), false, "")
        + &route(
            "/blackhole/*",
            blackhole.port,
            false,
            "read_timeout_ms = 500",
        )
        + &route("/reset-req/*", reset_req.port, false, "")
        + &route("/reset-resp/*", reset_resp.port, false, "")
        + &route("/reset-chunked/*", reset_chunked.port, false, "")
        + &route("/silent/*", silent.port, false, "");
    let gw = Gateway::start_with(GatewayOptions::new(&routes));

    let r = get(gw.port, "/refused/x", &[]).await;
    assert_envelope(&r, 503, "SERVICE_UNAVAILABLE");
    let t = Instant::now();
    let r = get(gw.port, "/blackhole/x", &[]).await;
    assert_envelope(&r, 504, "GATEWAY_TIMEOUT");
    assert!(t.elapsed() < Duration::from_secs(2));

    // Reset while the request body is still on its way.
    let body = vec![b'b'; 512 * 1024];
    let mut conn = Conn::connect(gw.port).await;
    match conn.try_request("POST", "/reset-req/x", &[], &body).await {
        Ok(r) => assert!(r.status >= 500, "reset mid-request answered {}", r.status),
        Err(ClientError::NoResponse(_)) | Err(ClientError::Broken(_)) => {}
    }

    // Reset mid-response: the client never gets the whole declared body.
    for target in ["/reset-resp/x", "/reset-chunked/x"] {
        let mut conn = Conn::connect(gw.port).await;
        match conn.try_request("GET", target, &[], b"").await {
            Ok(r) => panic!(
                "{target}: a complete response ({} bytes) after a reset",
                r.body.len()
            ),
            Err(ClientError::Broken(_)) | Err(ClientError::NoResponse(_)) => {}
        }
    }

    // An upstream that closes without answering: POST is not sent again.
    for _ in 0..3 {
        let r = send(gw.port, "POST", "/silent/x", &[], b"pay once").await;
        assert!(r.status >= 500, "silent upstream answered {}", r.status);
    }
    assert_eq!(silent.requests(), 3, "a POST was replayed");
    assert_eq!(reset_req.requests(), 1, "the reset POST was replayed");
    // The gateway survived all of it.
    assert_eq!(get(gw.admin_port, "/healthz", &[]).await.status, 200);
}

/// Connects from `source` (any 127/8 address: all loopback).
async fn per_ip_refusals(admin_port: u16) -> u64 {
    metric_value(
        admin_port,
        "gateway_connections_refused_total{reason=\"per_ip_limit\"}",
    )
    .await
}

// Slowloris and slow-body clients: the header deadline closes the first,
// the per-IP cap bounds both, and a client elsewhere is served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_clients_are_bounded_and_others_keep_flowing() {
    let up = Upstream::start();
    let gw = Gateway::start_with(GatewayOptions {
        server_extra: "header_timeout_ms = 1000\nmax_connections_per_ip = 64\nconnection_pressure_threshold = 0",
        ..GatewayOptions::new(&route("/api/*", up.port, false, ""))
    });
    let port = gw.port;

    // 150 slowloris connections: a request line, then a header byte every
    // 200 ms, never the end of the header.
    let slowloris: Vec<_> = (0..150)
        .map(|_| {
            tokio::spawn(async move {
                let t = Instant::now();
                let Ok(mut sock) = connect_from("127.0.0.1", port).await else {
                    return (Duration::ZERO, String::new());
                };
                let mut answer = Vec::new();
                let _ = sock
                    .write_all(b"GET /api/slowloris HTTP/1.1\r\nHost: t\r\n")
                    .await;
                loop {
                    let mut buf = [0u8; 512];
                    tokio::select! {
                        read = sock.read(&mut buf) => match read {
                            Ok(0) | Err(_) => break,
                            Ok(n) => answer.extend_from_slice(&buf[..n]),
                        },
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {
                            if sock.write_all(b"X").await.is_err() {
                                break;
                            }
                        }
                    }
                    if t.elapsed() > Duration::from_secs(10) {
                        break;
                    }
                }
                (t.elapsed(), String::from_utf8_lossy(&answer).into_owned())
            })
        })
        .collect();
    // 20 slow bodies: a complete header, then a byte every 200 ms.
    let slow_bodies: Vec<_> = (0..20)
        .map(|_| {
            tokio::spawn(async move {
                let Ok(mut sock) = connect_from("127.0.0.1", port).await else {
                    return;
                };
                let _ = sock
                    .write_all(b"POST /api/x HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n")
                    .await;
                for _ in 0..15 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if sock.write_all(b"b").await.is_err() {
                        return;
                    }
                }
            })
        })
        .collect();

    // Meanwhile a client from another address is served, quickly.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut worst = Duration::ZERO;
    for i in 0..40 {
        let sock = connect_from("127.0.0.2", port)
            .await
            .expect("connect from 127.0.0.2");
        let mut conn = Conn::from_stream(sock);
        let t = Instant::now();
        let r = conn
            .request("GET", &format!("/api/legit/{i}"), &[], b"")
            .await;
        assert_eq!(r.status, 200);
        worst = worst.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        worst < Duration::from_millis(500),
        "legitimate request took {worst:?}"
    );

    let mut timed_out = 0;
    for task in slowloris {
        let (held, answer) = task.await.unwrap();
        assert!(
            held < Duration::from_millis(2500),
            "a slowloris connection was held {held:?}"
        );
        if answer.starts_with("HTTP/1.1 408") {
            assert!(answer.contains("REQUEST_TIMEOUT"), "{answer}");
            timed_out += 1;
        } else {
            assert!(answer.is_empty(), "slowloris got {answer:?}");
        }
    }
    assert!(
        timed_out > 0 && timed_out <= 64,
        "{timed_out} slowloris connections got 408"
    );
    for task in slow_bodies {
        task.await.unwrap();
    }
    let refused = per_ip_refusals(gw.admin_port).await;
    assert!(refused >= 150 + 20 - 64, "per-IP refusals: {refused}");
    let received = up.received().await;
    assert!(
        !received.iter().any(|t| t == "/api/slowloris"),
        "an incomplete header reached the upstream"
    );
    assert_eq!(
        received
            .iter()
            .filter(|t| t.starts_with("/api/legit/"))
            .count(),
        40
    );
}

// The per-IP cap counts open connections per client address; a trusted
// proxy (many clients behind one address) is not capped.
#[tokio::test(flavor = "multi_thread")]
async fn per_ip_cap_spares_trusted_proxies() {
    let up = Upstream::start();
    let gw = Gateway::start_with(GatewayOptions {
        server_extra: "max_connections_per_ip = 2\nconnection_pressure_threshold = 0\ntrusted_proxies = [\"127.0.0.3/32\"]",
        ..GatewayOptions::new(&route("/api/*", up.port, false, ""))
    });
    let serve = |sock: tokio::net::TcpStream| async move {
        let mut conn = Conn::from_stream(sock);
        conn.try_request("GET", "/api/x", &[], b"")
            .await
            .map(|r| r.status)
    };
    // Two open connections from 127.0.0.1 are served; a third is closed.
    let mut held = Vec::new();
    for _ in 0..2 {
        let sock = connect_from("127.0.0.1", gw.port).await.unwrap();
        let mut conn = Conn::from_stream(sock);
        assert_eq!(conn.request("GET", "/api/x", &[], b"").await.status, 200);
        held.push(conn);
    }
    let third = connect_from("127.0.0.1", gw.port).await.unwrap();
    assert!(serve(third).await.is_err(), "a third connection was served");
    // Closing one frees its slot.
    held.pop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = connect_from("127.0.0.1", gw.port).await.unwrap();
    assert_eq!(serve(again).await.unwrap(), 200);
    // The trusted proxy holds five at once.
    let mut proxied = Vec::new();
    for _ in 0..5 {
        let sock = connect_from("127.0.0.3", gw.port).await.unwrap();
        let mut conn = Conn::from_stream(sock);
        assert_eq!(conn.request("GET", "/api/x", &[], b"").await.status, 200);
        proxied.push(conn);
    }
}

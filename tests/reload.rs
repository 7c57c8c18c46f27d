//! Zero-downtime reloads: SIGQUIT handoff through `reload` and
//! in-place SIGHUP, under continuous keep-alive load, against the real
//! binary, real upstreams and a real PostgreSQL.

mod common;

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// Outcomes of the load clients, counted as a real HTTP client would.
#[derive(Default)]
struct LoadStats {
    ok: AtomicU64,
    /// Requests re-sent because a reused keep-alive connection closed before
    /// any response byte (what browsers and HTTP libraries do).
    resent_on_reused: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
    errors: Mutex<Vec<String>>,
}

struct Load {
    stop: Arc<AtomicBool>,
    stats: Arc<LoadStats>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(LoadStats::default());
        let token = token_for("alice");
        let tasks = (0..clients)
            .map(|_| {
                let (stop, stats, token) = (stop.clone(), stats.clone(), token.clone());
                tokio::spawn(async move { client_loop(port, &stop, &stats, &token).await })
            })
            .collect();
        Self { stop, stats, tasks }
    }

    async fn finish(self) -> Arc<LoadStats> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.unwrap();
        }
        self.stats
    }
}

async fn client_loop(port: u16, stop: &AtomicBool, stats: &LoadStats, token: &str) {
    let headers = [bearer(token)];
    let mut conn: Option<(Conn, bool)> = None; // (connection, used before)
    while !stop.load(Ordering::SeqCst) {
        let (mut c, reused) = match conn.take() {
            Some(open) => open,
            None => match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                Ok(stream) => (Conn::from_stream(stream), false),
                Err(e) => {
                    stats.refused.fetch_add(1, Ordering::SeqCst);
                    stats.errors.lock().unwrap().push(format!("connect: {e}"));
                    continue;
                }
            },
        };
        match c
            .try_request("GET", "/api/robeing/load", &headers, b"")
            .await
        {
            Ok(r) if r.status == 200 && r.upstream_header("x-user-id") == [ALICE_ID] => {
                stats.ok.fetch_add(1, Ordering::SeqCst);
                if r.header("connection") != Some("close") {
                    conn = Some((c, true));
                }
            }
            Ok(r) => {
                stats.failed.fetch_add(1, Ordering::SeqCst);
                stats.errors.lock().unwrap().push(format!(
                    "{} {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                ));
            }
            Err(ClientError::NoResponse(_)) if reused => {
                stats.resent_on_reused.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => {
                stats.failed.fetch_add(1, Ordering::SeqCst);
                stats
                    .errors
                    .lock()
                    .unwrap()
                    .push(format!("reused={reused}: {e:?}"));
            }
        }
    }
}

const FAST_DRAIN: &str = "grace_period_seconds = 1\ngraceful_shutdown_timeout_seconds = 5";

fn options<'a>(routes: &'a str) -> GatewayOptions<'a> {
    GatewayOptions {
        server_extra: FAST_DRAIN,
        ..GatewayOptions::new(routes)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn handoffs_and_sighups_under_load_lose_nothing() {
    let public = Upstream::start();
    let protected = Upstream::start();
    let base = standard_routes(&public, &protected);
    let gw = Gateway::start_with(options(&base));
    let alice = bearer(&token_for("alice"));
    let load = Load::start(gw.port, 6);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A slow response and a slow upload in flight across the first handoff.
    let port = gw.port;
    let token = alice.clone();
    let slow_response =
        tokio::spawn(async move { get(port, "/api/robeing/delay/2500/x", &[token]).await });
    let slow_upload = tokio::spawn(async move {
        let mut c = Conn::connect(port).await;
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        c.send_raw(
            format!(
                "PUT /api/auth/upload HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await;
        for piece in body.chunks(20_000) {
            tokio::time::sleep(Duration::from_millis(250)).await;
            c.send_raw(piece).await;
        }
        (c.read_response().await, sha256_hex(&body))
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut routes = base.clone();
    let mut pids = vec![gw.pid()];
    for round in 0..3 {
        // Handoff; the last one adds a route.
        if round == 2 {
            routes += &route("/api/handoff/*", public.port, false, "");
        }
        gw.write_config(&options(&routes));
        let new_pid = assert_reload_ok(&gw.reload());
        assert!(!pids.contains(&new_pid));
        assert_eq!(gw.pid(), new_pid);
        let old_pid = *pids.last().unwrap();
        pids.push(new_pid);
        // The predecessor keeps accepting for Pingora's 5 s handover window,
        // then drains and exits; a SIGHUP reaches only the serving process.
        wait_for_exit(old_pid, Duration::from_secs(15)).await;

        // In-place reload; each adds a route.
        routes += &route(&format!("/api/hup{round}/*"), public.port, false, "");
        gw.write_config(&options(&routes));
        gw.signal("HUP");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(gw.pid(), new_pid, "SIGHUP must not replace the process");
        let r = get(gw.port, &format!("/api/hup{round}/x"), &[]).await;
        assert_eq!(r.status, 200, "route added by SIGHUP {round}");
    }
    assert_eq!(
        get(gw.port, "/api/handoff/x", &[]).await.status,
        200,
        "route added by handoff"
    );

    let (r, sha) = slow_upload.await.unwrap();
    assert_eq!(r.status, 200, "slow upload across a handoff");
    assert_eq!(r.json()["body_sha256"], sha);
    let r = slow_response.await.unwrap();
    assert_eq!(r.status, 200, "slow response across a handoff");
    assert_eq!(r.upstream_header("x-user-id"), [ALICE_ID]);

    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = load.finish().await;
    let errors = stats.errors.lock().unwrap().clone();
    let ok = stats.ok.load(Ordering::SeqCst);
    eprintln!(
        "load: {ok} ok, {} re-sent on a reused connection closed before any response byte",
        stats.resent_on_reused.load(Ordering::SeqCst)
    );
    assert_eq!(
        stats.failed.load(Ordering::SeqCst),
        0,
        "failed requests: {errors:?}"
    );
    assert_eq!(
        stats.refused.load(Ordering::SeqCst),
        0,
        "refused connections: {errors:?}"
    );
    assert!(ok > 200, "the load ran ({ok} requests)");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_config_never_replaces_the_running_instance() {
    let public = Upstream::start();
    let protected = Upstream::start();
    let routes = standard_routes(&public, &protected);
    let gw = Gateway::start_with(options(&routes));
    let pid = gw.pid();

    // Unknown key: reload refuses, naming the key, and nothing changes.
    let broken = routes.replace(
        "auth_required = false",
        "auth_required = false\nbogus_key = 1",
    );
    gw.write_config(&options(&broken));
    let out = gw.reload();
    assert!(!out.status.success());
    let log = gw.log();
    assert!(log.contains("unknown field `bogus_key`"), "{log}");
    assert!(log.contains("running instance is untouched"), "{log}");
    assert_eq!(gw.pid(), pid);
    assert!(!gw.config_path().with_file_name("upgrade.sock").exists());
    assert_eq!(get(gw.port, "/api/auth/x", &[]).await.status, 200);

    // The same file on SIGHUP: rejected, the old routes keep serving.
    gw.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gw.pid(), pid);
    assert_eq!(get(gw.port, "/api/auth/x", &[]).await.status, 200);
    assert!(
        gw.log().contains("SIGHUP: configuration rejected"),
        "{}",
        gw.log()
    );

    // A semantic error (not just syntax) is refused the same way.
    let bad_users = options(&routes);
    gw.write_config(&GatewayOptions {
        users_extra: "pool_size = 0",
        ..bad_users
    });
    let out = gw.reload();
    assert!(!out.status.success());
    assert!(gw.log().contains("users.pool_size: must be at least 1"));
    assert_eq!(gw.pid(), pid);

    // Fixed: SIGHUP applies it.
    let more = routes.clone() + &route("/api/later/*", public.port, false, "");
    gw.write_config(&options(&more));
    gw.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(gw.port, "/api/later/x", &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn another_binary_takes_over_and_systemd_follows_the_main_pid() {
    let public = Upstream::start();
    let protected = Upstream::start();
    let routes = standard_routes(&public, &protected);
    let dir = std::env::temp_dir().join(unique("robeing-notify"));
    std::fs::create_dir_all(&dir).unwrap();
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let notify_env = vec![(
        "NOTIFY_SOCKET".to_owned(),
        notify_path.display().to_string(),
    )];

    let gw = Gateway::start_with(GatewayOptions {
        env: notify_env.clone(),
        ..options(&routes)
    });
    let mut buf = [0u8; 512];
    let n = notify.recv(&mut buf).unwrap();
    let first = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert_eq!(first, format!("MAINPID={}\nREADY=1\n", gw.pid()));

    // "Version 2" of the binary, installed elsewhere, runs the reload.
    let v2 = dir.join("robeing-gateway-v2");
    std::fs::copy(env!("CARGO_BIN_EXE_robeing-gateway"), &v2).unwrap();
    let new_pid = assert_reload_ok(&gw.reload_with(&v2, &notify_env));
    let n = notify.recv(&mut buf).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&buf[..n]),
        format!("MAINPID={new_pid}\nREADY=1\n")
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{new_pid}/exe")).unwrap(),
        v2
    );
    assert_eq!(get(gw.port, "/api/auth/x", &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn successor_starts_with_the_identity_cache_warm() {
    let public = Upstream::start();
    let protected = Upstream::start();
    let routes = standard_routes(&public, &protected);
    let gw = Gateway::start_with(GatewayOptions {
        users_extra: "query = 'SELECT id FROM counted_user_lookup($1)'",
        ..options(&routes)
    });
    let users: Vec<String> = (0..20).map(|i| unique(&format!("warm{i}"))).collect();
    for u in &users {
        add_user(u);
        let r = get(gw.port, "/api/robeing/x", &[bearer(&token_for(u))]).await;
        assert_eq!(r.status, 200);
    }
    let queries = |u: &str| {
        psql(&format!(
            "SELECT n FROM gateway_lookups WHERE username = '{u}'"
        ))
    };
    assert_eq!(gw.log().matches("handed").count(), 0);
    assert_reload_ok(&gw.reload());
    assert!(
        gw.log().contains("took over 20 cached users"),
        "{}",
        gw.log()
    );
    let t = Instant::now();
    for u in &users {
        let r = get(gw.port, "/api/robeing/x", &[bearer(&token_for(u))]).await;
        assert_eq!(r.status, 200);
    }
    assert!(t.elapsed() < Duration::from_secs(5));
    for u in &users {
        assert_eq!(queries(u), "1", "{u} was queried again after the handoff");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn draining_waits_for_in_flight_requests_and_no_longer() {
    let up = Upstream::start();
    let routes = route("/api/slow/*", up.port, false, "read_timeout_ms = 30000");
    let drain = "grace_period_seconds = 1\ngraceful_shutdown_timeout_seconds = 12";
    let opts = || GatewayOptions {
        server_extra: drain,
        ..GatewayOptions::new(&routes)
    };
    let gw = Gateway::start_with(opts());

    // A response that outlasts Pingora's 5 s handover window.
    let port = gw.port;
    let slow = tokio::spawn(async move {
        let r = get(port, "/api/slow/delay/8000/x", &[]).await;
        (r, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let first = gw.pid();
    let handed_over = Instant::now();
    assert_reload_ok(&gw.reload());
    let (r, finished) = slow.await.unwrap();
    assert_eq!(r.status, 200, "in-flight request cut by the handoff");
    wait_for_exit(first, Duration::from_secs(20)).await;
    let exited = Instant::now();
    assert!(exited >= finished, "exited before its request finished");
    assert!(
        exited - finished < Duration::from_secs(2),
        "lingered {:?} after draining",
        exited - finished
    );

    // Nothing in flight: the predecessor leaves after the 5 s handover
    // window plus the 1 s minimum, not after the 12 s bound.
    let second = gw.pid();
    let t = Instant::now();
    assert_reload_ok(&gw.reload());
    wait_for_exit(second, Duration::from_secs(20)).await;
    assert!(
        t.elapsed() < Duration::from_secs(9),
        "idle predecessor took {:?}",
        t.elapsed()
    );
    assert!(handed_over.elapsed() > Duration::from_secs(8));
    assert_eq!(get(gw.port, "/api/slow/x", &[]).await.status, 200);
}

/// `reload` run with its output on /dev/null (a detached supervisor, a
/// closed terminal): the successor's access log and process log go to the
/// stdout and stderr the gateway was started with.
#[tokio::test(flavor = "multi_thread")]
async fn the_successor_writes_where_the_predecessor_did() {
    let public = Upstream::start();
    let protected = Upstream::start();
    let routes = standard_routes(&public, &protected);
    let gw = Gateway::start_with(GatewayOptions {
        access_log_on_stdout: true,
        ..options(&routes)
    });
    assert_eq!(get(gw.port, "/api/auth/before", &[]).await.status, 200);
    let old_pid = gw.pid();

    let status = gw.reload_detached();
    assert!(status.success(), "reload: {status}");
    let new_pid = gw.pid();
    assert_ne!(new_pid, old_pid);
    wait_for_exit(old_pid, Duration::from_secs(15)).await;

    for i in 0..5 {
        let r = get(gw.port, &format!("/api/auth/after-{i}"), &[]).await;
        assert_eq!(r.status, 200);
    }
    // The access-log writer drains its queue every few milliseconds.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut stdout = gw.stdout_text();
    while !stdout.contains("/api/auth/after-4") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        stdout = gw.stdout_text();
    }
    assert!(stdout.contains("/api/auth/before"), "{stdout}");
    for i in 0..5 {
        assert!(
            stdout.contains(&format!("/api/auth/after-{i}")),
            "request {i} after the handoff is missing from the gateway's stdout:\n{stdout}"
        );
    }
    let log = gw.log();
    assert!(
        log.contains(&format!("serving as pid {new_pid}")),
        "the successor's process log is missing from the gateway's stderr:\n{log}"
    );
    assert!(
        log.contains("took over the predecessor's stdout and stderr"),
        "{log}"
    );
}

/// `shutdown_delay_seconds`: on SIGTERM `/readyz` turns 503 at once, new
/// connections are still served for the delay (an orchestrator removes the
/// endpoint some time after SIGTERM), then the drain runs and the process
/// exits.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_serves_through_the_shutdown_delay_then_drains() {
    let public = Upstream::start();
    let protected = Upstream::start();
    let routes = standard_routes(&public, &protected);
    let gw = Gateway::start_with(GatewayOptions {
        server_extra: "shutdown_delay_seconds = 3\ngrace_period_seconds = 1\ngraceful_shutdown_timeout_seconds = 5",
        ..GatewayOptions::new(&routes)
    });
    let pid = gw.pid();
    assert_eq!(get(gw.admin_port, "/readyz", &[]).await.status, 200);

    gw.signal("TERM");
    let sent = Instant::now();
    loop {
        let r = get(gw.admin_port, "/readyz", &[]).await;
        if r.status == 503 {
            assert_eq!(r.json()["status"], "stopping");
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let unready_after = sent.elapsed();
    assert!(
        unready_after < Duration::from_millis(300),
        "/readyz turned 503 after {unready_after:?}"
    );

    // New connections, each served, for the next 2 s.
    let mut served = 0;
    while sent.elapsed() < Duration::from_secs(2) {
        let r = get(gw.port, "/api/auth/during-delay", &[]).await;
        assert_eq!(r.status, 200, "at {:?} after SIGTERM", sent.elapsed());
        served += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served >= 10, "{served} requests in the delay");

    wait_for_exit(pid, Duration::from_secs(10)).await;
    let exited_after = sent.elapsed();
    // The delay (3 s) plus Pingora's minimum grace (1 s), and not the
    // whole drain bound (5 s) on top: nothing was in flight.
    assert!(
        exited_after >= Duration::from_secs(4) && exited_after < Duration::from_secs(8),
        "exited {exited_after:?} after SIGTERM"
    );
    assert!(gw
        .log()
        .contains("SIGTERM: /readyz answers 503; serving 3s more"));
}

//! Exact handoffs: once `reload` reports success (or, by hand, once the
//! successor has written its pid), every new connection is answered with
//! the new configuration, including by the predecessor in Pingora's 5 s
//! accept window; a configuration the predecessor cannot apply does not
//! break the handoff; rate-limit budgets survive it.

mod common;

use std::time::{Duration, Instant};

use common::*;

const FAST_DRAIN: &str = "grace_period_seconds = 1\ngraceful_shutdown_timeout_seconds = 5";

fn options(routes: &str) -> GatewayOptions<'_> {
    GatewayOptions {
        server_extra: FAST_DRAIN,
        ..GatewayOptions::new(routes)
    }
}

/// 100 sequential requests, each on a fresh connection, to the new route:
/// the statuses that were not 200.
async fn fresh_connections_missing(port: u16, prefix: &str) -> Vec<(usize, u16)> {
    let mut missing = Vec::new();
    for i in 0..100 {
        let r = get(port, &format!("{prefix}/{i}"), &[]).await;
        if r.status != 200 {
            missing.push((i, r.status));
        }
    }
    missing
}

/// A gateway serving `/api/old/*` whose file now also has `/api/new/*`;
/// the serving pid.
fn serving_old_routes_with_new_ones_on_file() -> (Upstream, Gateway, i32) {
    let up = Upstream::start();
    let base = route("/api/old/*", up.port, false, "");
    let gw = Gateway::start_with(options(&base));
    let old_pid = gw.pid();
    let routes = base.clone() + &route("/api/new/*", up.port, false, "");
    gw.write_config(&options(&routes));
    (up, gw, old_pid)
}

#[tokio::test(flavor = "multi_thread")]
async fn after_reload_every_new_connection_sees_the_new_routes() {
    let (_up, gw, old_pid) = serving_old_routes_with_new_ones_on_file();
    let started = Instant::now();
    let new_pid = assert_reload_ok(&gw.reload());
    assert_ne!(new_pid, old_pid);
    let missing = fresh_connections_missing(gw.port, "/api/new").await;
    let window = started.elapsed();
    assert!(
        missing.is_empty(),
        "answered with the old configuration after reload: {missing:?}"
    );
    // The requests ran inside the predecessor's accept window, so some were
    // the predecessor's to answer.
    assert!(window < Duration::from_secs(5), "took {window:?}");
    assert!(
        gw.log()
            .contains("SIGQUIT: serving the successor's configuration (2 routes)"),
        "{}",
        gw.log()
    );
    assert_eq!(get(gw.port, "/api/old/x", &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hand_sent_sigquit_hands_over_the_new_config_too() {
    let (_up, gw, old_pid) = serving_old_routes_with_new_ones_on_file();
    // The README's procedure by hand: start the new process with -u, wait until it
    // listens for the sockets, SIGQUIT the old one.
    let mut successor = gw.start_successor(&[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.upgrade_sock().exists() {
        assert!(Instant::now() < deadline, "the successor never listened");
        assert!(!successor.has_exited(), "{}", gw.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.signal("QUIT");
    let successor_pid = successor.pid();
    while gw.pid() != successor_pid {
        assert!(Instant::now() < deadline, "the successor never served");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let missing = fresh_connections_missing(gw.port, "/api/new").await;
    assert!(missing.is_empty(), "old configuration served: {missing:?}");
    wait_for_exit(old_pid, Duration::from_secs(15)).await;
    assert_eq!(get(gw.port, "/api/new/x", &[]).await.status, 200);
    // Nothing of the handoff is left behind (the successor takes the
    // predecessor's final counters within a poll interval of its exit).
    let leftovers = || -> Vec<String> {
        std::fs::read_dir(gw.config_path().parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("upgrade.sock"))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    while !leftovers().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(leftovers().is_empty(), "{:?}", leftovers());
}

// The predecessor cannot build what the successor serves (here: a secret
// only the successor's environment holds; a key only a newer binary knows
// takes the same path). The handoff goes through, the successor serves the
// new configuration, and the predecessor says once what it did instead.
#[tokio::test(flavor = "multi_thread")]
async fn a_config_the_predecessor_cannot_apply_does_not_break_the_handoff() {
    let up = Upstream::start();
    let base = route("/api/old/*", up.port, false, "");
    let gw = Gateway::start_with(options(&base));
    let old_pid = gw.pid();

    let routes = base.clone()
        + &route(
            "/api/slack/*",
            up.port,
            false,
            "slack_signing_secret_env = \"SLACK_SECRET_ONLY_IN_V2\"",
        );
    gw.write_config(&options(&routes));
    let env = [(
        "SLACK_SECRET_ONLY_IN_V2".to_owned(),
        SLACK_SECRET.to_owned(),
    )];
    let new_pid = assert_reload_ok(&gw.reload_with(
        std::path::Path::new(env!("CARGO_BIN_EXE_robeing-gateway")),
        &env,
    ));
    wait_for_exit(old_pid, Duration::from_secs(15)).await;
    assert_eq!(gw.pid(), new_pid);
    let log = gw.log();
    assert_eq!(
        log.matches("cannot apply the successor's configuration")
            .count(),
        1,
        "{log}"
    );
    assert!(log.contains("SLACK_SECRET_ONLY_IN_V2"), "{log}");
    // The successor serves the new route (its signature check included).
    let body = b"token=x&team_id=T1";
    let ts = in_seconds(0).to_string();
    let r = send(
        gw.port,
        "POST",
        "/api/slack/events",
        &h(&[
            ("x-slack-request-timestamp", &ts),
            ("x-slack-signature", &slack_signature(&ts, body)),
            ("content-type", "application/x-www-form-urlencoded"),
        ]),
        body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(gw.error_lines().is_empty(), "{:?}", gw.error_lines());
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limit_budgets_survive_the_handoff() {
    let up = Upstream::start();
    let routes = route("/api/robeing/*", up.port, true, "requests_per_minute = 3");
    let gw = Gateway::start_with(options(&routes));
    let old_pid = gw.pid();
    let alice = bearer(&token_for("alice"));
    for i in 0..3 {
        let r = get(
            gw.port,
            &format!("/api/robeing/{i}"),
            std::slice::from_ref(&alice),
        )
        .await;
        assert_eq!(r.status, 200, "request {i} of the budget");
    }

    assert_reload_ok(&gw.reload());
    wait_for_exit(old_pid, Duration::from_secs(15)).await;
    // alice's counter, and the first-sight budget of the client's address
    // when the handoff came within its interval (100 ms) of her first
    // request.
    let log = gw.log();
    let taken = log
        .split("took over ")
        .filter_map(|rest| rest.split_once(" rate-limit counters from the predecessor"))
        .map(|(count, _)| count)
        .filter(|count| count.bytes().all(|b| b.is_ascii_digit()))
        .collect::<Vec<_>>();
    assert!(matches!(taken.as_slice(), ["1"] | ["2"]), "{log}");
    let r = get(gw.port, "/api/robeing/after", &[alice]).await;
    assert_envelope(&r, 429, "RATE_LIMIT_EXCEEDED");
    assert!(r.header("retry-after").is_some());
    // Another user's budget is whole.
    let bob = unique("bob");
    add_user(&bob);
    let r = get(gw.port, "/api/robeing/bob", &[bearer(&token_for(&bob))]).await;
    assert_eq!(r.status, 200);
}

// What the predecessor still counts after it handed its counters over (on
// connections it holds, in its last seconds) reaches the successor too.
#[tokio::test(flavor = "multi_thread")]
async fn what_the_predecessor_counts_after_the_handoff_reaches_the_successor() {
    let up = Upstream::start();
    let routes = route("/api/robeing/*", up.port, true, "requests_per_minute = 4");
    let gw = Gateway::start_with(options(&routes));
    let old_pid = gw.pid();
    let alice = bearer(&token_for("alice"));
    let headers = std::slice::from_ref(&alice);
    // Three keep-alive connections to the predecessor, one request so far.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(Conn::connect(gw.port).await);
    }
    let r = held[0].request("GET", "/api/robeing/0", headers, b"").await;
    assert_eq!(r.status, 200);

    assert_reload_ok(&gw.reload());
    // The draining predecessor answers each (and closes it): 4 spent.
    for (i, conn) in held.iter_mut().enumerate() {
        let r = conn
            .request("GET", &format!("/api/robeing/held{i}"), headers, b"")
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("connection"),
            Some("close"),
            "not the predecessor's"
        );
    }
    wait_for_exit(old_pid, Duration::from_secs(15)).await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while !gw.log().contains("added what the predecessor spent") {
        assert!(Instant::now() < deadline, "{}", gw.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = get(gw.port, "/api/robeing/fifth", headers).await;
    assert_envelope(&r, 429, "RATE_LIMIT_EXCEEDED");
}

// `reload` signals only a robeing-gateway of the same user (SECURITY.md,
// "Handoff files"): a pid file holding an unrelated process's pid is
// refused with a clear error, the process is left alone, and the running
// gateway keeps serving. A FIFO planted at every handoff path does not
// hold up the next reload.
#[tokio::test(flavor = "multi_thread")]
async fn reload_signals_only_a_gateway_and_planted_files_do_not_stall_it() {
    let up = Upstream::start();
    let routes = route("/api/*", up.port, false, "");
    let gw = Gateway::start_with(options(&routes));
    let pid_file = gw.config_path().with_file_name("gateway.pid");
    let real_pid = std::fs::read_to_string(&pid_file).unwrap();
    let mut sleeper = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    std::fs::write(&pid_file, format!("{}\n", sleeper.id())).unwrap();
    let out = gw.reload();
    assert!(!out.status.success(), "{out:?}");
    // `reload` writes its error to stderr: the gateway's log file here.
    let err = gw.log();
    assert!(
        err.contains(&format!("refusing to signal pid {}", sleeper.id()))
            && err.contains("not robeing-gateway"),
        "{err}"
    );
    assert!(sleeper.try_wait().unwrap().is_none(), "sleep was signalled");
    let _ = sleeper.kill();
    assert_eq!(get(gw.port, "/api/x", &[]).await.status, 200);

    // Back to the real pid, with a FIFO at every handoff path.
    std::fs::write(&pid_file, real_pid).unwrap();
    let sock = gw.upgrade_sock();
    for suffix in [
        "config.json",
        "identity.json",
        "limits.json",
        "limits.final.json",
        "upstreams.json",
    ] {
        let path = format!("{}.{suffix}", sock.display());
        assert!(std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap()
            .success());
    }
    let started = Instant::now();
    let out = gw.reload();
    assert_reload_ok(&out);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "reload took {:?}",
        started.elapsed()
    );
    assert_eq!(get(gw.port, "/api/x", &[]).await.status, 200);
}

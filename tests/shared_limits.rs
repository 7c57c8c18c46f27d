//! Rate limits shared through a real Redis: one budget across instances,
//! the fallback modes while Redis is down, recovery without a restart, and
//! budgets that survive a reload by construction (README, "Running several
//! instances").

mod common;

use std::time::{Duration, Instant};

use common::*;

/// A shared limit of `per_minute`. Tests of the shared budget give Redis
/// 500 ms a decision: the 5 ms default is for a quiet production host, and
/// a test machine running five suites at once misses it now and then (the
/// decision then falls back to local limits, which other tests cover).
fn limited_routes(up: &Upstream, per_minute: u32, extra: &str) -> String {
    let extra = if extra.is_empty() {
        "store_timeout_ms = 500"
    } else {
        extra
    };
    format!(
        "\n[rate_limit]\nrequests_per_minute = {per_minute}\nstore = \"redis\"\nredis_url_env = \"REDIS_URL\"\n{extra}\n"
    ) + &route("/api/robeing/*", up.port, true, "")
}

/// One gateway sharing a limit of `per_minute` through its own Redis, and
/// a token of a new user named after `name`.
struct OneGateway {
    redis: RedisServer,
    _up: Upstream,
    gw: Gateway,
    token: String,
}

fn one_gateway(per_minute: u32, extra: &str, name: &str) -> OneGateway {
    one_gateway_on(RedisServer::start(), per_minute, extra, name)
}

/// [`one_gateway`] on a Redis started by the caller.
fn one_gateway_on(redis: RedisServer, per_minute: u32, extra: &str, name: &str) -> OneGateway {
    let up = Upstream::start();
    let routes = limited_routes(&up, per_minute, extra);
    let gw = Gateway::start_with(options(&routes, &redis));
    let user = unique(name);
    add_user(&user);
    OneGateway {
        token: token_for(&user),
        redis,
        _up: up,
        gw,
    }
}

/// Decisions the local limiter made because Redis did not.
async fn local_fallbacks(admin_port: u16) -> u64 {
    metric_value(
        admin_port,
        "gateway_rate_limit_store_fallbacks_total{mode=\"local\"}",
    )
    .await
}

/// `count` requests of round `round` with `token`, one after the other,
/// each of which must pass.
async fn passing_requests(gw: &Gateway, token: &str, round: usize, count: usize) {
    for n in 0..count {
        let r = get(
            gw.port,
            &format!("/api/robeing/{round}-{n}"),
            &[bearer(token)],
        )
        .await;
        assert_eq!(r.status, 200, "round {round}, request {n}");
    }
}

/// Redis's open connections once `traffic` has passed and the dependency
/// probe (once a second) has opened its own: the driver's, the probe's
/// and at least one thread's.
async fn open_connections_after(
    traffic: impl std::future::Future<Output = ()>,
    redis: &RedisServer,
) -> usize {
    traffic.await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let open = redis.connected_clients();
    assert!(
        open >= 3,
        "the driver's, the probe's and a thread's: {open}"
    );
    open
}

/// No decision of `gw` was made by the local limiter: Redis made them all.
async fn assert_all_decided_in_redis(gw: &Gateway) {
    let fallbacks = local_fallbacks(gw.admin_port).await;
    assert_eq!(fallbacks, 0, "every decision made in Redis");
}

fn options<'a>(routes: &'a str, redis: &RedisServer) -> GatewayOptions<'a> {
    GatewayOptions {
        env: vec![("REDIS_URL".into(), redis.url())],
        ..GatewayOptions::new(routes)
    }
}

fn options_draining_fast<'a>(routes: &'a str, redis: &RedisServer) -> GatewayOptions<'a> {
    GatewayOptions {
        server_extra: "grace_period_seconds = 1\ngraceful_shutdown_timeout_seconds = 5",
        ..options(routes, redis)
    }
}

// Three instances, one user's requests spread round-robin across them,
// 10 a minute: exactly 10 pass in the window, the rest are 429 with a
// Retry-After the local limiter would give too.
#[tokio::test(flavor = "multi_thread")]
async fn three_instances_share_one_budget() {
    let redis = RedisServer::start();
    let up = Upstream::start();
    let routes = limited_routes(&up, 10, "");
    let gateways: Vec<Gateway> = (0..3)
        .map(|_| Gateway::start_with(options(&routes, &redis)))
        .collect();
    let user = unique("shared");
    add_user(&user);
    let token = token_for(&user);
    let mut allowed = 0;
    for n in 0..30 {
        let gw = &gateways[n % 3];
        let r = get(gw.port, &format!("/api/robeing/{n}"), &[bearer(&token)]).await;
        match r.status {
            200 => allowed += 1,
            429 => {
                assert_envelope(&r, 429, "RATE_LIMIT_EXCEEDED");
                let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
                // 10 a minute: the next one passes within one 6 s interval.
                assert!((1..=6).contains(&retry), "Retry-After {retry}");
            }
            other => panic!("request {n}: {other}"),
        }
    }
    assert_eq!(allowed, 10, "one budget across the three instances");
    for gw in &gateways {
        assert_eq!(
            metric_value(gw.admin_port, "gateway_rate_limit_store_up").await,
            1
        );
    }
}

// Redis stopped mid-run: decisions fall back within the budget (local by
// default); started again, the shared budget resumes without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn redis_down_falls_back_to_local_limits_and_recovers() {
    let mut redis = RedisServer::start();
    let up = Upstream::start();
    // 250 ms: a decision late on a loaded test machine would fall back
    // and spend the local budget, which the recovery below counts.
    let routes = limited_routes(&up, 4, "store_timeout_ms = 250");
    let gw = Gateway::start_with(options(&routes, &redis));
    let user = unique("fallback");
    add_user(&user);
    let token = token_for(&user);
    let status = |n: usize| {
        let token = token.clone();
        let port = gw.port;
        async move {
            let t = Instant::now();
            let r = get(port, &format!("/api/robeing/{n}"), &[bearer(&token)]).await;
            (r.status, t.elapsed())
        }
    };
    for n in 0..4 {
        assert_eq!(status(n).await.0, 200);
    }
    assert_eq!(status(4).await.0, 429, "the shared budget is spent");
    const REDIS_UP: &str = "gateway_dependency_up{dependency=\"redis\"}";
    wait_for_metric(gw.admin_port, REDIS_UP, 1, Duration::from_secs(2)).await;

    redis.stop();
    // The local limiter has its own budget of 4: four pass, then 429.
    let mut statuses = Vec::new();
    for n in 0..6 {
        let (s, took) = status(10 + n).await;
        assert!(
            took < Duration::from_millis(250 + 450),
            "a decision took {took:?}"
        );
        statuses.push(s);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
    assert_eq!(
        metric_value(gw.admin_port, "gateway_rate_limit_store_up").await,
        0
    );
    assert!(local_fallbacks(gw.admin_port).await >= 6);

    // Checked in the background, traffic or not.
    wait_for_metric(gw.admin_port, REDIS_UP, 0, Duration::from_secs(3)).await;
    assert_eq!(get(gw.admin_port, "/readyz", &[]).await.status, 200);

    // Back: Redis (empty now) decides again, with no restart and no 503.
    redis.start_again();
    wait_for_metric(gw.admin_port, REDIS_UP, 1, Duration::from_secs(3)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric_value(gw.admin_port, "gateway_rate_limit_store_up").await != 1 {
        assert!(Instant::now() < deadline, "the store never came back");
        let (s, _) = status(100).await;
        assert!(s == 200 || s == 429, "{s} while recovering");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let other = unique("after");
    add_user(&other);
    let other_token = token_for(&other);
    let fallbacks_before = local_fallbacks(gw.admin_port).await;
    let mut passed = 0;
    for n in 0..6 {
        let r = get(
            gw.port,
            &format!("/api/robeing/o{n}"),
            &[bearer(&other_token)],
        )
        .await;
        passed += usize::from(r.status == 200);
    }
    assert_eq!(
        local_fallbacks(gw.admin_port).await,
        fallbacks_before,
        "Redis decided each of them (the threads' connections from before the restart were opened again)"
    );
    assert_eq!(passed, 4, "the shared budget decides again");
}

// A Redis that stops answering (SIGSTOP) without closing anything: each
// decision falls back within the budget, a few late answers in a row mark
// the store down and it is skipped (decisions are then at once); resumed,
// it decides again without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_hung_redis_costs_the_budget_then_is_skipped() {
    let OneGateway {
        redis,
        _up,
        gw,
        token,
    } = one_gateway(1000, "store_timeout_ms = 50", "hung");
    assert_eq!(
        get(gw.port, "/api/robeing/0", &[bearer(&token)])
            .await
            .status,
        200
    );
    redis.pause(true);
    let mut took = Vec::new();
    for n in 0..12 {
        let t = Instant::now();
        let r = get(gw.port, &format!("/api/robeing/{n}"), &[bearer(&token)]).await;
        took.push(t.elapsed());
        assert_eq!(r.status, 200, "the local limit decides meanwhile");
    }
    redis.pause(false);
    for (n, t) in took.iter().enumerate() {
        assert!(
            *t < Duration::from_millis(50 + 450),
            "decision {n} took {t:?}"
        );
    }
    assert!(local_fallbacks(gw.admin_port).await >= 12);
    // Eight late answers marked it down: the last ones did not wait.
    let waited = took
        .iter()
        .filter(|t| **t >= Duration::from_millis(50))
        .count();
    assert!(
        (8..12).contains(&waited),
        "{waited} of 12 waited the budget: {took:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric_value(gw.admin_port, "gateway_rate_limit_store_up").await != 1 {
        assert!(Instant::now() < deadline, "the store never came back");
        let r = get(gw.port, "/api/robeing/again", &[bearer(&token)]).await;
        assert_eq!(r.status, 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// `allow` lets everything through while Redis is down; `deny` refuses
// with 503, at once.
#[tokio::test(flavor = "multi_thread")]
async fn allow_and_deny_modes_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let up = Upstream::start();
    let allow_routes = limited_routes(&up, 2, "store_timeout_ms = 50\non_store_error = \"allow\"");
    let deny_routes = limited_routes(&up, 2, "store_timeout_ms = 50\non_store_error = \"deny\"");
    let allow = Gateway::start_with(options(&allow_routes, &redis));
    let deny = Gateway::start_with(options(&deny_routes, &redis));
    let user = unique("modes");
    add_user(&user);
    let token = token_for(&user);
    // Both have their connection (the first decision opens it)...
    for gw in [&allow, &deny] {
        assert_eq!(
            get(gw.port, "/api/robeing/first", &[bearer(&token)])
                .await
                .status,
            200
        );
    }
    // ...when Redis goes down mid-run.
    redis.stop();
    for n in 0..5 {
        let r = get(allow.port, &format!("/api/robeing/{n}"), &[bearer(&token)]).await;
        assert_eq!(r.status, 200, "allow mode");
        let t = Instant::now();
        let r = get(deny.port, &format!("/api/robeing/{n}"), &[bearer(&token)]).await;
        assert_envelope(&r, 503, "SERVICE_UNAVAILABLE");
        assert!(t.elapsed() < Duration::from_millis(500));
    }
}

// A reload (handoff) of an instance leaves its users' budgets as they
// were: they live in Redis.
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_keeps_the_shared_budget() {
    let redis = RedisServer::start();
    let up = Upstream::start();
    let routes = limited_routes(&up, 3, "");
    let gw = Gateway::start_with(options_draining_fast(&routes, &redis));
    let user = unique("reload");
    add_user(&user);
    let token = token_for(&user);
    for n in 0..3 {
        assert_eq!(
            get(gw.port, &format!("/api/robeing/{n}"), &[bearer(&token)])
                .await
                .status,
            200
        );
    }
    let old_pid = gw.pid();
    let env = [("REDIS_URL".to_owned(), redis.url())];
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_robeing-gateway"));
    assert_reload_ok(&tokio::task::block_in_place(|| {
        gw.reload_with(binary, &env)
    }));
    wait_for_exit(old_pid, Duration::from_secs(15)).await;
    let r = get(gw.port, "/api/robeing/after", &[bearer(&token)]).await;
    assert_envelope(&r, 429, "RATE_LIMIT_EXCEEDED");
}

// Anonymous clients are limited per IP through the same store: two
// instances share one budget for 127.0.0.1.
#[tokio::test(flavor = "multi_thread")]
async fn anonymous_limits_per_ip_are_shared_too() {
    let redis = RedisServer::start();
    let up = Upstream::start();
    let routes = "\n[rate_limit]\nrequests_per_minute = 4\nstore = \"redis\"\nredis_url_env = \"REDIS_URL\"\nstore_timeout_ms = 500\n"
        .to_owned()
        + &route("/api/auth/*", up.port, false, "");
    let gateways: Vec<Gateway> = (0..2)
        .map(|_| Gateway::start_with(options(&routes, &redis)))
        .collect();
    let mut statuses = Vec::new();
    for n in 0..8 {
        let r = get(gateways[n % 2].port, &format!("/api/auth/{n}"), &[]).await;
        statuses.push(r.status);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429, 429, 429]);
}

// Many requests at once on each of three instances: the decisions waiting
// together go to Redis in batches, and the budget stays exact: 20 of 90
// pass, every decision made in Redis (no fallback), in fewer round trips
// than decisions.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_are_decided_in_batches_and_stay_exact() {
    let redis = RedisServer::start();
    let up = Upstream::start();
    let routes = limited_routes(&up, 20, "");
    let gateways: Vec<Gateway> = (0..3)
        .map(|_| Gateway::start_with(options(&routes, &redis)))
        .collect();
    // Each instance's threads open their own connections first (another
    // user's budget), so that the burst finds some of them idle.
    let warm = unique("warm");
    add_user(&warm);
    let warm_token = token_for(&warm);
    let store = "gateway_rate_limit_store_round_trips_total";
    let alone = "gateway_rate_limit_store_sent_alone_total";
    let mut before = (0, 0);
    for gw in &gateways {
        let mut tries = 0;
        while metric_value(gw.admin_port, alone).await == 0 {
            tries += 1;
            assert!(tries < 50, "no decision sent alone after {tries} requests");
            get(gw.port, "/api/robeing/warm", &[bearer(&warm_token)]).await;
        }
        before.0 += metric_value(gw.admin_port, store).await;
        before.1 += metric_value(gw.admin_port, alone).await;
    }
    let user = unique("batched");
    add_user(&user);
    let token = token_for(&user);
    let requests = (0..90).map(|n| {
        let port = gateways[n % 3].port;
        let token = token.clone();
        async move { get(port, &format!("/api/robeing/{n}"), &[bearer(&token)]).await }
    });
    let answers = futures_util::future::join_all(requests).await;
    let allowed = answers.iter().filter(|r| r.status == 200).count();
    for r in answers.iter().filter(|r| r.status != 200) {
        assert_envelope(r, 429, "RATE_LIMIT_EXCEEDED");
    }
    assert_eq!(allowed, 20, "one exact budget for 90 concurrent requests");
    let mut round_trips = 0;
    for gw in &gateways {
        assert_all_decided_in_redis(gw).await;
        round_trips += metric_value(gw.admin_port, store).await;
    }
    round_trips -= before.0;
    assert!(
        (3..90).contains(&round_trips),
        "90 decisions in {round_trips} round trips"
    );
    let mut sent_alone = 0;
    for gw in &gateways {
        sent_alone += metric_value(gw.admin_port, alone).await;
    }
    sent_alone -= before.1;
    assert!(
        (1..round_trips).contains(&sent_alone),
        "{sent_alone} of {round_trips} calls sent alone: the rest must be batches"
    );
}

/// One request at a time: each decision goes to Redis at once, from the
/// request itself on its thread's own connection, not through the
/// driver's queue (README, "Running several instances"). A thread's first request
/// queues while that connection opens.
#[tokio::test(flavor = "multi_thread")]
async fn sequential_requests_send_their_decisions_alone() {
    let OneGateway {
        redis: _redis,
        _up,
        gw,
        token,
    } = one_gateway(1000, "", "alone");
    for n in 0..20 {
        let r = get(gw.port, &format!("/api/robeing/{n}"), &[bearer(&token)]).await;
        assert_eq!(r.status, 200);
    }
    let round_trips =
        metric_value(gw.admin_port, "gateway_rate_limit_store_round_trips_total").await;
    let alone = metric_value(gw.admin_port, "gateway_rate_limit_store_sent_alone_total").await;
    assert_eq!(round_trips, 20, "one call per request");
    // Two threads: each one's first request, and any that came while its
    // connection was opening, went through the queue.
    assert!(
        (16..=18).contains(&alone),
        "{alone} of 20 calls sent by their requests"
    );
    assert_all_decided_in_redis(&gw).await;
}

/// Redis closes every idle connection (`CLIENT KILL`, as a restart, its
/// `timeout` or an operator does): the threads', the driver's and the
/// probe's connections are seen closed before they are used and opened
/// again, so no decision falls back to the local limiter for it.
#[tokio::test(flavor = "multi_thread")]
async fn connections_redis_closed_while_idle_are_opened_again() {
    let OneGateway {
        redis,
        _up,
        gw,
        token,
    } = one_gateway(1000, "", "killed");
    let traffic = |round: usize| passing_requests(&gw, &token, round, 20);
    let open = open_connections_after(traffic(0), &redis).await;
    let killed: usize = redis
        .command("CLIENT KILL TYPE normal")
        .trim_start_matches(':')
        .trim()
        .parse()
        .expect("CLIENT KILL answers a count");
    // Every one the gateway had open (`open` counted the query's own).
    assert!(killed + 1 >= open, "{killed} of {open} connections killed");
    tokio::time::sleep(Duration::from_millis(200)).await;
    traffic(1).await;
    traffic(2).await;
    assert_all_decided_in_redis(&gw).await;
    assert_eq!(
        metric_value(gw.admin_port, "gateway_rate_limit_store_up").await,
        1
    );
    // The probe opened its connection again rather than report Redis down.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        metric_value(gw.admin_port, "gateway_dependency_up{dependency=\"redis\"}").await,
        1
    );
    let log = gw.log();
    assert!(!log.contains("WARN") && !log.contains("ERROR"), "{log}");
}

/// Redis forgets the script (`SCRIPT FLUSH`, as a restart or a failover
/// does) while the threads' connections stay open: the next call gets
/// `NOSCRIPT`, sends the script itself, and the budget stays exact.
#[tokio::test(flavor = "multi_thread")]
async fn a_flushed_script_is_sent_again_and_the_budget_holds() {
    let OneGateway {
        redis,
        _up,
        gw,
        token,
    } = one_gateway(10, "", "flushed");
    let mut statuses = Vec::new();
    for n in 0..14 {
        if n == 6 {
            assert_eq!(redis.command("SCRIPT FLUSH"), "+OK");
        }
        statuses.push(
            get(gw.port, &format!("/api/robeing/{n}"), &[bearer(&token)])
                .await
                .status,
        );
    }
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        10,
        "{statuses:?}"
    );
    assert!(statuses[10..].iter().all(|&s| s == 429), "{statuses:?}");
    assert_all_decided_in_redis(&gw).await;
    assert!(metric_value(gw.admin_port, "gateway_rate_limit_store_sent_alone_total").await >= 10);
}

/// The URL's user, password and database number hold on every connection
/// the limiter opens: the driver's and each thread's own. The counters
/// land in database 3, none in 0.
#[tokio::test(flavor = "multi_thread")]
async fn a_password_and_a_database_in_the_url_hold_on_every_connection() {
    let redis = RedisServer::start_with_password(Some("s3cret-pass"));
    let up = Upstream::start();
    let routes = limited_routes(&up, 5, "");
    let gw = Gateway::start_with(GatewayOptions {
        env: vec![(
            "REDIS_URL".into(),
            format!("redis://default:s3cret-pass@127.0.0.1:{}/3", redis.port),
        )],
        ..GatewayOptions::new(&routes)
    });
    let user = unique("authed");
    add_user(&user);
    let token = token_for(&user);
    let mut allowed = 0;
    for n in 0..9 {
        let r = get(gw.port, &format!("/api/robeing/{n}"), &[bearer(&token)]).await;
        allowed += usize::from(r.status == 200);
    }
    assert_eq!(allowed, 5, "one exact budget");
    assert_all_decided_in_redis(&gw).await;
    assert!(metric_value(gw.admin_port, "gateway_rate_limit_store_sent_alone_total").await >= 5);
    assert_eq!(redis.command("DBSIZE"), ":0", "nothing in database 0");
    assert_eq!(
        redis.command_in(3, "DBSIZE"),
        ":1",
        "the user's counter in database 3"
    );
    let log = gw.log();
    assert!(!log.contains("s3cret-pass"), "the password is never logged");
}

/// HTTP/2 streams share the budget as HTTP/1 requests do: many at once on
/// one TLS connection are decided in Redis (batched while a call is in
/// flight) and the budget stays exact; one at a time, each stream's
/// decision goes alone on its thread's connection.
#[tokio::test(flavor = "multi_thread")]
async fn h2_streams_share_the_budget_exactly() {
    let redis = RedisServer::start();
    let up = Upstream::start();
    let dir = cert_dir();
    let (cert, key) = make_cert(&dir, "edge");
    let tls_port = free_port();
    let server_extra = tls_block(tls_port, &cert, &key, "");
    let routes = limited_routes(&up, 12, "");
    let gw = Gateway::start_with(GatewayOptions {
        server_extra: &server_extra,
        ..options(&routes, &redis)
    });
    let user = unique("h2shared");
    add_user(&user);
    let auth = format!("Bearer {}", token_for(&user));
    let client = H2Client::connect(tls_port, &cert).await;
    let streams = (0..30).map(|i| {
        let client = client.clone();
        let auth = auth.clone();
        async move {
            client
                .request(
                    "GET",
                    &format!("/api/robeing/{i}"),
                    &[("authorization", &auth)],
                    b"",
                )
                .await
                .unwrap_or_else(|e| panic!("stream {i}: {e}"))
                .status
        }
    });
    let statuses = futures_util::future::join_all(streams).await;
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        12,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|&s| s == 200 || s == 429),
        "{statuses:?}"
    );
    let alone = "gateway_rate_limit_store_sent_alone_total";
    let before = metric_value(gw.admin_port, alone).await;
    for i in 0..6 {
        let r = client
            .request(
                "GET",
                &format!("/api/robeing/seq{i}"),
                &[("authorization", &auth)],
                b"",
            )
            .await
            .unwrap_or_else(|e| panic!("stream seq{i}: {e}"));
        assert_eq!(r.status, 429);
    }
    assert!(
        metric_value(gw.admin_port, alone).await - before >= 4,
        "sequential streams decided alone"
    );
    assert_all_decided_in_redis(&gw).await;
}

/// SIGHUP builds the limiter anew (its URL may have changed): the old
/// one's connections (the driver's, the probe's, each thread's) close with
/// it, so reloads do not pile connections up on Redis, and the new one
/// decides at once.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_closes_the_old_limiters_connections() {
    let OneGateway {
        redis,
        _up,
        gw,
        token,
    } = one_gateway(1000, "", "sighup");
    let traffic = |round: usize| passing_requests(&gw, &token, round, 10);
    let before = open_connections_after(traffic(0), &redis).await;
    for round in 1..=3 {
        gw.signal("HUP");
        tokio::time::sleep(Duration::from_millis(300)).await;
        traffic(round).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = redis.connected_clients();
    assert!(
        after <= before,
        "{before} connections before three SIGHUPs, {after} after"
    );
    assert_all_decided_in_redis(&gw).await;
    let log = gw.log();
    assert!(!log.contains("ERROR"), "{log}");
}

/// A Redis that wants a password the URL does not give: every decision
/// falls back, the store is marked down, and the log says why at WARN
/// (once per skip period, not per request), without the password.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_password_is_logged_and_falls_back() {
    // The URL (`options`) names no password.
    let redis = RedisServer::start_with_password(Some("s3cret-pass"));
    let OneGateway {
        redis: _redis,
        _up,
        gw,
        token,
    } = one_gateway_on(redis, 1000, "", "noauth");
    for n in 0..5 {
        let r = get(gw.port, &format!("/api/robeing/{n}"), &[bearer(&token)]).await;
        assert_eq!(r.status, 200, "the local limiter decides");
    }
    assert!(local_fallbacks(gw.admin_port).await >= 5);
    assert_eq!(
        metric_value(gw.admin_port, "gateway_rate_limit_store_up").await,
        0
    );
    let log = gw.log();
    let refused: Vec<&str> = log.lines().filter(|l| l.contains("NOAUTH")).collect();
    // One per skip period (a second); a slow machine may see two.
    assert!((1..=2).contains(&refused.len()), "{log}");
    assert!(refused[0].contains("WARN") && refused[0].contains("rate_limit.redis_url_env"));
}

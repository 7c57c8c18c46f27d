//! Signing keys (README, "Signing keys"): rotation by `kid` under load with
//! SIGHUP, RS256/ES256/EdDSA with keys openssl makes now, header attacks,
//! `verify_until`, and JWKS from a real loopback server: refresh, outage,
//! size cap, unknown-kid storms.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use jsonwebtoken::{Algorithm, Header};
use serde_json::json;

const KEY_A: &str = "rotation-key-a-0123456789abcdef0123456789";
const KEY_B: &str = "rotation-key-b-0123456789abcdef0123456789";

fn hs_key(kid: &str, env: &str) -> String {
    format!("[[auth.keys]]\nkid = \"{kid}\"\nalgorithm = \"HS256\"\nsecret_env = \"{env}\"\n")
}

fn public_key(kid: &str, algorithm: &str, pair: &KeyPair) -> String {
    format!(
        "[[auth.keys]]\nkid = \"{kid}\"\nalgorithm = \"{algorithm}\"\npublic_key_file = \"{}\"\n",
        pair.public_file.display()
    )
}

/// These tests are about keys: any audience passes (written out, as the
/// config requires with public keys); the audience rule has its own test.
fn auth_with(keys: &str) -> String {
    format!("[auth]\nleeway_seconds = 0\nallow_any_audience = true\n{keys}")
}

fn hs_token(kid: Option<&str>, secret: &str, username: &str) -> String {
    let mut header = json!({"alg": "HS256", "typ": "JWT"});
    if let Some(kid) = kid {
        header["kid"] = kid.into();
    }
    signed_token(
        header,
        json!({"username": username, "exp": now() + 600}),
        secret.as_bytes(),
    )
}

fn key_env() -> Vec<(String, String)> {
    vec![
        ("KEY_A".into(), KEY_A.into()),
        ("KEY_B".into(), KEY_B.into()),
    ]
}

async fn status(gw: &Gateway, token: &str) -> u16 {
    get(gw.port, "/api/robeing/x", &[bearer(token)])
        .await
        .status
}

/// Waits until the process log shows `n` applied SIGHUP reloads.
async fn wait_for_reloads(gw: &Gateway, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.log().matches("SIGHUP: configuration reloaded").count() < n {
        assert!(
            Instant::now() < deadline,
            "SIGHUP {n} not applied: {}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// Clients keep sending A's tokens while the keys go A -> A+B (SIGHUP), then
// switch to B, then A is removed (SIGHUP): no request fails, and A's token
// is refused at once afterwards, though the verified-token cache had it.
#[tokio::test(flavor = "multi_thread")]
async fn rotation_under_load_drops_no_request() {
    let up = Upstream::start();
    let routes = route("/api/robeing/*", up.port, true, "");
    let user = unique("rotating");
    add_user(&user);
    let (token_a, token_b) = (
        hs_token(Some("a"), KEY_A, &user),
        hs_token(Some("b"), KEY_B, &user),
    );
    let only_a = auth_with(&hs_key("a", "KEY_A"));
    let both = auth_with(&(hs_key("b", "KEY_B") + &hs_key("a", "KEY_A")));
    let only_b = auth_with(&hs_key("b", "KEY_B"));
    fn options<'a>(routes: &'a str, auth: &'a str) -> GatewayOptions<'a> {
        GatewayOptions {
            env: key_env(),
            auth: Some(auth),
            ..GatewayOptions::new(routes)
        }
    }
    let gw = Arc::new(Gateway::start_with(options(&routes, &only_a)));
    assert_eq!(status(&gw, &token_a).await, 200);
    assert_eq!(status(&gw, &token_b).await, 401, "B is not configured yet");

    let current = Arc::new(Mutex::new(token_a.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (gw, current, stop) = (gw.clone(), current.clone(), stop.clone());
            let (sent, failed) = (sent.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let token = current.lock().unwrap().clone();
                    if status(&gw, &token).await != 200 {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                    sent.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.write_config(&options(&routes, &both));
    gw.signal("HUP");
    wait_for_reloads(&gw, 1).await;
    assert_eq!(status(&gw, &token_b).await, 200, "B verifies beside A");
    tokio::time::sleep(Duration::from_millis(300)).await;
    *current.lock().unwrap() = token_b.clone();
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.write_config(&options(&routes, &only_b));
    gw.signal("HUP");
    wait_for_reloads(&gw, 2).await;
    let refused = get(gw.port, "/api/robeing/x", &[bearer(&token_a)]).await;
    assert_envelope(&refused, 401, "INVALID_TOKEN");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    assert!(sent.load(Ordering::SeqCst) > 100, "load was sent");
    assert_eq!(failed.load(Ordering::SeqCst), 0, "no request failed");
    let metrics =
        String::from_utf8_lossy(&get(gw.admin_port, "/metrics", &[]).await.body).into_owned();
    assert!(
        metrics.contains("gateway_jwt_verifications_total{kid=\"b\",result=\"ok\"}"),
        "{metrics}"
    );
}

// RS256, ES256 and EdDSA tokens verify with their public keys; a token of
// one algorithm under another key's kid does not.
#[tokio::test(flavor = "multi_thread")]
async fn public_key_algorithms_verify() {
    let up = Upstream::start();
    let routes = route("/api/robeing/*", up.port, true, "");
    let (rs, es, ed) = (
        key_pair(Algorithm::RS256, 2048),
        key_pair(Algorithm::ES256, 0),
        key_pair(Algorithm::EdDSA, 0),
    );
    let auth = auth_with(
        &(public_key("rs", "RS256", &rs)
            + &public_key("es", "ES256", &es)
            + &public_key("ed", "EdDSA", &ed)),
    );
    let gw = Gateway::start_with(GatewayOptions {
        auth: Some(&auth),
        ..GatewayOptions::new(&routes)
    });
    let user = unique("asymmetric");
    add_user(&user);
    for (kid, pair) in [("rs", &rs), ("es", &es), ("ed", &ed)] {
        let r = get(
            gw.port,
            "/api/robeing/x",
            &[bearer(&pair.token(Some(kid), &user))],
        )
        .await;
        assert_eq!(r.status, 200, "{kid}");
        assert_eq!(r.upstream_header("x-username"), [user.as_str()], "{kid}");
    }
    // The ES key's kid on an RS256 token, an EdDSA token under the RSA kid.
    for token in [rs.token(Some("es"), &user), ed.token(Some("rs"), &user)] {
        let r = get(gw.port, "/api/robeing/x", &[bearer(&token)]).await;
        assert_envelope(&r, 401, "INVALID_TOKEN");
    }
    // Without a kid, the keys of the token's algorithm are tried: the one
    // RS256 key verifies it; an ES256 token signed by another key does not.
    assert_eq!(status(&gw, &rs.token(None, &user)).await, 200);
    let stranger = key_pair(Algorithm::ES256, 0);
    let r = get(
        gw.port,
        "/api/robeing/x",
        &[bearer(&stranger.token(None, &user))],
    )
    .await;
    assert_envelope(&r, 401, "INVALID_TOKEN");
}

// Header attacks: key confusion, path characters and 10 KB in `kid`, keys
// named or carried by the token. Each is a 401, none a fetch or a 500.
#[tokio::test(flavor = "multi_thread")]
async fn header_attacks_are_refused_without_fetching() {
    let up = Upstream::start();
    let routes = route("/api/robeing/*", up.port, true, "");
    let rs = key_pair(Algorithm::RS256, 2048);
    let auth = auth_with(&(hs_key("a", "KEY_A") + &public_key("rs", "RS256", &rs)));
    let gw = Gateway::start_with(GatewayOptions {
        env: key_env(),
        auth: Some(&auth),
        ..GatewayOptions::new(&routes)
    });
    let user = unique("attacked");
    add_user(&user);
    // Anything that fetches a key the token names would land here.
    let trap = JwksServer::start(jwks_document(&[rs.rsa_jwk("rs")])).await;
    let pem = rs.public_pem();
    let claims = json!({"username": user, "exp": now() + 600});
    let mut attacks = vec![
        // Key confusion: HS256 with the RSA public key as the secret.
        signed_token(
            json!({"alg": "HS256", "kid": "rs"}),
            claims.clone(),
            pem.as_bytes(),
        ),
        signed_token(json!({"alg": "HS256"}), claims.clone(), pem.as_bytes()),
        hs_token(Some("../../etc/passwd"), KEY_A, &user),
        hs_token(Some("a/../a"), KEY_A, &user),
        hs_token(Some(&"k".repeat(10 * 1024)), KEY_A, &user),
        // The HS key's kid on an RS256 token.
        rs.token(Some("a"), &user),
    ];
    for field in ["jku", "x5u"] {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("rs".into());
        match field {
            "jku" => header.jku = Some(trap.url()),
            _ => header.x5u = Some(trap.url()),
        }
        attacks.push(rs.token_with_header(header, &user));
    }
    let embedded: jsonwebtoken::jwk::Jwk = serde_json::from_value(rs.rsa_jwk("rs")).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.jwk = Some(embedded);
    attacks.push(rs.token_with_header(header, &user));
    for (i, token) in attacks.iter().enumerate() {
        let r = get(gw.port, "/api/robeing/x", &[bearer(token)]).await;
        assert_envelope(&r, 401, "INVALID_TOKEN");
        assert!(r.status != 500, "attack {i}");
    }
    assert_eq!(trap.requests(), 0, "no key was fetched");
    // The honest tokens of both keys still pass.
    assert_eq!(status(&gw, &rs.token(Some("rs"), &user)).await, 200);
    assert_eq!(status(&gw, &hs_token(Some("a"), KEY_A, &user)).await, 200);
    assert_eq!(status(&gw, &hs_token(None, KEY_A, &user)).await, 200);
}

// A key whose verify_until has passed verifies nothing; the others do.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_past_verify_until_verifies_nothing() {
    let up = Upstream::start();
    let routes = route("/api/robeing/*", up.port, true, "");
    let auth = auth_with(
        &(hs_key("b", "KEY_B")
            + &hs_key("a", "KEY_A")
            + "verify_until = \"2020-01-01T00:00:00Z\"\n"),
    );
    let gw = Gateway::start_with(GatewayOptions {
        env: key_env(),
        auth: Some(&auth),
        ..GatewayOptions::new(&routes)
    });
    let user = unique("retired");
    add_user(&user);
    for token in [
        hs_token(Some("a"), KEY_A, &user),
        hs_token(None, KEY_A, &user),
    ] {
        assert_envelope(
            &get(gw.port, "/api/robeing/x", &[bearer(&token)]).await,
            401,
            "INVALID_TOKEN",
        );
    }
    assert_eq!(status(&gw, &hs_token(Some("b"), KEY_B, &user)).await, 200);
    assert_eq!(status(&gw, &hs_token(None, KEY_B, &user)).await, 200);
}

fn jwks_auth(url: &str, refresh_seconds: u64) -> String {
    format!(
        "[auth]\nleeway_seconds = 0\nallow_any_audience = true\n[auth.jwks]\nurl = \"{url}\"\nrefresh_seconds = {refresh_seconds}\ntimeout_ms = 500\n"
    )
}

async fn wait_for_status(gw: &Gateway, token: &str, want: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while status(gw, token).await != want {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// A refresh picks up a new key and drops a removed one (whose remembered
// token is refused); the server down keeps the last good set.
#[tokio::test(flavor = "multi_thread")]
async fn jwks_refresh_and_outage() {
    let up = Upstream::start();
    let routes = route("/api/robeing/*", up.port, true, "");
    let (k1, k2) = (
        key_pair(Algorithm::RS256, 2048),
        key_pair(Algorithm::RS256, 2048),
    );
    let server = JwksServer::start(jwks_document(&[k1.rsa_jwk("k1")])).await;
    let auth = jwks_auth(&server.url(), 1);
    let gw = Gateway::start_with(GatewayOptions {
        auth: Some(&auth),
        ..GatewayOptions::new(&routes)
    });
    let user = unique("jwks");
    add_user(&user);
    let (t1, t2) = (k1.token(Some("k1"), &user), k2.token(Some("k2"), &user));
    assert_eq!(status(&gw, &t1).await, 200, "fetched at start");
    assert_eq!(status(&gw, &t2).await, 401, "k2 is not published yet");
    server.serve(jwks_document(&[k1.rsa_jwk("k1"), k2.rsa_jwk("k2")]));
    wait_for_status(&gw, &t2, 200, "the refresh picks up k2").await;
    assert_eq!(metric_value(gw.admin_port, "gateway_jwks_keys").await, 2);

    server.set_up(false);
    let deadline = Instant::now() + Duration::from_secs(5);
    while fetches_now(&gw).await == 0 {
        assert!(Instant::now() < deadline, "a failed fetch is counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric_value(gw.admin_port, "gateway_jwks_up").await, 0);
    const JWKS_UP: &str = "gateway_dependency_up{dependency=\"jwks\"}";
    wait_for_metric(gw.admin_port, JWKS_UP, 0, Duration::from_secs(2)).await;
    assert_eq!(status(&gw, &t1).await, 200, "the last good set is kept");
    assert_eq!(status(&gw, &t2).await, 200, "the last good set is kept");

    server.set_up(true);
    server.serve(jwks_document(&[k2.rsa_jwk("k2")]));
    wait_for_status(&gw, &t1, 401, "k1, removed from the set, is refused").await;
    assert_eq!(status(&gw, &t2).await, 200);
    assert_eq!(metric_value(gw.admin_port, "gateway_jwks_up").await, 1);
    wait_for_metric(gw.admin_port, JWKS_UP, 1, Duration::from_secs(2)).await;
}

async fn fetches_now(gw: &Gateway) -> u64 {
    metric_value(
        gw.admin_port,
        "gateway_jwks_fetches_total{result=\"error\"}",
    )
    .await
}

// A 5 MB answer is refused: a gateway that never got a set answers tokens
// for it 503 SIGNING_KEYS_UNAVAILABLE (and stays up, ready for HS keys).
#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_jwks_is_refused() {
    let up = Upstream::start();
    let routes = route("/api/robeing/*", up.port, true, "");
    let k1 = key_pair(Algorithm::RS256, 2048);
    let mut huge = jwks_document(&[k1.rsa_jwk("k1")]);
    huge.truncate(huge.len() - 2); // reopen the keys array
    huge.extend_from_slice(b",");
    huge.extend(std::iter::repeat_n(b' ', 5 * 1024 * 1024));
    huge.extend_from_slice(b"]}");
    let server = JwksServer::start(huge).await;
    let auth = jwks_auth(&server.url(), 1);
    let gw = Gateway::start_with(GatewayOptions {
        auth: Some(&auth),
        ..GatewayOptions::new(&routes)
    });
    let user = unique("oversized");
    add_user(&user);
    let r = get(
        gw.port,
        "/api/robeing/x",
        &[bearer(&k1.token(Some("k1"), &user))],
    )
    .await;
    assert_envelope(&r, 503, "SIGNING_KEYS_UNAVAILABLE");
    assert!(fetches_now(&gw).await >= 1);
    assert!(gw.log().contains("bytes"), "{}", gw.log());
}

// 1,000 tokens with random kids: each asks for a refresh, and they get at
// most one between them (refresh_seconds / 10 = 30 s apart; the test takes
// a few seconds).
#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_kid_storm_fetches_a_bounded_number_of_times() {
    let up = Upstream::start();
    let routes = route("/api/robeing/*", up.port, true, "");
    let k1 = key_pair(Algorithm::RS256, 2048);
    let server = JwksServer::start(jwks_document(&[k1.rsa_jwk("k1")])).await;
    // 1,000 new tokens from one address: past the first-sight budget
    // (tested on its own below); off here, so every kid asks for a refresh.
    let auth = jwks_auth(&server.url(), 300).replacen(
        "[auth]\n",
        "[auth]\nfirst_sight_per_ip_per_minute = 0\n",
        1,
    );
    let gw = Gateway::start_with(GatewayOptions {
        auth: Some(&auth),
        ..GatewayOptions::new(&routes)
    });
    assert_eq!(server.requests(), 1, "fetched once at start");
    let user = unique("storm");
    for round in 0..20 {
        // The kid is refused before any signature check: HS256 tokens are
        // as good as any and quick to make.
        let tokens: Vec<String> = (0..50)
            .map(|i| {
                hs_token(
                    Some(&format!("kid-{round}-{i}-{}", unique("r"))),
                    KEY_A,
                    &user,
                )
            })
            .collect();
        let answers = futures_util::future::join_all(tokens.iter().map(|t| status(&gw, t))).await;
        assert!(answers.iter().all(|s| *s == 401), "{answers:?}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fetches = server.requests();
    assert!(
        (1..=2).contains(&fetches),
        "{fetches} fetches for 1,000 unknown kids"
    );
}

// A shared identity provider signs tokens for other applications too: with
// public keys the gateway requires `auth.audience` (tests/operations.rs
// checks the refusal), and a token for another audience, or none, is 401.
#[tokio::test(flavor = "multi_thread")]
async fn a_shared_provider_token_must_name_this_audience() {
    let up = Upstream::start();
    let routes = route("/api/robeing/*", up.port, true, "");
    let rs = key_pair(Algorithm::RS256, 2048);
    let auth = format!(
        "[auth]\nleeway_seconds = 0\naudience = \"robeing\"\n{}",
        public_key("rs", "RS256", &rs)
    );
    let gw = Gateway::start_with(GatewayOptions {
        auth: Some(&auth),
        ..GatewayOptions::new(&routes)
    });
    let user = unique("audience");
    add_user(&user);
    let with = |aud: serde_json::Value| {
        let mut claims = json!({"username": user, "exp": now() + 600});
        if !aud.is_null() {
            claims["aud"] = aud;
        }
        rs.token_with_claims(Some("rs"), &claims)
    };
    for (aud, want) in [
        (json!(null), 401),
        (json!("other-app"), 401),
        (json!(["other-app"]), 401),
        (json!("robeing"), 200),
        (json!(["other-app", "robeing"]), 200),
    ] {
        assert_eq!(status(&gw, &with(aud.clone())).await, want, "aud {aud}");
    }
}

/// `gateway_jwt_verifications_total`, all series summed.
async fn verifications(admin_port: u16) -> u64 {
    let text = String::from_utf8_lossy(&get(admin_port, "/metrics", &[]).await.body).into_owned();
    text.lines()
        .filter(|l| l.starts_with("gateway_jwt_verifications_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// An RS256 token with a random signature: every one is new to the gateway.
fn forged_rs256(user: &str, n: usize) -> String {
    use base64::Engine;
    let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let header = b64(json!({"alg": "RS256", "kid": "rs"}).to_string().as_bytes());
    let claims = json!({"username": user, "exp": now() + 600, "aud": "robeing", "n": n});
    let signature: Vec<u8> = (0..16)
        .flat_map(|_| *uuid::Uuid::new_v4().as_bytes())
        .collect();
    format!(
        "{header}.{}.{}",
        b64(claims.to_string().as_bytes()),
        b64(&signature)
    )
}

// A forged-token spray costs the gateway little (SECURITY.md, "Token
// handling"): a token not verified before spends its address's first-sight
// budget before its signature is checked; past it, 429 unverified. Tokens
// already verified, and other addresses, are not affected.
#[tokio::test(flavor = "multi_thread")]
async fn a_forged_token_spray_is_bounded_per_address() {
    const BUDGET: u64 = 100;
    let up = Upstream::start();
    let routes = route("/api/robeing/*", up.port, true, "");
    let rs = key_pair(Algorithm::RS256, 2048);
    let auth = format!(
        "[auth]\nleeway_seconds = 0\naudience = \"robeing\"\nfirst_sight_per_ip_per_minute = {BUDGET}\n{}",
        public_key("rs", "RS256", &rs)
    );
    let gw = Gateway::start_with(GatewayOptions {
        auth: Some(&auth),
        ..GatewayOptions::new(&routes)
    });
    let user = unique("spray");
    add_user(&user);
    let honest = |n: usize| {
        rs.token_with_claims(
            Some("rs"),
            &json!({"username": user, "exp": now() + 600, "aud": "robeing", "n": n}),
        )
    };
    let cached = honest(0);
    assert_eq!(status(&gw, &cached).await, 200);

    let started = Instant::now();
    let spray: Vec<_> = (0..8)
        .map(|worker| {
            let tokens: Vec<String> = (0..250)
                .map(|i| forged_rs256(&user, worker * 250 + i))
                .collect();
            let port = gw.port;
            tokio::spawn(async move {
                let mut conn = Conn::connect(port).await;
                let mut statuses = Vec::new();
                for token in tokens {
                    let r = conn
                        .request("GET", "/api/robeing/x", &[bearer(&token)], b"")
                        .await;
                    statuses.push(r.status);
                }
                statuses
            })
        })
        .collect();
    let mut counts = std::collections::HashMap::<u16, u64>::new();
    for worker in spray {
        for status in worker.await.unwrap() {
            *counts.entry(status).or_default() += 1;
        }
    }
    let refill = (started.elapsed().as_secs_f64() * BUDGET as f64 / 60.0).ceil() as u64;
    let checked = counts.get(&401).copied().unwrap_or(0);
    assert!(checked <= BUDGET + refill, "{counts:?}");
    assert_eq!(
        checked + counts.get(&429).copied().unwrap_or(0),
        2000,
        "only 401 or 429: {counts:?}"
    );
    // Past the budget nothing more is verified but what the budget refills
    // meanwhile (100 a minute: one every 0.6 s)...
    let before = verifications(gw.admin_port).await;
    let started = Instant::now();
    let mut refilled = 0;
    for i in 0..50 {
        let r = get(
            gw.port,
            "/api/robeing/x",
            &[bearer(&forged_rs256(&user, 5000 + i))],
        )
        .await;
        if r.status == 401 {
            refilled += 1;
            continue;
        }
        assert_envelope(&r, 429, "RATE_LIMIT_EXCEEDED");
        assert!(r.header("retry-after").is_some());
    }
    let refill = (started.elapsed().as_secs_f64() * BUDGET as f64 / 60.0).ceil() as u64;
    assert!(
        refilled <= refill,
        "{refilled} checked in {:?}",
        started.elapsed()
    );
    assert_eq!(
        verifications(gw.admin_port).await,
        before + refilled,
        "a token was verified past the budget"
    );
    // ...the token verified before still passes from the same address...
    assert_eq!(status(&gw, &cached).await, 200);
    // ...and another address spends its own budget.
    let mut other = Conn::from_stream(connect_from("127.0.0.3", gw.port).await.unwrap());
    let r = other
        .request(
            "GET",
            "/api/robeing/x",
            &[bearer(&forged_rs256(&user, 9000))],
            b"",
        )
        .await;
    assert_envelope(&r, 401, "INVALID_TOKEN");
    let r = other
        .request("GET", "/api/robeing/x", &[bearer(&honest(1))], b"")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(verifications(gw.admin_port).await, before + refilled + 2);
}

//! Identity policy at the edge: claims sent upstream as headers
//! (`[[auth.claim_headers]]`), claims a route requires (`require_claims`),
//! and "log out everywhere" through the user directory
//! (`tokens_valid_after`), with three instances sharing PostgreSQL.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Two claim headers: `email` and the `roles` array; `org.id` from an
/// object claim; `org` itself (an object) never sent.
const CLAIM_HEADERS: &str = "\n[[auth.claim_headers]]\nclaim = \"email\"\nheader = \"X-Email\"\n\
    [[auth.claim_headers]]\nclaim = \"roles\"\nheader = \"X-Roles\"\n\
    [[auth.claim_headers]]\nclaim = \"org.id\"\nheader = \"X-Org-Id\"\n\
    [[auth.claim_headers]]\nclaim = \"org\"\nheader = \"X-Org\"\n";

fn claims_token(username: &str) -> String {
    token_with(json!({
        "username": username, "exp": in_seconds(600), "iat": in_seconds(0),
        "email": "alice@example.test", "roles": ["admin", "dev"],
        "org": {"id": "org-7", "name": "Robeing"}
    }))
}

fn spoofed() -> Vec<(String, String)> {
    h(&[
        ("X-Email", "mallory@example.test"),
        ("x_email", "mallory2@example.test"),
        ("X-ROLES", "root"),
        ("X-Org-Id", "org-0"),
    ])
}

// Claims become headers, from the token only: over HTTP/1.1 and h2, on
// protected and public routes, every client copy stripped.
#[tokio::test(flavor = "multi_thread")]
async fn claims_reach_the_upstream_as_headers_and_only_from_the_token() {
    let dir = cert_dir();
    let (cert, key) = make_cert(&dir, "claims");
    let tls_port = free_port();
    let server_extra = tls_block(tls_port, &cert, &key, "");
    let up = Upstream::start();
    let routes = format!(
        "{CLAIM_HEADERS}{}{}",
        route("/api/robeing/*", up.port, true, ""),
        route("/api/auth/*", up.port, false, "")
    );
    let gw = Gateway::start_with(GatewayOptions {
        server_extra: &server_extra,
        ..GatewayOptions::new(&routes)
    });
    let mut with_token = spoofed();
    with_token.push(bearer(&claims_token("alice")));

    for path in ["/api/robeing/x", "/api/auth/x"] {
        let r = get(gw.port, path, &with_token).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(
            r.upstream_header("x-email"),
            ["alice@example.test"],
            "{path}"
        );
        assert_eq!(r.upstream_header("x-roles"), ["admin, dev"], "{path}");
        assert_eq!(r.upstream_header("x-org-id"), ["org-7"], "{path}");
        assert!(
            r.upstream_header("x-org").is_empty(),
            "an object claim is left out"
        );
        assert!(r.upstream_header("x_email").is_empty());
        assert_eq!(r.upstream_header("x-user-id"), [ALICE_ID]);
    }
    // Public route without a token: every copy gone, none added.
    let r = get(gw.port, "/api/auth/x", &spoofed()).await;
    assert_eq!(r.status, 200);
    for name in ["x-email", "x_email", "x-roles", "x-org-id"] {
        assert!(
            r.upstream_header(name).is_empty(),
            "{name} reached upstream"
        );
    }
    // A token without the claims: nothing set, the spoofed copies gone.
    let mut plain = spoofed();
    plain.push(bearer(&token_for("alice")));
    let r = get(gw.port, "/api/robeing/x", &plain).await;
    assert_eq!(r.status, 200);
    assert!(r.upstream_header("x-email").is_empty());
    assert!(r.upstream_header("x-roles").is_empty());

    // h2: the same headers on a stream, the client's copies gone.
    let client = H2Client::connect(tls_port, &cert).await;
    let token = format!("Bearer {}", claims_token("alice"));
    let r = client
        .get(
            "/api/robeing/x",
            &[
                ("authorization", &token),
                ("x-email", "mallory@example.test"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-email"), ["alice@example.test"]);
    assert_eq!(r.upstream_header("x-roles"), ["admin, dev"]);
    assert_eq!(r.upstream_header("x-org-id"), ["org-7"]);
}

#[test]
fn claim_headers_and_required_claims_are_checked_naming_the_key() {
    let up_port = 9;
    for (entry, message) in [
        ("claim = \"a\"\nheader = \"Connection\"", "hop-by-hop"),
        ("claim = \"a\"\nheader = \"Host\"", "hop-by-hop, Host"),
        (
            "claim = \"a\"\nheader = \"X-User-Id\"",
            "one the gateway sets",
        ),
        (
            "claim = \"a\"\nheader = \"x_request_id\"",
            "one the gateway sets",
        ),
        (
            "claim = \"a\"\nheader = \"X-Forwarded-Host\"",
            "one the gateway sets",
        ),
        (
            "claim = \"a\"\nheader = \"traceparent\"",
            "one the gateway sets",
        ),
        ("claim = \"a\"\nheader = \"bad name\"", "not a header name"),
        ("claim = \"a..b\"\nheader = \"X-A\"", "claim name"),
    ] {
        let routes =
            format!("\n[[auth.claim_headers]]\n{entry}\n") + &route("/api/*", up_port, true, "");
        let out = check_config(&GatewayOptions::new(&routes));
        assert!(!out.status.success(), "{entry} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("auth.claim_headers[0]") && stderr.contains(message),
            "{entry}: {stderr}"
        );
    }
    // Listed twice, in another spelling.
    let routes = "\n[[auth.claim_headers]]\nclaim = \"a\"\nheader = \"X-Tenant\"\n\
                  [[auth.claim_headers]]\nclaim = \"b\"\nheader = \"x_tenant\"\n"
        .to_owned()
        + &route("/api/*", up_port, true, "");
    let out = check_config(&GatewayOptions::new(&routes));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("auth.claim_headers[1].header") && stderr.contains("already set"),
        "{stderr}"
    );
    // require_claims on a public route, and values that are not scalars.
    for (extra, auth_required, message) in [
        (
            "require_claims = { role = \"admin\" }",
            false,
            "route '/api/*' needs auth_required = true",
        ),
        (
            "require_claims = { role = { x = 1 } }",
            true,
            "must be a string, number or boolean",
        ),
        (
            "require_claims = { role = [] }",
            true,
            "must be a string, number or boolean",
        ),
    ] {
        let routes = route("/api/*", up_port, auth_required, extra);
        let out = check_config(&GatewayOptions::new(&routes));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra} was accepted");
        assert!(
            stderr.contains("routes[0]")
                && stderr.contains("require_claims")
                && stderr.contains(message),
            "{extra}: {stderr}"
        );
    }
}

// `require_claims`: equal, any of, an array containing one, every listed
// claim; a missing or wrong claim is 403 FORBIDDEN (gRPC:
// PERMISSION_DENIED), no token still 401, counted by route.
#[tokio::test(flavor = "multi_thread")]
async fn required_claims_admit_or_refuse_with_403() {
    let up = Upstream::start();
    let routes = format!(
        "{}{}{}",
        route(
            "/admin/*",
            up.port,
            true,
            "require_claims = { role = \"admin\" }"
        ),
        route(
            "/paid/*",
            up.port,
            true,
            "require_claims = { tier = [\"gold\", \"silver\"], level = 3 }"
        ),
        route(
            "/ops/*",
            up.port,
            true,
            "require_claims = { groups = \"ops\" }"
        ),
    );
    let gw = Gateway::start_with(GatewayOptions::new(&routes));
    let token = |claims: serde_json::Value| {
        let mut all = json!({"username": "alice", "exp": in_seconds(600), "iat": in_seconds(0)});
        for (k, v) in claims.as_object().unwrap() {
            all[k] = v.clone();
        }
        vec![bearer(&token_with(all))]
    };
    let cases = [
        ("/admin/x", json!({"role": "admin"}), 200),
        ("/admin/x", json!({"role": "user"}), 403),
        ("/admin/x", json!({}), 403),
        ("/admin/x", json!({"role": ["admin"]}), 200),
        ("/paid/x", json!({"tier": "silver", "level": 3}), 200),
        ("/paid/x", json!({"tier": "gold", "level": 3.0}), 200),
        ("/paid/x", json!({"tier": "bronze", "level": 3}), 403),
        ("/paid/x", json!({"tier": "gold"}), 403),
        ("/paid/x", json!({"tier": "gold", "level": "3"}), 403),
        ("/ops/x", json!({"groups": ["dev", "ops"]}), 200),
        ("/ops/x", json!({"groups": ["dev"]}), 403),
        ("/ops/x", json!({"groups": "ops"}), 200),
    ];
    for (path, claims, want) in &cases {
        let r = get(gw.port, path, &token(claims.clone())).await;
        if *want == 403 {
            assert_envelope(&r, 403, "FORBIDDEN");
        } else {
            assert_eq!(r.status, *want, "{path} {claims}");
        }
    }
    // No token: still 401.
    assert_envelope(&get(gw.port, "/admin/x", &[]).await, 401, "MISSING_TOKEN");
    // gRPC: PERMISSION_DENIED in a trailers-only answer.
    let mut grpc = token(json!({"role": "user"}));
    grpc.push(("Content-Type".into(), "application/grpc".into()));
    let r = get(gw.port, "/admin/x", &grpc).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("grpc-status"), Some("7"));
    // Counted by route.
    let refused = |route: &str| {
        let route = route.to_owned();
        let admin = gw.admin_port;
        async move {
            metric_value(
                admin,
                &format!("gateway_claims_refused_total{{route=\"{route}\"}}"),
            )
            .await
        }
    };
    assert_eq!(refused("/admin/*").await, 3);
    assert_eq!(refused("/paid/*").await, 3);
    assert_eq!(refused("/ops/*").await, 1);
}

const REVOCABLE: &str = "query = 'SELECT id, tokens_valid_after FROM \"user\" WHERE username = $1'";

// "Log out everywhere": three instances sharing PostgreSQL with
// notifications refuse a user's older tokens within a second of the
// UPDATE, remembered or not; a token issued afterwards passes.
#[tokio::test(flavor = "multi_thread")]
async fn logging_out_everywhere_reaches_every_instance_within_a_second() {
    ensure_user_notify_trigger();
    let up = Upstream::start();
    let routes = route("/api/robeing/*", up.port, true, "");
    let users =
        format!("{REVOCABLE}\ncache_ttl_seconds = 300\nnotify_channel = \"robeing_user_changed\"");
    let gateways: Vec<Gateway> = (0..3)
        .map(|_| {
            Gateway::start_with(GatewayOptions {
                users_extra: &users,
                ..GatewayOptions::new(&routes)
            })
        })
        .collect();
    for gw in &gateways {
        wait_listening(gw).await;
    }
    let name = unique("revoked");
    add_user(&name);
    let old = token_for(&name);
    let no_iat = token_with(json!({"username": name, "exp": in_seconds(600)}));
    // Accepted by all three (and now remembered by each).
    all_answer(&gateways, &old, 200, Duration::from_secs(1)).await;
    all_answer(&gateways, &no_iat, 200, Duration::from_secs(1)).await;
    // The next second starts, so the revocation is after the token's iat.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    psql(&format!(
        "UPDATE \"user\" SET tokens_valid_after = now() WHERE username = '{name}'"
    ));
    let took = all_answer(&gateways, &old, 401, Duration::from_secs(1)).await;
    let r = get(gateways[1].port, "/api/robeing/x", &[bearer(&old)]).await;
    assert_envelope(&r, 401, "TOKEN_REVOKED");
    // A token without iat is refused once the user has revoked any.
    all_answer(&gateways, &no_iat, 401, Duration::from_secs(1)).await;
    // An older token never seen before (not remembered anywhere): refused.
    let unseen =
        token_with(json!({"username": name, "exp": in_seconds(600), "iat": in_seconds(-5)}));
    all_answer(&gateways, &unseen, 401, Duration::from_secs(1)).await;
    // Issued afterwards (its iat in a later second): accepted.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    all_answer(&gateways, &token_for(&name), 200, Duration::from_secs(1)).await;
    eprintln!("revocation reached three instances in {took:?}");
}

// Without notifications, the identity cache's TTL bounds how long a
// revoked token stays valid.
#[tokio::test(flavor = "multi_thread")]
async fn without_notifications_the_cache_ttl_bounds_revocation() {
    ensure_schema();
    let up = Upstream::start();
    let routes = route("/api/robeing/*", up.port, true, "");
    let users = format!("{REVOCABLE}\ncache_ttl_seconds = 3");
    let gw = Gateway::start_with(GatewayOptions {
        users_extra: &users,
        ..GatewayOptions::new(&routes)
    });
    let name = unique("ttl");
    add_user(&name);
    let old = token_for(&name);
    all_answer(std::slice::from_ref(&gw), &old, 200, Duration::from_secs(1)).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    psql(&format!(
        "UPDATE \"user\" SET tokens_valid_after = now() WHERE username = '{name}'"
    ));
    // Still cached (about 1.2 s into its 3 s): served until the entry
    // expires, then refused.
    assert_eq!(
        get(gw.port, "/api/robeing/x", &[bearer(&old)]).await.status,
        200
    );
    let took = all_answer(std::slice::from_ref(&gw), &old, 401, Duration::from_secs(4)).await;
    assert!(took <= Duration::from_millis(3000), "{took:?}");
}

// The file directory: `tokens_valid_after` per user, applied by SIGHUP.
#[tokio::test(flavor = "multi_thread")]
async fn the_file_directory_revokes_on_sighup() {
    let dir = std::env::temp_dir().join(unique("users-file"));
    std::fs::create_dir_all(&dir).unwrap();
    let users = dir.join("users.toml");
    let id = "3d2f6a8e-8f7b-4c1e-9a55-0c1b2d3e4f50";
    let write = |after: &str| {
        std::fs::write(
            &users,
            format!("carol = {{ id = \"{id}\", tokens_valid_after = \"{after}\" }}\nalice = \"{ALICE_ID}\"\n"),
        )
        .unwrap();
    };
    write("2020-01-01T00:00:00Z");
    let up = Upstream::start();
    let routes = route("/api/robeing/*", up.port, true, "");
    let gw = Gateway::start_with(GatewayOptions {
        users_file: Some(&users),
        ..GatewayOptions::new(&routes)
    });
    let token = token_for("carol");
    let r = get(gw.port, "/api/robeing/x", &[bearer(&token)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-user-id"), [id]);
    let later = std::time::SystemTime::now() + Duration::from_secs(60);
    write(&humantime::format_rfc3339_seconds(later).to_string());
    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = get(gw.port, "/api/robeing/x", &[bearer(&token)]).await;
        if r.status == 401 {
            assert_envelope(&r, 401, "TOKEN_REVOKED");
            break;
        }
        assert!(Instant::now() < deadline, "still {}", r.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Others are untouched.
    let r = get(gw.port, "/api/robeing/x", &[bearer(&token_for("alice"))]).await;
    assert_eq!(r.status, 200);
}

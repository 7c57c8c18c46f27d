//! The links to PostgreSQL and Redis can be encrypted and verified
//! (SECURITY.md, "Links to PostgreSQL and Redis"): the suite's PostgreSQL
//! is switched to `ssl = on` with a test certificate for the test's length,
//! and a `redis-server` is started with only a TLS port. A wrong root or a
//! wrong name fails closed, with the key named in the log.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The test cluster serves TLS with `cert` while this lives; plain TLS off
/// again when dropped.
struct PostgresTls;

impl PostgresTls {
    fn serve(cert: &Path, key: &Path) {
        // The server runs as the data directory's owner: it must own the key.
        let owner = Command::new("stat")
            .args(["-c", "%u"])
            .arg(psql("SHOW data_directory"))
            .output()
            .unwrap();
        let uid: u32 = String::from_utf8_lossy(&owner.stdout)
            .trim()
            .parse()
            .unwrap();
        std::os::unix::fs::chown(key, Some(uid), None).unwrap();
        std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(cert, std::fs::Permissions::from_mode(0o644)).unwrap();
        psql(&format!(
            "ALTER SYSTEM SET ssl_cert_file = '{}'",
            cert.display()
        ));
        psql(&format!(
            "ALTER SYSTEM SET ssl_key_file = '{}'",
            key.display()
        ));
        psql("ALTER SYSTEM SET ssl = on");
        psql("SELECT pg_reload_conf()");
        // The reload is asynchronous: wait until new connections get it.
        let cn = cert.file_stem().unwrap().to_string_lossy().into_owned();
        let deadline = Instant::now() + Duration::from_secs(10);
        while served_certificate_cn().as_deref() != Some(cn.as_str()) {
            assert!(Instant::now() < deadline, "PostgreSQL does not serve {cn}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn start(cert: &Path, key: &Path) -> Self {
        Self::serve(cert, key);
        Self
    }
}

/// The CN of the certificate PostgreSQL serves to a new connection.
fn served_certificate_cn() -> Option<String> {
    let out = Command::new("openssl")
        .args(["s_client", "-starttls", "postgres", "-connect"])
        .arg(format!("localhost:{}", pg_port()))
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let subject = text.lines().find(|l| l.starts_with("subject="))?;
    let cn = subject.split("CN").nth(1)?;
    Some(cn.trim_start_matches([' ', '=']).trim().to_owned())
}

impl Drop for PostgresTls {
    fn drop(&mut self) {
        psql("ALTER SYSTEM RESET ssl");
        psql("ALTER SYSTEM RESET ssl_cert_file");
        psql("ALTER SYSTEM RESET ssl_key_file");
        psql("SELECT pg_reload_conf()");
    }
}

async fn wait_for_metric(gw: &Gateway, series: &str, want: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if metric_value(gw.admin_port, series).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Connections of `application_name` that use TLS, as PostgreSQL sees them.
fn tls_connections(application: &str) -> u64 {
    psql(&format!(
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = '{application}' AND s.ssl"
    ))
    .parse()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_user_directory_link_is_encrypted_and_verified() {
    let dir = cert_dir();
    let (cert, key) = make_cert_for(&dir, "postgres", "DNS:localhost,IP:127.0.0.1,IP:::1");
    let (stranger, _) = make_cert_for(&dir, "stranger", "DNS:localhost,IP:127.0.0.1,IP:::1");
    let (other_name, other_key) = make_cert_for(&dir, "other-name", "DNS:other.test");
    let _tls = PostgresTls::start(&cert, &key);
    let up = Upstream::start();
    let routes = route("/api/*", up.port, true, "");
    let user = unique("tls-user");
    add_user(&user);
    let token = token_for(&user);
    let start = |application: &str, options: &str| {
        Gateway::start_with(GatewayOptions {
            database_url: format!(
                "{} application_name={application} {options}",
                database_url()
            ),
            users_extra: "notify_channel = \"robeing_user_changed\"",
            ..GatewayOptions::new(&routes)
        })
    };

    // verify-full against the right root: served over TLS, pool and LISTEN.
    let app = unique("gw-tls").replace('-', "_");
    let gw = start(
        &app,
        &format!("sslmode=verify-full sslrootcert={}", cert.display()),
    );
    assert_eq!(get(gw.port, "/api/x", &[bearer(&token)]).await.status, 200);
    assert!(
        wait_for_metric(&gw, "gateway_user_notify_up", 1).await,
        "LISTEN over TLS"
    );
    assert!(tls_connections(&app) >= 2, "pool and LISTEN over TLS");

    // Another root: fails closed, and the log names the key.
    let gw = start(
        "gw_stranger",
        &format!("sslmode=verify-full sslrootcert={}", stranger.display()),
    );
    let r = get(gw.port, "/api/x", &[bearer(&token)]).await;
    assert_envelope(&r, 503, "USER_DIRECTORY_UNAVAILABLE");
    assert_eq!(
        metric_value(gw.admin_port, "gateway_user_notify_up").await,
        0
    );
    let log = gw.log();
    assert!(
        log.contains("users.database_url_env") && log.contains("UnknownIssuer"),
        "{log}"
    );

    // A certificate for another name: verify-full refuses it, verify-ca
    // (chain only) accepts it.
    PostgresTls::serve(&other_name, &other_key);
    let full = start(
        "gw_full",
        &format!("sslmode=verify-full sslrootcert={}", other_name.display()),
    );
    let r = get(
        full.port,
        "/api/x",
        &[bearer(&token_for(&unique("nobody")))],
    )
    .await;
    assert_envelope(&r, 503, "USER_DIRECTORY_UNAVAILABLE");
    let log = full.log();
    assert!(
        log.contains("users.database_url_env") && log.to_lowercase().contains("valid for name"),
        "{log}"
    );
    let ca_only = start(
        "gw_ca",
        &format!("sslmode=verify-ca sslrootcert={}", other_name.display()),
    );
    assert_eq!(
        get(ca_only.port, "/api/x", &[bearer(&token)]).await.status,
        200
    );
    // require without a root: encrypted, not checked.
    let require = start("gw_require", "sslmode=require");
    assert_eq!(
        get(require.port, "/api/x", &[bearer(&token)]).await.status,
        200
    );
    assert!(tls_connections("gw_require") >= 1);
}

/// A redis-server with only a TLS port, its certificate `cert`.
struct TlsRedis {
    child: Child,
    port: u16,
}

impl TlsRedis {
    fn start(cert: &Path, key: &Path) -> Self {
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
            ])
            .arg("--tls-cert-file")
            .arg(cert)
            .arg("--tls-key-file")
            .arg(key)
            .arg("--tls-ca-cert-file")
            .arg(cert)
            .args([
                "--tls-auth-clients",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (built with TLS, as Debian's is)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shared_limiter_speaks_tls_to_redis_and_checks_it() {
    let dir = cert_dir();
    let (cert, key) = make_cert_for(&dir, "redis", "DNS:localhost,IP:127.0.0.1");
    let (stranger, _) = make_cert_for(&dir, "stranger", "DNS:localhost,IP:127.0.0.1");
    let redis = TlsRedis::start(&cert, &key);
    let up = Upstream::start();
    let start = |ca: &Path| {
        let limit = format!(
            "[rate_limit]\nrequests_per_minute = 3\nstore = \"redis\"\nredis_url_env = \"REDIS_URL\"\n\
             store_timeout_ms = 500\nredis_ca_file = \"{}\"\n",
            ca.display()
        );
        let routes = limit + &route("/api/*", up.port, false, "");
        Gateway::start_with(GatewayOptions {
            env: vec![(
                "REDIS_URL".into(),
                format!("rediss://localhost:{}/", redis.port),
            )],
            ..GatewayOptions::new(&routes)
        })
    };
    // Two instances share one budget of 3 through Redis over TLS.
    let (a, b) = (start(&cert), start(&cert));
    let mut statuses = Vec::new();
    for gw in [&a, &a, &b, &b, &a] {
        statuses.push(get(gw.port, "/api/x", &[]).await.status);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    // More on one instance: its threads' own TLS connections decide them
    // (a thread's first request queued while its connection opened).
    for _ in 0..6 {
        assert_eq!(get(a.port, "/api/x", &[]).await.status, 429);
    }
    let alone = metric_value(a.admin_port, "gateway_rate_limit_store_sent_alone_total").await;
    assert!(
        alone >= 4,
        "{alone} of 9 decisions sent on a thread's own connection"
    );
    for gw in [&a, &b] {
        assert_eq!(
            metric_value(gw.admin_port, "gateway_rate_limit_store_up").await,
            1
        );
        assert_eq!(
            metric_value(
                gw.admin_port,
                "gateway_rate_limit_store_fallbacks_total{mode=\"local\"}"
            )
            .await,
            0
        );
    }

    // Another root: the store is not used (the local fallback decides),
    // and the log names the keys.
    let c = start(&stranger);
    assert_eq!(get(c.port, "/api/x", &[]).await.status, 200);
    assert_eq!(
        metric_value(c.admin_port, "gateway_rate_limit_store_up").await,
        0
    );
    assert!(
        metric_value(
            c.admin_port,
            "gateway_rate_limit_store_fallbacks_total{mode=\"local\"}"
        )
        .await
            >= 1
    );
    let log = c.log();
    assert!(log.contains("rate_limit.redis_ca_file"), "{log}");
}

// TLS settings that cannot work are refused at -t (and so at start), each
// naming its key, never printing the connection string.
#[test]
fn tls_settings_that_cannot_work_name_their_key() {
    let dir = std::env::temp_dir().join(unique("robeing-backend-tls"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = |rate_limit: &str| {
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:1\"]\npid_file = \"{d}/gw.pid\"\nupgrade_sock = \"{d}/up.sock\"\n\
             [auth]\nsecret_env = \"GATEWAY_JWT_SECRET\"\n\
             [users]\nsource = \"postgres\"\ndatabase_url_env = \"DATABASE_URL\"\n{rate_limit}\n\
             [[routes]]\npath = \"/x/*\"\nservice = \"x\"\nhost = \"127.0.0.1\"\nport = 9\n",
            d = dir.display()
        );
        let path = dir.join(format!("{}.toml", unique("c")));
        std::fs::write(&path, text).unwrap();
        path
    };
    let check = |config: &Path, database: &str, redis: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_robeing-gateway"))
            .arg("-t")
            .arg("-c")
            .arg(config)
            .env("GATEWAY_JWT_SECRET", JWT_SECRET)
            .env("DATABASE_URL", database)
            .env("REDIS_URL", redis)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let plain = config("");
    let redis_section = |ca: &str| {
        format!("[rate_limit]\nrequests_per_minute = 3\nstore = \"redis\"\nredis_url_env = \"REDIS_URL\"\nredis_ca_file = \"{ca}\"")
    };
    for (config, database, redis, want) in [
        (
            &plain,
            "host=localhost password=hunter2hunter2 sslmode=verify-full",
            "",
            "users.database_url_env: sslmode=verify-full needs sslrootcert",
        ),
        (
            &plain,
            "postgres://u:hunter2hunter2@localhost/db?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem",
            "",
            "users.database_url_env: sslrootcert /nonexistent/ca.pem: cannot read",
        ),
        (
            &plain,
            "host=localhost password=hunter2hunter2 sslmode=sometimes",
            "",
            "users.database_url_env: sslmode=sometimes is not one of",
        ),
        (
            &config(&redis_section("/nonexistent/ca.pem")),
            "host=localhost",
            "rediss://localhost:6390/",
            "rate_limit.redis_ca_file: /nonexistent/ca.pem: cannot read",
        ),
        (
            &config(&redis_section("/etc/hostname")),
            "host=localhost",
            "redis://localhost:6390/",
            "rate_limit.redis_ca_file: needs a rediss:// URL",
        ),
    ] {
        let err = check(config, database, redis);
        assert!(err.contains(want), "want {want:?} in {err}");
        assert!(!err.contains("hunter2"), "the connection string was printed: {err}");
    }
}

//! TLS at the edge (README, "TLS"): handshakes with Debian's curl and
//! openssl, TLS 1.2 and 1.3, ALPN h2 and http/1.1, X-Forwarded-Proto and
//! HSTS, `min_version`, and a certificate changed by SIGHUP. Certificates
//! are made at test time by the openssl CLI.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// curl over TLS trusting `ca`; returns (exit status ok, stdout).
fn curl(port: u16, ca: &Path, args: &[&str], token: Option<&str>) -> (bool, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "5", "--cacert"])
        .arg(ca)
        .args(args)
        .args(["-w", "\nHTTP_VERSION=%{http_version}"]);
    if let Some(token) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    cmd.arg(format!("https://127.0.0.1:{port}/api/robeing/x"));
    let out = cmd.output().expect("curl (apt-get install curl)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn start(server_extra: &str, routes: &str) -> Gateway {
    Gateway::start_with(GatewayOptions {
        server_extra,
        ..GatewayOptions::new(routes)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_12_and_13_with_alpn_h2_and_http1() {
    let dir = cert_dir();
    let (cert, key) = make_cert(&dir, "first");
    let up = Upstream::start();
    let routes = route("/api/robeing/*", up.port, true, "");
    let port = free_port();
    let server_extra = tls_block(port, &cert, &key, "hsts_max_age_seconds = 600");
    let gw = start(&server_extra, &routes);
    add_user("alice");
    let token = token_for("alice");
    for (args, version) in [
        (vec!["--http2", "--tlsv1.3"], "2"),
        (vec!["--http2", "--tlsv1.2", "--tls-max", "1.2"], "2"),
        (vec!["--http1.1", "--tlsv1.3"], "1.1"),
        (vec!["--http1.1", "--tlsv1.2", "--tls-max", "1.2"], "1.1"),
    ] {
        let mut with_headers = args.clone();
        with_headers.push("-i");
        let (ok, out) = curl(port, &cert, &with_headers, Some(&token));
        assert!(ok, "{args:?}: {out}");
        assert!(
            out.contains(&format!("HTTP_VERSION={version}")),
            "{args:?}: {out}"
        );
        let lower = out.to_ascii_lowercase();
        assert!(
            lower.contains("strict-transport-security: max-age=600"),
            "{out}"
        );
        // The upstream saw the identity and https.
        assert!(out.contains("\"x-forwarded-proto\",\"https\""), "{out}");
        assert!(out.contains("\"x-username\",\"alice\""), "{out}");
    }
    // A response the gateway writes itself (401, no token) carries HSTS too,
    // over both protocols.
    for proto in ["--http1.1", "--http2"] {
        let (ok, out) = curl(port, &cert, &[proto, "-i"], None);
        assert!(ok, "{out}");
        let lower = out.to_ascii_lowercase();
        assert!(lower.contains(" 401"), "{out}");
        assert!(
            lower.contains("strict-transport-security: max-age=600"),
            "{out}"
        );
    }
    // TLS 1.1 and 1.0 are never negotiated.
    for flag in ["-tls1_1", "-tls1"] {
        let out = Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), flag])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl");
        assert!(!out.status.success(), "{flag} was accepted");
    }
    // The plain listener still speaks plain HTTP, with X-Forwarded-Proto http.
    let r = get(gw.port, "/api/robeing/x", &[bearer(&token)]).await;
    assert_eq!(r.upstream_header("x-forwarded-proto"), ["http"]);
    assert!(r.header("strict-transport-security").is_none());
}

/// The listener runs on aws-lc-rs, the library that verifies tokens too
/// (README, "One crypto library"): a client offering only the hybrid
/// post-quantum key exchange X25519MLKEM768, which aws-lc-rs has and ring
/// (Pingora's own default) does not, completes its handshake; the same
/// client offering only a group no provider has (none) cannot.
#[tokio::test(flavor = "multi_thread")]
async fn the_listener_runs_on_aws_lc_rs() {
    use rustls::crypto::aws_lc_rs::{default_provider, kx_group};
    let dir = cert_dir();
    let (cert, key) = make_cert(&dir, "aws-lc");
    let up = Upstream::start();
    let port = free_port();
    let gw = start(
        &tls_block(port, &cert, &key, ""),
        &route("/api/robeing/*", up.port, false, ""),
    );
    let only = |group| rustls::crypto::CryptoProvider {
        kx_groups: vec![group],
        ..default_provider()
    };
    handshake_on(port, &cert, only(kx_group::X25519MLKEM768))
        .await
        .expect("an ML-KEM handshake with the gateway");
    let refused = handshake_on(port, &cert, only(kx_group::MLKEM1024)).await;
    assert!(refused.is_err(), "a group the listener lacks was accepted");
    drop(gw);
}

#[tokio::test(flavor = "multi_thread")]
async fn min_version_13_refuses_tls_12() {
    let dir = cert_dir();
    let (cert, key) = make_cert(&dir, "strict");
    let up = Upstream::start();
    let routes = route("/api/robeing/*", up.port, false, "");
    let port = free_port();
    let server_extra = tls_block(port, &cert, &key, "min_version = \"1.3\"\nhttp2 = false");
    let _gw = start(&server_extra, &routes);
    let (ok, out) = curl(port, &cert, &["--tlsv1.3"], None);
    assert!(ok && out.contains("HTTP_VERSION=1.1"), "{out}");
    let (ok, _) = curl(port, &cert, &["--tlsv1.2", "--tls-max", "1.2"], None);
    assert!(!ok, "TLS 1.2 was accepted under min_version 1.3");
    // http2 = false: ALPN offers http/1.1 only.
    let (ok, out) = curl(port, &cert, &["--http2", "--tlsv1.3"], None);
    assert!(ok && out.contains("HTTP_VERSION=1.1"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_serves_a_new_certificate_to_new_handshakes() {
    let dir = cert_dir();
    let (cert, key) = make_cert(&dir, "live");
    let (first, _) = (dir.join("first.crt"), ());
    std::fs::copy(&cert, &first).unwrap();
    let up = Upstream::start();
    let routes = route("/api/robeing/*", up.port, false, "");
    let port = free_port();
    let server_extra = tls_block(port, &cert, &key, "");
    let gw = start(&server_extra, &routes);
    assert!(curl(port, &first, &[], None).0, "the first certificate");
    // A connection opened before the change (HTTP/2, kept open).
    let open = H2Client::connect(port, &first).await;
    assert_eq!(open.get("/api/robeing/before", &[]).await.status, 200);
    // New files in place (a renewal), then SIGHUP.
    let (next_cert, next_key) = make_cert(&dir, "renewed");
    std::fs::copy(&next_cert, &cert).unwrap();
    std::fs::copy(&next_key, &key).unwrap();
    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.log().contains("SIGHUP: configuration reloaded") {
        assert!(Instant::now() < deadline, "{}", gw.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        curl(port, &next_cert, &[], None).0,
        "the renewed certificate"
    );
    assert!(
        !curl(port, &first, &[], None).0,
        "the old one is no longer served"
    );
    // The open connection was not dropped: it keeps its session.
    assert_eq!(open.get("/api/robeing/after", &[]).await.status, 200);
}

// One certificate per listener: a client asking for another name (SNI)
// gets it all the same, and its own name check decides.
#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_server_name_gets_the_listener_certificate() {
    let dir = cert_dir();
    let (cert, key) = make_cert(&dir, "default-cert");
    let up = Upstream::start();
    let port = free_port();
    let _gw = start(
        &tls_block(port, &cert, &key, ""),
        &route("/api/robeing/*", up.port, false, ""),
    );
    for name in ["other.example", "localhost"] {
        let out = Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .args(["-servername", name, "-brief"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl");
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("CN=default-cert") || text.contains("CN = default-cert"),
            "{name}: {text}"
        );
    }
    // curl checks the name: one the certificate does not carry fails.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(&cert)
        .args(["--resolve", &format!("other.example:{port}:127.0.0.1")])
        .arg(format!("https://other.example:{port}/api/robeing/x"))
        .output()
        .expect("curl");
    assert!(
        !out.status.success(),
        "a name the certificate does not carry was accepted"
    );
    let (ok, _) = curl(port, &cert, &[], None);
    assert!(ok, "its own name is accepted");
}

// Missing or unusable files and a key that does not fit: each error names
// the listener and the file's own key (`cert_file` or `key_file`).
#[test]
fn bad_certificates_name_the_listener() {
    let dir = cert_dir();
    let (cert, _) = make_cert(&dir, "one");
    let (_, other_key) = make_cert(&dir, "two");
    for (cert, key, want) in [
        (
            dir.join("missing.crt"),
            other_key.clone(),
            "server.tls[0].cert_file: cannot read",
        ),
        (
            cert.clone(),
            dir.join("absent.key"),
            "server.tls[0].key_file: cannot read",
        ),
        (cert.clone(), cert.clone(), "server.tls[0].key_file:"),
        (
            other_key.clone(),
            other_key.clone(),
            "server.tls[0].cert_file:",
        ),
        (
            cert.clone(),
            other_key.clone(),
            "server.tls[0].key_file: the key in",
        ),
    ] {
        let conf = dir.join(unique("conf"));
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:{}\"]\n{}\n[auth]\nsecret_env = \"GATEWAY_JWT_SECRET\"\n[users]\nsource = \"file\"\nusers = \"{}/conf/users.toml\"\n[[routes]]\npath = \"/x/*\"\nservice = \"x\"\nhost = \"127.0.0.1\"\nport = 9\n",
            free_port(),
            tls_block(free_port(), &cert, &key, ""),
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::write(&conf, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_robeing-gateway"))
            .args(["-t", "-c"])
            .arg(&conf)
            .env("GATEWAY_JWT_SECRET", JWT_SECRET)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains(want), "{want} in {err}");
        // Starting with it fails the same way, before listening.
        let out = Command::new(env!("CARGO_BIN_EXE_robeing-gateway"))
            .arg("-c")
            .arg(&conf)
            .env("GATEWAY_JWT_SECRET", JWT_SECRET)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "started with {want}");
        assert!(err.contains(want), "{want} at start in {err}");
    }
}

// A handshake that fails or never finishes is the client's doing: the
// connection closes within the header deadline, is counted by reason, and
// no ERROR line asks an operator to act. A good client is served meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn failed_and_stalled_handshakes_are_counted_and_closed_by_the_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = cert_dir();
    let (cert, key) = make_cert(&dir, "stalled");
    let up = Upstream::start();
    let port = free_port();
    let server_extra = format!(
        "header_timeout_ms = 500\n{}",
        tls_block(port, &cert, &key, "")
    );
    let gw = start(&server_extra, &route("/api/robeing/*", up.port, false, ""));
    let refused =
        |reason: &str| format!("gateway_connections_refused_total{{reason=\"{reason}\"}}");

    // Not a ClientHello: refused at once.
    let mut garbage = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), garbage.read_to_end(&mut sink)).await;
    assert!(
        closed.is_ok(),
        "a plain-text request on the TLS port stayed open"
    );

    // Connected, then silent: closed once the deadline passes.
    let started = Instant::now();
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let good = handshake_on(port, &cert, rustls::crypto::aws_lc_rs::default_provider()).await;
    assert!(good.is_ok(), "a good client waited behind a silent one");
    let closed = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut sink)).await;
    let waited = started.elapsed();
    assert!(closed.is_ok(), "a silent connection outlived the deadline");
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_secs(3),
        "closed after {waited:?}, deadline 500 ms"
    );

    assert_eq!(
        metric_value(gw.admin_port, &refused("tls_handshake_failed")).await,
        1
    );
    assert_eq!(
        metric_value(gw.admin_port, &refused("tls_handshake_timeout")).await,
        1
    );
    assert!(gw.error_lines().is_empty(), "{:?}", gw.error_lines());
}

/// A request over a new TLS connection made with `config` (whose session
/// store is kept between calls): whether its handshake resumed a session.
async fn request_resumed(port: u16, config: std::sync::Arc<rustls::ClientConfig>) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    tls.write_all(b"GET /api/robeing/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // Read to the end: the session tickets arrive after the handshake.
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    assert!(
        response.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&response)
    );
    tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
}

// `session_resumption` (default true): a returning client resumes its
// session; with false, every handshake is full (no tickets, no session
// kept), as the TLS bench's nginx is configured.
#[tokio::test(flavor = "multi_thread")]
async fn session_resumption_is_the_listeners_choice() {
    let dir = cert_dir();
    let (cert, key) = make_cert(&dir, "resume");
    let up = Upstream::start();
    let (resuming, full) = (free_port(), free_port());
    let server_extra = format!(
        "{}{}",
        tls_block(resuming, &cert, &key, ""),
        tls_block(full, &cert, &key, "session_resumption = false")
    );
    let _gw = start(&server_extra, &route("/api/robeing/*", up.port, false, ""));
    let config = client_config(&cert, &[b"http/1.1"]);
    assert!(
        !request_resumed(resuming, config.clone()).await,
        "a first visit resumed"
    );
    assert!(
        request_resumed(resuming, config).await,
        "a returning client did not resume"
    );
    let config = client_config(&cert, &[b"http/1.1"]);
    assert!(!request_resumed(full, config.clone()).await);
    assert!(
        !request_resumed(full, config).await,
        "resumed with session_resumption = false"
    );
}

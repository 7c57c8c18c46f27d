//! IPv6 clients are keyed by prefix, and forwarded hops are parsed strictly
//! (SECURITY.md, "Bounded resources"). The test makes its own network
//! namespace (unshare(2); `make test` runs as root) and gives its loopback
//! several addresses of a few /64s, so one subscriber's many addresses can be
//! real clients of the real binary. Nothing leaves the namespace.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The test's own loopback addresses: three /64s and a trusted proxy.
const ADDRESSES: &[&str] = &[
    "fd00:6::1",
    "fd00:6::10",
    "fd00:6::11",
    "fd00:6::12",
    "fd00:6::13",
    "fd00:6::20",
    "fd00:6::21",
    "fd00:6::22",
    "fd00:7::10",
    "fd00:7::20",
    "fd00:9::1",
];
const GATEWAY_ADDRESS: &str = "fd00:6::1";

/// Moves this thread (and every thread and process it starts) into a new
/// network namespace with `lo` up and [`ADDRESSES`] on it.
fn enter_own_network_namespace() {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .expect("unshare(CLONE_NEWNET): the IPv6 test needs root, as make test runs");
    let ip = |args: &[&str]| {
        let out = Command::new("ip")
            .args(args)
            .output()
            .expect("ip (iproute2)");
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    };
    ip(&["link", "set", "lo", "up"]);
    for addr in ADDRESSES {
        ip(&[
            "-6",
            "addr",
            "add",
            &format!("{addr}/64"),
            "dev",
            "lo",
            "nodad",
        ]);
    }
}

/// A gateway in the namespace: users from a file (PostgreSQL is in the
/// other namespace), one public route with 3 requests a minute per client.
struct NsGateway {
    child: std::process::Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl NsGateway {
    fn start(upstream_port: u16) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(unique("robeing-ipv6"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            r#"
[server]
listen = ["[{GATEWAY_ADDRESS}]:{port}"]
threads = 1
pid_file = "{dir}/gateway.pid"
upgrade_sock = "{dir}/upgrade.sock"
trusted_proxies = ["fd00:9::1"]
max_connections_per_ip = 2
connection_pressure_threshold = 0

[auth]
secret_env = "GATEWAY_JWT_SECRET"

[users]
source = "file"
users = "{root}/conf/users.toml"

[rate_limit]
requests_per_minute = 3

[log]
destination = "off"

[[routes]]
path = "/api/*"
service = "echo"
host = "127.0.0.1"
port = {upstream_port}
auth_required = false
"#,
            dir = dir.display(),
            root = env!("CARGO_MANIFEST_DIR"),
        );
        std::fs::write(dir.join("gateway.toml"), config).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_robeing-gateway"))
            .arg("-c")
            .arg(dir.join("gateway.toml"))
            .env("GATEWAY_JWT_SECRET", JWT_SECRET)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start gateway");
        let gw = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        let addr: SocketAddr = format!("[{GATEWAY_ADDRESS}]:{port}").parse().unwrap();
        while !(gw.dir.join("gateway.pid").exists() && std::net::TcpStream::connect(addr).is_ok()) {
            assert!(Instant::now() < deadline, "gateway did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        gw
    }
}

impl Drop for NsGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect(source: &str, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v6()?;
    socket.bind(SocketAddr::new(source.parse().unwrap(), 0))?;
    let gateway = SocketAddr::new(GATEWAY_ADDRESS.parse().unwrap(), port);
    socket.connect(gateway).await
}

/// One GET from `source`, with `X-Forwarded-For` when given: the status.
async fn status_from(source: &str, port: u16, forwarded_for: Option<&str>) -> u16 {
    let mut conn = Conn::from_stream(connect(source, port).await.unwrap());
    let headers = forwarded_for
        .map(|v| h(&[("X-Forwarded-For", v)]))
        .unwrap_or_default();
    conn.request("GET", "/api/x", &headers, b"").await.status
}

/// Whether a connection from `source` is served (not closed at accept).
async fn served(conn: &mut Conn) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_secs(5),
            conn.try_request("GET", "/api/x", &[], b"")
        )
        .await,
        Ok(Ok(_))
    )
}

#[test]
fn ipv6_clients_are_keyed_by_their_slash_64() {
    enter_own_network_namespace();
    // Built after unshare: its threads are in the namespace too.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let upstream = Upstream::start();
    let gw = NsGateway::start(upstream.port);
    runtime.block_on(async {
        let port = gw.port;
        // Four addresses of one /64 share one budget of 3.
        for (source, want) in [
            ("fd00:6::10", 200),
            ("fd00:6::11", 200),
            ("fd00:6::12", 200),
            ("fd00:6::13", 429),
            ("fd00:6::10", 429),
        ] {
            assert_eq!(status_from(source, port, None).await, want, "{source}");
        }
        // Another /64 has its own.
        assert_eq!(status_from("fd00:7::10", port, None).await, 200);

        // Behind the trusted proxy: `[v6]:port` hops parse, and are keyed
        // by their /64 too (fd00:7:: has spent 1 of 3).
        let proxy = "fd00:9::1";
        for want in [200, 200, 429] {
            let hop = Some("[fd00:7::99]:443");
            assert_eq!(status_from(proxy, port, hop).await, want);
        }
        // A hop that does not parse ends the walk at the trusted proxy:
        // the addresses written to its left are never chosen, so these
        // share the proxy's budget of 3.
        for (i, hop) in [
            "fd00:a::1, fd00:b::1:80x",
            "fd00:c::1, garbage",
            "fd00:d::1, [fd00:e::1",
            "fd00:f::1, 999.1.1.1:80",
        ]
        .into_iter()
        .enumerate()
        {
            let want = if i < 3 { 200 } else { 429 };
            assert_eq!(status_from(proxy, port, Some(hop)).await, want, "{hop}");
        }

        // The per-address connection cap (2, always engaged here) counts
        // a /64 as one client: a third connection from the same /64 is
        // closed at accept, one from another /64 is served.
        let mut first = Conn::from_stream(connect("fd00:6::20", port).await.unwrap());
        let mut second = Conn::from_stream(connect("fd00:6::21", port).await.unwrap());
        // Each held open by a request in flight on it.
        assert!(served(&mut first).await && served(&mut second).await);
        let mut third = Conn::from_stream(connect("fd00:6::22", port).await.unwrap());
        assert!(!served(&mut third).await, "a third connection of one /64");
        let mut other = Conn::from_stream(connect("fd00:7::20", port).await.unwrap());
        assert!(served(&mut other).await, "another /64");
    });
}

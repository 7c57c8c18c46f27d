//! Upstream names follow DNS (README, "Upstream pools"): a real DNS server
//! (Debian's dnsmasq) answers the gateway's lookups, and its answer changes
//! under load. The test makes its own network and mount namespaces
//! (unshare(2); `make test` runs as root): dnsmasq listens on the
//! namespace's 127.0.0.1:53 and a private `/etc/resolv.conf` points the
//! gateway's resolver at it. Nothing leaves the namespaces.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const NAME: &str = "backend.robeing.test";

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
}

/// Moves this thread (and what it starts) into new network and mount
/// namespaces: `lo` up, and `/etc/resolv.conf` naming 127.0.0.1 only.
fn enter_own_namespaces(dir: &Path) {
    use nix::sched::{unshare, CloneFlags};
    unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS)
        .expect("unshare(CLONE_NEWNET | CLONE_NEWNS): the DNS test needs root, as make test runs");
    run("mount", &["--make-rprivate", "/"]);
    let resolv = dir.join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
    )
    .unwrap();
    run(
        "mount",
        &["--bind", resolv.to_str().unwrap(), "/etc/resolv.conf"],
    );
    run("ip", &["link", "set", "lo", "up"]);
}

/// dnsmasq answering [`NAME`] from a hosts file it re-reads on SIGHUP,
/// with no caching anywhere (TTL 0).
struct Dnsmasq {
    child: Child,
    hosts: PathBuf,
}

impl Dnsmasq {
    fn start(dir: &Path, addresses: &[&str]) -> Self {
        let hosts = dir.join("dns-hosts");
        write_hosts(&hosts, addresses);
        let child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--port=53",
                "--local-ttl=0",
                "--no-negcache",
                "--user=root",
                "--pid-file",
            ])
            .arg(format!("--addn-hosts={}", hosts.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("dnsmasq (Debian's dnsmasq-base)");
        let dns = Self { child, hosts };
        let deadline = Instant::now() + Duration::from_secs(5);
        while resolve().is_empty() {
            assert!(Instant::now() < deadline, "dnsmasq does not answer");
            std::thread::sleep(Duration::from_millis(50));
        }
        dns
    }

    /// Changes the answer: rewrites the hosts file, SIGHUP.
    fn answer(&self, addresses: &[&str]) {
        write_hosts(&self.hosts, addresses);
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_hosts(path: &Path, addresses: &[&str]) {
    let text: String = addresses.iter().map(|a| format!("{a} {NAME}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// What this namespace's resolver says of [`NAME`] now.
fn resolve() -> Vec<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    (NAME, 1)
        .to_socket_addrs()
        .map(Iterator::collect)
        .unwrap_or_default()
}

fn config(dir: &Path, port: u16, admin_port: u16, upstream_port: u16, extra: &str) -> PathBuf {
    let text = format!(
        r#"
[server]
listen = ["127.0.0.1:{port}"]
threads = 2
pid_file = "{dir}/gateway.pid"
upgrade_sock = "{dir}/upgrade.sock"

[auth]
secret_env = "GATEWAY_JWT_SECRET"

[users]
source = "file"
users = "{root}/conf/users.toml"

[upstream]
resolve_interval_seconds = 1
{extra}

[admin]
listen = "127.0.0.1:{admin_port}"

[log]
destination = "off"

[[routes]]
path = "/api/*"
service = "named"
host = "{NAME}"
port = {upstream_port}
auth_required = false
"#,
        dir = dir.display(),
        root = env!("CARGO_MANIFEST_DIR"),
    );
    let path = dir.join(format!("gateway-{}.toml", unique("c")));
    std::fs::write(&path, text).unwrap();
    path
}

/// A gateway on `config` in the namespaces, stopped when dropped (also
/// when an assertion fails first).
struct NsGateway(Child);

impl NsGateway {
    /// Starts it and waits until it listens on every one of `ports`.
    async fn start(config: &Path, ports: &[u16]) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_robeing-gateway"))
            .arg("-c")
            .arg(config)
            .env("GATEWAY_JWT_SECRET", JWT_SECRET)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start gateway");
        let gateway = Self(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        for &port in ports {
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                assert!(
                    Instant::now() < deadline,
                    "gateway did not listen on {port}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        gateway
    }
}

impl Drop for NsGateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn check(config: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_robeing-gateway"))
        .args(["-t", "-c"])
        .arg(config)
        .env("GATEWAY_JWT_SECRET", JWT_SECRET)
        .output()
        .unwrap()
}

/// Requests served by the upstream whose record file is `record`.
fn served_by(record: &Path) -> usize {
    std::fs::read_to_string(record)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

async fn peers(admin_port: u16) -> Vec<String> {
    let r = get(admin_port, "/upstreams", &[]).await;
    let mut peers: Vec<String> = r.json()["pools"][0]["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["peer"].as_str().unwrap().to_owned())
        .collect();
    peers.sort();
    peers
}

#[test]
fn upstream_names_follow_dns_under_load() {
    let dir = std::env::temp_dir().join(unique("robeing-dns"));
    std::fs::create_dir_all(&dir).unwrap();
    enter_own_namespaces(&dir);
    // Built after unshare: its threads are in the namespaces too.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let upstream_port = free_port();
    let records: Vec<PathBuf> = (2..=4).map(|i| dir.join(format!("served-{i}"))).collect();
    let _upstreams: Vec<Upstream> = (2..=4)
        .zip(&records)
        .map(|(i, record)| {
            Upstream::start_listening(
                &format!("127.0.0.{i}:{upstream_port}"),
                &["--record", record.to_str().unwrap()],
            )
        })
        .collect();
    let dns = Dnsmasq::start(&dir, &["127.0.0.2"]);

    // A name that does not resolve is an error at start, unless told.
    let (port, admin_port) = (free_port(), free_port());
    let good = config(&dir, port, admin_port, upstream_port, "");
    assert!(check(&good).status.success(), "{:?}", check(&good));
    let missing_name = std::fs::read_to_string(&good)
        .unwrap()
        .replace(NAME, "missing.robeing.test");
    let missing = dir.join("missing.toml");
    std::fs::write(&missing, &missing_name).unwrap();
    let out = check(&missing);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(".host: cannot resolve 'missing.robeing.test'"),
        "{err}"
    );
    let lenient = dir.join("lenient.toml");
    std::fs::write(
        &lenient,
        missing_name.replace(
            "resolve_interval_seconds = 1",
            "resolve_interval_seconds = 1\nresolve_at_start = false",
        ),
    )
    .unwrap();
    assert!(check(&lenient).status.success(), "{:?}", check(&lenient));

    runtime.block_on(async {
        let _gateway = NsGateway::start(&good, &[admin_port, port]).await;
        assert_eq!(
            peers(admin_port).await,
            [format!("127.0.0.2:{upstream_port}")]
        );

        // Steady load, a connection per request.
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let load: Vec<_> = (0..4)
            .map(|_| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let r = get(port, "/api/x", &[]).await;
                        if r.status == 200 { &ok } else { &failed }.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(served_by(&records[0]) > 0, "127.0.0.2 serves first");

        // The name moves to two other addresses: both serve within one
        // interval (1 s) and the next lookup.
        dns.answer(&["127.0.0.3", "127.0.0.4"]);
        let moved = Instant::now();
        while served_by(&records[1]) == 0 || served_by(&records[2]) == 0 {
            assert!(
                moved.elapsed() < Duration::from_secs(3),
                "the new addresses are not served"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!(
            "new addresses served {:?} after the DNS change",
            moved.elapsed()
        );
        assert_eq!(
            peers(admin_port).await,
            [
                format!("127.0.0.3:{upstream_port}"),
                format!("127.0.0.4:{upstream_port}")
            ]
        );
        // Requests that started on the old pool finish there.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let old_after_move = served_by(&records[0]);

        // DNS down: the last addresses are kept, the failures counted.
        dns.stop();
        let down = Instant::now();
        while metric_value(admin_port, "gateway_dns_failures_total{route=\"/api/*\"}").await == 0 {
            assert!(
                down.elapsed() < Duration::from_secs(5),
                "no DNS failure counted"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let before = served_by(&records[1]) + served_by(&records[2]);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(served_by(&records[1]) + served_by(&records[2]) > before);
        assert_eq!(
            served_by(&records[0]),
            old_after_move,
            "the old address gets nothing"
        );

        stop.store(true, Ordering::Relaxed);
        for task in load {
            task.await.unwrap();
        }
        let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
        eprintln!("load: {ok} ok, {failed} failed");
        assert_eq!(failed, 0);
        assert!(ok > 200, "{ok} requests");
    });

    // resolve_at_start = false: a gateway started while the name does not
    // resolve answers 503 on its route, then serves once it resolves.
    let (port, admin_port) = (free_port(), free_port());
    let lenient = config(
        &dir,
        port,
        admin_port,
        upstream_port,
        "resolve_at_start = false",
    );
    runtime.block_on(async {
        let _late = NsGateway::start(&lenient, &[port]).await;
        let r = get(port, "/api/x", &[]).await;
        assert_eq!(r.status, 503, "no address yet");
        let _dns = Dnsmasq::start(&dir, &["127.0.0.3"]);
        let resolved = Instant::now();
        while get(port, "/api/x", &[]).await.status != 200 {
            assert!(
                resolved.elapsed() < Duration::from_secs(3),
                "the name never served"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

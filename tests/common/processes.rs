//! Real processes: the echo upstream, the gateway binary (one way to start
//! it: [`Gateway::start_with`]), successors and handoffs.

use super::*;

pub(crate) fn target_dir() -> PathBuf {
    // tests run from target/<profile>/deps/<test-binary>
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .to_owned()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A port on which nothing listens (bound, then released).
pub fn closed_port() -> u16 {
    free_port()
}

/// The echo upstream example, as its own process.
pub struct Upstream {
    child: Child,
    pub port: u16,
}

impl Upstream {
    pub fn start() -> Self {
        Self::start_with_args(&[])
    }

    /// An upstream that closes keep-alive connections idle for `ms`.
    pub fn closing_idle_after_ms(ms: u64) -> Self {
        Self::start_with_args(&["--idle-close-ms", &ms.to_string()])
    }

    /// An upstream that answers the first request of each connection and
    /// closes the connection on the second without a byte: every reuse of
    /// a pooled connection to it fails, so the proxy retries.
    pub fn closing_every_second_request() -> Self {
        Self::start_with_args(&["--close-second"])
    }

    /// An upstream on `port` that appends each request to `record` (one
    /// file for several upstreams: counts survive restarts).
    pub fn start_recording(port: u16, record: &std::path::Path) -> Self {
        let record = record.to_str().expect("utf-8 path");
        Self::start_listening(&format!("127.0.0.1:{port}"), &["--record", record])
    }

    /// SIGTERM: the listening socket closes, requests in flight finish,
    /// then the process exits (waited for).
    pub fn stop_gracefully(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }

    /// SIGKILL, whatever it was doing.
    pub fn kill_hard(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn start_with_args(extra: &[&str]) -> Self {
        Self::start_listening("127.0.0.1:0", extra)
    }

    pub fn start_listening(listen: &str, extra: &[&str]) -> Self {
        let mut args = vec!["--listen", listen, "--slack-secret", SLACK_SECRET];
        args.extend_from_slice(extra);
        Self::start_example("echo_upstream", &args)
    }

    /// The gRPC test server (`examples/grpc_upstream.rs`), over h2c.
    pub fn start_grpc() -> Self {
        Self::start_example("grpc_upstream", &["--listen", "127.0.0.1:0"])
    }

    /// An example binary that prints `listening on ADDR` once it listens.
    fn start_example(name: &str, args: &[&str]) -> Self {
        let bin = target_dir().join("examples").join(name);
        assert!(
            bin.exists(),
            "{} is missing: build it with `cargo build --examples` (cargo test does)",
            bin.display()
        );
        let mut child = Command::new(&bin)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .expect("upstream address");
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected {name} banner {line:?}"));
        Self { child, port }
    }

    /// The targets this upstream has received, in order.
    pub async fn received(&self) -> Vec<String> {
        let resp = get(self.port, "/__received", &[]).await;
        let list: Vec<(String, String)> =
            serde_json::from_slice(&resp.body).expect("received json");
        list.into_iter().map(|(_, target)| target).collect()
    }

    /// `--close-second` upstreams: each request's `traceparent` values.
    pub async fn received_traceparents(&self) -> Vec<Vec<String>> {
        let resp = get(self.port, "/__traceparents", &[]).await;
        serde_json::from_slice(&resp.body).expect("traceparents json")
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The successor's pid from a successful `reload`'s output.
pub fn assert_reload_ok(out: &std::process::Output) -> i32 {
    assert!(out.status.success(), "reload failed: {:?}", out);
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(2)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected reload output {text:?}"))
}

/// Waits until `pid` has exited (or is a zombie awaiting its parent).
pub async fn wait_for_exit(pid: i32, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let running = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.split_whitespace().nth(2) != Some("Z"))
            .unwrap_or(false);
        if !running {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pid {pid} still runs after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A successor started by hand; stopped (and reaped) when dropped.
pub struct Successor(Child);

impl Successor {
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    pub fn has_exited(&mut self) -> bool {
        !matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Successor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One running gateway process with its own config, pid file and socket.
pub struct Gateway {
    child: Child,
    pub port: u16,
    pub admin_port: u16,
    dir: PathBuf,
    database_url: String,
}

/// `[[routes]]` entries: (path, service, port, auth_required, extra keys).
pub fn route(path: &str, port: u16, auth_required: bool, extra: &str) -> String {
    robeing_gateway::config::testing::route_toml(path, port, auth_required, extra)
}

/// A public `[[routes]]` entry over several peers, with `extra` keys
/// (a `[routes.health_check]` table goes last in `extra`).
pub fn pool_route(path: &str, ports: &[u16], extra: &str) -> String {
    let peers: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    format!(
        "\n[[routes]]\npath = \"{path}\"\nservice = \"pool\"\nupstreams = [{}]\nauth_required = false\n{extra}\n",
        peers.join(", ")
    )
}

/// `GET /upstreams`: the peers of the first pool, as (peer, eligible).
pub async fn pool_peers(admin_port: u16) -> Vec<(String, bool)> {
    let v = get(admin_port, "/upstreams", &[]).await.json();
    v["pools"][0]["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .map(|p| {
            (
                p["peer"].as_str().unwrap_or("").to_owned(),
                p["eligible"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

/// The usual table: public `/api/auth/*`, protected `/api/robeing/*`.
pub fn standard_routes(public: &Upstream, protected: &Upstream) -> String {
    route("/api/auth/*", public.port, false, "")
        + &route("/api/robeing/*", protected.port, true, "")
}

/// The usual setup: a public and a protected echo upstream behind one gateway.
pub struct Setup {
    pub public: Upstream,
    pub protected: Upstream,
    pub gw: Gateway,
}

pub fn setup() -> Setup {
    let public = Upstream::start();
    let protected = Upstream::start();
    let gw = Gateway::start_with(GatewayOptions::new(&standard_routes(&public, &protected)));
    Setup {
        public,
        protected,
        gw,
    }
}

/// The default `[auth]` without the first-sight budget: for tests that send
/// hundreds of distinct tokens from one address on purpose (the budget has
/// its own test in tests/signing_keys.rs).
pub const AUTH_WITHOUT_FIRST_SIGHT: &str = "[auth]\nsecret_env = \"GATEWAY_JWT_SECRET\"\nleeway_seconds = 0\nfirst_sight_per_ip_per_minute = 0";

/// How a test gateway is started.
pub struct GatewayOptions<'a> {
    pub routes: &'a str,
    /// Lines added to `[users]`.
    pub users_extra: &'a str,
    /// A users file as the `[users]` source instead of PostgreSQL.
    pub users_file: Option<&'a std::path::Path>,
    /// Lines added to `[server]`.
    pub server_extra: &'a str,
    /// The `[auth]` section in place of the one-secret default.
    pub auth: Option<&'a str>,
    /// Lines added to `[admin]`.
    pub admin_extra: &'a str,
    pub database_url: String,
    pub env: Vec<(String, String)>,
    /// `[log] destination = "stdout"` (the gateway's stdout is `stdout.log`)
    /// instead of the `access.log` file.
    pub access_log_on_stdout: bool,
}

impl<'a> GatewayOptions<'a> {
    pub fn new(routes: &'a str) -> Self {
        Self {
            routes,
            users_extra: "",
            users_file: None,
            server_extra: "",
            auth: None,
            admin_extra: "",
            database_url: database_url(),
            env: Vec::new(),
            access_log_on_stdout: false,
        }
    }
}

/// A file opened for appending: successors share it and must not write
/// over each other's lines.
fn append_to(path: &std::path::Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("output file")
}

pub(crate) fn render_config(
    port: u16,
    admin_port: u16,
    dir: &std::path::Path,
    o: &GatewayOptions,
) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:{port}"]
threads = 2
pid_file = "{dir}/gateway.pid"
upgrade_sock = "{dir}/upgrade.sock"
{server_extra}

{auth}

[users]
{users_source}
{users_extra}

[upstream]
read_timeout_ms = 5000

[admin]
listen = "127.0.0.1:{admin_port}"
{admin_extra}

[log]
destination = "{destination}"
{routes}
"#,
        dir = dir.display(),
        destination = if o.access_log_on_stdout {
            "stdout".to_owned()
        } else {
            format!("{}/access.log", dir.display())
        },
        admin_port = admin_port,
        server_extra = o.server_extra,
        admin_extra = o.admin_extra,
        auth = o
            .auth
            .unwrap_or("[auth]\nsecret_env = \"GATEWAY_JWT_SECRET\"\nleeway_seconds = 0"),
        users_source = match o.users_file {
            Some(path) => format!("source = \"file\"\nusers = \"{}\"", path.display()),
            None => "source = \"postgres\"\ndatabase_url_env = \"DATABASE_URL\"".to_owned(),
        },
        // A test's own query timeout replaces the default one.
        users_extra = if o.users_extra.contains("query_timeout_ms") {
            o.users_extra.to_owned()
        } else {
            format!("query_timeout_ms = 1500\n{}", o.users_extra)
        },
        routes = o.routes,
    )
}

/// `robeing-gateway -t` on the configuration `options` render (nothing
/// is started).
pub fn check_config(options: &GatewayOptions) -> std::process::Output {
    let dir = std::env::temp_dir().join(unique("robeing-gw-check"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let conf = dir.join("gateway.toml");
    std::fs::write(&conf, render_config(1, 2, &dir, options)).expect("write config");
    Command::new(env!("CARGO_BIN_EXE_robeing-gateway"))
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .env("GATEWAY_JWT_SECRET", JWT_SECRET)
        .env("DATABASE_URL", &options.database_url)
        .envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run -t")
}

impl Gateway {
    /// Starts a gateway: the one way the harness does (see
    /// [`GatewayOptions`] for routes, `[users]`/`[server]` lines, database
    /// and environment).
    pub fn start_with(options: GatewayOptions) -> Self {
        // A port picked by free_port() may be taken by another test's
        // process before the gateway binds it: start again on fresh ports.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::try_start(&options) {
                Ok(gw) => return gw,
                Err(log) if attempt < 4 && log.contains("in use") => continue,
                Err(log) => panic!("gateway did not start: {log}"),
            }
        }
    }

    fn try_start(options: &GatewayOptions) -> Result<Self, String> {
        ensure_schema();
        let port = free_port();
        // Two ports picked one after the other can be the same one.
        let admin_port = std::iter::repeat_with(free_port)
            .find(|p| *p != port)
            .expect("a second free port");
        let dir = std::env::temp_dir().join(unique("robeing-gw-test"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let conf = dir.join("gateway.toml");
        std::fs::write(&conf, render_config(port, admin_port, &dir, options))
            .expect("write config");
        // Append mode: successors write to the same file, and a plain
        // descriptor would write over their lines at its own offset.
        let log = append_to(&dir.join("gateway.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_robeing-gateway"))
            .arg("-c")
            .arg(&conf)
            .env("GATEWAY_JWT_SECRET", JWT_SECRET)
            .env("DATABASE_URL", &options.database_url)
            .env("RUST_LOG", "info")
            .envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(append_to(&dir.join("stdout.log")))
            .stderr(log)
            .spawn()
            .expect("start gateway");
        let mut gw = Self {
            child,
            port,
            admin_port,
            dir,
            database_url: options.database_url.clone(),
        };
        gw.wait_listening()?;
        Ok(gw)
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("gateway.toml")
    }

    /// Rewrites the configuration file (for reload and SIGHUP).
    pub fn write_config(&self, options: &GatewayOptions) {
        std::fs::write(
            self.config_path(),
            render_config(self.port, self.admin_port, &self.dir, options),
        )
        .expect("write config");
    }

    /// The pid in the pid file: the process serving now.
    pub fn pid(&self) -> i32 {
        std::fs::read_to_string(self.dir.join("gateway.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .expect("pid file")
    }

    /// Runs `robeing-gateway reload` (with `binary`, default the built one).
    pub fn reload_with(
        &self,
        binary: &std::path::Path,
        env: &[(String, String)],
    ) -> std::process::Output {
        self.command(binary, &["reload"], env)
            // The successor inherits this until it takes over the
            // gateway's own: its log goes to the same file either way.
            .stderr(append_to(&self.dir.join("gateway.log")))
            .stdout(Stdio::piped())
            .output()
            .expect("run reload")
    }

    /// `binary ARGS -c CONFIG` with the gateway's environment and `env`.
    fn command(
        &self,
        binary: &std::path::Path,
        args: &[&str],
        env: &[(String, String)],
    ) -> Command {
        let mut command = Command::new(binary);
        command
            .args(args)
            .arg("-c")
            .arg(self.config_path())
            .env("GATEWAY_JWT_SECRET", JWT_SECRET)
            .env("DATABASE_URL", &self.database_url)
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        command
    }

    /// Starts a successor by hand (`-u`), as the README's handoff procedure
    /// does; it takes over once the serving process gets SIGQUIT.
    pub fn start_successor(&self, env: &[(String, String)]) -> Successor {
        let child = self
            .command(
                std::path::Path::new(env!("CARGO_BIN_EXE_robeing-gateway")),
                &["-u"],
                env,
            )
            .stdout(Stdio::null())
            .stderr(append_to(&self.dir.join("gateway.log")))
            .spawn()
            .expect("start successor");
        Successor(child)
    }

    /// The upgrade socket a successor listens on while it waits.
    pub fn upgrade_sock(&self) -> PathBuf {
        self.dir.join("upgrade.sock")
    }

    /// Lines of the process log at ERROR.
    pub fn error_lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(" ERROR "))
            .map(str::to_owned)
            .collect()
    }

    /// Runs `reload` with its stdout and stderr on `/dev/null`, as a
    /// detached supervisor might: the successor must still write where
    /// the gateway was started with.
    pub fn reload_detached(&self) -> std::process::ExitStatus {
        self.command(
            std::path::Path::new(env!("CARGO_BIN_EXE_robeing-gateway")),
            &["reload"],
            &[],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run reload")
    }

    /// What the gateway wrote on its stdout.
    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default()
    }

    pub fn reload(&self) -> std::process::Output {
        self.reload_with(
            std::path::Path::new(env!("CARGO_BIN_EXE_robeing-gateway")),
            &[],
        )
    }

    /// Sends a signal to the serving process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    fn wait_listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("gateway exited with {status}: {}", self.log()));
            }
            // The pid file is written when the gateway announces it serves.
            if self.dir.join("gateway.pid").exists()
                && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", self.admin_port)).is_ok()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "gateway did not listen on {}: {}",
            self.port,
            self.log()
        ))
    }

    /// The access-log lines written so far, parsed.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad access-log line {l:?}: {e}"))
            })
            .collect()
    }

    pub fn access_log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("gateway.log")).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // Successors started by `reload` are not our children.
        if let Some(pid) = std::fs::read_to_string(self.dir.join("gateway.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            // Quietly: the process may have exited already.
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls until every gateway answers `want` for `token` on
/// `/api/robeing/x`, within `limit`; how long it took.
pub async fn all_answer(gateways: &[Gateway], token: &str, want: u16, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let mut statuses = Vec::new();
        for gw in gateways {
            statuses.push(
                get(gw.port, "/api/robeing/x", &[bearer(token)])
                    .await
                    .status,
            );
        }
        if statuses.iter().all(|s| *s == want) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "after {limit:?}: {statuses:?}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits (at most 5 s) until `gw`'s `notify_channel` listener is up.
pub async fn wait_listening(gw: &Gateway) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric_value(gw.admin_port, "gateway_user_notify_up").await != 1 {
        assert!(Instant::now() < deadline, "the listener never came up");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

//! Test harness: a real PostgreSQL (from the environment `make test` sets
//! up), the real gateway binary, real upstream processes, and a raw HTTP/1.1
//! client that sends request targets exactly as written.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub const JWT_SECRET: &str = "integration-test-secret-0123456789abcdef";
pub const SLACK_SECRET: &str = "slack-signing-secret-for-tests";
pub const ALICE_ID: &str = "6f1c1d0e-4a7b-4c43-9a0e-2b8f1c9d7e01";

// ---------------------------------------------------------------- PostgreSQL

fn pg_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "PostgreSQL is required and {name} is not set. Run `make test`, which starts a \
             throwaway cluster with pg_virtualenv, or export PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE."
        )
    })
}

/// The connection string of the test cluster (key=value form).
pub fn database_url() -> String {
    format!(
        "host={} port={} user={} password={} dbname={}",
        pg_env("PGHOST"),
        pg_env("PGPORT"),
        pg_env("PGUSER"),
        std::env::var("PGPASSWORD").unwrap_or_default(),
        pg_env("PGDATABASE"),
    )
}

/// Runs psql with `args` (stopping at the first error); returns stdout.
fn run_psql(args: &[&str]) -> String {
    let out = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
        .args(args)
        .output()
        .expect("psql must be installed (make test installs PostgreSQL)");
    assert!(
        out.status.success(),
        "psql {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs SQL through psql and returns its unaligned output.
pub fn psql(sql: &str) -> String {
    run_psql(&["-A", "-t", "-c", sql])
}

/// Creates the schema and fixed users once per test binary.
pub fn ensure_schema() {
    static SCHEMA: Once = Once::new();
    SCHEMA.call_once(|| {
        database_url();
        run_psql(&[
            "-f",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schema.sql"),
        ]);
    });
}

/// Adds a user with a fresh UUID and returns the UUID.
pub fn add_user(username: &str) -> String {
    ensure_schema();
    psql(&format!(
        "INSERT INTO \"user\" (id, username) VALUES (gen_random_uuid(), '{username}') \
         ON CONFLICT (username) DO UPDATE SET username = EXCLUDED.username RETURNING id"
    ))
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

// ---------------------------------------------------------------- processes

fn target_dir() -> PathBuf {
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

    fn start_with_args(extra: &[&str]) -> Self {
        let bin = target_dir().join("examples/echo_upstream");
        assert!(
            bin.exists(),
            "{} is missing: build it with `cargo build --examples` (cargo test does)",
            bin.display()
        );
        let mut child = Command::new(&bin)
            .args(["--listen", "127.0.0.1:0", "--slack-secret", SLACK_SECRET])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start echo upstream");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .expect("upstream address");
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected upstream banner {line:?}"));
        Self { child, port }
    }

    /// The targets this upstream has received, in order.
    pub async fn received(&self) -> Vec<String> {
        let resp = get(self.port, "/__received", &[]).await;
        let list: Vec<(String, String)> =
            serde_json::from_slice(&resp.body).expect("received json");
        list.into_iter().map(|(_, target)| target).collect()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    let service = path
        .trim_matches(|c| c == '/' || c == '*')
        .replace('/', "-");
    format!(
        "\n[[routes]]\npath = \"{path}\"\nservice = \"{service}\"\nhost = \"127.0.0.1\"\nport = {port}\nauth_required = {auth_required}\n{extra}\n"
    )
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
    let gw = Gateway::start(&standard_routes(&public, &protected), "");
    Setup {
        public,
        protected,
        gw,
    }
}

/// How a test gateway is started.
pub struct GatewayOptions<'a> {
    pub routes: &'a str,
    /// Lines added to `[users]`.
    pub users_extra: &'a str,
    /// Lines added to `[server]`.
    pub server_extra: &'a str,
    pub database_url: String,
    pub env: Vec<(String, String)>,
}

impl<'a> GatewayOptions<'a> {
    pub fn new(routes: &'a str) -> Self {
        Self {
            routes,
            users_extra: "",
            server_extra: "",
            database_url: database_url(),
            env: Vec::new(),
        }
    }
}

fn render_config(port: u16, admin_port: u16, dir: &std::path::Path, o: &GatewayOptions) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:{port}"]
threads = 2
pid_file = "{dir}/gateway.pid"
upgrade_sock = "{dir}/upgrade.sock"
{server_extra}

[auth]
secret_env = "GATEWAY_JWT_SECRET"
leeway_seconds = 0

[users]
source = "postgres"
database_url_env = "DATABASE_URL"
{users_extra}

[upstream]
read_timeout_ms = 5000

[admin]
listen = "127.0.0.1:{admin_port}"

[log]
destination = "{dir}/access.log"
{routes}
"#,
        dir = dir.display(),
        admin_port = admin_port,
        server_extra = o.server_extra,
        // A test's own query timeout replaces the default one.
        users_extra = if o.users_extra.contains("query_timeout_ms") {
            o.users_extra.to_owned()
        } else {
            format!("query_timeout_ms = 1500\n{}", o.users_extra)
        },
        routes = o.routes,
    )
}

impl Gateway {
    /// Starts the gateway with `routes` and `users_extra` lines for `[users]`.
    pub fn start(routes: &str, users_extra: &str) -> Self {
        Self::start_with(GatewayOptions {
            users_extra,
            ..GatewayOptions::new(routes)
        })
    }

    pub fn start_with_env(routes: &str, users_extra: &str, database_url: &str) -> Self {
        Self::start_with(GatewayOptions {
            users_extra,
            database_url: database_url.to_owned(),
            ..GatewayOptions::new(routes)
        })
    }

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
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("gateway.log"))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_robeing-gateway"))
            .arg("-c")
            .arg(&conf)
            .env("GATEWAY_JWT_SECRET", JWT_SECRET)
            .env("DATABASE_URL", &options.database_url)
            .env("RUST_LOG", "info")
            .envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
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
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("gateway.log"))
            .expect("log file");
        let out = Command::new(binary)
            .arg("reload")
            .arg("-c")
            .arg(self.config_path())
            .env("GATEWAY_JWT_SECRET", JWT_SECRET)
            .env("DATABASE_URL", &self.database_url)
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            // The successor inherits these: its log goes to the same file.
            .stderr(log)
            .stdout(Stdio::piped())
            .output()
            .expect("run reload");
        out
    }

    /// Starts a successor by hand (`-u`), as DESIGN's handoff procedure
    /// does; it takes over once the serving process gets SIGQUIT.
    pub fn start_successor(&self, env: &[(String, String)]) -> Successor {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("gateway.log"))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_robeing-gateway"))
            .arg("-c")
            .arg(self.config_path())
            .arg("-u")
            .env("GATEWAY_JWT_SECRET", JWT_SECRET)
            .env("DATABASE_URL", &self.database_url)
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
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
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------- tokens

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A token with the given header and claims, HMAC-signed with `key`.
pub fn signed_token(header: serde_json::Value, claims: serde_json::Value, key: &[u8]) -> String {
    let alg = header["alg"].as_str().unwrap_or("HS256").to_owned();
    signed_raw(&alg, &header.to_string(), &claims.to_string(), key)
}

/// A token over header and payload JSON exactly as written (duplicate
/// members and all), signed with `alg` (HS256/384/512; anything else: none).
pub fn signed_raw(alg: &str, header: &str, payload: &str, key: &[u8]) -> String {
    let signing_input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let signature = match alg {
        "HS384" => {
            let mut mac = Hmac::<sha2::Sha384>::new_from_slice(key).unwrap();
            mac.update(signing_input.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        "HS512" => {
            let mut mac = Hmac::<sha2::Sha512>::new_from_slice(key).unwrap();
            mac.update(signing_input.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        "HS256" => {
            let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
            mac.update(signing_input.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        _ => Vec::new(),
    };
    format!("{signing_input}.{}", b64(&signature))
}

pub fn token_with(claims: serde_json::Value) -> String {
    signed_token(
        serde_json::json!({"alg": "HS256", "typ": "JWT"}),
        claims,
        JWT_SECRET.as_bytes(),
    )
}

pub fn token_for(username: &str) -> String {
    token_with(serde_json::json!({"username": username, "exp": now() + 600, "iat": now()}))
}

pub fn expired_token_for(username: &str) -> String {
    token_with(serde_json::json!({"username": username, "exp": now() - 600}))
}

pub fn in_seconds(seconds: i64) -> i64 {
    now() + seconds
}

pub fn bearer(token: &str) -> (String, String) {
    ("Authorization".into(), format!("Bearer {token}"))
}

/// Slack's v0 signature of `body` at `timestamp`.
pub fn slack_signature(timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SLACK_SECRET.as_bytes()).unwrap();
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("v0={hex}")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------- HTTP client

/// How a request failed, as a client sees it.
#[derive(Debug)]
pub enum ClientError {
    /// The connection closed before any byte of a response: the request was
    /// not processed, and an idempotent one may be sent again (RFC 9112 §9.3.1).
    NoResponse(String),
    /// A response started and broke, or was malformed.
    Broken(String),
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The values of header `name` as the echo upstream received them.
    pub fn upstream_header(&self, name: &str) -> Vec<String> {
        self.json()["headers"]
            .as_array()
            .expect("echo headers")
            .iter()
            .filter(|pair| {
                pair[0]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
            .map(|pair| pair[1].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

/// One client connection; requests on it reuse the connection.
pub struct Conn {
    stream: BufReader<TcpStream>,
}

impl Conn {
    pub fn from_stream(stream: TcpStream) -> Self {
        stream.set_nodelay(true).ok();
        Self {
            stream: BufReader::new(stream),
        }
    }

    pub async fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        stream.set_nodelay(true).ok();
        Self {
            stream: BufReader::new(stream),
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.get_mut().write_all(bytes).await.expect("send");
    }

    /// Sends a request; `Content-Length` is added for a non-empty body.
    pub async fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Response {
        self.try_request(method, target, headers, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {target}: {e:?}"))
    }

    pub async fn try_request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<Response, ClientError> {
        let mut head = format!("{method} {target} HTTP/1.1\r\nHost: gateway.test\r\n");
        for (n, v) in headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        if !body.is_empty() {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        self.stream
            .get_mut()
            .write_all(&bytes)
            .await
            .map_err(|e| ClientError::NoResponse(e.to_string()))?;
        self.try_read_response().await
    }

    /// Reads a status line and headers.
    pub async fn read_head(&mut self) -> (u16, Vec<(String, String)>) {
        self.try_read_head().await.expect("response head")
    }

    async fn try_read_head(&mut self) -> Result<(u16, Vec<(String, String)>), ClientError> {
        let mut line = String::new();
        match self.stream.read_line(&mut line).await {
            Ok(0) => return Err(ClientError::NoResponse("closed".into())),
            Err(e) if line.is_empty() => return Err(ClientError::NoResponse(e.to_string())),
            Err(e) => return Err(ClientError::Broken(e.to_string())),
            Ok(_) => {}
        }
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ClientError::Broken(format!("bad status line {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.stream
                .read_line(&mut line)
                .await
                .map_err(|e| ClientError::Broken(e.to_string()))?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (n, v) = l
                .split_once(':')
                .ok_or_else(|| ClientError::Broken(format!("bad header {l:?}")))?;
            headers.push((n.trim().to_owned(), v.trim().to_owned()));
        }
        Ok((status, headers))
    }

    /// Reads one chunk of a chunked body; `None` at the terminating chunk.
    pub async fn read_chunk(&mut self) -> Option<Vec<u8>> {
        self.try_read_chunk().await.expect("chunk")
    }

    async fn try_read_chunk(&mut self) -> Result<Option<Vec<u8>>, ClientError> {
        let broken = |e: std::io::Error| ClientError::Broken(e.to_string());
        let mut line = String::new();
        self.stream.read_line(&mut line).await.map_err(broken)?;
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
            .map_err(|_| ClientError::Broken(format!("bad chunk size {line:?}")))?;
        let mut data = vec![0; size];
        self.stream.read_exact(&mut data).await.map_err(broken)?;
        let mut crlf = [0; 2];
        self.stream.read_exact(&mut crlf).await.map_err(broken)?;
        Ok((size > 0).then_some(data))
    }

    pub async fn read_response(&mut self) -> Response {
        self.try_read_response().await.expect("response")
    }

    pub async fn try_read_response(&mut self) -> Result<Response, ClientError> {
        let (status, headers) = self.try_read_head().await?;
        let find = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let broken = |e: std::io::Error| ClientError::Broken(e.to_string());
        let mut body = Vec::new();
        if status == 101 || status == 204 || status == 304 || (100..200).contains(&status) {
            // no body
        } else if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            while let Some(chunk) = self.try_read_chunk().await? {
                body.extend_from_slice(&chunk);
            }
        } else if let Some(len) = find("content-length") {
            body.resize(
                len.parse()
                    .map_err(|_| ClientError::Broken(format!("content-length {len}")))?,
                0,
            );
            self.stream.read_exact(&mut body).await.map_err(broken)?;
        } else {
            self.stream.read_to_end(&mut body).await.map_err(broken)?;
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    pub fn into_inner(self) -> BufReader<TcpStream> {
        self.stream
    }
}

/// One request on its own connection.
pub async fn send(
    port: u16,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Response {
    Conn::connect(port)
        .await
        .request(method, target, headers, body)
        .await
}

pub async fn get(port: u16, target: &str, headers: &[(String, String)]) -> Response {
    send(port, "GET", target, headers, b"").await
}

/// The value of one metric series, as scraped now (0 when absent).
pub async fn metric_value(admin_port: u16, series: &str) -> u64 {
    let metrics =
        String::from_utf8_lossy(&get(admin_port, "/metrics", &[]).await.body).into_owned();
    metrics
        .lines()
        .find(|l| l.rsplit_once(' ').is_some_and(|(name, _)| name == series))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or(0)
}

/// `body` in HTTP/1.1 chunked framing, `piece` bytes a chunk.
pub fn chunked(body: &[u8], piece: usize) -> Vec<u8> {
    let mut framed = Vec::with_capacity(body.len() + body.len() / piece * 8 + 8);
    for chunk in body.chunks(piece) {
        framed.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        framed.extend_from_slice(chunk);
        framed.extend_from_slice(b"\r\n");
    }
    framed.extend_from_slice(b"0\r\n\r\n");
    framed
}

/// Headers from string pairs.
pub fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

/// Asserts `resp` is the gateway's envelope with `status` and `code`.
pub fn assert_envelope(resp: &Response, status: u16, code: &str) {
    assert_eq!(
        resp.status,
        status,
        "expected {status} {code}, got {} {:?}",
        resp.status,
        String::from_utf8_lossy(&resp.body)
    );
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let v = resp.json();
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    assert!(v["error"]["timestamp"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    let header_id = resp.header("x-request-id").expect("X-Request-Id header");
    assert_eq!(v["error"]["request_id"], header_id);
    if status == 401 {
        assert!(
            resp.header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer")),
            "401 without WWW-Authenticate: Bearer"
        );
    } else {
        assert!(resp.header("www-authenticate").is_none());
    }
}

// ---------------------------------------------------------------- faults

/// What a [`FaultProxy`] does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward bytes both ways.
    Pass,
    /// Close every connection, open or new: the service is down.
    Down,
    /// Keep connections open and move no byte: the service hangs.
    Hang,
}

/// A TCP hop in front of a real service (PostgreSQL) that can be switched
/// between passing, down and hung without the client's address changing.
pub struct FaultProxy {
    pub port: u16,
    mode: tokio::sync::watch::Sender<Fault>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(target_port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fault proxy");
        let port = listener.local_addr().expect("addr").port();
        let (mode, watch) = tokio::sync::watch::channel(Fault::Pass);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(Self::serve(client, target_port, watch.clone()));
            }
        });
        Self { port, mode, task }
    }

    async fn serve(
        mut client: TcpStream,
        target_port: u16,
        mut watch: tokio::sync::watch::Receiver<Fault>,
    ) {
        let mode = *watch.borrow_and_update();
        match mode {
            Fault::Down => return,
            Fault::Hang => return std::future::pending().await,
            Fault::Pass => {}
        }
        let Ok(mut server) = TcpStream::connect(("127.0.0.1", target_port)).await else {
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
                changed = watch.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let mode = *watch.borrow_and_update();
                    match mode {
                        Fault::Down => return,
                        // Hold both sockets, forward nothing.
                        Fault::Hang => return std::future::pending().await,
                        Fault::Pass => {}
                    }
                }
            }
        }
    }

    pub fn set(&self, fault: Fault) {
        self.mode.send_replace(fault);
    }

    /// The test cluster's connection string, through this hop.
    pub fn database_url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={} password={} dbname={} connect_timeout=2",
            self.port,
            pg_env("PGUSER"),
            std::env::var("PGPASSWORD").unwrap_or_default(),
            pg_env("PGDATABASE"),
        )
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The port of the test cluster.
pub fn pg_port() -> u16 {
    pg_env("PGPORT").parse().expect("PGPORT")
}

//! The gateway's single TOML configuration file: schema, defaults and
//! validation.
//!
//! Unknown keys are errors (`deny_unknown_fields`), and every error names the
//! key it is about (`routes[2].port`, with the line for route entries).
//! Secrets are never in this file: it names the environment variable or file
//! that holds them.

pub mod plan;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::routing::path::normalize_path;
use crate::routing::table::pattern_segments;

/// A configuration problem, naming the key (or file) it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub users: UsersConfig,
    #[serde(default)]
    pub upstream: UpstreamDefaults,
    /// The admin listener (`/metrics`, `/healthz`, `/readyz`); none if absent.
    pub admin: Option<AdminConfig>,
    /// Default per-user (per-IP when anonymous) limit; none if absent.
    pub rate_limit: Option<RateLimitConfig>,
    #[serde(default)]
    pub compression: CompressionConfig,
    /// CORS at the edge; none if absent (no CORS headers at all).
    pub cors: Option<CorsConfig>,
    #[serde(default)]
    pub log: LogConfig,
    pub routes: Vec<Spanned<RouteConfig>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    pub allow_origins: Vec<String>,
    #[serde(default)]
    pub allow_credentials: bool,
    #[serde(default = "defaults::cors_methods")]
    pub allow_methods: Vec<String>,
    #[serde(default = "defaults::cors_headers")]
    pub allow_headers: Vec<String>,
    /// Response headers the frontend may read.
    #[serde(default = "defaults::cors_expose_headers")]
    pub expose_headers: Vec<String>,
    #[serde(default = "defaults::cors_max_age_seconds")]
    pub max_age_seconds: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionConfig {
    /// gzip/brotli/zstd level; 0 = off.
    #[serde(default)]
    pub level: u32,
    /// Responses declaring fewer bytes than this are not compressed.
    #[serde(default = "defaults::compression_min_size_bytes")]
    pub min_size_bytes: u64,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        Self {
            level: 0,
            min_size_bytes: defaults::compression_min_size_bytes(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub requests_per_minute: u32,
    /// Counters kept at most; idle ones are evicted first.
    #[serde(default = "defaults::rate_limit_max_keys")]
    pub max_keys: usize,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Level of the process log on stderr (`RUST_LOG` overrides it).
    #[serde(default = "defaults::log_level")]
    pub level: String,
    /// Format of the access log.
    #[serde(default = "defaults::log_format")]
    pub format: LogFormat,
    /// Where access-log lines go: `stdout`, `stderr`, `off` or a file path.
    #[serde(default = "defaults::log_destination")]
    pub destination: String,
    /// Lines queued for the writer; beyond it lines are counted and dropped.
    #[serde(default = "defaults::log_queue_capacity")]
    pub queue_capacity: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: defaults::log_level(),
            format: defaults::log_format(),
            destination: defaults::log_destination(),
            queue_capacity: defaults::log_queue_capacity(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: Vec<String>,
    #[serde(default = "defaults::threads")]
    pub threads: usize,
    #[serde(default = "defaults::pid_file")]
    pub pid_file: String,
    #[serde(default = "defaults::upgrade_sock")]
    pub upgrade_sock: String,
    /// After it stops accepting, a draining process stays at least this long...
    #[serde(default = "defaults::grace_period_seconds")]
    pub grace_period_seconds: u64,
    /// ...and at most this long while requests are in flight.
    #[serde(default = "defaults::graceful_shutdown_timeout_seconds")]
    pub graceful_shutdown_timeout_seconds: u64,
    /// Idle upstream connections kept per process, across all upstreams.
    #[serde(default = "defaults::upstream_keepalive_pool_size")]
    pub upstream_keepalive_pool_size: usize,
    /// Largest request body accepted, unless a route says otherwise.
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: u64,
    /// A request's whole header section must arrive within this (408 and
    /// close beyond); Pingora only bounds each read.
    #[serde(default = "defaults::header_timeout_ms")]
    pub header_timeout_ms: u64,
    /// Concurrent connections one client IP may hold (0: no cap)...
    #[serde(default = "defaults::max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// ...once the process holds this many client connections (0: always).
    /// Below it a crowd behind one address (NAT, carrier, balancer) is not
    /// refused.
    #[serde(default = "defaults::connection_pressure_threshold")]
    pub connection_pressure_threshold: usize,
    /// Longest request target accepted (414 beyond).
    #[serde(default = "defaults::max_uri_bytes")]
    pub max_uri_bytes: usize,
    /// Largest request header section accepted, names and values (431
    /// beyond). Pingora's parser stops at 1 MiB on its own.
    #[serde(default = "defaults::max_header_bytes")]
    pub max_header_bytes: usize,
    /// Peers (CIDRs) whose `X-Forwarded-For` is believed for the client IP.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Pingora's multi-thread (work-stealing) runtime instead of one runtime
    /// per thread. Off: measured 2.3x the throughput with one thread.
    #[serde(default)]
    pub work_stealing: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub secret_env: Option<String>,
    pub secret_file: Option<PathBuf>,
    #[serde(default = "defaults::username_claim")]
    pub username_claim: String,
    #[serde(default = "defaults::leeway_seconds")]
    pub leeway_seconds: u64,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Tokens longer than this are refused before any decoding.
    #[serde(default = "defaults::max_token_bytes")]
    pub max_token_bytes: usize,
    /// Tokens that verified, remembered (exact bytes) until they expire, so a
    /// client's next request skips the HMAC and JSON work. 0 turns it off.
    #[serde(default = "defaults::verified_token_cache")]
    pub verified_token_cache: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserSource {
    Postgres,
    File,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersConfig {
    pub source: UserSource,
    /// `file` source: a TOML table `username = "uuid"`.
    pub users: Option<PathBuf>,
    pub database_url_env: Option<String>,
    #[serde(default = "defaults::query")]
    pub query: String,
    #[serde(default = "defaults::pool_size")]
    pub pool_size: usize,
    /// Bound on one directory lookup: pool wait, connect and query.
    #[serde(default = "defaults::query_timeout_ms")]
    pub query_timeout_ms: u64,
    #[serde(default = "defaults::cache_ttl_seconds")]
    pub cache_ttl_seconds: u64,
    #[serde(default = "defaults::negative_cache_ttl_seconds")]
    pub negative_cache_ttl_seconds: u64,
    /// When the directory fails, a cached answer keeps being used for this
    /// long past its TTL (0: never). Users not cached still fail closed.
    #[serde(default = "defaults::stale_if_error_seconds")]
    pub stale_if_error_seconds: u64,
    #[serde(default = "defaults::cache_capacity")]
    pub cache_capacity: usize,
}

/// Upstream timeouts that apply to every route that does not set its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamDefaults {
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "defaults::read_timeout_ms")]
    pub read_timeout_ms: u64,
    #[serde(default = "defaults::write_timeout_ms")]
    pub write_timeout_ms: u64,
    #[serde(default = "defaults::idle_timeout_ms")]
    pub idle_timeout_ms: u64,
}

impl Default for UpstreamDefaults {
    fn default() -> Self {
        Self {
            connect_timeout_ms: defaults::connect_timeout_ms(),
            read_timeout_ms: defaults::read_timeout_ms(),
            write_timeout_ms: defaults::write_timeout_ms(),
            idle_timeout_ms: defaults::idle_timeout_ms(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub path: String,
    pub service: String,
    pub host: String,
    pub port: u16,
    /// Fail closed: a route is protected unless it says otherwise.
    #[serde(default = "defaults::auth_required")]
    pub auth_required: bool,
    pub connect_timeout_ms: Option<u64>,
    pub read_timeout_ms: Option<u64>,
    pub write_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub max_body_bytes: Option<u64>,
    /// This route's own limit (0: unlimited); else `[rate_limit]`'s.
    pub requests_per_minute: Option<u32>,
    /// Responses pass exactly as the upstream sent them (no compression).
    #[serde(default)]
    pub raw: bool,
    /// Environment variable holding the Slack signing secret: requests
    /// without a valid Slack signature are refused at the edge.
    pub slack_signing_secret_env: Option<String>,
}

mod defaults {
    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }
    pub fn cors_methods() -> Vec<String> {
        strings(&["GET", "POST", "PUT", "DELETE"])
    }
    pub fn cors_headers() -> Vec<String> {
        strings(&["Authorization", "Content-Type"])
    }
    pub fn cors_expose_headers() -> Vec<String> {
        strings(&[
            "X-Request-Id",
            "Retry-After",
            "RateLimit-Limit",
            "RateLimit-Remaining",
            "RateLimit-Reset",
        ])
    }
    pub fn cors_max_age_seconds() -> u32 {
        3600
    }
    pub fn compression_min_size_bytes() -> u64 {
        256
    }
    pub fn rate_limit_max_keys() -> usize {
        100_000
    }
    pub fn log_level() -> String {
        "info".into()
    }
    pub fn log_format() -> super::LogFormat {
        super::LogFormat::Json
    }
    pub fn log_destination() -> String {
        "stdout".into()
    }
    pub fn log_queue_capacity() -> usize {
        65_536
    }
    pub fn threads() -> usize {
        2
    }
    pub fn pid_file() -> String {
        "/tmp/robeing-gateway.pid".into()
    }
    pub fn upgrade_sock() -> String {
        "/tmp/robeing-gateway-upgrade.sock".into()
    }
    pub fn grace_period_seconds() -> u64 {
        1
    }
    pub fn graceful_shutdown_timeout_seconds() -> u64 {
        10
    }
    pub fn upstream_keepalive_pool_size() -> usize {
        256
    }
    pub fn header_timeout_ms() -> u64 {
        10_000
    }
    pub fn max_connections_per_ip() -> usize {
        256
    }
    pub fn connection_pressure_threshold() -> usize {
        10_000
    }
    pub fn max_uri_bytes() -> usize {
        8 * 1024
    }
    pub fn max_header_bytes() -> usize {
        32 * 1024
    }
    pub fn max_body_bytes() -> u64 {
        100 * 1024 * 1024
    }
    pub fn username_claim() -> String {
        "username".into()
    }
    pub fn leeway_seconds() -> u64 {
        30
    }
    pub fn max_token_bytes() -> usize {
        8 * 1024
    }
    pub fn verified_token_cache() -> usize {
        10_000
    }
    pub fn query() -> String {
        r#"SELECT id FROM "user" WHERE username = $1"#.into()
    }
    pub fn pool_size() -> usize {
        16
    }
    pub fn query_timeout_ms() -> u64 {
        2_000
    }
    pub fn cache_ttl_seconds() -> u64 {
        300
    }
    pub fn negative_cache_ttl_seconds() -> u64 {
        10
    }
    pub fn stale_if_error_seconds() -> u64 {
        300
    }
    pub fn cache_capacity() -> usize {
        100_000
    }
    pub fn connect_timeout_ms() -> u64 {
        2_000
    }
    pub fn read_timeout_ms() -> u64 {
        30_000
    }
    pub fn write_timeout_ms() -> u64 {
        30_000
    }
    pub fn idle_timeout_ms() -> u64 {
        60_000
    }
    pub fn auth_required() -> bool {
        true
    }
}

/// Where a route entry is, for error messages: `routes[1] (line 23)`.
pub fn route_key(source: &str, index: usize, route: &Spanned<RouteConfig>, field: &str) -> String {
    let line = source[..route.span().start.min(source.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1;
    format!("routes[{index}] (line {line}).{field}")
}

/// A configuration file as read, with its text kept for error positions.
pub struct LoadedConfig {
    pub path: PathBuf,
    pub source: String,
    pub config: Config,
}

/// Reads, parses and validates the file at `path`.
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
    let source = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    load_text(path, source)
}

/// Like [`load`], for text already read from `path` (a successor's
/// configuration offered at a handoff).
pub fn load_text(path: &Path, source: String) -> Result<LoadedConfig, ConfigError> {
    let config = parse(&source).map_err(|e| match e {
        ConfigError::Parse { message, .. } => ConfigError::Parse {
            path: path.to_owned(),
            message,
        },
        other => other,
    })?;
    Ok(LoadedConfig {
        path: path.to_owned(),
        source,
        config,
    })
}

/// Parses and validates configuration text.
pub fn parse(source: &str) -> Result<Config, ConfigError> {
    let config: Config = toml::from_str(source).map_err(|e| ConfigError::Parse {
        path: PathBuf::from("<config>"),
        message: e.to_string(),
    })?;
    validate(&config, source)?;
    Ok(config)
}

fn positive(key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::invalid(key, "must be greater than 0"));
    }
    Ok(())
}

fn validate(config: &Config, source: &str) -> Result<(), ConfigError> {
    let server = &config.server;
    if server.listen.is_empty() {
        return Err(ConfigError::invalid(
            "server.listen",
            "needs at least one address",
        ));
    }
    for (i, addr) in server.listen.iter().enumerate() {
        addr.parse::<SocketAddr>().map_err(|_| {
            ConfigError::invalid(
                format!("server.listen[{i}]"),
                format!("'{addr}' is not an IP:port address"),
            )
        })?;
    }
    if server.threads == 0 {
        return Err(ConfigError::invalid("server.threads", "must be at least 1"));
    }
    positive("server.max_body_bytes", server.max_body_bytes)?;
    positive("server.max_uri_bytes", server.max_uri_bytes as u64)?;
    positive("server.header_timeout_ms", server.header_timeout_ms)?;
    positive("server.max_header_bytes", server.max_header_bytes as u64)?;
    if server.grace_period_seconds > server.graceful_shutdown_timeout_seconds {
        return Err(ConfigError::invalid(
            "server.grace_period_seconds",
            "must not exceed server.graceful_shutdown_timeout_seconds",
        ));
    }

    if let Some(admin) = &config.admin {
        let addr = admin.listen.parse::<SocketAddr>().map_err(|_| {
            ConfigError::invalid(
                "admin.listen",
                format!("'{}' is not an IP:port address", admin.listen),
            )
        })?;
        if server
            .listen
            .iter()
            .any(|l| l.parse::<SocketAddr>().ok() == Some(addr))
        {
            return Err(ConfigError::invalid(
                "admin.listen",
                "must differ from every server.listen address",
            ));
        }
    }
    for (i, cidr) in server.trusted_proxies.iter().enumerate() {
        parse_cidr(cidr)
            .map_err(|m| ConfigError::invalid(format!("server.trusted_proxies[{i}]"), m))?;
    }
    if config.compression.level > 9 {
        return Err(ConfigError::invalid(
            "compression.level",
            "must be 0 (off) to 9",
        ));
    }
    if let Some(limit) = &config.rate_limit {
        positive(
            "rate_limit.requests_per_minute",
            u64::from(limit.requests_per_minute),
        )?;
        positive("rate_limit.max_keys", limit.max_keys as u64)?;
    }
    let log = &config.log;
    if log.level.parse::<log::LevelFilter>().is_err() {
        return Err(ConfigError::invalid(
            "log.level",
            format!(
                "'{}' is not one of off, error, warn, info, debug, trace",
                log.level
            ),
        ));
    }
    if log.destination.trim().is_empty() {
        return Err(ConfigError::invalid(
            "log.destination",
            "must be stdout, stderr, off or a file path",
        ));
    }
    positive("log.queue_capacity", log.queue_capacity as u64)?;

    let auth = &config.auth;
    match (&auth.secret_env, &auth.secret_file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(
                "auth",
                "set one of secret_env and secret_file, not both",
            ))
        }
        (None, None) => {
            return Err(ConfigError::invalid(
                "auth",
                "set secret_env or secret_file (the secret itself never goes in this file)",
            ))
        }
        _ => {}
    }
    if auth.username_claim.is_empty() {
        return Err(ConfigError::invalid(
            "auth.username_claim",
            "must not be empty",
        ));
    }
    if auth.max_token_bytes < 64 {
        return Err(ConfigError::invalid(
            "auth.max_token_bytes",
            "must be at least 64",
        ));
    }

    let users = &config.users;
    match users.source {
        UserSource::Postgres => {
            if users.database_url_env.as_deref().unwrap_or("").is_empty() {
                return Err(ConfigError::invalid(
                    "users.database_url_env",
                    "is required when source = \"postgres\"",
                ));
            }
            if !users.query.contains("$1") {
                return Err(ConfigError::invalid(
                    "users.query",
                    "must take the username as parameter $1",
                ));
            }
            if users.pool_size == 0 {
                return Err(ConfigError::invalid(
                    "users.pool_size",
                    "must be at least 1",
                ));
            }
        }
        UserSource::File => {
            if users.users.is_none() {
                return Err(ConfigError::invalid(
                    "users.users",
                    "is required when source = \"file\" (path of a username = \"uuid\" table)",
                ));
            }
        }
    }
    positive("users.query_timeout_ms", users.query_timeout_ms)?;
    positive("users.cache_ttl_seconds", users.cache_ttl_seconds)?;
    positive("users.cache_capacity", users.cache_capacity as u64)?;

    let up = &config.upstream;
    positive("upstream.connect_timeout_ms", up.connect_timeout_ms)?;
    positive("upstream.read_timeout_ms", up.read_timeout_ms)?;
    positive("upstream.write_timeout_ms", up.write_timeout_ms)?;
    positive("upstream.idle_timeout_ms", up.idle_timeout_ms)?;

    if config.routes.is_empty() {
        return Err(ConfigError::invalid(
            "routes",
            "needs at least one [[routes]] entry",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, spanned) in config.routes.iter().enumerate() {
        let route = spanned.get_ref();
        let key = |field: &str| route_key(source, i, spanned, field);
        validate_route_path(&route.path).map_err(|m| ConfigError::invalid(key("path"), m))?;
        if !seen.insert(route.path.as_str()) {
            return Err(ConfigError::invalid(
                key("path"),
                format!("'{}' is already used by an earlier route", route.path),
            ));
        }
        if route.service.trim().is_empty() {
            return Err(ConfigError::invalid(key("service"), "must not be empty"));
        }
        if route.host.trim().is_empty() {
            return Err(ConfigError::invalid(key("host"), "must not be empty"));
        }
        if route.port == 0 {
            return Err(ConfigError::invalid(key("port"), "must be 1..=65535"));
        }
        for (field, value) in [
            ("connect_timeout_ms", route.connect_timeout_ms),
            ("read_timeout_ms", route.read_timeout_ms),
            ("write_timeout_ms", route.write_timeout_ms),
            ("idle_timeout_ms", route.idle_timeout_ms),
            ("max_body_bytes", route.max_body_bytes),
        ] {
            if value == Some(0) {
                return Err(ConfigError::invalid(key(field), "must be greater than 0"));
            }
        }
    }
    Ok(())
}

/// A CIDR (`127.0.0.1/32`) or a single address (`::1`).
pub fn parse_cidr(text: &str) -> Result<ipnet::IpNet, String> {
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("'{text}' is not an address or CIDR"))
}

fn validate_route_path(pattern: &str) -> Result<(), String> {
    if pattern_segments(pattern).is_none() {
        return Err(format!(
            "'{pattern}' must start with '/' and end with '/*' (e.g. \"/api/auth/*\")"
        ));
    }
    let prefix = &pattern[..pattern.len() - 1];
    match normalize_path(prefix) {
        Ok(normal) if normal == prefix => Ok(()),
        _ => Err(format!(
            "'{pattern}' is not a normalized path (no '//', '.', '..' or encoded characters)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[server]
listen = ["127.0.0.1:8100"]

[auth]
secret_env = "GATEWAY_JWT_SECRET"

[users]
source = "file"
users = "conf/users.toml"

[[routes]]
path = "/api/auth/*"
service = "auth-server"
host = "127.0.0.1"
port = 9000
auth_required = false
"#;

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.server.threads, 2);
        assert_eq!(c.auth.username_claim, "username");
        assert_eq!(
            c.users.query,
            r#"SELECT id FROM "user" WHERE username = $1"#
        );
        assert_eq!(c.upstream.connect_timeout_ms, 2_000);
        assert!(!c.routes[0].get_ref().auth_required);
    }

    #[test]
    fn unknown_keys_are_named() {
        let text = MINIMAL
            .replace("threads", "x")
            .replace("[auth]", "[auth]\nsecret = \"inline\"");
        let e = err(&text);
        assert!(e.contains("unknown field `secret`"), "{e}");
        assert!(e.contains("line"), "{e}");
    }

    #[test]
    fn route_errors_name_index_line_and_field() {
        let text = format!(
            "{MINIMAL}\n[[routes]]\npath = \"/api/x\"\nservice = \"x\"\nhost = \"127.0.0.1\"\nport = 1\n"
        );
        let e = err(&text);
        assert!(e.starts_with("routes[1] (line 19).path:"), "{e}");
        let dup = format!(
            "{MINIMAL}{}",
            &MINIMAL[MINIMAL.find("[[routes]]").unwrap()..]
        );
        assert!(err(&dup).contains("already used"));
        let port = MINIMAL.replace("port = 9000", "port = 0");
        assert!(err(&port).contains(".port: must be 1..=65535"));
        let unnormal = MINIMAL.replace("/api/auth/*", "/api/../auth/*");
        assert!(err(&unnormal).contains("not a normalized path"));
    }

    #[test]
    fn secrets_and_sources_are_checked() {
        let both = MINIMAL.replace(
            "secret_env = \"GATEWAY_JWT_SECRET\"",
            "secret_env = \"A\"\nsecret_file = \"/x\"",
        );
        assert!(err(&both).starts_with("auth: set one of"));
        let pg = MINIMAL.replace("source = \"file\"", "source = \"postgres\"");
        assert!(err(&pg).starts_with("users.database_url_env:"));
        let no_file = MINIMAL.replace("users = \"conf/users.toml\"", "");
        assert!(err(&no_file).starts_with("users.users:"));
        let listen = MINIMAL.replace("127.0.0.1:8100", "localhost");
        assert!(err(&listen).starts_with("server.listen[0]:"));
    }
}

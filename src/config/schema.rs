//! The schema of the configuration file: one type per section, with the
//! defaults of every key (README, "Configuration reference").

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

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
    /// Spans exported over OTLP; none if absent (trace context is still
    /// propagated).
    pub tracing: Option<TracingConfig>,
    pub routes: Vec<Spanned<RouteConfig>>,
}

impl Config {
    /// `rate_limit.ipv6_prefix_length`, or its default without `[rate_limit]`.
    pub fn ipv6_prefix_length(&self) -> u8 {
        self.rate_limit
            .as_ref()
            .map_or_else(defaults::ipv6_prefix_length, |l| l.ipv6_prefix_length)
    }
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
    /// `local` (default: this process's counters) or `redis` (one budget
    /// shared by every instance).
    #[serde(default)]
    pub store: Word<LimitStore>,
    /// Environment variable holding the Redis URL (`store = "redis"`).
    pub redis_url_env: Option<String>,
    /// PEM roots a `rediss://` server's certificate must chain to (else the
    /// system's).
    pub redis_ca_file: Option<PathBuf>,
    /// Budget of one decision in Redis.
    #[serde(default = "defaults::store_timeout_ms")]
    pub store_timeout_ms: u64,
    /// What decides while Redis cannot: `local`, `allow` or `deny`.
    #[serde(default)]
    pub on_store_error: Word<StoreFallback>,
    /// An IPv6 client is keyed by this many leading bits (anonymous limits,
    /// the first-sight budget, the per-address connection cap): one
    /// subscriber holds a whole /64.
    #[serde(default = "defaults::ipv6_prefix_length")]
    pub ipv6_prefix_length: u8,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: String,
    /// Client CIDRs allowed to connect; others are closed before HTTP.
    /// Required when `listen` is not a loopback address.
    #[serde(default, deserialize_with = "cidrs")]
    pub allow_from: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

/// `[tracing]`: one server span per request, exported over OTLP/HTTP.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// The collector's full traces URL, used as is (like
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), `http://` or `https://`.
    pub otlp_endpoint: String,
    /// Share of fresh traces recorded (0.0 to 1.0); a caller's sampled
    /// flag is followed.
    #[serde(default = "defaults::sample_ratio")]
    pub sample_ratio: f64,
    #[serde(default = "defaults::trace_service_name")]
    pub service_name: String,
    /// Environment variable holding `key=value,...` headers for the
    /// collector (an API key: never in this file).
    pub headers_env: Option<String>,
    /// The user's UUID as `enduser.id` (the username never).
    #[serde(default)]
    pub record_user_id: bool,
    /// How long a span may wait for its batch (OpenTelemetry's batch
    /// processor: `OTEL_BSP_SCHEDULE_DELAY`, 5 s); a full batch goes at once.
    #[serde(default = "defaults::trace_export_interval_ms")]
    pub export_interval_ms: u64,
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
    /// Lines one proxy thread may hold for the writer; beyond it lines are
    /// counted and dropped.
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
    /// TLS listeners (`[[server.tls]]`).
    #[serde(default)]
    pub tls: Vec<TlsListenerConfig>,
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
    /// On SIGTERM, `/readyz` answers 503 at once but the listeners keep
    /// serving this long before the drain (an orchestrator removes the
    /// instance from its endpoints some time after it sent SIGTERM).
    #[serde(default)]
    pub shutdown_delay_seconds: u64,
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
    /// A client connection with no request in progress (HTTP/1.1 between
    /// requests, HTTP/2 with no open stream) is closed after this.
    #[serde(default = "defaults::client_idle_timeout_seconds")]
    pub client_idle_timeout_seconds: u64,
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
    /// CIDRs or single addresses, parsed here once.
    #[serde(default, deserialize_with = "cidrs")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Request-body bytes held for signature checks (Slack routes) by the
    /// whole process; past it a new signed request gets 503 at once.
    #[serde(default = "defaults::max_buffered_body_bytes")]
    pub max_buffered_body_bytes: u64,
    /// `;` parameters in a path segment (`/admin;x/y`) are refused with 400
    /// unless this is set: frameworks that strip them would serve another
    /// path than the one the route was decided on.
    #[serde(default)]
    pub allow_path_parameters: bool,
    /// Pingora's multi-thread (work-stealing) runtime instead of one runtime
    /// per thread. Off: measured 2.3x the throughput with one thread.
    #[serde(default)]
    pub work_stealing: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The one-key shorthand: an HS256 key without a `kid`.
    pub secret_env: Option<String>,
    pub secret_file: Option<PathBuf>,
    /// Several keys, selected by the token's `kid` (instead of the shorthand).
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// Keys fetched from a JWKS endpoint, beside or instead of static keys.
    pub jwks: Option<JwksConfig>,
    #[serde(default = "defaults::username_claim")]
    pub username_claim: String,
    #[serde(default = "defaults::leeway_seconds")]
    pub leeway_seconds: u64,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// With asymmetric keys or JWKS, `audience` is required unless this is
    /// written out: tokens for any application of the provider pass.
    #[serde(default)]
    pub allow_any_audience: bool,
    /// Tokens seen for the first time (not remembered as verified) per
    /// client address and minute, before their signature is checked; past
    /// it, 429 without verifying. 0 turns it off.
    #[serde(default = "defaults::first_sight_per_ip_per_minute")]
    pub first_sight_per_ip_per_minute: u32,
    /// Tokens longer than this are refused before any decoding.
    #[serde(default = "defaults::max_token_bytes")]
    pub max_token_bytes: usize,
    /// Tokens that verified, remembered (exact bytes) until they expire, so a
    /// client's next request skips the HMAC and JSON work. 0 turns it off.
    #[serde(default = "defaults::verified_token_cache")]
    pub verified_token_cache: usize,
    /// Claims of a verified token sent upstream as headers.
    #[serde(default)]
    pub claim_headers: Vec<ClaimHeaderConfig>,
}

/// One `[[auth.claim_headers]]` entry: a claim of a verified token, sent
/// upstream as `header` (stripped from every client request).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimHeaderConfig {
    /// A top-level claim, or a dotted path into an object claim (`org.id`).
    pub claim: String,
    pub header: String,
}

/// One `[[server.tls]]` listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListenerConfig {
    pub listen: String,
    /// PEM: the certificate chain, end-entity first.
    pub cert_file: PathBuf,
    /// PEM: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// ALPN h2 and http/1.1; false: http/1.1 only.
    #[serde(default = "defaults::http2")]
    pub http2: bool,
    /// "1.2" or "1.3".
    #[serde(default)]
    pub min_version: Word<MinVersion>,
    /// `Strict-Transport-Security: max-age=N` on this listener's responses.
    pub hsts_max_age_seconds: Option<u64>,
    /// Returning clients may resume their session (TLS 1.3 tickets, TLS 1.2
    /// session ids, kept in the process); false: every handshake is full.
    #[serde(default = "defaults::session_resumption")]
    pub session_resumption: bool,
}

/// One `[[auth.keys]]` entry: a key pinned to one algorithm.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub kid: String,
    /// HS256, RS256, ES256 or EdDSA.
    pub algorithm: Word<jsonwebtoken::Algorithm>,
    /// HS256: where the secret is (never in this file).
    pub secret_env: Option<String>,
    pub secret_file: Option<PathBuf>,
    /// RS256, ES256, EdDSA: the PEM public key.
    pub public_key_file: Option<PathBuf>,
    /// RFC 3339 instant after which the key verifies nothing.
    pub verify_until: Option<String>,
}

/// `[auth.jwks]`: a key set fetched and refreshed from a URL.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksConfig {
    /// `https://`, or `http://` to a loopback address.
    pub url: String,
    #[serde(default = "defaults::jwks_refresh_seconds")]
    pub refresh_seconds: u64,
    #[serde(default = "defaults::jwks_timeout_ms")]
    pub timeout_ms: u64,
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
    /// PostgreSQL channel to LISTEN on (payload: a username whose row
    /// changed); each notification evicts that user from the cache.
    pub notify_channel: Option<String>,
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
    /// Upstream names are resolved again this often (off the request path).
    #[serde(default = "defaults::resolve_interval_seconds")]
    pub resolve_interval_seconds: u64,
    /// A name that does not resolve at load is an error; `false`: its
    /// route starts with no peer (503) until it resolves.
    #[serde(default = "defaults::resolve_at_start")]
    pub resolve_at_start: bool,
}

impl Default for UpstreamDefaults {
    fn default() -> Self {
        Self {
            connect_timeout_ms: defaults::connect_timeout_ms(),
            read_timeout_ms: defaults::read_timeout_ms(),
            write_timeout_ms: defaults::write_timeout_ms(),
            idle_timeout_ms: defaults::idle_timeout_ms(),
            resolve_interval_seconds: defaults::resolve_interval_seconds(),
            resolve_at_start: defaults::resolve_at_start(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub path: String,
    pub service: String,
    /// One peer: `host` and `port` (the shorthand of `upstreams`).
    pub host: Option<String>,
    pub port: Option<u16>,
    /// Several peers: `"IP:port"` or `"IP:port weight=N"` each.
    pub upstreams: Option<Vec<String>>,
    /// `round_robin` (default), `least_connections` or `consistent` (by
    /// user id; by client IP for anonymous requests).
    #[serde(default)]
    pub load_balancing: Word<Balancing>,
    /// `http1` (default), `h2c` (HTTP/2 without TLS, e.g. gRPC) or `h2`
    /// (HTTP/2 over TLS).
    #[serde(default)]
    pub protocol: Word<UpstreamProtocol>,
    /// With `h2`: PEM roots the peers' certificates must chain to (else
    /// the system's), and the name to check (else the peer's host).
    pub tls_ca_file: Option<String>,
    pub tls_server_name: Option<String>,
    /// Active checks of the route's peers; without it, passive ejection only.
    pub health_check: Option<HealthCheckConfig>,
    /// Further tries on other peers after a failure that is safe to retry.
    pub max_retries: Option<u32>,
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
    /// Claims the token must carry here, `{ claim = value }` or
    /// `{ claim = [values] }` (any of them); else 403 `FORBIDDEN`.
    pub require_claims: Option<toml::Table>,
}

/// `[routes.health_check]`: an HTTP GET of `path` expecting 2xx, or a TCP
/// connect without `path`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    pub path: Option<String>,
    #[serde(default = "defaults::health_interval_ms")]
    pub interval_ms: u64,
    /// Budget of one probe (connect and answer).
    #[serde(default = "defaults::health_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "defaults::health_threshold")]
    pub unhealthy_after: u32,
    #[serde(default = "defaults::health_threshold")]
    pub healthy_after: u32,
}

/// The longest `kid` a key may have; a longer one in a token is refused
/// unseen.
pub const MAX_KID_BYTES: usize = 256;

/// A configured `kid`: printable ASCII without spaces, bounded.
pub fn is_valid_kid(kid: &str) -> bool {
    !kid.is_empty() && kid.len() <= MAX_KID_BYTES && kid.bytes().all(|b| b.is_ascii_graphic())
}

/// The prefix segments of a pattern like `/api/auth/*` (`/*` has none).
pub fn pattern_segments(pattern: &str) -> Option<impl Iterator<Item = &str>> {
    let prefix = pattern.strip_suffix("/*")?;
    let prefix = prefix
        .strip_prefix('/')
        .or(prefix.is_empty().then_some(""))?;
    Some(prefix.split('/').filter(|s| !s.is_empty()))
}

pub(crate) mod defaults;
pub mod keywords;

pub use keywords::{
    Balancing, Keyword, LimitStore, MinVersion, StoreFallback, UpstreamProtocol, Word,
};

/// A CIDR (`127.0.0.1/32`) or a single address (`::1`).
pub fn parse_cidr(text: &str) -> Result<ipnet::IpNet, String> {
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("'{text}' is not an address or CIDR"))
}

fn cidrs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|text| parse_cidr(text).map_err(serde::de::Error::custom))
        .collect()
}

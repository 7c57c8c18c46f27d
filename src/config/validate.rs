//! The checks of a parsed configuration, one function per section. Every
//! problem is collected, so a file is refused with all of them at once,
//! each naming its key (and line, for route entries).

use std::net::SocketAddr;

use toml::Spanned;

use super::schema::*;
use super::ConfigError;
use crate::wire::path::normalize_path;

mod claims;
mod peers;

pub use claims::{claim_values, folded_header_name};
use peers::peers;
pub use peers::{parse_upstream, UpstreamEntry};

/// The problems found so far.
#[derive(Debug, Default)]
pub struct Problems(Vec<ConfigError>);

impl Problems {
    pub fn push(&mut self, error: ConfigError) {
        match error {
            ConfigError::Several(all) => self.0.extend(all),
            one => self.0.push(one),
        }
    }

    pub fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.push(ConfigError::invalid(key, message));
    }

    /// Records every `(key, message)` of `found`.
    pub fn extend<K: Into<String>, M: Into<String>>(
        &mut self,
        found: impl IntoIterator<Item = (K, M)>,
    ) {
        for (key, message) in found {
            self.add(key, message);
        }
    }

    /// Records `message` for `key` unless `ok`.
    pub fn check(&mut self, ok: bool, key: impl Into<String>, message: impl Into<String>) {
        if !ok {
            self.add(key, message);
        }
    }

    fn positive(&mut self, key: &str, value: u64) {
        self.check(value > 0, key, "must be greater than 0");
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The one error, or all of them (called once something was found).
    pub fn into_error(self) -> ConfigError {
        match self.into_result() {
            Err(e) => e,
            Ok(()) => ConfigError::invalid("config", "cannot be built"),
        }
    }

    /// `Ok` when nothing was found; the one error, or all of them.
    pub fn into_result(mut self) -> Result<(), ConfigError> {
        match self.0.len() {
            0 => Ok(()),
            1 => Err(self.0.remove(0)),
            _ => Err(ConfigError::Several(self.0)),
        }
    }
}

/// Every check of every section.
pub fn validate(config: &Config, source: &str) -> Result<(), ConfigError> {
    let mut problems = Problems::default();
    server(&config.server, &mut problems);
    if let Some(admin_section) = &config.admin {
        admin(admin_section, &config.server, &mut problems);
    }
    problems.check(
        config.compression.level <= 9,
        "compression.level",
        "must be 0 (off) to 9",
    );
    if let Some(limit) = &config.rate_limit {
        problems.positive(
            "rate_limit.requests_per_minute",
            u64::from(limit.requests_per_minute),
        );
        problems.positive("rate_limit.max_keys", limit.max_keys as u64);
        limit_store(limit, &mut problems);
    }
    log(&config.log, &mut problems);
    if let Some(tracing_section) = &config.tracing {
        tracing(tracing_section, &mut problems);
    }
    auth(&config.auth, &mut problems);
    users(&config.users, &mut problems);
    upstream(&config.upstream, &mut problems);
    routes(&config.routes, source, &mut problems);
    problems.into_result()
}

fn server(server: &ServerConfig, problems: &mut Problems) {
    problems.check(
        !server.listen.is_empty() || !server.tls.is_empty(),
        "server.listen",
        "needs at least one address (or a [[server.tls]] listener)",
    );
    for (i, tls) in server.tls.iter().enumerate() {
        let at = |what: &str| format!("server.tls[{i}].{what}");
        problems.check(
            tls.listen.parse::<SocketAddr>().is_ok(),
            at("listen"),
            format!("'{}' is not an IP:port address", tls.listen),
        );
        problems.check(
            !server.listen.contains(&tls.listen)
                && !server.tls[..i].iter().any(|t| t.listen == tls.listen),
            at("listen"),
            format!("'{}' is already a listener", tls.listen),
        );
        if let Some(m) = tls.min_version.problem() {
            problems.add(at("min_version"), m);
        }
    }
    for (i, addr) in server.listen.iter().enumerate() {
        problems.check(
            addr.parse::<SocketAddr>().is_ok(),
            format!("server.listen[{i}]"),
            format!("'{addr}' is not an IP:port address"),
        );
    }
    problems.check(server.threads > 0, "server.threads", "must be at least 1");
    problems.positive("server.max_body_bytes", server.max_body_bytes);
    problems.positive(
        "server.max_buffered_body_bytes",
        server.max_buffered_body_bytes,
    );
    problems.positive("server.max_uri_bytes", server.max_uri_bytes as u64);
    problems.positive("server.header_timeout_ms", server.header_timeout_ms);
    problems.positive(
        "server.client_idle_timeout_seconds",
        server.client_idle_timeout_seconds,
    );
    problems.positive("server.max_header_bytes", server.max_header_bytes as u64);
    problems.check(
        server.shutdown_delay_seconds <= 300,
        "server.shutdown_delay_seconds",
        "must be at most 300 (an orchestrator kills the process long before)",
    );
    problems.check(
        server.grace_period_seconds <= server.graceful_shutdown_timeout_seconds,
        "server.grace_period_seconds",
        "must not exceed server.graceful_shutdown_timeout_seconds",
    );
}

fn admin(admin: &AdminConfig, server: &ServerConfig, problems: &mut Problems) {
    let Ok(addr) = admin.listen.parse::<SocketAddr>() else {
        problems.add(
            "admin.listen",
            format!("'{}' is not an IP:port address", admin.listen),
        );
        return;
    };
    let shared = server
        .listen
        .iter()
        .any(|l| l.parse::<SocketAddr>().ok() == Some(addr));
    problems.check(
        !shared,
        "admin.listen",
        "must differ from every server.listen address",
    );
    // Metrics name routes and peers, and /upstreams shows the pools: off
    // loopback, the operator says who may see them.
    problems.check(
        addr.ip().is_loopback() || !admin.allow_from.is_empty(),
        "admin.allow_from",
        format!(
            "is required when admin.listen ('{}') is not a loopback address: the CIDRs of \
             the scrapers and probes that may connect",
            admin.listen
        ),
    );
}

fn log(log: &LogConfig, problems: &mut Problems) {
    problems.check(
        log.level.parse::<log::LevelFilter>().is_ok(),
        "log.level",
        format!(
            "'{}' is not one of off, error, warn, info, debug, trace",
            log.level
        ),
    );
    problems.check(
        !log.destination.trim().is_empty(),
        "log.destination",
        "must be stdout, stderr, off or a file path",
    );
    problems.positive("log.queue_capacity", log.queue_capacity as u64);
}

/// `[tracing]`: a collector URL over HTTP(S) with a host, a ratio that is
/// a share, a service name.
fn tracing(tracing: &TracingConfig, problems: &mut Problems) {
    if let Err(m) = otlp_endpoint(&tracing.otlp_endpoint) {
        problems.add("tracing.otlp_endpoint", m);
    }
    problems.check(
        (0.0..=1.0).contains(&tracing.sample_ratio),
        "tracing.sample_ratio",
        "must be 0.0 to 1.0",
    );
    problems.check(
        !tracing.service_name.trim().is_empty(),
        "tracing.service_name",
        "must not be empty",
    );
    problems.check(
        (10..=60_000).contains(&tracing.export_interval_ms),
        "tracing.export_interval_ms",
        "must be 10 to 60000 (milliseconds)",
    );
}

/// `http://` or `https://` with a host: the collector's traces URL.
fn otlp_endpoint(url: &str) -> Result<(), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("'{url}' is not a URL: {e}"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(host)) if !host.is_empty() => Ok(()),
        _ => Err(format!(
            "'{url}' is not an http:// or https:// URL (the collector's traces URL, e.g. \
             http://127.0.0.1:4318/v1/traces)"
        )),
    }
}

fn auth(auth: &AuthConfig, problems: &mut Problems) {
    let shorthand = auth.secret_env.is_some() || auth.secret_file.is_some();
    if auth.secret_env.is_some() && auth.secret_file.is_some() {
        problems.add("auth", "set one of secret_env and secret_file, not both");
    }
    if shorthand && !auth.keys.is_empty() {
        problems.add(
            "auth.keys",
            "use either secret_env/secret_file (one key) or [[auth.keys]], not both",
        );
    }
    if !shorthand && auth.keys.is_empty() && auth.jwks.is_none() {
        problems.add(
            "auth",
            "set secret_env or secret_file, [[auth.keys]] or [auth.jwks] (secrets never go in this file)",
        );
    }
    for (i, key) in auth.keys.iter().enumerate() {
        signing_key(i, key, &auth.keys[..i], problems);
    }
    if let Some(jwks) = &auth.jwks {
        if let Err(m) = jwks_url(&jwks.url) {
            problems.add("auth.jwks.url", m);
        }
        problems.check(
            (1..=86_400).contains(&jwks.refresh_seconds),
            "auth.jwks.refresh_seconds",
            "must be 1 to 86400",
        );
        problems.check(
            (1..=60_000).contains(&jwks.timeout_ms),
            "auth.jwks.timeout_ms",
            "must be 1 to 60000",
        );
    }
    // A shared identity provider signs tokens for every application it
    // serves: without an audience, this gateway would accept theirs.
    let shared_idp = auth.jwks.is_some()
        || auth.keys.iter().any(|k| {
            k.algorithm
                .known()
                .is_some_and(|a| a != jsonwebtoken::Algorithm::HS256)
        });
    problems.check(
        !shared_idp || auth.audience.is_some() || auth.allow_any_audience,
        "auth.audience",
        "is required with RS256/ES256/EdDSA keys or [auth.jwks] (a shared identity provider \
         signs tokens for other applications too); set it, or write allow_any_audience = true",
    );
    problems.check(
        !auth.allow_any_audience || auth.audience.is_none(),
        "auth.allow_any_audience",
        "contradicts auth.audience; set one of them",
    );
    problems.check(
        !auth.username_claim.is_empty(),
        "auth.username_claim",
        "must not be empty",
    );
    problems.check(
        auth.max_token_bytes >= 64,
        "auth.max_token_bytes",
        "must be at least 64",
    );
    claims::claim_headers(auth, problems);
}

/// One `[[auth.keys]]` entry: a usable, unique `kid`; the sources its
/// algorithm needs and no others. (The material is read when the state is
/// built.)
fn signing_key(i: usize, key: &KeyConfig, earlier: &[KeyConfig], problems: &mut Problems) {
    let at = |what: &str| format!("auth.keys[{i}].{what}");
    if !is_valid_kid(&key.kid) {
        problems.add(
            at("kid"),
            format!("must be 1 to {MAX_KID_BYTES} printable ASCII characters without spaces"),
        );
    } else if earlier.iter().any(|k| k.kid == key.kid) {
        problems.add(
            at("kid"),
            format!("'{}' is used by an earlier key", key.kid),
        );
    }
    let algorithm = match key.algorithm.parsed() {
        Ok(algorithm) => algorithm,
        Err(message) => return problems.add(at("algorithm"), message),
    };
    let secret = key.secret_env.is_some() || key.secret_file.is_some();
    if algorithm == jsonwebtoken::Algorithm::HS256 {
        if key.public_key_file.is_some() {
            problems.add(
                at("public_key_file"),
                "an HS256 key has a secret, not a public key",
            );
        }
        if key.secret_env.is_some() == key.secret_file.is_some() {
            problems.add(
                at("secret_env"),
                "an HS256 key needs exactly one of secret_env and secret_file",
            );
        }
    } else {
        if secret {
            problems.add(
                at("secret_env"),
                format!(
                    "a {} key has a public_key_file, not a secret",
                    key.algorithm
                ),
            );
        }
        if key.public_key_file.is_none() {
            problems.add(
                at("public_key_file"),
                format!("a {} key needs a public_key_file", key.algorithm),
            );
        }
    }
}

/// `https://`, or `http://` to a loopback address: a key set fetched in
/// the clear from elsewhere could be anyone's.
pub fn jwks_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    let host = uri.host().ok_or("the URL has no host")?;
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") => {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = bare.eq_ignore_ascii_case("localhost")
                || bare
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(())
            } else {
                Err("http:// is only for loopback addresses; use https://".into())
            }
        }
        _ => Err("must be an https:// URL (or http:// to loopback)".into()),
    }
}

fn users(users: &UsersConfig, problems: &mut Problems) {
    match users.source {
        UserSource::Postgres => {
            problems.check(
                !users.database_url_env.as_deref().unwrap_or("").is_empty(),
                "users.database_url_env",
                "is required when source = \"postgres\"",
            );
            problems.check(
                users.query.contains("$1"),
                "users.query",
                "must take the username as parameter $1",
            );
            problems.check(users.pool_size > 0, "users.pool_size", "must be at least 1");
        }
        UserSource::File => problems.check(
            users.users.is_some(),
            "users.users",
            "is required when source = \"file\" (path of a username = \"uuid\" table)",
        ),
    }
    problems.positive("users.query_timeout_ms", users.query_timeout_ms);
    problems.positive("users.cache_ttl_seconds", users.cache_ttl_seconds);
    problems.positive("users.cache_capacity", users.cache_capacity as u64);
    if let Some(channel) = &users.notify_channel {
        problems.check(
            users.source == UserSource::Postgres,
            "users.notify_channel",
            "needs source = \"postgres\"",
        );
        problems.check(
            is_identifier(channel),
            "users.notify_channel",
            format!("'{channel}' is not a plain PostgreSQL identifier ([a-z_][a-z0-9_]*, at most 63 bytes)"),
        );
    }
}

/// A lower-case, unquoted PostgreSQL identifier: safe in `LISTEN <name>`.
fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
        && name.len() <= 63
}

fn upstream(up: &UpstreamDefaults, problems: &mut Problems) {
    problems.positive("upstream.connect_timeout_ms", up.connect_timeout_ms);
    problems.positive(
        "upstream.resolve_interval_seconds",
        up.resolve_interval_seconds,
    );
    problems.positive("upstream.read_timeout_ms", up.read_timeout_ms);
    problems.positive("upstream.write_timeout_ms", up.write_timeout_ms);
    problems.positive("upstream.idle_timeout_ms", up.idle_timeout_ms);
}

fn routes(routes: &[Spanned<RouteConfig>], source: &str, problems: &mut Problems) {
    problems.check(
        !routes.is_empty(),
        "routes",
        "needs at least one [[routes]] entry",
    );
    let mut seen = std::collections::HashSet::new();
    for (i, spanned) in routes.iter().enumerate() {
        let route = spanned.get_ref();
        let key = |field: &str| route_key(source, i, spanned, field);
        if let Err(message) = validate_route_path(&route.path) {
            problems.add(key("path"), message);
        } else if !seen.insert(route.path.as_str()) {
            problems.add(
                key("path"),
                format!("'{}' is already used by an earlier route", route.path),
            );
        }
        problems.check(
            !route.service.trim().is_empty(),
            key("service"),
            "must not be empty",
        );
        peers(route, &key, problems);
        claims::require_claims(route, &key, problems);
        for (field, value) in [
            ("connect_timeout_ms", route.connect_timeout_ms),
            ("read_timeout_ms", route.read_timeout_ms),
            ("write_timeout_ms", route.write_timeout_ms),
            ("idle_timeout_ms", route.idle_timeout_ms),
            ("max_body_bytes", route.max_body_bytes),
        ] {
            problems.check(value != Some(0), key(field), "must be greater than 0");
        }
    }
}

/// `[rate_limit]`'s store keys: a known store, its URL variable, a
/// fallback mode and a positive budget.
fn limit_store(limit: &RateLimitConfig, problems: &mut Problems) {
    problems.check(
        (32..=128).contains(&limit.ipv6_prefix_length),
        "rate_limit.ipv6_prefix_length",
        "must be 32 to 128",
    );
    match limit.store.parsed() {
        Ok(LimitStore::Local) => {}
        Ok(LimitStore::Redis) => problems.check(
            limit.redis_url_env.is_some(),
            "rate_limit.redis_url_env",
            "is needed with store = \"redis\" (the variable holding the Redis URL)",
        ),
        Err(message) => problems.add("rate_limit.store", message),
    }
    if let Some(message) = limit.on_store_error.problem() {
        problems.add("rate_limit.on_store_error", message);
    }
    problems.positive("rate_limit.store_timeout_ms", limit.store_timeout_ms);
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

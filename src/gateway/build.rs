//! How a [`Gateway`] is built from a validated configuration: secrets,
//! user source, hosts resolved, each route's pool, the limiter; what did
//! not change is kept from the state it replaces.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use pingora::upstreams::peer::HttpPeer;

use crate::auth::claims::{ClaimHeader, ClaimPath, ClaimRules};
use crate::auth::database::Database;
use crate::auth::identity::IdentityCache;
use crate::auth::jwks::Jwks;
use crate::auth::keys::load_keys;
use crate::auth::notify::NotifySource;
use crate::auth::token::{base_validation, JwtVerifier};
use crate::config::validate::Problems;
use crate::config::validate::{parse_upstream, UpstreamEntry};
use crate::config::{
    route_key, AuthConfig, Config, ConfigError, LimitStore, LoadedConfig, RateLimitConfig,
    RouteConfig, TracingConfig, UpstreamDefaults, UpstreamProtocol, UserSource, UsersConfig,
};
use crate::edge::cors::CorsPolicy;
use crate::edge::limits::RateLimiter;
use crate::edge::shared_limits::SharedLimiter;
use crate::observe::metrics::RouteMetrics;
use crate::observe::traces::{parse_headers, SpanExport};
use crate::routing::policy::{RoutePolicy, RouteTimeouts};
use crate::routing::table::{Route, RouteTable};

use super::Gateway;
use crate::upstream::{names, protocol, Pool, PoolEntry, UpstreamRegistry, UpstreamTls};
use jsonwebtoken::Validation;

impl Gateway {
    /// Builds the state, reading secrets and user files and resolving
    /// hosts; with `previous`, keeps its PostgreSQL pool and identity cache
    /// when `[users]` did not change (a file source is always re-read: its
    /// file may have), and its rate-limit counters.
    pub fn rebuild(loaded: &LoadedConfig, previous: Option<&Gateway>) -> Result<Self, ConfigError> {
        let config = &loaded.config;
        let mut problems = Problems::default();
        let base = base_validation(&config.auth);
        let keys = load_keys(&config.auth, &base).map_err(|e| problems.push(e));
        let identity = identity_cache(previous, &config.users).map_err(|e| problems.push(e));
        let cors = config
            .cors
            .as_ref()
            .map(CorsPolicy::new)
            .transpose()
            .map_err(|e| problems.push(e));
        let mut upstreams = UpstreamRegistry::new(Duration::from_secs(
            config.upstream.resolve_interval_seconds.max(1),
        ));
        let routes = route_table(
            loaded,
            &mut upstreams,
            previous.map(|p| &*p.upstreams),
            &mut problems,
        );
        let limiter_keys = limiter_keys(config);
        let shared_limiter =
            shared_limiter(config.rate_limit.as_ref()).map_err(|e| problems.push(e));
        let user_notify = notify_source(&config.users).map_err(|e| problems.push(e));
        let tls = crate::tls::listeners(&config.server.tls, previous.map_or(&[], |p| &*p.tls))
            .map_err(|found| problems.extend(found));
        let (Ok(keys), Ok(identity), Ok(cors), Ok(shared_limiter), Ok(user_notify), Ok(tls), true) = (
            keys,
            identity,
            cors,
            shared_limiter,
            user_notify,
            tls,
            problems.is_empty(),
        ) else {
            return Err(problems.into_error());
        };
        // Last: only a configuration that is otherwise good fetches keys
        // or starts an exporter.
        let traces = span_export(config.tracing.as_ref(), previous)?;
        let jwks = jwks(&config.auth, &base, previous);
        let claim_rules = claim_rules(config);
        Ok(Self {
            routes,
            tls: tls.into(),
            claim_headers: claim_rules
                .headers
                .iter()
                .map(|h| h.header.clone())
                .collect(),
            jwt: JwtVerifier::new(&config.auth, keys, jwks).with_claim_rules(claim_rules),
            identity,
            users: config.users.clone(),
            limiter: rate_limiter(previous, limiter_keys),
            shared_limiter,
            limiter_keys,
            trusted_proxies: config.server.trusted_proxies.clone(),
            compression: config.compression.clone(),
            max_uri_bytes: config.server.max_uri_bytes,
            max_header_bytes: config.server.max_header_bytes,
            allow_path_parameters: config.server.allow_path_parameters,
            first_sight_per_minute: config.auth.first_sight_per_ip_per_minute,
            max_buffered_body_bytes: config.server.max_buffered_body_bytes,
            ipv6_prefix_length: config.ipv6_prefix_length(),
            cors,
            upstreams: Arc::new(upstreams),
            user_notify,
            traces,
        })
    }
}

/// The claims taken from every verified token: the claim headers, and each
/// claim some route requires (once).
fn claim_rules(config: &Config) -> ClaimRules {
    let headers = config
        .auth
        .claim_headers
        .iter()
        .filter_map(|entry| {
            Some(ClaimHeader {
                claim: ClaimPath::new(&entry.claim),
                header: HeaderName::from_bytes(entry.header.as_bytes()).ok()?,
            })
        })
        .collect();
    let mut required: Vec<ClaimPath> = Vec::new();
    for route in &config.routes {
        for claim in route
            .get_ref()
            .require_claims
            .iter()
            .flatten()
            .map(|(c, _)| c)
        {
            let path = ClaimPath::new(claim);
            if !required.contains(&path) {
                required.push(path);
            }
        }
    }
    ClaimRules { headers, required }
}

/// Counters the local limiter keeps: the first-sight budget counts in the
/// same limiter, so it needs room even without a `[rate_limit]` section.
fn limiter_keys(config: &Config) -> usize {
    match (
        &config.rate_limit,
        config.auth.first_sight_per_ip_per_minute,
    ) {
        (Some(limit), _) => limit.max_keys,
        (None, 0) => 1,
        (None, _) => crate::config::schema::defaults::rate_limit_max_keys(),
    }
}

/// The previous identity cache (and its pool) while `[users]` is the same
/// PostgreSQL source, else a new one.
fn identity_cache(
    previous: Option<&Gateway>,
    users: &UsersConfig,
) -> Result<Arc<IdentityCache>, ConfigError> {
    match previous {
        Some(old) if old.users == *users && users.source == UserSource::Postgres => {
            Ok(old.identity.clone())
        }
        _ => Ok(Arc::new(IdentityCache::from_config(users)?)),
    }
}

/// The LISTEN connection's settings, when `[users]` names a channel.
fn notify_source(users: &UsersConfig) -> Result<Option<NotifySource>, ConfigError> {
    let Some(channel) = &users.notify_channel else {
        return Ok(None);
    };
    let var = users.database_url_env.as_deref().unwrap_or_default();
    let key = "users.database_url_env";
    let url = crate::config::env::text(var).map_err(|m| ConfigError::invalid(key, m))?;
    let mut database =
        Database::parse(&url).map_err(|m| ConfigError::invalid(key, format!("{var}: {m}")))?;
    database.config.connect_timeout(Duration::from_secs(2));
    Ok(Some(NotifySource {
        database,
        channel: channel.clone(),
    }))
}

/// The `[auth.jwks]` set: `previous`'s when the endpoint and the claim
/// checks are the same (a SIGHUP neither refetches nor blocks), else
/// fetched now.
fn jwks(auth: &AuthConfig, base: &Validation, previous: Option<&Gateway>) -> Option<Arc<Jwks>> {
    let config = auth.jwks.as_ref()?;
    match previous.and_then(|p| p.jwt.jwks()) {
        Some(old) if old.config == *config && old.base() == base => Some(old.clone()),
        _ => Some(Jwks::start(config, base)),
    }
}

/// The span export of `[tracing]`: `previous`'s while the section is the
/// same (its thread and queue go on), else a new one with the collector
/// headers read from `headers_env`.
fn span_export(
    tracing: Option<&TracingConfig>,
    previous: Option<&Gateway>,
) -> Result<Option<Arc<SpanExport>>, ConfigError> {
    let Some(tracing) = tracing else {
        return Ok(None);
    };
    if let Some(old) = previous.and_then(|p| p.traces.as_ref()) {
        if old.config == *tracing {
            return Ok(Some(old.clone()));
        }
    }
    let key = "tracing.headers_env";
    let headers = match &tracing.headers_env {
        None => Default::default(),
        Some(var) => {
            let text = crate::config::env::text(var).map_err(|m| ConfigError::invalid(key, m))?;
            parse_headers(&text).map_err(|m| ConfigError::invalid(key, format!("{var}: {m}")))?
        }
    };
    SpanExport::start(tracing, headers)
        .map(|export| Some(Arc::new(export)))
        .map_err(|m| ConfigError::invalid("tracing.otlp_endpoint", m))
}

/// The Redis store of `[rate_limit]`, when it names one: its URL read
/// from the environment and checked now.
fn shared_limiter(
    limit: Option<&RateLimitConfig>,
) -> Result<Option<Arc<SharedLimiter>>, ConfigError> {
    let Some(limit) = limit.filter(|l| l.store.get() == LimitStore::Redis) else {
        return Ok(None);
    };
    let key = "rate_limit.redis_url_env";
    let var = limit.redis_url_env.as_deref().unwrap_or_default();
    let url = crate::config::env::text(var).map_err(|m| ConfigError::invalid(key, m))?;
    let fallback = limit.on_store_error.get();
    let root_cert = match &limit.redis_ca_file {
        None => None,
        Some(path) => {
            let ca_key = "rate_limit.redis_ca_file";
            if !url.starts_with("rediss://") {
                return Err(ConfigError::invalid(
                    ca_key,
                    format!("needs a rediss:// URL in {var} (TLS)"),
                ));
            }
            let pem = std::fs::read(path).map_err(|e| {
                ConfigError::invalid(ca_key, format!("{}: cannot read: {e}", path.display()))
            })?;
            crate::tls::root_store_from_pem(&pem, path)
                .map_err(|m| ConfigError::invalid(ca_key, m))?;
            Some(pem)
        }
    };
    SharedLimiter::new(
        &url,
        root_cert,
        Duration::from_millis(limit.store_timeout_ms),
        fallback,
    )
    .map(|l| Some(Arc::new(l)))
    .map_err(|m| ConfigError::invalid(key, format!("{var}: {m}")))
}

/// The previous counters; copied into a new table when `max_keys` changed.
fn rate_limiter(previous: Option<&Gateway>, max_keys: usize) -> Arc<RateLimiter> {
    match previous {
        Some(old) if old.limiter_keys == max_keys => old.limiter.clone(),
        Some(old) => {
            let limiter = RateLimiter::new(max_keys);
            limiter.restore(old.limiter.snapshot());
            Arc::new(limiter)
        }
        None => Arc::new(RateLimiter::new(max_keys)),
    }
}

/// Every route, built; a route that cannot be built is a problem named by
/// its key and line. Peers go into `upstreams`, taking `previous`'s state
/// for the ones that did not change.
fn route_table(
    loaded: &LoadedConfig,
    upstreams: &mut UpstreamRegistry,
    previous: Option<&UpstreamRegistry>,
    problems: &mut Problems,
) -> RouteTable {
    let config = &loaded.config;
    let mut routes = RouteTable::default();
    for (i, spanned) in config.routes.iter().enumerate() {
        let route = spanned.get_ref();
        let key = |field: &str| route_key(&loaded.source, i, spanned, field);
        let policy = RoutePolicy::from_config(route, config)
            .map_err(|(field, m)| problems.add(key(field), m));
        // The pool's problems are reported even when the policy has some.
        let fallback = RoutePolicy::default();
        let pool = route_pool(
            route,
            policy.as_ref().unwrap_or(&fallback),
            &config.upstream,
            upstreams,
            previous,
        )
        .map_err(|(field, m)| problems.add(key(&field), m));
        let (Ok(policy), Ok(pool)) = (policy, pool) else {
            continue;
        };
        routes.insert(Route {
            pattern: route.path.clone(),
            service: route.service.clone(),
            pool: upstreams.add_pool(pool),
            policy,
            metrics: RouteMetrics::of(&route.path),
        });
    }
    routes
}

/// The route's pool: each peer resolved, its state shared or carried over,
/// the route's timeouts on its template. Errors name the field.
fn route_pool(
    route: &RouteConfig,
    policy: &RoutePolicy,
    defaults: &UpstreamDefaults,
    upstreams: &mut UpstreamRegistry,
    previous: Option<&UpstreamRegistry>,
) -> Result<Arc<Pool>, (String, String)> {
    let entries = upstream_entries(route)?;
    let protocol = route.protocol.get();
    let tls = UpstreamTls::new(
        route.tls_ca_file.as_deref(),
        route.tls_server_name.as_deref(),
    )
    .map_err(|m| ("tls_ca_file".to_owned(), m))?;
    let mut pool_entries = Vec::with_capacity(entries.len());
    for (field, entry) in entries {
        let is_name = entry.host.parse::<std::net::IpAddr>().is_err();
        let addresses = match names::resolve_now(&entry.host, entry.port) {
            Ok(addresses) => addresses,
            Err(_) if is_name && !defaults.resolve_at_start => Vec::new(),
            Err(m) => return Err((field, m)),
        };
        // Any address: each member gets its own (`names::members`).
        let any = std::net::SocketAddr::from(([0, 0, 0, 0], entry.port));
        let template = upstream_peer(any, &entry.host, &policy.timeouts, (protocol, &tls));
        pool_entries.push(PoolEntry {
            host: entry.host,
            port: entry.port,
            weight: entry.weight,
            template,
            check: route.health_check.clone(),
            is_name,
            addresses,
        });
    }
    let members = names::members(&pool_entries, upstreams, previous);
    let balancing = route.load_balancing.get();
    Ok(Arc::new(
        Pool::new(
            route.service.clone(),
            route.path.clone(),
            members,
            balancing,
            policy.max_retries,
            policy.timeouts.read,
        )
        .with_entries(pool_entries),
    ))
}

/// The route's peers as written (`host` + `port`, or each `upstreams`
/// entry), each with the field an error about it names.
fn upstream_entries(route: &RouteConfig) -> Result<Vec<(String, UpstreamEntry)>, (String, String)> {
    Ok(match (&route.host, route.port, &route.upstreams) {
        (Some(host), Some(port), None) => vec![(
            "host".into(),
            UpstreamEntry {
                host: host.clone(),
                port,
                weight: 1,
            },
        )],
        (None, None, Some(list)) => list
            .iter()
            .enumerate()
            .map(|(j, e)| {
                parse_upstream(e)
                    .map(|entry| (format!("upstreams[{j}]"), entry))
                    .map_err(|m| (format!("upstreams[{j}]"), m))
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err((
                "upstreams".into(),
                "needs host and port, or upstreams".into(),
            ))
        }
    })
}

/// The peer template of one of a route's peers: the route's timeouts set
/// (Pingora's defaults have none) and its protocol.
fn upstream_peer(
    addr: std::net::SocketAddr,
    host: &str,
    timeouts: &RouteTimeouts,
    (protocol, tls): (UpstreamProtocol, &UpstreamTls),
) -> HttpPeer {
    let mut peer = protocol::peer_for(protocol, addr, host, tls);
    let options = &mut peer.options;
    options.connection_timeout = Some(timeouts.connect);
    options.total_connection_timeout = options.connection_timeout;
    options.read_timeout = Some(timeouts.read);
    options.write_timeout = Some(timeouts.write);
    options.idle_timeout = Some(timeouts.idle);
    peer
}

#[cfg(test)]
mod tests;

//! Everything a request needs, built once from a validated configuration:
//! the route table (with upstream addresses resolved now, never per request),
//! the token verifier and the identity cache.

use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use pingora::upstreams::peer::HttpPeer;

use crate::auth::identity::IdentityCache;
use crate::auth::token::{load_secret, JwtVerifier};
use crate::config::{
    route_key, ConfigError, LoadedConfig, RouteConfig, UpstreamDefaults, UserSource, UsersConfig,
};
use crate::edge::limits::RateLimiter;
use crate::edge::slack::{self, SlackVerifier};
use crate::routing::table::{Route, RouteLimit, RouteTable};

/// The request-serving state of one configuration.
pub struct Gateway {
    pub routes: RouteTable,
    pub jwt: JwtVerifier,
    pub identity: Arc<IdentityCache>,
    /// The `[users]` section the identity cache was built from.
    users: UsersConfig,
    /// Rate-limit counters, kept across SIGHUP while `max_keys` is unchanged.
    pub limiter: Arc<RateLimiter>,
    limiter_keys: usize,
    /// Peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub compression: crate::config::CompressionConfig,
    pub cors: Option<crate::edge::cors::CorsPolicy>,
    /// `server.max_uri_bytes` and `server.max_header_bytes`.
    pub max_uri_bytes: usize,
    pub max_header_bytes: usize,
}

/// The state every proxy thread reads; SIGHUP swaps it atomically.
pub type SharedGateway = Arc<ArcSwap<Gateway>>;

impl Gateway {
    /// Builds the state, reading secrets and user files and resolving hosts.
    pub fn build(loaded: &LoadedConfig) -> Result<Self, ConfigError> {
        Self::rebuild(loaded, None)
    }

    /// Like [`Self::build`], but keeps `previous`'s PostgreSQL pool and
    /// identity cache when `[users]` did not change (a file source is always
    /// re-read: its file may have).
    pub fn rebuild(loaded: &LoadedConfig, previous: Option<&Gateway>) -> Result<Self, ConfigError> {
        let config = &loaded.config;
        let secret = load_secret(&config.auth)?;
        let jwt = JwtVerifier::new(&config.auth, &secret);
        let identity = match previous {
            Some(old)
                if old.users == config.users && config.users.source == UserSource::Postgres =>
            {
                old.identity.clone()
            }
            _ => Arc::new(IdentityCache::from_config(&config.users)?),
        };
        let limiter_keys = config.rate_limit.as_ref().map_or(1, |l| l.max_keys);
        let limiter = match previous {
            Some(old) if old.limiter_keys == limiter_keys => old.limiter.clone(),
            // Resized: the spent budgets move into the new table.
            Some(old) => {
                let limiter = RateLimiter::new(limiter_keys);
                limiter.restore(old.limiter.snapshot());
                Arc::new(limiter)
            }
            None => Arc::new(RateLimiter::new(limiter_keys)),
        };
        let trusted_proxies = config
            .server
            .trusted_proxies
            .iter()
            .filter_map(|c| crate::config::parse_cidr(c).ok())
            .collect();
        let mut routes = RouteTable::default();
        for (i, spanned) in config.routes.iter().enumerate() {
            let route = spanned.get_ref();
            let key = |field: &str| route_key(&loaded.source, i, spanned, field);
            let peer = upstream_peer(route, &config.upstream)
                .map_err(|message| ConfigError::invalid(key("host"), message))?;
            let slack = match &route.slack_signing_secret_env {
                Some(var) => {
                    let secret =
                        std::env::var_os(var)
                            .filter(|v| !v.is_empty())
                            .ok_or_else(|| {
                                ConfigError::invalid(
                                    key("slack_signing_secret_env"),
                                    format!("environment variable {var} is not set"),
                                )
                            })?;
                    Some(SlackVerifier::new(
                        secret.into_encoded_bytes(),
                        route
                            .max_body_bytes
                            .unwrap_or(slack::DEFAULT_MAX_BODY_BYTES),
                    ))
                }
                None => None,
            };
            routes.insert(Route {
                pattern: route.path.clone(),
                service: route.service.clone(),
                auth_required: route.auth_required,
                max_body_bytes: route.max_body_bytes.unwrap_or(config.server.max_body_bytes),
                peer,
                raw: route.raw,
                slack,
                rate_limit: match (route.requests_per_minute, &config.rate_limit) {
                    (Some(0), _) => None,
                    (Some(n), _) => Some(RouteLimit {
                        scope: crate::edge::limits::route_scope(&route.path),
                        per_minute: n,
                    }),
                    (None, Some(default)) => Some(RouteLimit {
                        scope: crate::edge::limits::DEFAULT_SCOPE,
                        per_minute: default.requests_per_minute,
                    }),
                    (None, None) => None,
                },
            });
        }
        Ok(Self {
            routes,
            jwt,
            identity,
            users: config.users.clone(),
            limiter,
            limiter_keys,
            trusted_proxies,
            compression: config.compression.clone(),
            max_uri_bytes: config.server.max_uri_bytes,
            max_header_bytes: config.server.max_header_bytes,
            cors: config
                .cors
                .as_ref()
                .map(crate::edge::cors::CorsPolicy::new)
                .transpose()?,
        })
    }
}

/// The peer template of a route: address resolved, timeouts set (Pingora's
/// defaults have none).
fn upstream_peer(route: &RouteConfig, defaults: &UpstreamDefaults) -> Result<HttpPeer, String> {
    let addr = (route.host.as_str(), route.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve '{}': {e}", route.host))?
        .next()
        .ok_or_else(|| format!("'{}' resolves to no address", route.host))?;
    let ms = |v: Option<u64>, d: u64| Some(Duration::from_millis(v.unwrap_or(d)));
    let mut peer = HttpPeer::new(addr, false, String::new());
    let options = &mut peer.options;
    options.connection_timeout = ms(route.connect_timeout_ms, defaults.connect_timeout_ms);
    options.total_connection_timeout = options.connection_timeout;
    options.read_timeout = ms(route.read_timeout_ms, defaults.read_timeout_ms);
    options.write_timeout = ms(route.write_timeout_ms, defaults.write_timeout_ms);
    options.idle_timeout = ms(route.idle_timeout_ms, defaults.idle_timeout_ms);
    Ok(peer)
}

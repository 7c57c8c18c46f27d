//! The running state: everything a request needs, built once from a
//! validated configuration ([`plan`], the one step from a file to it) and
//! swapped whole on SIGHUP. It sits above the modules whose parts it holds
//! (`routing`, `auth`, `edge`, `upstream`, `tls`, the access log) and below
//! the proxy and the process that serve it.

mod build;
mod private_dirs;

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::auth::identity::IdentityCache;
use crate::auth::notify::NotifySource;
use crate::auth::token::JwtVerifier;
use crate::config::validate::Problems;
use crate::config::{self, ConfigError, LoadedConfig, UsersConfig};
use crate::edge::cors::CorsPolicy;
use crate::edge::limits::RateLimiter;
use crate::edge::shared_limits::SharedLimiter;
use crate::live::Live;
use crate::observe::access_log::AccessLog;
use crate::observe::traces::SpanExport;
use crate::routing::table::RouteTable;
use crate::tls::TlsListener;
use crate::upstream::UpstreamRegistry;

pub use private_dirs::check_private_dirs;

/// The request-serving state of one configuration.
pub struct Gateway {
    pub routes: RouteTable,
    /// What each `[[server.tls]]` listener serves (its certificate).
    pub tls: Arc<[TlsListener]>,
    pub jwt: JwtVerifier,
    /// The `[[auth.claim_headers]]` names: stripped from every client
    /// request like the identity headers, set only from a verified token.
    pub claim_headers: Vec<http::HeaderName>,
    pub identity: Arc<IdentityCache>,
    /// The `[users]` section the identity cache was built from.
    users: UsersConfig,
    /// Rate-limit counters, kept across SIGHUP while `max_keys` is unchanged.
    pub limiter: Arc<RateLimiter>,
    /// The counters in Redis, with `store = "redis"` (the local ones then
    /// decide only while Redis cannot, with `on_store_error = "local"`).
    pub shared_limiter: Option<Arc<SharedLimiter>>,
    limiter_keys: usize,
    /// Peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub compression: crate::config::CompressionConfig,
    pub cors: Option<CorsPolicy>,
    /// `server.max_uri_bytes` and `server.max_header_bytes`.
    pub max_uri_bytes: usize,
    pub max_header_bytes: usize,
    /// `server.max_buffered_body_bytes`: bodies held for signature checks,
    /// process-wide.
    pub max_buffered_body_bytes: u64,
    /// `rate_limit.ipv6_prefix_length`: an IPv6 client is keyed by it.
    pub ipv6_prefix_length: u8,
    /// `auth.first_sight_per_ip_per_minute` (0: no budget).
    pub first_sight_per_minute: u32,
    /// `server.allow_path_parameters`: `;` in a path segment passes.
    pub allow_path_parameters: bool,
    /// Every route's pool and peer, for the health checks and `/upstreams`.
    pub upstreams: Arc<UpstreamRegistry>,
    /// Where identity changes are announced (`[users] notify_channel`).
    pub user_notify: Option<NotifySource>,
    /// The span export of `[tracing]`, if any (kept across SIGHUP while
    /// the section is unchanged).
    pub traces: Option<Arc<SpanExport>>,
}

/// The state every proxy thread reads; SIGHUP swaps it atomically.
pub type SharedGateway = Arc<ArcSwap<Gateway>>;

/// A narrow view of `shared` for a service below this layer: `part` of
/// whichever state runs when it is read.
pub fn live<T: 'static>(
    shared: &SharedGateway,
    part: impl Fn(&Gateway) -> T + Send + Sync + 'static,
) -> Live<T> {
    let shared = shared.clone();
    Live::new(move || part(&shared.load()))
}

/// What runs from one configuration file: the file as read and the state
/// built from it.
pub struct Plan {
    pub loaded: LoadedConfig,
    pub gateway: Gateway,
}

/// The one step from a configuration file to the running state, taken by
/// start-up, `-t`, `reload` and SIGHUP alike: read, parse and validate the
/// file, build the serving state (secret, user source, hosts, Slack
/// secrets) and check that the access log can be opened. Every problem is
/// reported at once. `previous` is the state this one replaces (SIGHUP).
pub fn plan(path: &Path, previous: Option<&Gateway>) -> Result<Plan, ConfigError> {
    plan_loaded(config::load(path)?, previous)
}

/// [`plan`] for a file already read (a successor's, offered at a handoff).
pub fn plan_loaded(loaded: LoadedConfig, previous: Option<&Gateway>) -> Result<Plan, ConfigError> {
    let gateway = Gateway::rebuild(&loaded, previous);
    let log = AccessLog::check(&loaded.config.log);
    let dirs = check_private_dirs(&loaded.config.server);
    match (gateway, log) {
        (Ok(gateway), Ok(())) if dirs.is_empty() => Ok(Plan { loaded, gateway }),
        (gateway, log) => {
            let mut problems = Problems::default();
            for e in [gateway.err(), log.err()].into_iter().flatten() {
                problems.push(e);
            }
            problems.extend(dirs);
            Err(problems.into_error())
        }
    }
}

//! What a route asks of the edge: authentication and the claims it
//! requires, its rate limit, body limits, Slack signatures, compression,
//! its timeouts and retries. Built
//! by one constructor, [`RoutePolicy::from_config`], with every default
//! applied, so a new per-route key touches the schema, this type and the
//! phase that uses it (`docs/architecture.md`, "Worked example").

use std::sync::Arc;
use std::time::Duration;

use crate::auth::claims::{ClaimPath, ClaimRequirement};
use crate::config::validate::claim_values;
use crate::config::{Config, RateLimitConfig, RouteConfig, UpstreamDefaults};
use crate::edge::limits::{route_scope, DEFAULT_SCOPE};
use crate::edge::slack::{self, SlackVerifier};

/// `max_retries` when a route does not say.
pub const DEFAULT_MAX_RETRIES: u32 = 2;

/// A route's limit: which counter (the shared default, scope 0, or the
/// route's own) and how many requests per minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteLimit {
    pub scope: u64,
    pub per_minute: u32,
}

/// The route's deadlines with its peers (Pingora's defaults have none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteTimeouts {
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
    pub idle: Duration,
}

/// Everything a route decides at the edge, defaults applied.
#[derive(Debug, Clone)]
pub struct RoutePolicy {
    /// Fail closed: a route is protected unless it says otherwise.
    pub auth_required: bool,
    /// Claims the token must carry (`require_claims`); else 403.
    pub require_claims: Vec<ClaimRequirement>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: u64,
    /// The limit requests on this route count against, if any.
    pub rate_limit: Option<RouteLimit>,
    /// Responses are never compressed (e.g. Slack webhooks).
    pub raw: bool,
    /// Slack signature verification, when the route asks for it.
    pub slack: Option<Arc<SlackVerifier>>,
    pub timeouts: RouteTimeouts,
    /// Further tries on other peers after a failure safe to retry.
    pub max_retries: u32,
}

impl Default for RoutePolicy {
    /// An authenticated route, 1 MiB bodies, no limit, no Slack,
    /// compressible, the `[upstream]` defaults' timeouts.
    fn default() -> Self {
        let up = UpstreamDefaults::default();
        let ms = Duration::from_millis;
        Self {
            auth_required: true,
            require_claims: Vec::new(),
            max_body_bytes: 1 << 20,
            rate_limit: None,
            raw: false,
            slack: None,
            timeouts: RouteTimeouts {
                connect: ms(up.connect_timeout_ms),
                read: ms(up.read_timeout_ms),
                write: ms(up.write_timeout_ms),
                idle: ms(up.idle_timeout_ms),
            },
            max_retries: DEFAULT_MAX_RETRIES,
        }
    }
}

impl RoutePolicy {
    /// The policy of `route`, falling back to the file's sections
    /// (`[server]`, `[upstream]`, `[rate_limit]`). An error names the
    /// route's field it is about.
    pub fn from_config(
        route: &RouteConfig,
        config: &Config,
    ) -> Result<Self, (&'static str, String)> {
        let up = &config.upstream;
        let ms = |v: Option<u64>, default: u64| Duration::from_millis(v.unwrap_or(default));
        Ok(Self {
            auth_required: route.auth_required,
            require_claims: require_claims(route),
            max_body_bytes: route.max_body_bytes.unwrap_or(config.server.max_body_bytes),
            rate_limit: route_limit(route, config.rate_limit.as_ref()),
            raw: route.raw,
            slack: slack_verifier(route).map_err(|m| ("slack_signing_secret_env", m))?,
            timeouts: RouteTimeouts {
                connect: ms(route.connect_timeout_ms, up.connect_timeout_ms),
                read: ms(route.read_timeout_ms, up.read_timeout_ms),
                write: ms(route.write_timeout_ms, up.write_timeout_ms),
                idle: ms(route.idle_timeout_ms, up.idle_timeout_ms),
            },
            max_retries: route.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
        })
    }
}

/// The route's `require_claims` (validation has checked every value).
fn require_claims(route: &RouteConfig) -> Vec<ClaimRequirement> {
    route
        .require_claims
        .iter()
        .flatten()
        .map(|(claim, values)| ClaimRequirement {
            claim: ClaimPath::new(claim),
            allowed: claim_values(values).unwrap_or_default(),
        })
        .collect()
}

/// The route's own limit (0: none), else the `[rate_limit]` default.
fn route_limit(route: &RouteConfig, default: Option<&RateLimitConfig>) -> Option<RouteLimit> {
    match (route.requests_per_minute, default) {
        (Some(0), _) => None,
        (Some(n), _) => Some(RouteLimit {
            scope: route_scope(&route.path),
            per_minute: n,
        }),
        (None, Some(default)) => Some(RouteLimit {
            scope: DEFAULT_SCOPE,
            per_minute: default.requests_per_minute,
        }),
        (None, None) => None,
    }
}

/// The route's Slack verifier, when it names a signing secret.
fn slack_verifier(route: &RouteConfig) -> Result<Option<Arc<SlackVerifier>>, String> {
    let Some(var) = &route.slack_signing_secret_env else {
        return Ok(None);
    };
    let secret = crate::config::env::value(var)?;
    let max_body = route
        .max_body_bytes
        .unwrap_or(slack::DEFAULT_MAX_BODY_BYTES);
    Ok(Some(Arc::new(SlackVerifier::new(
        secret.into_encoded_bytes(),
        max_body,
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::TestConfig;

    #[test]
    fn defaults_come_from_the_sections_and_the_route_overrides_them() {
        let config = TestConfig::new()
            .route("/a/*", 9000, false)
            .route_with(
                "/b/*",
                9001,
                true,
                "max_body_bytes = 10\nread_timeout_ms = 7\nrequests_per_minute = 5\nmax_retries = 0\nraw = true",
            )
            .with_limits(60)
            .parse();
        let policy =
            |i: usize| RoutePolicy::from_config(config.routes[i].get_ref(), &config).unwrap();
        let a = policy(0);
        assert!(!a.auth_required && !a.raw && a.slack.is_none());
        assert_eq!(a.max_body_bytes, config.server.max_body_bytes);
        assert_eq!(
            a.rate_limit,
            Some(RouteLimit {
                scope: DEFAULT_SCOPE,
                per_minute: 60
            })
        );
        assert_eq!(
            a.timeouts.read,
            Duration::from_millis(config.upstream.read_timeout_ms)
        );
        assert_eq!(a.max_retries, DEFAULT_MAX_RETRIES);
        let b = policy(1);
        assert!(b.auth_required && b.raw);
        assert_eq!(b.max_body_bytes, 10);
        assert_eq!(b.timeouts.read, Duration::from_millis(7));
        assert_eq!(b.rate_limit.map(|l| l.per_minute), Some(5));
        assert_ne!(b.rate_limit.map(|l| l.scope), Some(DEFAULT_SCOPE));
        assert_eq!(b.max_retries, 0);
    }

    #[test]
    fn a_missing_slack_secret_names_its_key() {
        let config = TestConfig::new()
            .route_with(
                "/slack/*",
                9000,
                false,
                "slack_signing_secret_env = \"ROBEING_TEST_NO_SUCH_SLACK_SECRET\"",
            )
            .parse();
        let err = RoutePolicy::from_config(config.routes[0].get_ref(), &config).unwrap_err();
        assert_eq!(err.0, "slack_signing_secret_env");
    }
}

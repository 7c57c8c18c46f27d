//! What the gateway depends on, checked once a second off the request path:
//! PostgreSQL (a `[users]` directory in the database), Redis (shared rate
//! limits) and the JWKS endpoint (`[auth.jwks]`). Each answer sets
//! `gateway_dependency_up{dependency}` and is shown by `/readyz?verbose`.
//!
//! A dependency never makes the gateway unready on its own: when PostgreSQL
//! blips, every instance would turn unready at the same moment and the
//! orchestrator would remove all of them, public routes included. The
//! routes that need a dependency fail closed on their own (503
//! `USER_DIRECTORY_UNAVAILABLE` for a user the cache cannot answer for).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::auth::identity::IdentityCache;
use crate::auth::jwks::Jwks;
use crate::edge::shared_limits::SharedLimiter;
use crate::live::Live;
use crate::observe::metrics::metrics;

/// How often the dependencies are asked.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Every dependency name the gauge may carry.
const NAMES: [&str; 3] = ["postgres", "redis", "jwks"];

/// One dependency's last answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub name: &'static str,
    /// `Err` says why it is down.
    pub status: Result<(), String>,
}

/// The last answers, read by `/readyz?verbose`.
#[derive(Default)]
pub struct DependencyStatus {
    reports: ArcSwap<Vec<Report>>,
}

impl DependencyStatus {
    pub fn reports(&self) -> Arc<Vec<Report>> {
        self.reports.load_full()
    }

    fn store(&self, reports: Vec<Report>) {
        let m = metrics();
        for name in NAMES {
            match reports.iter().find(|r| r.name == name) {
                Some(r) => m
                    .dependency_up
                    .with_label_values(&[name])
                    .set(i64::from(r.status.is_ok())),
                // Not configured (any more, after a SIGHUP): no series.
                None => {
                    let _ = m.dependency_up.remove_label_values(&[name]);
                }
            }
        }
        self.reports.store(Arc::new(reports));
    }
}

/// What the running configuration depends on.
pub struct Dependencies {
    pub identity: Arc<IdentityCache>,
    pub redis: Option<Arc<SharedLimiter>>,
    pub jwks: Option<Arc<Jwks>>,
}

/// Asks each dependency of the running configuration once.
async fn check(gateway: &Dependencies) -> Vec<Report> {
    let mut reports = Vec::with_capacity(NAMES.len());
    if let Some((name, status)) = gateway.identity.probe_directory().await {
        reports.push(Report { name, status });
    }
    if let Some(shared) = &gateway.redis {
        reports.push(Report {
            name: "redis",
            status: shared.ping().await,
        });
    }
    if let Some(jwks) = &gateway.jwks {
        reports.push(Report {
            name: "jwks",
            status: if jwks.is_up() {
                Ok(())
            } else {
                Err(format!("the last fetch of {} failed", jwks.config.url))
            },
        });
    }
    reports
}

/// The background service that keeps [`DependencyStatus`] current.
pub struct DependencyChecks {
    dependencies: Live<Dependencies>,
    status: Arc<DependencyStatus>,
}

impl DependencyChecks {
    pub fn new(dependencies: Live<Dependencies>, status: Arc<DependencyStatus>) -> Self {
        Self {
            dependencies,
            status,
        }
    }
}

#[async_trait]
impl BackgroundService for DependencyChecks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            metrics().dependency_checks.inc();
            let dependencies = self.dependencies.get();
            self.status.store(check(&dependencies).await);
            tokio::select! {
                _ = tokio::time::sleep(CHECK_EVERY) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

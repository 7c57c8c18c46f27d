//! Active health checks, a Pingora background service: every peer of the
//! current configuration with a `[routes.health_check]` is probed at its
//! interval with pingora-load-balancing's checks (an HTTP GET expecting
//! 2xx, or a TCP connect), each probe bounded by its `timeout_ms`. The
//! results move the peer's health ([`PeerState::record_probe`]); the
//! `gateway_upstream_peer_healthy` gauges follow every tick.
//!
//! It runs off the proxy threads; what it logs is a peer changing state.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora::http::ResponseHeader;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::Backend;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::{Error, ErrorType};

use crate::config::HealthCheckConfig;
use crate::live::Live;
use crate::observe::metrics::metrics;
use crate::upstream::UpstreamRegistry;

use super::peer::{now_ms, Health, PeerState};

/// How often the service looks for due probes.
const TICK: Duration = Duration::from_millis(25);
/// The gauges are refreshed every fourth tick (100 ms).
const GAUGE_EVERY_TICKS: u64 = 4;

/// A peer's probe, built once per peer.
struct Probe {
    check: Box<dyn HealthCheck + Send + Sync>,
    target: Backend,
    timeout: Duration,
    interval_ms: u64,
    /// When the next probe is due ([`now_ms`]; 0: at once).
    due_ms: AtomicU64,
    running: AtomicBool,
}

impl Probe {
    fn new(state: &PeerState, config: &HealthCheckConfig) -> Option<Self> {
        let timeout = Duration::from_millis(config.timeout_ms);
        let check: Box<dyn HealthCheck + Send + Sync> = match &config.path {
            None => {
                let mut tcp = TcpHealthCheck::new();
                tcp.peer_template.options.connection_timeout = Some(timeout);
                tcp
            }
            Some(path) => {
                let mut http = HttpHealthCheck::new(&state.label, false);
                http.req =
                    pingora::http::RequestHeader::build("GET", path.as_bytes(), None).ok()?;
                http.req.insert_header("Host", &state.label).ok()?;
                http.req
                    .insert_header("User-Agent", "robeing-gateway-health")
                    .ok()?;
                http.peer_template.options.connection_timeout = Some(timeout);
                http.peer_template.options.read_timeout = Some(timeout);
                http.validator = Some(Box::new(expect_2xx));
                Box::new(http)
            }
        };
        Some(Self {
            check,
            target: Backend {
                addr: pingora::protocols::l4::socket::SocketAddr::Inet(state.addr),
                weight: 1,
                ext: Default::default(),
            },
            timeout,
            interval_ms: config.interval_ms,
            due_ms: AtomicU64::new(0),
            running: AtomicBool::new(false),
        })
    }

    async fn run(&self) -> bool {
        matches!(
            tokio::time::timeout(self.timeout, self.check.check(&self.target)).await,
            Ok(Ok(()))
        )
    }
}

fn expect_2xx(resp: &ResponseHeader) -> pingora::Result<()> {
    if resp.status.is_success() {
        Ok(())
    } else {
        Error::e_explain(
            ErrorType::CustomCode("health check status", resp.status.as_u16()),
            "expected 2xx",
        )
    }
}

/// A checked peer and its probe.
type CheckedPeer = (Arc<PeerState>, Arc<Probe>);

pub struct HealthChecks {
    /// The running configuration's peers.
    upstreams: Live<Arc<UpstreamRegistry>>,
    /// Probes by peer (by pointer: a peer replaced on reload gets a new one).
    probes: Mutex<HashMap<usize, CheckedPeer>>,
    /// The gauge series set last, so a peer that left the config loses its.
    published: Mutex<HashSet<(String, String)>>,
}

impl HealthChecks {
    pub fn new(upstreams: Live<Arc<UpstreamRegistry>>) -> Self {
        Self {
            upstreams,
            probes: Mutex::new(HashMap::new()),
            published: Mutex::new(HashSet::new()),
        }
    }

    /// The probes of the current configuration's checked peers.
    fn current_probes(&self) -> Vec<CheckedPeer> {
        let upstreams = self.upstreams.get();
        let mut probes = self.probes.lock().unwrap_or_else(|p| p.into_inner());
        let mut live = HashMap::new();
        for state in &upstreams.peers() {
            let Some(config) = &state.check else { continue };
            let id = Arc::as_ptr(state) as usize;
            let entry = match probes.remove(&id) {
                Some(entry) => entry,
                None => match Probe::new(state, config) {
                    Some(probe) => (state.clone(), Arc::new(probe)),
                    None => continue,
                },
            };
            live.insert(id, entry);
        }
        *probes = live;
        probes.values().cloned().collect()
    }

    fn start_due_probes(&self) {
        let now = now_ms();
        for (state, probe) in self.current_probes() {
            if probe.due_ms.load(Ordering::Relaxed) > now
                || probe.running.swap(true, Ordering::Relaxed)
            {
                continue;
            }
            probe
                .due_ms
                .store(now + probe.interval_ms, Ordering::Relaxed);
            tokio::spawn(async move {
                let ok = probe.run().await;
                probe.running.store(false, Ordering::Relaxed);
                match state.record_probe(ok) {
                    Some(Health::Unhealthy) => {
                        log::warn!(
                            "upstream peer {} failed its health checks: out of rotation",
                            state.label
                        )
                    }
                    Some(Health::Healthy) => {
                        log::info!("upstream peer {} passes its health checks", state.label)
                    }
                    _ => {}
                }
            });
        }
    }

    /// `gateway_upstream_peer_healthy{route, peer}` for every pool.
    fn publish_gauges(&self) {
        let upstreams = self.upstreams.get();
        let gauge = &metrics().upstream_peer_healthy;
        let mut now = HashSet::new();
        for slot in upstreams.pools() {
            let pool = slot.load();
            for m in pool.members.iter() {
                gauge
                    .with_label_values(&[&pool.pattern, &m.state.label])
                    .set(i64::from(m.state.is_eligible()));
                now.insert((pool.pattern.clone(), m.state.label.clone()));
            }
        }
        let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
        for (route, peer) in published.difference(&now) {
            let _ = gauge.remove_label_values(&[route, peer]);
        }
        *published = now;
    }
}

#[async_trait]
impl BackgroundService for HealthChecks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for n in 0u64.. {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            self.start_due_probes();
            if n % GAUGE_EVERY_TICKS == 0 {
                self.publish_gauges();
            }
        }
    }
}

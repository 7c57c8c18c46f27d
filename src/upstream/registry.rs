//! Every upstream peer of one configuration and every route's pool, built
//! by the config plan. A peer is one [`PeerState`] per address and check
//! settings: routes naming the same peer share its health, and a rebuild
//! (SIGHUP, the handoff's adoption) takes the previous configuration's
//! state for every peer that did not change. A new peer starts
//! `unknown`, eligible, and is probed at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::config::{HealthCheckConfig, Keyword};

use super::peer::{PeerSnapshot, PeerState};
use super::pool::Pool;

/// What makes two peers the same peer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerKey {
    pub addr: SocketAddr,
    pub check: Option<HealthCheckConfig>,
}

/// A route's pool, swapped whole when its names resolve to other
/// addresses ([`super::names`]); a request keeps the one it started with.
pub type PoolSlot = Arc<ArcSwap<Pool>>;

pub struct UpstreamRegistry {
    /// Every peer ever built for this configuration (a name's new address
    /// adds one), by address and check settings.
    peers: Mutex<HashMap<PeerKey, Arc<PeerState>>>,
    pools: Vec<PoolSlot>,
    /// `[upstream] resolve_interval_seconds`.
    pub resolve_interval: Duration,
}

impl Default for UpstreamRegistry {
    fn default() -> Self {
        Self::new(Duration::from_secs(30))
    }
}

impl UpstreamRegistry {
    pub fn new(resolve_interval: Duration) -> Self {
        Self {
            peers: Mutex::new(HashMap::new()),
            pools: Vec::new(),
            resolve_interval,
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<PeerKey, Arc<PeerState>>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The peer for `key`: this configuration's, else the previous one's
    /// (health and ejection kept), else a new one.
    pub fn peer(&self, key: PeerKey, previous: Option<&UpstreamRegistry>) -> Arc<PeerState> {
        if let Some(state) = self.known().get(&key) {
            return state.clone();
        }
        let state = previous
            .and_then(|p| p.known().get(&key).cloned())
            .unwrap_or_else(|| Arc::new(PeerState::new(key.addr, key.check.clone())));
        self.known().entry(key).or_insert(state).clone()
    }

    pub fn add_pool(&mut self, pool: Arc<Pool>) -> PoolSlot {
        let slot = Arc::new(ArcSwap::new(pool));
        self.pools.push(slot.clone());
        slot
    }

    /// The peers of the pools as they are now (a name's old addresses
    /// drop out), each once.
    pub fn peers(&self) -> Vec<Arc<PeerState>> {
        let mut seen = std::collections::HashSet::new();
        let mut live = Vec::new();
        for slot in &self.pools {
            for m in slot.load().members.iter() {
                if seen.insert(Arc::as_ptr(&m.state)) {
                    live.push(m.state.clone());
                }
            }
        }
        live
    }

    pub fn pools(&self) -> &[PoolSlot] {
        &self.pools
    }

    /// Every peer's state, for the successor of a handoff.
    pub fn snapshot(&self) -> Vec<PeerSnapshot> {
        self.known().values().map(|p| p.snapshot()).collect()
    }

    /// A predecessor's peer states, for the same peers (address and check
    /// settings); returns how many were taken.
    pub fn restore(&self, entries: &[PeerSnapshot]) -> usize {
        let mut taken = 0;
        for entry in entries {
            let key = PeerKey {
                addr: entry.addr,
                check: entry.check.clone(),
            };
            if let Some(peer) = self.known().get(&key) {
                peer.restore(entry);
                taken += 1;
            }
        }
        taken
    }

    /// `GET /upstreams` on the admin listener: each route's pool with its
    /// peers' state.
    pub fn to_json(&self) -> serde_json::Value {
        let pools: Vec<_> = self
            .pools
            .iter()
            .map(|slot| {
                let pool = slot.load();
                let peers: Vec<_> = pool
                    .members
                    .iter()
                    .map(|m| {
                        let s = &m.state;
                        serde_json::json!({
                            "peer": s.label,
                            "weight": m.weight,
                            "eligible": s.is_eligible(),
                            "health": s.health().as_str(),
                            "checked": s.check.as_ref().map(|c| match &c.path {
                                Some(path) => format!("http GET {path} every {} ms", c.interval_ms),
                                None => format!("tcp every {} ms", c.interval_ms),
                            }),
                            "ejected_for_ms": s.ejected_for().map(|d| d.as_millis() as u64),
                            "consecutive_failures": s.consecutive_failures(),
                            "in_flight": s.in_flight(),
                        })
                    })
                    .collect();
                serde_json::json!({
                    "route": pool.pattern,
                    "service": pool.service,
                    "load_balancing": pool.balancing.word(),
                    "max_retries": pool.max_retries,
                    "peers": peers,
                })
            })
            .collect();
        serde_json::json!({ "pools": pools })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rebuild_keeps_unchanged_peers_and_starts_new_ones_fresh() {
        let key = |port: u16, check: Option<HealthCheckConfig>| PeerKey {
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            check,
        };
        let old = UpstreamRegistry::default();
        let a = old.peer(key(1, None), None);
        assert!(
            Arc::ptr_eq(&a, &old.peer(key(1, None), None)),
            "shared by routes"
        );
        a.record_probe(false);

        let new = UpstreamRegistry::default();
        let kept = new.peer(key(1, None), Some(&old));
        assert!(Arc::ptr_eq(&a, &kept));
        assert!(!kept.is_eligible(), "health carried over");
        let check = HealthCheckConfig {
            path: Some("/healthz".into()),
            interval_ms: 100,
            timeout_ms: 100,
            healthy_after: 1,
            unhealthy_after: 1,
        };
        let changed = new.peer(key(1, Some(check)), Some(&old));
        assert!(
            !Arc::ptr_eq(&a, &changed),
            "other check settings: another peer"
        );
        assert!(changed.is_eligible());
    }
}

//! Every upstream peer of one configuration and every route's pool, built
//! by the config plan. A peer is one [`PeerState`] per address and check
//! settings: routes naming the same peer share its health, and a rebuild
//! (SIGHUP, the handoff's adoption) takes the previous configuration's
//! state for every peer that did not change. A new peer starts
//! `unknown`, eligible, and is probed at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::HealthCheckConfig;

use super::peer::{PeerSnapshot, PeerState};
use super::pool::Pool;

/// What makes two peers the same peer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerKey {
    pub addr: SocketAddr,
    pub check: Option<HealthCheckConfig>,
}

#[derive(Default)]
pub struct UpstreamRegistry {
    peers: HashMap<PeerKey, Arc<PeerState>>,
    pools: Vec<Arc<Pool>>,
}

impl UpstreamRegistry {
    /// The peer for `key`: this configuration's, else the previous one's
    /// (health and ejection kept), else a new one.
    pub fn peer(&mut self, key: PeerKey, previous: Option<&UpstreamRegistry>) -> Arc<PeerState> {
        if let Some(state) = self.peers.get(&key) {
            return state.clone();
        }
        let state = previous
            .and_then(|p| p.peers.get(&key).cloned())
            .unwrap_or_else(|| Arc::new(PeerState::new(key.addr, key.check.clone())));
        self.peers.insert(key, state.clone());
        state
    }

    pub fn add_pool(&mut self, pool: Arc<Pool>) {
        self.pools.push(pool);
    }

    pub fn peers(&self) -> impl Iterator<Item = &Arc<PeerState>> {
        self.peers.values()
    }

    pub fn pools(&self) -> &[Arc<Pool>] {
        &self.pools
    }

    /// Every peer's state, for the successor of a handoff.
    pub fn snapshot(&self) -> Vec<PeerSnapshot> {
        self.peers.values().map(|p| p.snapshot()).collect()
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
            if let Some(peer) = self.peers.get(&key) {
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
            .map(|pool| {
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
                    "load_balancing": pool.balancing.as_str(),
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
        let mut old = UpstreamRegistry::default();
        let a = old.peer(key(1, None), None);
        assert!(
            Arc::ptr_eq(&a, &old.peer(key(1, None), None)),
            "shared by routes"
        );
        a.record_probe(false);

        let mut new = UpstreamRegistry::default();
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

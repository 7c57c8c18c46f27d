//! Upstream names follow DNS: a route's `host` (or an `upstreams` entry)
//! that is a name becomes one pool member per address it resolves to, and
//! is resolved again every `[upstream] resolve_interval_seconds` by a
//! background service, off the request path.
//!
//! When the addresses change, the route's pool is rebuilt and swapped in
//! whole: a request keeps the pool it started with for all its tries. A
//! peer that stays keeps its state (health, ejection); a new one starts
//! eligible and its active check probes it at once. A failed resolution
//! keeps the last good addresses, is counted
//! (`gateway_dns_failures_total{route}`) and logged once per failure
//! streak (WARN: an operator's DNS is failing).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::pool::{Member, PoolEntry, MAX_ADDRESSES_PER_NAME, MAX_MEMBERS};
use super::registry::{PeerKey, PoolSlot, UpstreamRegistry};
use crate::live::Live;
use crate::observe::metrics::metrics;

/// How long one resolution may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The members of `entries`: one per address, states from `registry`
/// (shared by routes naming the same peer, kept across rebuilds), at most
/// [`MAX_MEMBERS`] (at load and at every re-resolution alike).
pub fn members(
    entries: &[PoolEntry],
    registry: &UpstreamRegistry,
    previous: Option<&UpstreamRegistry>,
) -> Vec<Member> {
    let mut members = Vec::new();
    for entry in entries {
        for &addr in &entry.addresses {
            let state = registry.peer(
                PeerKey {
                    addr,
                    check: entry.check.clone(),
                },
                previous,
            );
            let mut peer = entry.template.clone();
            peer._address = PeerAddr::Inet(addr);
            members.push(Member {
                state,
                peer,
                weight: entry.weight,
            });
        }
    }
    members.truncate(MAX_MEMBERS);
    members
}

/// Every address of `host:port`, sorted (a server that rotates its
/// answers is not a change), without duplicates, at most
/// [`MAX_ADDRESSES_PER_NAME`] (blocking: at load).
pub fn resolve_now(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    use std::net::ToSocketAddrs;
    let found = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve '{host}': {e}"))?;
    distinct(host, found)
}

fn distinct(
    host: &str,
    found: impl Iterator<Item = SocketAddr>,
) -> Result<Vec<SocketAddr>, String> {
    let mut addresses: Vec<SocketAddr> = Vec::new();
    for addr in found {
        if !addresses.contains(&addr) && addresses.len() < MAX_ADDRESSES_PER_NAME {
            addresses.push(addr);
        }
    }
    if addresses.is_empty() {
        return Err(format!("'{host}' resolves to no address"));
    }
    addresses.sort();
    Ok(addresses)
}

async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(found)) => distinct(host, found),
        Ok(Err(e)) => Err(format!("cannot resolve '{host}': {e}")),
        Err(_) => Err(format!("resolving '{host}' took over {RESOLVE_TIMEOUT:?}")),
    }
}

/// The background service that re-resolves every pool's names.
pub struct NameRefresh {
    /// The running configuration's pools.
    upstreams: Live<Arc<UpstreamRegistry>>,
    /// Routes whose last resolution failed (their streak is logged).
    failing: Mutex<HashMap<String, bool>>,
}

impl NameRefresh {
    pub fn new(upstreams: Live<Arc<UpstreamRegistry>>) -> Self {
        Self {
            upstreams,
            failing: Mutex::new(HashMap::new()),
        }
    }

    /// Resolves the names of one pool; swaps in a rebuilt pool when an
    /// address changed.
    async fn refresh(&self, slot: &PoolSlot, registry: &UpstreamRegistry) {
        let pool = slot.load_full();
        if !pool.entries.iter().any(|e| e.is_name) {
            return;
        }
        let mut entries: Vec<PoolEntry> = pool.entries.to_vec();
        let mut changed = false;
        let mut failure = None;
        for entry in entries.iter_mut().filter(|e| e.is_name) {
            match resolve(&entry.host, entry.port).await {
                Ok(addresses) if addresses != entry.addresses => {
                    log::info!(
                        "route {}: {} now resolves to {addresses:?} (was {:?})",
                        pool.pattern,
                        entry.host,
                        entry.addresses
                    );
                    entry.addresses = addresses;
                    changed = true;
                }
                Ok(_) => {}
                Err(e) => failure = Some(e),
            }
        }
        self.note_outcome(&pool.pattern, failure);
        if changed {
            let members = members(&entries, registry, None);
            slot.store(Arc::new(pool.rebuilt(members).with_entries(entries)));
        }
    }

    fn note_outcome(&self, route: &str, failure: Option<String>) {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        let was_failing = failing.insert(route.to_owned(), failure.is_some()) == Some(true);
        match failure {
            Some(e) => {
                metrics().dns_failures.with_label_values(&[route]).inc();
                if !was_failing {
                    log::warn!("route {route}: {e}; keeping its last addresses");
                }
            }
            None if was_failing => log::info!("route {route}: its names resolve again"),
            None => {}
        }
    }
}

#[async_trait]
impl BackgroundService for NameRefresh {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let interval = self.upstreams.get().resolve_interval;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
            let upstreams = self.upstreams.get();
            for slot in upstreams.pools() {
                self.refresh(slot, &upstreams).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::upstreams::peer::HttpPeer;

    fn entry(port: u16, addresses: usize) -> PoolEntry {
        let any: SocketAddr = ([0, 0, 0, 0], port).into();
        PoolEntry {
            host: "backend.test".into(),
            port,
            weight: 1,
            template: HttpPeer::new(any, false, String::new()),
            check: None,
            is_name: true,
            addresses: (0..addresses)
                .map(|i| SocketAddr::from(([127, 0, 1, i as u8], port)))
                .collect(),
        }
    }

    #[test]
    fn members_are_one_per_address_and_capped() {
        let registry = UpstreamRegistry::default();
        let two = members(&[entry(8080, 2)], &registry, None);
        assert_eq!(two.len(), 2);
        assert_eq!(two[1].peer._address.to_string(), "127.0.1.1:8080");
        // Five names of 16 addresses: the tries' bit set holds 64.
        let entries: Vec<PoolEntry> = (0..5).map(|p| entry(9000 + p, 16)).collect();
        assert_eq!(members(&entries, &registry, None).len(), MAX_MEMBERS);
    }
}

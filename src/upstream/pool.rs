//! A route's upstream pool: its peers (each a shared [`PeerState`] and the
//! route's own peer template with its timeouts), how a request picks one,
//! and its retry budget.
//!
//! Selection uses pingora-load-balancing's algorithms (weighted round
//! robin, Ketama consistent hashing) and skips peers that are unhealthy,
//! ejected or already tried by this request; `least_connections` compares
//! the peers' in-flight counts.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pingora::lb::selection::{BackendIter, BackendSelection, Consistent, RoundRobin};
use pingora::lb::Backend;
use pingora::upstreams::peer::HttpPeer;

use super::peer::PeerState;
use crate::config::Balancing;

/// One peer of one route.
pub struct Member {
    pub state: Arc<PeerState>,
    /// Address and the route's timeouts; cloned per try.
    pub peer: HttpPeer,
    pub weight: u16,
}

/// One configured peer entry (`host` + `port`, or one of `upstreams`): a
/// name becomes a member per address it resolves to.
#[derive(Clone)]
pub struct PoolEntry {
    pub host: String,
    pub port: u16,
    pub weight: u16,
    /// The entry's peer (timeouts, protocol, TLS name) for any address.
    pub template: HttpPeer,
    pub check: Option<crate::config::HealthCheckConfig>,
    /// `host` is a name, not an IP address: it is re-resolved.
    pub is_name: bool,
    /// What it resolved to last (in order, no duplicates).
    pub addresses: Vec<std::net::SocketAddr>,
}

/// The most addresses one name contributes.
pub const MAX_ADDRESSES_PER_NAME: usize = 16;

/// The most members a pool holds: a request's tries are a bit set of them
/// ([`Tried`]). The configuration allows at most as many entries; names
/// resolving to many addresses are cut here.
pub const MAX_MEMBERS: usize = Tried::BITS as usize;

/// The index of a member, carried in its `Backend` for the selectors.
#[derive(Clone, Copy)]
struct MemberIndex(usize);

enum Selector {
    Single,
    RoundRobin(Arc<RoundRobin>),
    Consistent(Arc<Consistent>),
    /// Ties go to the peer after the last pick, so equal loads rotate.
    Least(AtomicUsize),
}

/// Which members a request has tried (bit i: member i).
pub type Tried = u64;

pub struct Pool {
    pub service: String,
    pub pattern: String,
    pub members: Box<[Member]>,
    /// The configured entries the members come from, with the addresses
    /// each resolved to (a name is re-resolved: [`super::names`]).
    pub entries: Arc<[PoolEntry]>,
    pub balancing: Balancing,
    selector: Selector,
    pub max_retries: u32,
    /// No retry starts once the request is this old (the route's read
    /// timeout: its overall budget for an answer).
    pub retry_budget: Duration,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let peers: Vec<&str> = self
            .members
            .iter()
            .map(|m| m.state.label.as_str())
            .collect();
        f.debug_struct("Pool")
            .field("balancing", &self.balancing)
            .field("peers", &peers)
            .finish()
    }
}

impl Pool {
    pub fn new(
        service: String,
        pattern: String,
        members: Vec<Member>,
        balancing: Balancing,
        max_retries: u32,
        retry_budget: Duration,
    ) -> Self {
        let backends = || -> BTreeSet<Backend> {
            members
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let mut b = Backend {
                        addr: pingora::protocols::l4::socket::SocketAddr::Inet(m.state.addr),
                        weight: m.weight.into(),
                        ext: Default::default(),
                    };
                    b.ext.insert(MemberIndex(i));
                    b
                })
                .collect()
        };
        let selector = match (members.len(), balancing) {
            // No member yet (a name that has not resolved): picks nothing.
            (0 | 1, _) => Selector::Single,
            (_, Balancing::RoundRobin) => {
                Selector::RoundRobin(Arc::new(RoundRobin::build(&backends())))
            }
            (_, Balancing::Consistent) => {
                Selector::Consistent(Arc::new(Consistent::build(&backends())))
            }
            (_, Balancing::LeastConnections) => Selector::Least(AtomicUsize::new(0)),
        };
        Self {
            service,
            pattern,
            members: members.into_boxed_slice(),
            entries: Arc::from([]),
            balancing,
            selector,
            max_retries,
            retry_budget,
        }
    }

    /// The same pool (balancing, retries) over other members.
    pub fn rebuilt(&self, members: Vec<Member>) -> Self {
        Self::new(
            self.service.clone(),
            self.pattern.clone(),
            members,
            self.balancing,
            self.max_retries,
            self.retry_budget,
        )
    }

    /// The pool with the entries its members were built from.
    pub fn with_entries(mut self, entries: Vec<PoolEntry>) -> Self {
        self.entries = entries.into();
        self
    }

    fn usable(&self, i: usize, tried: Tried) -> bool {
        i < self.members.len() && tried & (1 << i) == 0 && self.members[i].state.is_eligible()
    }

    /// An eligible member this request has not tried, if any. `key` picks
    /// the peer of `consistent` pools. When every member the checks allow
    /// is passively ejected, one of those is picked anyway (the pool's
    /// "panic mode"): ejection moves traffic between peers, it never takes
    /// a pool's last ones out. Only active checks can do that.
    pub fn pick(&self, key: &[u8], tried: Tried) -> Option<usize> {
        self.pick_eligible(key, tried).or_else(|| {
            (0..self.members.len()).find(|&i| {
                tried & (1 << i) == 0
                    && self.members[i].state.health() != super::peer::Health::Unhealthy
            })
        })
    }

    fn pick_eligible(&self, key: &[u8], tried: Tried) -> Option<usize> {
        match &self.selector {
            Selector::Single => self.usable(0, tried).then_some(0),
            Selector::RoundRobin(rr) => self.walk(rr.iter(key), tried),
            Selector::Consistent(ring) => self.walk(ring.iter(key), tried),
            Selector::Least(next) => self.least_loaded(next, tried),
        }
    }

    /// Follows a selector's order, skipping unusable members; a bounded
    /// walk, then every member in order.
    fn walk(&self, mut order: impl BackendIter, tried: Tried) -> Option<usize> {
        let steps = 4 * self.members.len() + 8;
        for _ in 0..steps {
            let Some(backend) = order.next() else { break };
            let Some(&MemberIndex(i)) = backend.ext.get::<MemberIndex>() else {
                break;
            };
            if self.usable(i, tried) {
                return Some(i);
            }
        }
        (0..self.members.len()).find(|&i| self.usable(i, tried))
    }

    fn least_loaded(&self, next: &AtomicUsize, tried: Tried) -> Option<usize> {
        let n = self.members.len();
        let start = next.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<(usize, u64)> = None;
        for offset in 0..n {
            let i = (start + offset) % n;
            if !self.usable(i, tried) {
                continue;
            }
            let m = &self.members[i];
            // in_flight / weight, compared without division.
            let load = u64::from(m.state.in_flight()) * 1000 / u64::from(m.weight);
            if best.is_none_or(|(_, b)| load < b) {
                best = Some((i, load));
            }
        }
        best.map(|(i, _)| i)
    }

    /// Whether a retry would find a member: one not tried yet that the
    /// checks allow.
    pub fn has_untried(&self, tried: Tried) -> bool {
        (0..self.members.len()).any(|i| {
            tried & (1 << i) == 0
                && self.members[i].state.health() != super::peer::Health::Unhealthy
        })
    }
}

#[cfg(any(test, feature = "test-util"))]
/// A round-robin pool over `addrs`, named after `pattern`.
pub fn test_pool(pattern: &str, addrs: &[&str]) -> std::sync::Arc<crate::upstream::Pool> {
    use super::peer::PeerState;
    let members = addrs
        .iter()
        .map(|a| {
            let addr: std::net::SocketAddr = a.parse().expect("test address");
            Member {
                state: std::sync::Arc::new(PeerState::new(addr, None)),
                peer: pingora::upstreams::peer::HttpPeer::new(addr, false, String::new()),
                weight: 1,
            }
        })
        .collect();
    std::sync::Arc::new(Pool::new(
        pattern.into(),
        pattern.into(),
        members,
        Balancing::RoundRobin,
        2,
        std::time::Duration::from_secs(30),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::peer::EJECT_AFTER_FAILURES;

    fn pool(n: usize, balancing: Balancing, weights: &[u16]) -> Pool {
        let members = (0..n)
            .map(|i| {
                let addr = format!("127.0.0.1:{}", 10_000 + i).parse().unwrap();
                Member {
                    state: Arc::new(PeerState::new(addr, None)),
                    peer: HttpPeer::new(addr, false, String::new()),
                    weight: weights.get(i).copied().unwrap_or(1),
                }
            })
            .collect();
        Pool::new(
            "s".into(),
            "/p/*".into(),
            members,
            balancing,
            2,
            Duration::from_secs(1),
        )
    }

    fn counts(p: &Pool, picks: usize, key: impl Fn(usize) -> Vec<u8>) -> Vec<usize> {
        let mut counts = vec![0; p.members.len()];
        for n in 0..picks {
            counts[p.pick(&key(n), 0).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn an_empty_pool_picks_nothing() {
        for balancing in [
            Balancing::RoundRobin,
            Balancing::Consistent,
            Balancing::LeastConnections,
        ] {
            let p = pool(0, balancing, &[]);
            assert_eq!(p.pick(b"k", 0), None);
            assert!(!p.has_untried(0));
        }
    }

    #[test]
    fn round_robin_is_even_and_follows_weights() {
        let even = pool(3, Balancing::RoundRobin, &[]);
        assert_eq!(counts(&even, 3000, |_| vec![]), vec![1000, 1000, 1000]);
        let weighted = pool(2, Balancing::RoundRobin, &[3, 1]);
        assert_eq!(counts(&weighted, 400, |_| vec![]), vec![300, 100]);
    }

    #[test]
    fn tried_and_ejected_peers_are_skipped() {
        let p = pool(3, Balancing::RoundRobin, &[]);
        for _ in 0..EJECT_AFTER_FAILURES {
            p.members[1].state.record_failure();
        }
        for _ in 0..30 {
            let first = p.pick(b"", 0).unwrap();
            assert_ne!(first, 1);
            let second = p.pick(b"", 1 << first).unwrap();
            assert!(second != first && second != 1);
            // Only the ejected one is left: tried rather than nothing.
            assert_eq!(p.pick(b"", (1 << first) | (1 << second)), Some(1));
            assert_eq!(p.pick(b"", 0b111), None);
        }
        assert!(p.has_untried(0b101));
        assert!(!p.has_untried(0b111));
        // Checked out by the active checks: out, whatever is left.
        p.members[1].state.record_probe(false);
        assert_eq!(p.pick(b"", 0b101), None);
        assert!(!p.has_untried(0b101));
    }

    #[test]
    fn consistent_keeps_a_user_on_one_peer_while_it_is_eligible() {
        let p = pool(3, Balancing::Consistent, &[]);
        let homes: Vec<usize> = (0..50)
            .map(|u| p.pick(format!("user-{u}").as_bytes(), 0).unwrap())
            .collect();
        for (u, home) in homes.iter().enumerate() {
            for _ in 0..5 {
                assert_eq!(p.pick(format!("user-{u}").as_bytes(), 0), Some(*home));
            }
        }
        assert!((0..3).all(|i| homes.contains(&i)), "{homes:?}");
        // Its home ejected, a user moves; the others stay where they were.
        for _ in 0..EJECT_AFTER_FAILURES {
            p.members[homes[0]].state.record_failure();
        }
        assert_ne!(p.pick(b"user-0", 0), Some(homes[0]));
        for (u, home) in homes.iter().enumerate().filter(|(_, h)| **h != homes[0]) {
            assert_eq!(p.pick(format!("user-{u}").as_bytes(), 0), Some(*home));
        }
    }

    #[test]
    fn least_connections_prefers_the_idle_peer() {
        let p = pool(3, Balancing::LeastConnections, &[]);
        let _busy: Vec<_> = (0..4).map(|_| p.members[0].state.start_request()).collect();
        let _one = p.members[2].state.start_request();
        for _ in 0..10 {
            assert_eq!(p.pick(b"", 0), Some(1));
        }
        let spread = counts(&pool(3, Balancing::LeastConnections, &[]), 300, |_| vec![]);
        assert_eq!(spread, vec![100, 100, 100], "ties rotate");
    }

    #[test]
    fn a_single_peer_is_never_ejected_out_of_its_pool() {
        let p = pool(1, Balancing::RoundRobin, &[]);
        assert_eq!(p.pick(b"", 0), Some(0));
        assert_eq!(p.pick(b"", 1), None);
        for _ in 0..EJECT_AFTER_FAILURES {
            p.members[0].state.record_failure();
        }
        assert_eq!(p.pick(b"", 0), Some(0), "the last peer stays");
        p.members[0].state.record_probe(false);
        assert_eq!(p.pick(b"", 0), None, "unless the checks say it is down");
    }
}

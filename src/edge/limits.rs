//! Per-user (per client IP when anonymous) rate limits, with GCRA.
//!
//! A limit of N per minute is an emission interval T = 60 s / N with a burst
//! of N: a quiet client may send N requests at once, and over time exactly N
//! per minute pass. The state per key is one number (the theoretical arrival
//! time), kept in a bounded cache: a flood of distinct keys evicts idle ones
//! (whose state is the same as no state) and memory stays bounded.
//!
//! The state survives a SIGHUP (kept, or copied when `max_keys` changes) and
//! a handoff ([`RateLimiter::snapshot`] / [`RateLimiter::restore`] through
//! the handoff files). A route's own counter is named by a hash of its
//! pattern, not its position, so reordering routes keeps every budget.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use quick_cache::sync::{Cache, EntryAction, EntryResult};

const MINUTE_NS: u64 = 60_000_000_000;
const SECOND_NS: u64 = 1_000_000_000;

/// Whose requests are counted together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Subject {
    User(u128),
    Ip(IpAddr),
}

/// A counter: a scope (the default limit, or one route's own) and a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct LimitKey {
    /// [`DEFAULT_SCOPE`], or [`route_scope`] of the route's pattern.
    pub scope: u64,
    pub subject: Subject,
}

/// The scope of the `[rate_limit]` default, shared by all routes using it.
pub const DEFAULT_SCOPE: u64 = 0;

/// The scope of the first-sight budget (`auth.first_sight_per_ip_per_minute`):
/// new tokens per client address. [`route_scope`] reaches it only by a
/// 2^-64 collision.
pub const FIRST_SIGHT_SCOPE: u64 = u64::MAX;

/// The scope of a route's own limit: FNV-1a of its pattern, never
/// [`DEFAULT_SCOPE`]. Stable across processes and binary versions (unlike
/// std's hasher), so a handoff carries it.
pub fn route_scope(pattern: &str) -> u64 {
    let hash = pattern.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    hash.max(1)
}

/// The counters a successor took over (arrival times on its own clock),
/// kept until the predecessor's final snapshot arrives.
#[derive(Debug, Default)]
pub struct TakenOver {
    tat: HashMap<LimitKey, u64>,
}

impl TakenOver {
    pub fn len(&self) -> usize {
        self.tat.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tat.is_empty()
    }
}

/// One counter as handed from a process to its successor: how far its
/// theoretical arrival time is ahead of now. Counters at or behind now are
/// the same as no counter and are not handed over.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LimitSnapshotEntry {
    pub key: LimitKey,
    pub ahead_ns: u64,
}

/// The outcome of one request against its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    /// Requests that would still pass right now.
    pub remaining: u32,
    /// Whole seconds until the full burst is available again.
    pub reset_seconds: u64,
    /// Whole seconds, rounded up and at least 1, until a request passes
    /// (meaningful when refused).
    pub retry_after_seconds: u64,
}

pub struct RateLimiter {
    /// Theoretical arrival time per key, in ns since `origin`.
    tat: Cache<LimitKey, u64>,
    origin: Instant,
}

fn ceil_seconds(ns: u64) -> u64 {
    ns.div_ceil(SECOND_NS)
}

/// The GCRA step: the decision and the new arrival time (if allowed).
fn gcra(tat: u64, now: u64, per_minute: u32) -> (Decision, Option<u64>) {
    let n = u64::from(per_minute.max(1));
    let interval = MINUTE_NS / n;
    let tolerance = interval * (n - 1);
    let tat = tat.max(now);
    // Allowed when tat - tolerance <= now (written without subtracting, so
    // it cannot underflow near the origin).
    if now + tolerance < tat {
        let wait = tat - (now + tolerance);
        return (
            Decision {
                allowed: false,
                limit: per_minute,
                remaining: 0,
                reset_seconds: ceil_seconds(tat - now),
                retry_after_seconds: ceil_seconds(wait).max(1),
            },
            None,
        );
    }
    let new_tat = tat + interval;
    let remaining = (now + tolerance + interval - new_tat) / interval;
    (
        Decision {
            allowed: true,
            limit: per_minute,
            remaining: remaining.min(u64::from(u32::MAX)) as u32,
            reset_seconds: ceil_seconds(new_tat - now),
            retry_after_seconds: 1,
        },
        Some(new_tat),
    )
}

impl RateLimiter {
    pub fn new(max_keys: usize) -> Self {
        Self {
            tat: Cache::new(max_keys),
            origin: Instant::now(),
        }
    }

    /// Counts one request of `key` against `per_minute`.
    pub fn check(&self, key: LimitKey, per_minute: u32) -> Decision {
        self.check_at(key, per_minute, Instant::now())
    }

    pub fn check_at(&self, key: LimitKey, per_minute: u32, at: Instant) -> Decision {
        let now = self.now_ns(at);
        match self.tat.entry(&key, None, |_, tat| {
            let (decision, next) = gcra(*tat, now, per_minute);
            if let Some(next) = next {
                *tat = next;
            }
            EntryAction::Retain(decision)
        }) {
            EntryResult::Retained(decision) => decision,
            EntryResult::Vacant(guard) | EntryResult::Replaced(guard, _) => {
                let (decision, next) = gcra(0, now, per_minute);
                let _ = guard.insert(next.unwrap_or(now));
                decision
            }
            // Not produced without a timeout; count the request as allowed
            // rather than refuse an innocent user.
            EntryResult::Removed(..) | EntryResult::Timeout => gcra(0, now, per_minute).0,
        }
    }

    /// The counters that still hold back a client, relative to now.
    pub fn snapshot(&self) -> Vec<LimitSnapshotEntry> {
        let now = self.now_ns(Instant::now());
        self.tat
            .iter()
            .filter(|(_, tat)| *tat > now)
            .map(|(key, tat)| LimitSnapshotEntry {
                key,
                ahead_ns: tat - now,
            })
            .collect()
    }

    /// Loads a [`Self::snapshot`] (of a predecessor, or of the limiter this
    /// one replaces). A counter this limiter already holds keeps the later
    /// of the two arrival times. Returns what was taken, for
    /// [`Self::add_predecessor_tail`].
    pub fn restore(&self, entries: Vec<LimitSnapshotEntry>) -> TakenOver {
        let now = self.now_ns(Instant::now());
        let mut taken = HashMap::with_capacity(entries.len());
        for entry in entries {
            let tat = now.saturating_add(entry.ahead_ns);
            self.update(entry.key, |held| held.max(tat));
            taken.insert(entry.key, tat);
        }
        TakenOver { tat: taken }
    }

    /// Adds what a predecessor spent after it handed its counters over (in
    /// the seconds it still served): `last` is its final snapshot. A
    /// counter's debt (how far its arrival time is ahead of now) decays
    /// with time and grows by one interval per request; both processes
    /// started from the debt handed over, so the predecessor's extra is its
    /// final debt less what is left of the handed-over one, and that is
    /// added here. Returns how many counters grew.
    pub fn add_predecessor_tail(&self, taken: &TakenOver, last: Vec<LimitSnapshotEntry>) -> usize {
        let now = self.now_ns(Instant::now());
        let mut grown = 0;
        for entry in last {
            let handed_left = taken
                .tat
                .get(&entry.key)
                .map_or(0, |tat| tat.saturating_sub(now));
            let extra = entry.ahead_ns.saturating_sub(handed_left);
            // Below a millisecond it is the two clocks' reading times, not
            // a request (one interval is 60 s / N).
            if extra > 1_000_000 {
                self.update(entry.key, |held| held.max(now) + extra);
                grown += 1;
            }
        }
        grown
    }

    /// Sets a counter's arrival time to `next(current)` (0 when absent).
    fn update(&self, key: LimitKey, next: impl Fn(u64) -> u64) {
        match self.tat.entry(&key, None, |_, held| {
            *held = next(*held);
            EntryAction::Retain(())
        }) {
            EntryResult::Vacant(guard) | EntryResult::Replaced(guard, _) => {
                let _ = guard.insert(next(0));
            }
            EntryResult::Retained(()) | EntryResult::Removed(..) | EntryResult::Timeout => {}
        }
    }

    fn now_ns(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_nanos() as u64
    }

    /// Keys held (bounded by `max_keys`).
    pub fn len(&self) -> usize {
        self.tat.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tat.is_empty()
    }
}

/// The client address for limits: the peer, or, when the peer is a trusted
/// proxy, the rightmost address of `X-Forwarded-For` it did not add itself.
/// Hops are read right to left; `ip`, `ip:port`, `[v6]` and `[v6]:port`
/// parse, and a hop that does not ends the walk at the last trusted address
/// reached: never skipped, so an address a client wrote further left is
/// never chosen.
pub fn client_ip(
    peer: Option<IpAddr>,
    forwarded_for: &http::HeaderMap,
    trusted: &[ipnet::IpNet],
) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let mut client = peer;
    let values = forwarded_for.get_all(crate::wire::X_FORWARDED_FOR);
    for value in values.iter().rev() {
        let Ok(text) = value.to_str() else {
            return Some(client);
        };
        for hop in text.rsplit(',') {
            let Some(ip) = parse_hop(hop) else {
                return Some(client);
            };
            if !is_trusted(&ip) {
                return Some(ip);
            }
            client = ip;
        }
    }
    Some(client)
}

/// One `X-Forwarded-For` hop: `ip`, `ipv4:port`, `[ipv6]` or `[ipv6]:port`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        let port_ok = after.is_empty()
            || after
                .strip_prefix(':')
                .is_some_and(|p| p.parse::<u16>().is_ok());
        return port_ok
            .then(|| addr.parse::<Ipv6Addr>().ok().map(IpAddr::V6))
            .flatten();
    }
    let (addr, port) = hop.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    addr.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// The key of a client address for anonymous limits, the first-sight budget
/// and the connection cap: an IPv4 address (IPv4-mapped too) as itself, an
/// IPv6 address by its first `v6_prefix` bits (`[rate_limit]
/// ipv6_prefix_length`): one subscriber gets a whole /64, and must not get
/// 2^64 budgets.
pub fn client_key(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let keep = u32::from(v6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - keep).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests;

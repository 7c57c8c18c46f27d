//! One upstream peer's shared state: its active health (from the
//! background checks), its passive ejection (from real requests), its
//! in-flight count and its metric handles. One [`PeerState`] per address
//! and check settings, shared by every route naming it and kept across
//! SIGHUP (see [`super::registry`]).
//!
//! Proxy threads only read and update atomics here: no lock, no clock read
//! unless the peer is ejected.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use prometheus::IntCounter;

use crate::config::HealthCheckConfig;
use crate::observe::metrics::metrics;

/// Consecutive failed requests (connect errors, resets and timeouts before
/// any response) that eject a peer.
pub const EJECT_AFTER_FAILURES: u32 = 3;
/// The first ejection lasts this long; each further one while the peer
/// keeps failing doubles it, up to [`MAX_EJECTION`].
pub const FIRST_EJECTION: Duration = Duration::from_secs(1);
pub const MAX_EJECTION: Duration = Duration::from_secs(30);

/// What the active checks say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    /// Not probed yet (a new peer, or a peer without checks): eligible.
    Unknown = 0,
    Healthy = 1,
    Unhealthy = 2,
}

impl Health {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Health::Healthy,
            2 => Health::Unhealthy,
            _ => Health::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

/// Milliseconds on this process's monotonic clock (never 0: 0 means "not
/// ejected").
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(|| Instant::now() - Duration::from_millis(1));
    start.elapsed().as_millis() as u64
}

/// Consecutive probe results in one direction (written by the checker only).
#[derive(Debug, Default)]
struct Streak {
    ok: bool,
    count: u32,
}

pub struct PeerState {
    pub addr: SocketAddr,
    /// `IP:port`, as in metrics, logs and `/upstreams`.
    pub label: String,
    /// The active check, if the routes naming this peer configured one.
    pub check: Option<HealthCheckConfig>,
    active: AtomicU8,
    streak: Mutex<Streak>,
    passive_failures: AtomicU32,
    ejections: AtomicU32,
    /// [`now_ms`] until which the peer is ejected; 0: not ejected.
    ejected_until_ms: AtomicU64,
    in_flight: AtomicU32,
    pub requests: IntCounter,
    failures: IntCounter,
}

impl PeerState {
    pub fn new(addr: SocketAddr, check: Option<HealthCheckConfig>) -> Self {
        let label = addr.to_string();
        let m = metrics();
        Self {
            requests: m.upstream_peer_requests.with_label_values(&[&label]),
            failures: m.upstream_peer_failures.with_label_values(&[&label]),
            addr,
            label,
            check,
            active: AtomicU8::new(Health::Unknown as u8),
            streak: Mutex::new(Streak::default()),
            passive_failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
        }
    }

    pub fn health(&self) -> Health {
        Health::from_u8(self.active.load(Ordering::Relaxed))
    }

    /// Whether requests may go to this peer now.
    pub fn is_eligible(&self) -> bool {
        if self.health() == Health::Unhealthy {
            return false;
        }
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until == 0 || now_ms() >= until
    }

    /// How long the passive ejection still lasts, if any.
    pub fn ejected_for(&self) -> Option<Duration> {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        let now = now_ms();
        (until > now).then(|| Duration::from_millis(until - now))
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.passive_failures.load(Ordering::Relaxed)
    }

    /// A request got a response header from this peer.
    pub fn record_success(&self) {
        // Read first: the common case writes nothing to a shared line.
        if self.passive_failures.load(Ordering::Relaxed) != 0 {
            self.clear_ejection();
        }
    }

    fn clear_ejection(&self) {
        self.passive_failures.store(0, Ordering::Relaxed);
        self.ejections.store(0, Ordering::Relaxed);
        self.ejected_until_ms.store(0, Ordering::Relaxed);
    }

    /// A request failed at this peer before any response: counted, and
    /// the peer ejected once failures are consecutive enough. Returns
    /// whether this failure ejected it.
    pub fn record_failure(&self) -> bool {
        self.record_failure_at(now_ms())
    }

    fn record_failure_at(&self, now: u64) -> bool {
        self.failures.inc();
        let failures = self.passive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < EJECT_AFTER_FAILURES {
            return false;
        }
        let previous = self.ejections.fetch_add(1, Ordering::Relaxed).min(16);
        let backoff = FIRST_EJECTION
            .saturating_mul(1 << previous)
            .min(MAX_EJECTION);
        self.ejected_until_ms
            .store(now + backoff.as_millis() as u64, Ordering::Relaxed);
        true
    }

    /// One active probe's result; returns the new health when it changed.
    /// A new peer's first result decides at once; afterwards the
    /// thresholds of the check apply in both directions.
    pub fn record_probe(&self, ok: bool) -> Option<Health> {
        let (healthy_after, unhealthy_after) = self
            .check
            .as_ref()
            .map_or((1, 1), |c| (c.healthy_after, c.unhealthy_after));
        let mut streak = self.streak.lock().unwrap_or_else(|p| p.into_inner());
        if streak.ok == ok {
            streak.count = streak.count.saturating_add(1);
        } else {
            *streak = Streak { ok, count: 1 };
        }
        let current = self.health();
        let next = match (current, ok) {
            (Health::Unknown, true) => Health::Healthy,
            (Health::Unknown, false) => Health::Unhealthy,
            (Health::Unhealthy, true) if streak.count >= healthy_after => Health::Healthy,
            (Health::Healthy, false) if streak.count >= unhealthy_after => Health::Unhealthy,
            _ => return None,
        };
        self.active.store(next as u8, Ordering::Relaxed);
        if current == Health::Unhealthy {
            // Back by the checks' own standard: a passive ejection from the
            // outage would otherwise keep it out longer than they say.
            self.clear_ejection();
        }
        Some(next)
    }

    /// What a successor needs to carry this peer's state on.
    pub fn snapshot(&self) -> PeerSnapshot {
        PeerSnapshot {
            addr: self.addr,
            check: self.check.clone(),
            health: self.health() as u8,
            consecutive_failures: self.consecutive_failures(),
            ejections: self.ejections.load(Ordering::Relaxed),
            ejected_for_ms: self.ejected_for().map_or(0, |d| d.as_millis() as u64),
        }
    }

    /// Takes a predecessor's state for this peer.
    pub fn restore(&self, s: &PeerSnapshot) {
        self.active
            .store(Health::from_u8(s.health) as u8, Ordering::Relaxed);
        self.passive_failures
            .store(s.consecutive_failures, Ordering::Relaxed);
        self.ejections.store(s.ejections, Ordering::Relaxed);
        let until = if s.ejected_for_ms == 0 {
            0
        } else {
            now_ms() + s.ejected_for_ms.min(MAX_EJECTION.as_millis() as u64)
        };
        self.ejected_until_ms.store(until, Ordering::Relaxed);
    }

    /// Takes one in-flight slot (released when the guard drops).
    pub fn start_request(self: &std::sync::Arc<Self>) -> InFlightAtPeer {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.inc();
        InFlightAtPeer(self.clone())
    }
}

/// A peer's state in the handoff file `<upgrade_sock>.upstreams.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerSnapshot {
    pub addr: SocketAddr,
    pub check: Option<HealthCheckConfig>,
    pub health: u8,
    pub consecutive_failures: u32,
    pub ejections: u32,
    /// How much of its ejection is left (0: none).
    pub ejected_for_ms: u64,
}

/// One request at a peer, for `least_connections`.
pub struct InFlightAtPeer(std::sync::Arc<PeerState>);

impl InFlightAtPeer {
    pub fn peer(&self) -> &std::sync::Arc<PeerState> {
        &self.0
    }
}

impl Drop for InFlightAtPeer {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(healthy_after: u32, unhealthy_after: u32) -> HealthCheckConfig {
        HealthCheckConfig {
            path: None,
            interval_ms: 1000,
            timeout_ms: 1000,
            healthy_after,
            unhealthy_after,
        }
    }

    fn peer(check: Option<HealthCheckConfig>) -> PeerState {
        PeerState::new("127.0.0.1:9".parse().unwrap(), check)
    }

    #[test]
    fn first_probe_decides_then_thresholds_apply_both_ways() {
        let p = peer(Some(check(2, 3)));
        assert_eq!(p.health(), Health::Unknown);
        assert!(p.is_eligible());
        assert_eq!(p.record_probe(true), Some(Health::Healthy));
        assert_eq!(p.record_probe(false), None);
        assert_eq!(p.record_probe(false), None);
        assert_eq!(p.record_probe(true), None, "a success breaks the streak");
        for _ in 0..2 {
            assert_eq!(p.record_probe(false), None);
        }
        assert_eq!(p.record_probe(false), Some(Health::Unhealthy));
        assert!(!p.is_eligible());
        assert_eq!(p.record_probe(true), None);
        assert_eq!(p.record_probe(true), Some(Health::Healthy));
        assert!(p.is_eligible());

        let dead = peer(Some(check(2, 3)));
        assert_eq!(dead.record_probe(false), Some(Health::Unhealthy));
    }

    #[test]
    fn consecutive_failures_eject_with_a_growing_back_off() {
        let p = peer(None);
        let now = now_ms();
        assert!(!p.record_failure_at(now));
        p.record_success();
        assert!(!p.record_failure_at(now));
        assert!(!p.record_failure_at(now), "a success reset the count");
        assert!(p.record_failure_at(now));
        assert!(!p.is_eligible());
        let first = p.ejected_until_ms.load(Ordering::Relaxed) - now;
        assert_eq!(first, 1000);
        // Tried again after the back-off and failed again: twice as long.
        assert!(p.record_failure_at(now));
        let second = p.ejected_until_ms.load(Ordering::Relaxed) - now;
        assert_eq!(second, 2000);
        for _ in 0..20 {
            p.record_failure_at(now);
        }
        let capped = p.ejected_until_ms.load(Ordering::Relaxed) - now;
        assert_eq!(capped, MAX_EJECTION.as_millis() as u64);
        p.record_success();
        assert!(p.is_eligible());
        assert_eq!(p.consecutive_failures(), 0);
    }

    #[test]
    fn recovering_by_the_checks_ends_a_passive_ejection() {
        let p = peer(Some(check(1, 1)));
        p.record_probe(true);
        for _ in 0..EJECT_AFTER_FAILURES {
            p.record_failure();
        }
        assert!(p.ejected_for().is_some());
        assert_eq!(p.record_probe(false), Some(Health::Unhealthy));
        assert_eq!(p.record_probe(true), Some(Health::Healthy));
        assert!(p.is_eligible());
        assert!(p.ejected_for().is_none());
    }

    #[test]
    fn a_snapshot_carries_health_and_ejection() {
        let old = peer(Some(check(1, 1)));
        old.record_probe(false);
        for _ in 0..EJECT_AFTER_FAILURES {
            old.record_failure();
        }
        let snapshot = old.snapshot();
        let new = peer(Some(check(1, 1)));
        new.restore(&snapshot);
        assert_eq!(new.health(), Health::Unhealthy);
        assert_eq!(new.consecutive_failures(), EJECT_AFTER_FAILURES);
        let left = new.ejected_for().expect("still ejected");
        assert!(
            left <= FIRST_EJECTION && left > FIRST_EJECTION / 2,
            "{left:?}"
        );
    }

    #[test]
    fn in_flight_slots_are_released() {
        let p = std::sync::Arc::new(peer(None));
        let a = p.start_request();
        let b = p.start_request();
        assert_eq!(p.in_flight(), 2);
        drop(a);
        drop(b);
        assert_eq!(p.in_flight(), 0);
    }
}

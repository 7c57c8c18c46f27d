//! Unit tests of `edge/limits.rs` (kept apart so the module reads as the code it tests).
use super::*;
use std::time::Duration;

fn user(n: u128) -> LimitKey {
    LimitKey {
        scope: 0,
        subject: Subject::User(n),
    }
}

#[test]
fn a_burst_of_exactly_n_then_one_per_interval() {
    let limiter = RateLimiter::new(100);
    let t0 = Instant::now();
    let mut allowed = 0;
    for i in 0..10 {
        let d = limiter.check_at(user(1), 5, t0);
        if d.allowed {
            allowed += 1;
            assert_eq!(d.remaining, 4 - i);
        } else {
            assert_eq!(d.retry_after_seconds, 12, "one interval of 60/5 s");
            assert_eq!(d.remaining, 0);
        }
    }
    assert_eq!(allowed, 5);
    // Just before one interval: still refused, Retry-After rounds up.
    let d = limiter.check_at(user(1), 5, t0 + Duration::from_millis(11_500));
    assert!(!d.allowed);
    assert_eq!(d.retry_after_seconds, 1);
    assert!(
        limiter
            .check_at(user(1), 5, t0 + Duration::from_secs(12))
            .allowed
    );
    assert!(
        !limiter
            .check_at(user(1), 5, t0 + Duration::from_secs(12))
            .allowed
    );
    // Other users are not affected.
    assert!(limiter.check_at(user(2), 5, t0).allowed);
}

#[test]
fn sustained_rate_is_exactly_n_per_minute() {
    let limiter = RateLimiter::new(100);
    let t0 = Instant::now();
    // After the initial burst, a client sending every 100 ms for ten
    // minutes gets exactly N per minute through.
    let mut allowed = 0;
    for step in 0..6000u64 {
        let at = t0 + Duration::from_millis(step * 100);
        allowed += u32::from(limiter.check_at(user(1), 30, at).allowed);
    }
    assert_eq!(allowed, 30 + 30 * 10 - 1);
}

#[test]
fn a_snapshot_carries_spent_budgets_to_another_limiter() {
    let old = RateLimiter::new(100);
    for _ in 0..3 {
        assert!(old.check(user(1), 3).allowed);
    }
    assert!(old.check(user(2), 3).allowed);
    let snapshot = old.snapshot();
    assert_eq!(snapshot.len(), 2);

    let new = RateLimiter::new(100);
    assert!(new.check(user(2), 3).allowed, "a counter both hold");
    assert_eq!(new.restore(snapshot).len(), 2);
    assert!(!new.check(user(1), 3).allowed, "user 1 spent the burst");
    // User 2 keeps the later arrival time (one spent in each), not the
    // sum: two of three are left.
    assert!(new.check(user(2), 3).allowed);
    assert!(new.check(user(2), 3).allowed);
    assert!(!new.check(user(2), 3).allowed);
}

#[test]
fn what_the_predecessor_spent_after_the_handoff_is_added() {
    let old = RateLimiter::new(100);
    assert!(old.check(user(1), 4).allowed);
    let new = RateLimiter::new(100);
    let taken = new.restore(old.snapshot());
    // Both serve user 1 after the handoff: one request each.
    assert!(old.check(user(1), 4).allowed);
    assert!(new.check(user(1), 4).allowed);
    // The predecessor's final state adds its one request (not its
    // whole debt, which includes the one handed over).
    assert_eq!(new.add_predecessor_tail(&taken, old.snapshot()), 1);
    assert!(new.check(user(1), 4).allowed, "the fourth of four");
    assert!(!new.check(user(1), 4).allowed, "the fifth");
    // Nothing spent after the handoff: nothing added.
    let quiet = RateLimiter::new(100);
    assert!(quiet.check(user(2), 4).allowed);
    let next = RateLimiter::new(100);
    let taken = next.restore(quiet.snapshot());
    assert_eq!(next.add_predecessor_tail(&taken, quiet.snapshot()), 0);
}

#[test]
fn route_scopes_are_stable_and_never_the_default() {
    assert_eq!(route_scope("/api/x/*"), route_scope("/api/x/*"));
    assert_ne!(route_scope("/api/x/*"), route_scope("/api/y/*"));
    assert_ne!(route_scope(""), DEFAULT_SCOPE);
    // Pinned: a successor of another build must name the same counter.
    assert_eq!(route_scope("/api/x/*"), 14_339_004_204_813_162_812_u64);
}

#[test]
fn retry_after_is_never_zero() {
    let (d, _) = gcra(MINUTE_NS, MINUTE_NS - 1, 1);
    assert!(!d.allowed);
    assert_eq!(d.retry_after_seconds, 1);
}

#[test]
fn memory_is_bounded_under_a_flood_of_keys() {
    let limiter = RateLimiter::new(1_000);
    let t0 = Instant::now();
    for n in 0..100_000u128 {
        limiter.check_at(user(n), 5, t0);
    }
    assert!(limiter.len() <= 1_100, "{} keys held", limiter.len());
}

#[test]
fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let trusted: Vec<ipnet::IpNet> = vec!["127.0.0.1/32".parse().unwrap()];
    let mut h = http::HeaderMap::new();
    h.append("x-forwarded-for", "127.0.0.7, 127.0.0.8".parse().unwrap());
    let peer: IpAddr = "127.0.0.1".parse().unwrap();
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    assert_eq!(
        client_ip(Some(peer), &h, &trusted),
        Some("127.0.0.8".parse().unwrap())
    );
    assert_eq!(client_ip(Some(other), &h, &trusted), Some(other));
    assert_eq!(client_ip(Some(peer), &h, &[]), Some(peer));
}

#[test]
fn ipv6_clients_are_keyed_by_prefix() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(
        client_key(ip("2001:db8:1:2:aaaa::1"), 64),
        ip("2001:db8:1:2::")
    );
    assert_eq!(
        client_key(ip("2001:db8:1:2:ffff::9"), 64),
        ip("2001:db8:1:2::")
    );
    assert_ne!(client_key(ip("2001:db8:1:3::1"), 64), ip("2001:db8:1:2::"));
    assert_eq!(
        client_key(ip("2001:db8:1:2::1"), 128),
        ip("2001:db8:1:2::1")
    );
    assert_eq!(client_key(ip("2001:db8:1:2::1"), 48), ip("2001:db8:1::"));
    assert_eq!(client_key(ip("192.0.2.7"), 64), ip("192.0.2.7"));
    assert_eq!(client_key(ip("::ffff:192.0.2.7"), 64), ip("192.0.2.7"));
}

#[test]
fn forwarded_hops_parse_strictly_and_stop_at_garbage() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let trusted = vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
    let walk = |xff: &[&str]| {
        let mut h = http::HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        client_ip(Some(ip("127.0.0.1")), &h, &trusted).unwrap()
    };
    assert_eq!(walk(&["198.51.100.7"]), ip("198.51.100.7"));
    assert_eq!(walk(&["198.51.100.7:5555"]), ip("198.51.100.7"));
    assert_eq!(walk(&["[2001:db8::7]:443"]), ip("2001:db8::7"));
    assert_eq!(walk(&["[2001:db8::7]"]), ip("2001:db8::7"));
    assert_eq!(
        walk(&["203.0.113.9, 198.51.100.7, 127.0.0.2"]),
        ip("198.51.100.7")
    );
    assert_eq!(
        walk(&["203.0.113.9", "198.51.100.7:80"]),
        ip("198.51.100.7")
    );
    // Garbage ends the walk at the last trusted address: the address
    // written further left is never chosen.
    assert_eq!(walk(&["203.0.113.9, garbage"]), ip("127.0.0.1"));
    assert_eq!(walk(&["203.0.113.9, 127.0.0.5, [::1"]), ip("127.0.0.1"));
    assert_eq!(walk(&["203.0.113.9, 198.51.100.7:99999"]), ip("127.0.0.1"));
    assert_eq!(walk(&["203.0.113.9, garbage, 127.0.0.5"]), ip("127.0.0.5"));
    assert_eq!(walk(&["203.0.113.9,"]), ip("127.0.0.1"));
    // Every hop trusted: the farthest one.
    assert_eq!(walk(&["127.0.0.9, 127.0.0.5"]), ip("127.0.0.9"));
    assert_eq!(walk(&[]), ip("127.0.0.1"));
}

//! Unit tests of `process/connection.rs` (kept apart so the module reads as the code it tests).
use super::*;

fn limits(max_per_ip: usize, pressure_threshold: usize) -> ConnectionLimits {
    ConnectionLimits {
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(60),
        max_per_ip,
        pressure_threshold,
        uncapped: Vec::new(),
        ipv6_prefix_length: 64,
    }
}

#[test]
fn the_per_ip_cap_engages_only_under_pressure() {
    let open = Arc::new(OpenConnections::default());
    let limits = limits(2, 4);
    let crowd: IpAddr = "127.0.0.1".parse().unwrap();
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    // Below the threshold one address may hold more than its share.
    let mut held: Vec<_> = (0..4)
        .map(|_| open.acquire(crowd, &limits).expect("below the threshold"))
        .collect();
    // Under pressure: refused for the crowd, not for another address.
    assert!(open.acquire(crowd, &limits).is_none());
    held.push(open.acquire(other, &limits).expect("within its share"));
    // Closing connections relieves the pressure.
    held.truncate(2);
    assert!(open.acquire(crowd, &limits).is_some());
}

#[test]
fn threshold_zero_caps_always_and_max_zero_never() {
    let open = Arc::new(OpenConnections::default());
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    let always = limits(1, 0);
    let first = open.acquire(ip, &always);
    assert!(first.is_some());
    assert!(open.acquire(ip, &always).is_none());
    let never = limits(0, 0);
    assert!((0..10).all(|_| open.acquire(ip, &never).is_some()));
}

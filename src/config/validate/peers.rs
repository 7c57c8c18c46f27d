//! The checks of a route's peers (`host` + `port` or `upstreams`, balancing,
//! retries, health checks) and the parsing of an `upstreams` entry, which
//! the plan uses too.

use super::Problems;
use crate::config::schema::*;

/// The route's peers: `host` + `port`, or `upstreams`, never both; and
/// the keys that go with them.
pub(super) fn peers(route: &RouteConfig, key: &dyn Fn(&str) -> String, problems: &mut Problems) {
    match (&route.host, route.port, &route.upstreams) {
        (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => problems.add(
            key("upstreams"),
            "give either host and port or upstreams, not both",
        ),
        (None, None, None) => problems.add(key("upstreams"), "needs host and port, or upstreams"),
        (Some(host), port, None) => {
            problems.check(!host.trim().is_empty(), key("host"), "must not be empty");
            match port {
                None => problems.add(key("port"), "is needed with host"),
                Some(port) => problems.check(port != 0, key("port"), "must be 1..=65535"),
            }
        }
        (None, Some(_), None) => problems.add(key("host"), "is needed with port"),
        (None, None, Some(entries)) => {
            problems.check(
                !entries.is_empty(),
                key("upstreams"),
                "must name at least one peer",
            );
            problems.check(
                entries.len() <= MAX_PEERS_PER_ROUTE,
                key("upstreams"),
                format!("at most {MAX_PEERS_PER_ROUTE} peers per route"),
            );
            let mut seen = std::collections::HashSet::new();
            for (j, entry) in entries.iter().enumerate() {
                let entry_key = key(&format!("upstreams[{j}]"));
                match parse_upstream(entry) {
                    Err(message) => problems.add(entry_key, message),
                    Ok(peer) if !seen.insert((peer.host.clone(), peer.port)) => problems.add(
                        entry_key,
                        format!("'{}:{}' is listed twice", peer.host, peer.port),
                    ),
                    Ok(_) => {}
                }
            }
        }
    }
    protocol(route, key, problems);
    if let Some(message) = route.load_balancing.problem() {
        problems.add(key("load_balancing"), message);
    }
    problems.check(
        route.max_retries.is_none_or(|n| n <= MAX_RETRIES),
        key("max_retries"),
        format!("must be 0..={MAX_RETRIES}"),
    );
    if let Some(check) = &route.health_check {
        health_check(check, key, problems);
    }
}

/// `protocol`, and the TLS keys only `h2` takes.
fn protocol(route: &RouteConfig, key: &dyn Fn(&str) -> String, problems: &mut Problems) {
    match route.protocol.parsed() {
        Err(message) => problems.add(key("protocol"), message),
        Ok(protocol) if !protocol.is_tls() => {
            for (field, set) in [
                ("tls_ca_file", route.tls_ca_file.is_some()),
                ("tls_server_name", route.tls_server_name.is_some()),
            ] {
                problems.check(
                    !set,
                    key(field),
                    "needs protocol = \"h2\" (TLS to the peers)",
                );
            }
        }
        Ok(_) => {
            if let Some(name) = &route.tls_server_name {
                problems.check(
                    rustls_pki_types::ServerName::try_from(name.as_str()).is_ok(),
                    key("tls_server_name"),
                    format!("'{name}' is not a DNS name or an IP address"),
                );
            }
        }
    }
}

/// `[routes.health_check]`: a path the checks may request, and positive
/// intervals and thresholds.
fn health_check(check: &HealthCheckConfig, key: &dyn Fn(&str) -> String, problems: &mut Problems) {
    let field = |f: &str| key(&format!("health_check.{f}"));
    problems.check(
        check
            .path
            .as_ref()
            .is_none_or(|p| p.starts_with('/') && !p.contains(char::is_whitespace)),
        field("path"),
        "must start with '/' and contain no spaces",
    );
    problems.check(
        check.interval_ms > 0,
        field("interval_ms"),
        "must be greater than 0",
    );
    problems.check(
        check.timeout_ms > 0,
        field("timeout_ms"),
        "must be greater than 0",
    );
    problems.check(
        check.healthy_after > 0,
        field("healthy_after"),
        "must be at least 1",
    );
    problems.check(
        check.unhealthy_after > 0,
        field("unhealthy_after"),
        "must be at least 1",
    );
}

/// Most peers one route may name (a try's set of tried peers is a 64-bit mask).
pub const MAX_PEERS_PER_ROUTE: usize = 64;
/// Largest `max_retries`.
pub const MAX_RETRIES: u32 = 10;
/// Largest peer weight (the round-robin table holds one slot per unit).
pub const MAX_WEIGHT: u16 = 100;

/// One `upstreams` entry: `"host:port"` or `"host:port weight=N"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamEntry {
    pub host: String,
    pub port: u16,
    pub weight: u16,
}

pub fn parse_upstream(entry: &str) -> Result<UpstreamEntry, String> {
    let bad = || format!("'{entry}' is not \"host:port\" or \"host:port weight=N\"");
    let mut words = entry.split_whitespace();
    let address = words.next().ok_or_else(bad)?;
    let weight = match words.next() {
        None => 1,
        Some(word) => {
            let n = word.strip_prefix("weight=").ok_or_else(bad)?;
            match n.parse::<u16>() {
                Ok(w) if (1..=MAX_WEIGHT).contains(&w) => w,
                _ => return Err(format!("'{entry}': weight must be 1..={MAX_WEIGHT}")),
            }
        }
    };
    if words.next().is_some() {
        return Err(bad());
    }
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| format!("'{entry}': the port must be 1..=65535"))?;
    if host.is_empty() {
        return Err(bad());
    }
    Ok(UpstreamEntry {
        host: host.to_owned(),
        port,
        weight,
    })
}

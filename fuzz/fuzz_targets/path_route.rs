//! Any request path through normalization and route lookup. Invariants: a
//! normalized path is stable (normalizing it again changes nothing), has no
//! dot or empty segments and no encoded separator, and is routed exactly
//! as its re-normalized form is.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use robeing_gateway::routing::table::test_route;
use robeing_gateway::wire::path::normalize_path;
use robeing_gateway::routing::table::RouteTable;

static TABLE: LazyLock<RouteTable> = LazyLock::new(|| {
    let mut table = RouteTable::default();
    for pattern in [
        "/api/auth/*",
        "/api/robeing/*",
        "/api/robeing/admin/*",
        "/*",
    ] {
        let mut route = test_route(pattern);
        route.policy.auth_required = pattern != "/api/auth/*";
        table.insert(route);
    }
    table
});

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(normal) = normalize_path(raw) else {
        return;
    };
    let again = normalize_path(&normal).expect("a normalized path normalizes");
    assert_eq!(again, normal, "normalization is not stable for {raw:?}");
    assert!(normal.starts_with('/'));
    for segment in normal[1..].split('/').rev().skip(1) {
        assert!(!segment.is_empty(), "empty segment in {normal:?}");
    }
    for segment in normal[1..].split('/') {
        assert!(
            segment != "." && segment != "..",
            "dot segment in {normal:?}"
        );
        let upper = segment.to_ascii_uppercase();
        assert!(!upper.contains("%2F") && !upper.contains("%5C") && !upper.contains("%00"));
    }
    let first = TABLE.lookup(&normal).map(|r| r.pattern.clone());
    let second = TABLE.lookup(&again).map(|r| r.pattern.clone());
    assert_eq!(first, second);
    // The catch-all route matches every normalized path.
    assert!(first.is_some());
});

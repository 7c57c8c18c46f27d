//! The route table: segment-aware longest-prefix match over normalized paths.
//!
//! Routes are stored in a trie keyed by path segment, so a lookup costs one
//! hash probe per segment of the request path, whatever the number of routes.
//! `/api/auth/*` matches `/api/auth` and `/api/auth/x`, never `/api/authx`.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::pattern_segments;

use super::policy::RoutePolicy;
use crate::observe::metrics::RouteMetrics;

/// One configured route, ready to serve: where it matches, which service
/// and peers answer it, and what it asks of the edge.
#[derive(Debug)]
pub struct Route {
    /// The configured pattern, e.g. `/api/auth/*`.
    pub pattern: String,
    /// The service name (`backend_service` in logs).
    pub service: String,
    /// The route's peers (one for `host` + `port`), timeouts set; swapped
    /// whole when a name resolves to other addresses.
    pub pool: crate::upstream::PoolSlot,
    pub policy: RoutePolicy,
    /// Its histograms, labelled with the pattern.
    pub metrics: RouteMetrics,
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    route: Option<Arc<Route>>,
}

/// The table of routes, keyed by prefix segments.
#[derive(Debug, Default)]
pub struct RouteTable {
    root: Node,
    len: usize,
}

impl RouteTable {
    /// Adds a route; returns the route it displaced, if the pattern was taken.
    ///
    /// The pattern must end in `/*`; config validation guarantees it.
    pub fn insert(&mut self, route: Route) -> Option<Arc<Route>> {
        let mut node = &mut self.root;
        if let Some(segments) = pattern_segments(&route.pattern) {
            for seg in segments {
                node = node.children.entry(seg.into()).or_default();
            }
        }
        let previous = node.route.replace(Arc::new(route));
        if previous.is_none() {
            self.len += 1;
        }
        previous
    }

    /// The route with the longest prefix matching `path`, a normalized path.
    pub fn lookup(&self, path: &str) -> Option<&Arc<Route>> {
        let mut node = &self.root;
        let mut best = node.route.as_ref();
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            match node.children.get(seg) {
                Some(child) => {
                    node = child;
                    if child.route.is_some() {
                        best = child.route.as_ref();
                    }
                }
                None => break,
            }
        }
        best
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(any(test, feature = "test-util"))]
/// A route built in code: `pattern` to `127.0.0.1:1`, with the default
/// policy (authenticated, 1 MiB bodies, no limit, no Slack, compressible).
pub fn test_route(pattern: &str) -> Route {
    Route {
        pattern: pattern.into(),
        service: pattern.into(),
        pool: std::sync::Arc::new(arc_swap::ArcSwap::new(crate::upstream::pool::test_pool(
            pattern,
            &["127.0.0.1:1"],
        ))),
        policy: RoutePolicy::default(),
        metrics: RouteMetrics::of(pattern),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(pattern: &str) -> Route {
        test_route(pattern)
    }

    fn table(patterns: &[&str]) -> RouteTable {
        let mut t = RouteTable::default();
        for p in patterns {
            assert!(t.insert(route(p)).is_none());
        }
        t
    }

    fn hit<'a>(t: &'a RouteTable, path: &str) -> Option<&'a str> {
        t.lookup(path).map(|r| r.pattern.as_str())
    }

    #[test]
    fn matches_on_segment_boundaries() {
        let t = table(&["/api/auth/*"]);
        assert_eq!(hit(&t, "/api/auth"), Some("/api/auth/*"));
        assert_eq!(hit(&t, "/api/auth/"), Some("/api/auth/*"));
        assert_eq!(hit(&t, "/api/auth/login"), Some("/api/auth/*"));
        assert_eq!(hit(&t, "/api/authx"), None);
        assert_eq!(hit(&t, "/api"), None);
        assert_eq!(hit(&t, "/"), None);
    }

    #[test]
    fn longest_prefix_wins() {
        let t = table(&["/*", "/api/*", "/api/items/gmail/*"]);
        assert_eq!(hit(&t, "/api/items/gmail/1"), Some("/api/items/gmail/*"));
        assert_eq!(hit(&t, "/api/items/slack"), Some("/api/*"));
        assert_eq!(hit(&t, "/other"), Some("/*"));
        assert_eq!(hit(&t, "/"), Some("/*"));
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn duplicate_patterns_are_reported() {
        let mut t = table(&["/a/*"]);
        assert!(t.insert(route("/a/*")).is_some());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn pattern_segments_require_wildcard() {
        assert!(pattern_segments("/api").is_none());
        assert_eq!(pattern_segments("/*").unwrap().count(), 0);
        assert_eq!(
            pattern_segments("/a/b/*").unwrap().collect::<Vec<_>>(),
            ["a", "b"]
        );
    }
}

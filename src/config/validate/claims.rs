//! The checks of identity policy: `[[auth.claim_headers]]` (a claim path
//! and a header the gateway may set) and a route's `require_claims`.

use super::Problems;
use crate::config::schema::*;

/// Headers a claim may never become: hop-by-hop and framing headers,
/// `Host`, the client's credentials, and the gateway's own.
const RESERVED_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
    "content-length",
    "host",
    "authorization",
    "x-user-id",
    "x-username",
    "x-request-id",
    "forwarded",
    "traceparent",
    "tracestate",
];

/// A header name as the stripping compares it: lower case, `_` as `-`.
pub fn folded_header_name(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

fn is_reserved(folded: &str) -> bool {
    RESERVED_HEADERS.contains(&folded) || folded.starts_with("x-forwarded-")
}

/// A claim path: names joined by single dots.
fn is_claim_path(claim: &str) -> bool {
    !claim.is_empty() && claim.split('.').all(|step| !step.trim().is_empty())
}

/// `[[auth.claim_headers]]`: a claim path and a header name that is a
/// valid name, not reserved, and not listed twice.
pub(super) fn claim_headers(auth: &AuthConfig, problems: &mut Problems) {
    let mut seen: Vec<String> = Vec::new();
    for (i, entry) in auth.claim_headers.iter().enumerate() {
        let at = |what: &str| format!("auth.claim_headers[{i}].{what}");
        problems.check(
            is_claim_path(&entry.claim),
            at("claim"),
            "must be a claim name, or names joined by dots (org.id)",
        );
        let folded = folded_header_name(&entry.header);
        if http::HeaderName::from_bytes(entry.header.as_bytes()).is_err() {
            problems.add(
                at("header"),
                format!("'{}' is not a header name", entry.header),
            );
        } else if is_reserved(&folded) {
            problems.add(
                at("header"),
                format!(
                    "'{}' is hop-by-hop, Host, the client's credentials or one the gateway sets \
                     itself; choose another name",
                    entry.header
                ),
            );
        } else if seen.contains(&folded) {
            problems.add(
                at("header"),
                format!("'{}' is already set from another claim", entry.header),
            );
        }
        seen.push(folded);
    }
}

/// A route's `require_claims`: only on a route that requires a token, each
/// claim a path, each value a string, number or boolean (or a non-empty
/// array of them).
pub(super) fn require_claims(
    route: &RouteConfig,
    key: &dyn Fn(&str) -> String,
    problems: &mut Problems,
) {
    let Some(required) = &route.require_claims else {
        return;
    };
    if !route.auth_required {
        problems.add(
            key("require_claims"),
            format!(
                "route '{}' needs auth_required = true (a route without a token has no claims \
                 to check)",
                route.path
            ),
        );
    }
    problems.check(
        !required.is_empty(),
        key("require_claims"),
        "must name at least one claim",
    );
    for (claim, value) in required {
        if !is_claim_path(claim) {
            problems.add(
                key("require_claims"),
                format!("'{claim}' is not a claim name, or names joined by dots"),
            );
        }
        if claim_values(value).is_none() {
            problems.add(
                key("require_claims"),
                format!(
                    "'{claim}' must be a string, number or boolean, or a non-empty array of them"
                ),
            );
        }
    }
}

/// The values a `require_claims` entry allows, as JSON values; `None` when
/// it is not a scalar or a non-empty array of scalars.
pub fn claim_values(value: &toml::Value) -> Option<Vec<serde_json::Value>> {
    let scalar = |v: &toml::Value| match v {
        toml::Value::String(s) => Some(serde_json::Value::from(s.as_str())),
        toml::Value::Integer(n) => Some(serde_json::Value::from(*n)),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map(serde_json::Value::Number),
        toml::Value::Boolean(b) => Some(serde_json::Value::from(*b)),
        _ => None,
    };
    match value {
        toml::Value::Array(items) if !items.is_empty() => items.iter().map(scalar).collect(),
        toml::Value::Array(_) => None,
        other => scalar(other).map(|v| vec![v]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_names_in_any_spelling() {
        for name in [
            "Host",
            "X_User_Id",
            "x-forwarded-host",
            "TraceParent",
            "Transfer-Encoding",
        ] {
            assert!(is_reserved(&folded_header_name(name)), "{name}");
        }
        for name in ["x-email", "X-Tenant", "x-roles"] {
            assert!(!is_reserved(&folded_header_name(name)), "{name}");
        }
    }

    #[test]
    fn claim_values_are_scalars_or_arrays_of_them() {
        let v = |text: &str| toml::from_str::<toml::Table>(text).unwrap()["c"].clone();
        assert_eq!(claim_values(&v("c = 'a'")).unwrap(), ["a"]);
        assert_eq!(claim_values(&v("c = [1, 'b']")).unwrap().len(), 2);
        assert!(claim_values(&v("c = []")).is_none());
        assert!(claim_values(&v("c = { x = 1 }")).is_none());
        assert!(claim_values(&v("c = [[1]]")).is_none());
    }
}

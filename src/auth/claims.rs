//! What a verified token says beyond its user, taken once when the token is
//! first verified and remembered with it: the claims copied into request
//! headers (`[[auth.claim_headers]]`), the claims routes require
//! (`require_claims`) and `iat`, which revocation compares with the user's
//! `tokens_valid_after` (README, "Identity policy").

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use serde_json::{Map, Value};

/// The longest header value a claim becomes; a longer one is left out.
pub const MAX_CLAIM_HEADER_BYTES: usize = 1024;

/// A claim's place in the token: a top-level name, or a dotted path into
/// an object claim (`org.id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath {
    dotted: String,
}

impl ClaimPath {
    pub fn new(dotted: &str) -> Self {
        Self {
            dotted: dotted.to_owned(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.dotted
    }

    /// The value at this path, if every step is an object member.
    pub fn find<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        let mut steps = self.dotted.split('.');
        let mut value = claims.get(steps.next()?)?;
        for step in steps {
            value = value.as_object()?.get(step)?;
        }
        Some(value)
    }
}

/// One `[[auth.claim_headers]]` entry.
#[derive(Debug, Clone)]
pub struct ClaimHeader {
    pub claim: ClaimPath,
    pub header: HeaderName,
}

/// Which claims a verified token is searched for: the configured claim
/// headers and every claim some route requires.
#[derive(Debug, Clone, Default)]
pub struct ClaimRules {
    pub headers: Vec<ClaimHeader>,
    pub required: Vec<ClaimPath>,
}

/// What [`ClaimRules`] found in one token.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenClaims {
    /// `iat`, in whole seconds.
    pub iat: Option<u64>,
    /// The claim headers this token fills, ready to insert.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The required claims the token has, by dotted path.
    required: Vec<(String, Value)>,
}

impl TokenClaims {
    /// The value of a required claim, if the token has it.
    pub fn required(&self, claim: &ClaimPath) -> Option<&Value> {
        self.required
            .iter()
            .find(|(path, _)| path == claim.as_str())
            .map(|(_, value)| value)
    }
}

impl ClaimRules {
    /// Takes what the rules ask for out of a token's claims.
    pub fn extract(&self, claims: &Map<String, Value>) -> Arc<TokenClaims> {
        let iat = claims
            .get("iat")
            .and_then(Value::as_f64)
            .and_then(|iat| (iat.is_finite() && iat >= 0.0).then_some(iat as u64));
        let headers = self
            .headers
            .iter()
            .filter_map(|rule| {
                let value = header_value(rule.claim.find(claims)?)?;
                Some((rule.header.clone(), value))
            })
            .collect();
        let required = self
            .required
            .iter()
            .filter_map(|path| Some((path.as_str().to_owned(), path.find(claims)?.clone())))
            .collect();
        Arc::new(TokenClaims {
            iat,
            headers,
            required,
        })
    }
}

/// A claim as a header value: a string, number or boolean as its text, an
/// array of strings joined by `", "`; anything else, a value too long or one
/// that cannot be a header value, nothing (never part of it).
fn header_value(claim: &Value) -> Option<HeaderValue> {
    let text = match claim {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) => {
            let texts: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
            texts?.join(", ")
        }
        Value::Null | Value::Object(_) => return None,
    };
    if text.len() > MAX_CLAIM_HEADER_BYTES || text.chars().any(char::is_control) {
        return None;
    }
    HeaderValue::from_str(&text).ok()
}

/// A route's `require_claims` entry: the claim must be one of `allowed`
/// (an array claim must contain one of them).
#[derive(Debug, Clone)]
pub struct ClaimRequirement {
    pub claim: ClaimPath,
    pub allowed: Vec<Value>,
}

impl ClaimRequirement {
    /// Whether the token's claim passes; a missing claim does not.
    pub fn holds(&self, token: &TokenClaims) -> bool {
        match token.required(&self.claim) {
            Some(Value::Array(items)) => items.iter().any(|item| self.allows(item)),
            Some(value) => self.allows(value),
            None => false,
        }
    }

    fn allows(&self, value: &Value) -> bool {
        self.allowed.iter().any(|allowed| same(allowed, value))
    }
}

/// Equal as JSON values, numbers by their value (`5` and `5.0` alike).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::String(a), Value::String(b)) => a == b,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn rules(headers: &[(&str, &str)], required: &[&str]) -> ClaimRules {
        ClaimRules {
            headers: headers
                .iter()
                .map(|(claim, header)| ClaimHeader {
                    claim: ClaimPath::new(claim),
                    header: HeaderName::from_bytes(header.as_bytes()).unwrap(),
                })
                .collect(),
            required: required.iter().map(|p| ClaimPath::new(p)).collect(),
        }
    }

    #[test]
    fn claims_become_header_values_or_nothing() {
        let token = claims(json!({
            "email": "a@example.test", "level": 3, "admin": true,
            "roles": ["a", "b"], "mixed": ["a", 1], "org": {"id": "o-1", "deep": {"x": 1}},
            "long": "x".repeat(MAX_CLAIM_HEADER_BYTES + 1), "bad": "a\nb", "none": null,
            "iat": 1700000000
        }));
        let rules = rules(
            &[
                ("email", "x-email"),
                ("level", "x-level"),
                ("admin", "x-admin"),
                ("roles", "x-roles"),
                ("mixed", "x-mixed"),
                ("org.id", "x-org"),
                ("org", "x-org-object"),
                ("org.deep.x", "x-deep"),
                ("long", "x-long"),
                ("bad", "x-bad"),
                ("none", "x-none"),
                ("absent", "x-absent"),
            ],
            &[],
        );
        let found = rules.extract(&token);
        let got: Vec<(&str, &str)> = found
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                ("x-email", "a@example.test"),
                ("x-level", "3"),
                ("x-admin", "true"),
                ("x-roles", "a, b"),
                ("x-org", "o-1"),
                ("x-deep", "1"),
            ]
        );
        assert_eq!(found.iat, Some(1_700_000_000));
    }

    #[test]
    fn requirements_compare_values_and_array_members() {
        let token = rules(&[], &["role", "level", "groups", "org.id"]).extract(&claims(json!({
            "role": "admin", "level": 5, "groups": ["dev", "ops"], "org": {"id": "o-1"}
        })));
        let req = |claim: &str, allowed: Value| ClaimRequirement {
            claim: ClaimPath::new(claim),
            allowed: allowed.as_array().unwrap().clone(),
        };
        assert!(req("role", json!(["admin"])).holds(&token));
        assert!(req("role", json!(["user", "admin"])).holds(&token));
        assert!(!req("role", json!(["user"])).holds(&token));
        assert!(req("level", json!([5.0])).holds(&token));
        assert!(!req("level", json!(["5"])).holds(&token));
        assert!(req("groups", json!(["ops"])).holds(&token));
        assert!(!req("groups", json!(["qa"])).holds(&token));
        assert!(req("org.id", json!(["o-1"])).holds(&token));
        assert!(!req("missing", json!(["x"])).holds(&token));
    }
}

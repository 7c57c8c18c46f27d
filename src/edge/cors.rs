//! CORS at the edge: an exact origin allow-list, preflights answered by the
//! gateway (before authentication), and the CORS headers on every response
//! of an allowed origin, the gateway's own errors included, so a frontend
//! can read a 401 or a 429.
//!
//! No origin is ever reflected unless it is on the list; `null` is never
//! allowed; `*` is refused with credentials (at config load).

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderValue, Method};
use pingora::http::{RequestHeader, ResponseHeader};

use crate::config::{ConfigError, CorsConfig};

pub struct CorsPolicy {
    origins: Vec<HeaderValue>,
    any_origin: bool,
    credentials: bool,
    methods: Vec<Method>,
    allow_methods: HeaderValue,
    allow_headers: HeaderValue,
    expose_headers: HeaderValue,
    max_age: HeaderValue,
}

fn joined(key: &str, items: &[String]) -> Result<HeaderValue, ConfigError> {
    HeaderValue::from_str(&items.join(", "))
        .map_err(|_| ConfigError::invalid(key, "contains characters not allowed in a header"))
}

impl CorsPolicy {
    pub fn new(config: &CorsConfig) -> Result<Self, ConfigError> {
        let mut origins = Vec::new();
        let mut any_origin = false;
        for (i, origin) in config.allow_origins.iter().enumerate() {
            let key = format!("cors.allow_origins[{i}]");
            if origin == "*" {
                if config.allow_credentials {
                    return Err(ConfigError::invalid(
                        key,
                        "'*' cannot be used with allow_credentials = true",
                    ));
                }
                any_origin = true;
                continue;
            }
            if origin.eq_ignore_ascii_case("null") {
                return Err(ConfigError::invalid(
                    key,
                    "the 'null' origin is never allowed",
                ));
            }
            let valid = origin.split_once("://").is_some_and(|(scheme, rest)| {
                matches!(scheme, "http" | "https") && !rest.is_empty() && !rest.contains('/')
            });
            if !valid {
                return Err(ConfigError::invalid(
                    key,
                    format!("'{origin}' is not an origin like https://app.example.com[:port]"),
                ));
            }
            origins.push(
                HeaderValue::from_str(origin)
                    .map_err(|_| ConfigError::invalid(key, "not a valid header value"))?,
            );
        }
        let methods = config
            .allow_methods
            .iter()
            .enumerate()
            .map(|(i, m)| {
                Method::from_bytes(m.as_bytes()).map_err(|_| {
                    ConfigError::invalid(
                        format!("cors.allow_methods[{i}]"),
                        format!("'{m}' is not a method"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            origins,
            any_origin,
            credentials: config.allow_credentials,
            methods,
            allow_methods: joined("cors.allow_methods", &config.allow_methods)?,
            allow_headers: joined("cors.allow_headers", &config.allow_headers)?,
            expose_headers: joined("cors.expose_headers", &config.expose_headers)?,
            max_age: HeaderValue::from(config.max_age_seconds),
        })
    }

    /// The request's `Origin` when it is allowed (exactly one, on the list).
    pub fn allowed_origin(&self, req: &RequestHeader) -> Option<HeaderValue> {
        let mut values = req.headers.get_all(ORIGIN).iter();
        let origin = values.next()?;
        if values.next().is_some() {
            return None;
        }
        if self.origins.iter().any(|o| o == origin) {
            return Some(origin.clone());
        }
        self.any_origin.then(|| HeaderValue::from_static("*"))
    }

    /// A CORS preflight: `OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`.
    pub fn is_preflight(req: &RequestHeader) -> bool {
        req.method == Method::OPTIONS
            && req.headers.contains_key(ORIGIN)
            && req.headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// The 204 answer to a preflight; CORS headers only for an allowed
    /// origin asking for an allowed method.
    pub fn preflight(
        &self,
        req: &RequestHeader,
        origin: Option<&HeaderValue>,
    ) -> pingora::Result<ResponseHeader> {
        let mut resp = ResponseHeader::build(204, Some(8))?;
        resp.append_header(VARY, "Origin")?;
        let method_ok = req
            .headers
            .get(ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .is_some_and(|m| self.methods.contains(&m));
        if let (Some(origin), true) = (origin, method_ok) {
            self.insert_origin(&mut resp, origin)?;
            resp.insert_header(ACCESS_CONTROL_ALLOW_METHODS, self.allow_methods.clone())?;
            resp.insert_header(ACCESS_CONTROL_ALLOW_HEADERS, self.allow_headers.clone())?;
            resp.insert_header(ACCESS_CONTROL_MAX_AGE, self.max_age.clone())?;
        }
        Ok(resp)
    }

    /// CORS headers on an actual response: the upstream's own are replaced.
    pub fn apply(
        &self,
        resp: &mut ResponseHeader,
        origin: Option<&HeaderValue>,
    ) -> pingora::Result<()> {
        resp.remove_header(&ACCESS_CONTROL_ALLOW_ORIGIN);
        resp.remove_header(&ACCESS_CONTROL_ALLOW_CREDENTIALS);
        resp.append_header(VARY, "Origin")?;
        if let Some(origin) = origin {
            self.insert_origin(resp, origin)?;
            resp.insert_header(ACCESS_CONTROL_EXPOSE_HEADERS, self.expose_headers.clone())?;
        }
        Ok(())
    }

    fn insert_origin(
        &self,
        resp: &mut ResponseHeader,
        origin: &HeaderValue,
    ) -> pingora::Result<()> {
        resp.insert_header(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone())?;
        if self.credentials {
            resp.insert_header(ACCESS_CONTROL_ALLOW_CREDENTIALS, "true")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(origins: &[&str], credentials: bool) -> CorsConfig {
        toml::from_str(&format!(
            "allow_origins = {:?}\nallow_credentials = {credentials}",
            origins
        ))
        .unwrap()
    }

    fn request(origin: Option<&str>) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        if let Some(o) = origin {
            req.insert_header("origin", o).unwrap();
        }
        req
    }

    #[test]
    fn only_listed_origins_are_allowed() {
        let p = CorsPolicy::new(&config(&["https://app.ro-being.com"], true)).unwrap();
        assert!(p
            .allowed_origin(&request(Some("https://app.ro-being.com")))
            .is_some());
        for other in [
            "https://evil.example",
            "https://app.ro-being.com.evil.example",
            "null",
            "HTTPS://APP.RO-BEING.COM",
        ] {
            assert!(p.allowed_origin(&request(Some(other))).is_none(), "{other}");
        }
        assert!(p.allowed_origin(&request(None)).is_none());
    }

    #[test]
    fn unsafe_lists_are_refused() {
        let e = |o: &[&str], c| CorsPolicy::new(&config(o, c)).err().unwrap().to_string();
        assert!(e(&["*"], true).contains("cannot be used with allow_credentials"));
        assert!(e(&["null"], false).contains("never allowed"));
        assert!(e(&["https://a.example/path"], false).contains("not an origin"));
        assert!(CorsPolicy::new(&config(&["*"], false)).is_ok());
    }
}

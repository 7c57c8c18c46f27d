//! The gateway's single TOML configuration file: its [`schema`] (with
//! defaults), its checks ([`validate`], one function per section), and the
//! one step from a file to the running state ([`plan`]).
//!
//! Unknown keys are errors (`deny_unknown_fields`), and every error names the
//! key it is about (`routes[2].port`, with the line for route entries); a
//! file is refused with all its errors at once. Secrets are never in this
//! file: it names the environment variable or file that holds them.

pub mod env;
pub mod schema;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod validate;

use std::path::{Path, PathBuf};

pub use schema::*;
pub use validate::route_key;

/// A configuration problem, naming the key (or file) it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    /// Every problem of a file, one per line, in file order.
    #[error("{}", one_per_line(.0))]
    Several(Vec<ConfigError>),
}

fn one_per_line(errors: &[ConfigError]) -> String {
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A configuration file as read, with its text kept for error positions.
pub struct LoadedConfig {
    pub path: PathBuf,
    pub source: String,
    pub config: Config,
}

/// Reads, parses and validates the file at `path`.
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
    let source = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    load_text(path, source)
}

/// Like [`load`], for text already read from `path` (a successor's
/// configuration offered at a handoff).
pub fn load_text(path: &Path, source: String) -> Result<LoadedConfig, ConfigError> {
    let config = parse(&source).map_err(|e| match e {
        ConfigError::Parse { message, .. } => ConfigError::Parse {
            path: path.to_owned(),
            message,
        },
        other => other,
    })?;
    Ok(LoadedConfig {
        path: path.to_owned(),
        source,
        config,
    })
}

/// Parses and validates configuration text.
pub fn parse(source: &str) -> Result<Config, ConfigError> {
    let config: Config = toml::from_str(source).map_err(|e| ConfigError::Parse {
        path: PathBuf::from("<config>"),
        message: e.to_string(),
    })?;
    validate::validate(&config, source)?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kids_are_checked() {
        assert!(is_valid_kid("2026-11"));
        assert!(!is_valid_kid("a b"));
        assert!(!is_valid_kid(""));
        assert!(!is_valid_kid(&"k".repeat(MAX_KID_BYTES + 1)));
    }

    /// One route, `/api/auth/*` to port 9000, public.
    fn minimal() -> String {
        testing::TestConfig::new()
            .route("/api/auth/*", 9000, false)
            .toml()
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    /// The error of the minimal configuration with `from` replaced by `to`.
    fn edited(from: &str, to: &str) -> String {
        err(&minimal().replace(from, to))
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(&minimal()).unwrap();
        assert_eq!(c.server.threads, 2);
        assert_eq!(c.auth.username_claim, "username");
        assert_eq!(
            c.users.query,
            r#"SELECT id FROM "user" WHERE username = $1"#
        );
        assert_eq!(c.upstream.connect_timeout_ms, 2_000);
        assert!(!c.routes[0].get_ref().auth_required);
    }

    #[test]
    fn unknown_keys_are_named() {
        let text = minimal()
            .replace("threads", "x")
            .replace("[auth]", "[auth]\nsecret = \"inline\"");
        let e = err(&text);
        assert!(e.contains("unknown field `secret`"), "{e}");
        assert!(e.contains("line"), "{e}");
    }

    #[test]
    fn route_errors_name_index_line_and_field() {
        let base = minimal();
        let text = format!(
            "{base}\n[[routes]]\npath = \"/api/x\"\nservice = \"x\"\nhost = \"127.0.0.1\"\nport = 1\n"
        );
        // The line of the second `[[routes]]` header.
        let line = base.lines().count() + 2;
        let e = err(&text);
        assert!(
            e.starts_with(&format!("routes[1] (line {line}).path:")),
            "{e}"
        );
        let dup = format!("{base}{}", &base[base.find("[[routes]]").unwrap()..]);
        assert!(err(&dup).contains("already used"));
        let port = edited("port = 9000", "port = 0");
        assert!(port.contains(".port: must be 1..=65535"), "{port}");
        let unnormal = edited("/api/auth/*", "/api/../auth/*");
        assert!(unnormal.contains("not a normalized path"), "{unnormal}");
    }

    #[test]
    fn secrets_and_sources_are_checked() {
        let both = "secret_env = \"A\"\nsecret_file = \"/x\"";
        assert!(edited("secret_env = \"GATEWAY_JWT_SECRET\"", both).starts_with("auth: set one of"));
        let pg = edited("source = \"file\"", "source = \"postgres\"");
        assert!(pg.starts_with("users.database_url_env:"), "{pg}");
        assert!(edited("users = \"conf/users.toml\"", "").starts_with("users.users:"));
        assert!(edited("127.0.0.1:1", "localhost").starts_with("server.listen[0]:"));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = minimal()
            .replace("127.0.0.1:1", "localhost")
            .replace("port = 9000", "port = 0")
            .replace("[users]", "[compression]\nlevel = 12\n\n[users]");
        let e = err(&text);
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 3, "{e}");
        assert!(lines[0].starts_with("server.listen[0]:"), "{e}");
        assert!(lines[1].starts_with("compression.level:"), "{e}");
        assert!(lines[2].ends_with(".port: must be 1..=65535"), "{e}");
    }

    #[test]
    fn upstream_pool_errors_name_the_key() {
        let pool = |lines: &str| edited("host = \"127.0.0.1\"\nport = 9000", lines);
        let both = pool("host = \"127.0.0.1\"\nport = 9000\nupstreams = [\"127.0.0.1:1\"]");
        assert!(
            both.contains(".upstreams: give either host and port or upstreams"),
            "{both}"
        );
        let neither = pool("");
        assert!(
            neither.contains(".upstreams: needs host and port"),
            "{neither}"
        );
        let empty = pool("upstreams = []");
        assert!(
            empty.contains(".upstreams: must name at least one peer"),
            "{empty}"
        );
        let bad = pool("upstreams = [\"127.0.0.1:1\", \"127.0.0.1\"]");
        assert!(bad.contains(".upstreams[1]: '127.0.0.1' is not"), "{bad}");
        let port = pool("upstreams = [\"127.0.0.1:0\"]");
        assert!(
            port.contains(".upstreams[0]: '127.0.0.1:0': the port"),
            "{port}"
        );
        let twice = pool("upstreams = [\"127.0.0.1:1\", \"127.0.0.1:1 weight=2\"]");
        assert!(
            twice.contains(".upstreams[1]: '127.0.0.1:1' is listed twice"),
            "{twice}"
        );
        let weight = pool("upstreams = [\"127.0.0.1:1 weight=0\"]");
        assert!(
            weight.contains(".upstreams[0]: '127.0.0.1:1 weight=0': weight must be"),
            "{weight}"
        );
        let algorithm = pool("upstreams = [\"127.0.0.1:1\"]\nload_balancing = \"random\"");
        assert!(
            algorithm.contains(".load_balancing: 'random' is not round_robin"),
            "{algorithm}"
        );
        let check = err(&format!(
            "{}\n[routes.health_check]\npath = \"healthz\"\ninterval_ms = 0\n",
            minimal().replace(
                "host = \"127.0.0.1\"\nport = 9000",
                "upstreams = [\"127.0.0.1:1\"]"
            )
        ));
        assert!(
            check.contains(".health_check.path: must start with '/'"),
            "{check}"
        );
        assert!(
            check.contains(".health_check.interval_ms: must be greater than 0"),
            "{check}"
        );
        let retries = pool("upstreams = [\"127.0.0.1:1\"]\nmax_retries = 11");
        assert!(
            retries.contains(".max_retries: must be 0..=10"),
            "{retries}"
        );
        let ok = minimal().replace(
            "host = \"127.0.0.1\"\nport = 9000",
            "upstreams = [\"127.0.0.1:1\", \"127.0.0.1:2 weight=3\"]\nload_balancing = \"consistent\"",
        );
        let route = parse(&ok).unwrap().routes[0].get_ref().clone();
        assert_eq!(route.upstreams.map(|u| u.len()), Some(2));
    }

    #[test]
    fn shared_limit_store_errors_name_the_key() {
        let limited = |lines: &str| {
            err(&minimal().replace(
                "[users]",
                &format!("[rate_limit]\nrequests_per_minute = 5\n{lines}\n\n[users]"),
            ))
        };
        let store = limited("store = \"memcached\"");
        assert!(
            store.contains("rate_limit.store: 'memcached' is not local or redis"),
            "{store}"
        );
        let url = limited("store = \"redis\"");
        assert!(url.contains("rate_limit.redis_url_env: is needed"), "{url}");
        let mode = limited("on_store_error = \"open\"");
        assert!(
            mode.contains("rate_limit.on_store_error: 'open' is not local, allow or deny"),
            "{mode}"
        );
        let budget = limited("store_timeout_ms = 0");
        assert!(budget.contains("rate_limit.store_timeout_ms"), "{budget}");
    }

    #[test]
    fn a_notify_channel_must_be_a_plain_identifier() {
        let with = |channel: &str| {
            minimal().replace(
                "[users]",
                &format!("[users]\nnotify_channel = \"{channel}\""),
            )
        };
        let quoted = err(&with("user changed; DROP TABLE x"));
        assert!(
            quoted.contains("users.notify_channel: 'user changed; DROP TABLE x' is not a plain"),
            "{quoted}"
        );
        assert!(err(&with("Upper")).contains("users.notify_channel"));
        // The minimal config reads users from a file: no database to listen to.
        let file = err(&with("robeing_user_changed"));
        assert!(
            file.contains("users.notify_channel: needs source = \"postgres\""),
            "{file}"
        );
    }
}

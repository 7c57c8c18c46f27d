//! Configurations built in code, for the unit tests, benches and fuzz
//! targets (the integration harness writes whole files the same way): one
//! place that knows what a minimal valid configuration is.
//!
//! ```
//! use robeing_gateway::config::testing::TestConfig;
//! let config = TestConfig::new()
//!     .route("/api/auth/*", 9000, false)
//!     .with_limits(60)
//!     .parse();
//! assert_eq!(config.routes.len(), 1);
//! ```

use std::path::PathBuf;

use super::{load_text, parse, Config, LoadedConfig};

/// A configuration under construction, kept as TOML so it is parsed and
/// validated exactly as a file is.
#[derive(Debug, Clone)]
pub struct TestConfig {
    sections: Vec<(String, Vec<String>)>,
    routes: String,
}

impl Default for TestConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl TestConfig {
    /// One loopback listener, a secret from `GATEWAY_JWT_SECRET`, users
    /// from `conf/users.toml`, no routes.
    pub fn new() -> Self {
        let section = |name: &str, lines: &[&str]| {
            (
                name.to_owned(),
                lines.iter().map(|l| (*l).to_owned()).collect(),
            )
        };
        Self {
            sections: vec![
                section("server", &["listen = [\"127.0.0.1:1\"]"]),
                section("auth", &["secret_env = \"GATEWAY_JWT_SECRET\""]),
                section(
                    "users",
                    &["source = \"file\"", "users = \"conf/users.toml\""],
                ),
            ],
            routes: String::new(),
        }
    }

    /// Adds `line` (`key = value`) to `[section]`, creating the section.
    pub fn set(mut self, section: &str, line: &str) -> Self {
        match self.sections.iter_mut().find(|(name, _)| name == section) {
            Some((_, lines)) => lines.push(line.to_owned()),
            None => self
                .sections
                .push((section.to_owned(), vec![line.to_owned()])),
        }
        self
    }

    /// A route to `127.0.0.1:port`.
    pub fn route(self, path: &str, port: u16, auth_required: bool) -> Self {
        self.route_with(path, port, auth_required, "")
    }

    /// A route with extra keys (`requests_per_minute = 5`, ...).
    pub fn route_with(mut self, path: &str, port: u16, auth_required: bool, extra: &str) -> Self {
        self.routes += &route_toml(path, port, auth_required, extra);
        self
    }

    /// A default `[rate_limit]` of `per_minute`.
    pub fn with_limits(self, per_minute: u32) -> Self {
        self.set("rate_limit", &format!("requests_per_minute = {per_minute}"))
    }

    /// The TOML text; a catch-all route is added when there is none.
    pub fn toml(&self) -> String {
        let mut text = String::new();
        for (name, lines) in &self.sections {
            text += &format!("[{name}]\n{}\n\n", lines.join("\n"));
        }
        if self.routes.is_empty() {
            text +=
                "[[routes]]\npath = \"/*\"\nservice = \"all\"\nhost = \"127.0.0.1\"\nport = 1\n";
        }
        text + &self.routes
    }

    /// Parsed and validated (panics with the message if it does not).
    pub fn parse(&self) -> Config {
        parse(&self.toml()).unwrap_or_else(|e| panic!("test config: {e}\n{}", self.toml()))
    }

    /// As a file loaded from `test.toml` would be.
    pub fn loaded(&self) -> LoadedConfig {
        load_text(&PathBuf::from("test.toml"), self.toml())
            .unwrap_or_else(|e| panic!("test config: {e}\n{}", self.toml()))
    }
}

/// A `[[routes]]` entry to `127.0.0.1:port`, its service named after the
/// path, with `extra` keys (the integration harness writes routes with it).
pub fn route_toml(path: &str, port: u16, auth_required: bool, extra: &str) -> String {
    let service = path
        .trim_matches(|c| c == '/' || c == '*')
        .replace('/', "-");
    format!(
        "\n[[routes]]\npath = \"{path}\"\nservice = \"{service}\"\nhost = \"127.0.0.1\"\n\
         port = {port}\nauth_required = {auth_required}\n{extra}\n"
    )
}

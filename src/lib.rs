//! robeing-gateway: the edge API gateway of the robeing services, on Pingora.
//!
//! One folder per concern (the map, and where a new capability goes, are in
//! `docs/architecture.md`):
//!
//! - [`proxy`]: the `ProxyHttp` implementation, phase by phase, its request
//!   context and the headers it forwards;
//! - [`routing`]: path normalization and the route table;
//! - [`auth`]: bearer tokens and the identity directory with its cache;
//! - [`edge`]: CORS, rate limits, compression, Slack signatures;
//! - [`observe`]: metrics, the access log, the process log, the admin listener;
//! - [`process`]: server wiring, signals and handoff, reload, connection
//!   guards, the command line;
//! - [`config`]: the TOML schema, its validation, and the one step from a
//!   file to the running plan;
//! - [`errors`]: the gateway's error type and its one JSON envelope;
//! - [`wire`] and [`text`]: the shared vocabulary (header names, the
//!   request id) and text helpers, at the bottom: they import nothing of
//!   the crate.

/// The release and the commit it is built from (`build.rs`), as
/// `--version` prints them and `gateway_build_info` exports them.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const GIT_SHA: &str = env!("GATEWAY_GIT_SHA");
pub const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("GATEWAY_GIT_SHA"),
    ")"
);

pub mod auth;
pub mod config;
pub mod edge;
pub mod errors;
pub mod gateway;
#[cfg(test)]
mod layering;
pub mod live;
pub mod observe;
pub mod process;
pub mod proxy;
pub mod routing;
pub mod text;
pub mod tls;
pub mod upstream;
pub mod wire;

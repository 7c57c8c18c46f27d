//! robeing-gateway: the edge API gateway of the robeing services, on Pingora.
//!
//! Request path (DESIGN.md): [`headers`] (request id, identity stripping) ->
//! [`path`] (normalization) -> [`routing`] (route table) -> [`jwt`] (token)
//! -> [`identity`] (username -> UUID, cached) -> [`proxy`] (the Pingora
//! phases) -> [`errors`] (the JSON envelope). [`config`] reads the TOML file,
//! [`gateway`] builds the serving state from it, [`server`] runs Pingora,
//! [`lifecycle`] handles signals and handoff (exchanging the [`handoff`]
//! files), [`reload`] drives a handoff.

pub mod access_log;
pub mod admin;
pub mod cli;
pub mod compression;
pub mod config;
pub mod connection;
pub mod cors;
pub mod errors;
pub mod gateway;
pub mod handoff;
pub mod headers;
pub mod identity;
pub mod jwt;
pub mod lifecycle;
pub mod limits;
pub mod metrics;
pub mod path;
pub mod process_log;
pub mod proxy;
pub mod reload;
pub mod routing;
pub mod server;
pub mod slack;

//! The process around the proxy: the command line ([`cli`]), Pingora's
//! server wiring ([`server`]), signals, draining and in-place reload
//! ([`lifecycle`], setting what [`readiness`] holds), the files of a handoff ([`handoff`]), the stdout and
//! stderr it passes on ([`stdio`]) and the command
//! that drives one ([`reload`]), the `token` command ([`token`]), and the per-connection guards below HTTP
//! ([`connection`], with [`h2_headers`] for HTTP/2 header blocks).

pub mod cli;
pub mod connection;
pub mod h2_headers;
pub mod handoff;
pub mod lifecycle;
pub mod readiness;
pub mod reload;
pub mod server;
pub mod stdio;
pub mod token;

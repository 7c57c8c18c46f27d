//! Command line: Pingora's own flags (`-c`, `-t`, `-u`, `-d`) plus the
//! `token` subcommand that mints a development token.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "robeing-gateway",
    version = crate::VERSION_LINE,
    about = "Edge API gateway of the robeing services"
)]
pub struct Cli {
    /// The gateway's TOML configuration file.
    #[arg(
        short = 'c',
        long = "conf",
        global = true,
        default_value = "conf/gateway.toml"
    )]
    pub conf: PathBuf,
    /// Validate the configuration and exit (non-zero on error).
    #[arg(short = 't', long = "test")]
    pub test: bool,
    /// Take the listening sockets over from a running instance.
    #[arg(short = 'u', long = "upgrade")]
    pub upgrade: bool,
    /// Run in the background.
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mint a development token signed with a configured HS256 key.
    Token {
        /// The username claim of the token.
        #[arg(long)]
        username: String,
        /// How long the token is valid.
        #[arg(long, default_value_t = 3600)]
        ttl_seconds: u64,
        /// The `kid` of the HS256 key to sign with (default: the first).
        #[arg(long)]
        kid: Option<String>,
    },
    /// Replace the running instance with one running the (new) config and
    /// this binary, through Pingora's socket handoff, dropping no request.
    Reload,
}

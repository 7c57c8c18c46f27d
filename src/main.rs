//! Entry point, wiring only: parse the command line, then validate (`-t`),
//! run the `token` command (`process::token`), hand over to a new instance
//! (`reload`) or run the gateway.

use std::process::ExitCode;

use clap::Parser;

/// jemalloc (docs/benchmarks.md: what it gave).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start: freed blocks up to 64 KiB stay in
/// the thread's cache (its default stops at 32 KiB). Pingora takes a 64 KiB
/// buffer for every upstream response body; beyond the cache, each one went
/// through jemalloc's large-allocation path, about 2,000 instructions a
/// request (docs/benchmarks.md, "The gateway's own share"). The cache holds
/// a bounded number of blocks per thread and size.
#[export_name = "_rjem_malloc_conf"]
static JEMALLOC_OPTIONS: &[u8; 17] = b"tcache_max:65536\0";

use robeing_gateway::config;
use robeing_gateway::gateway::{plan_loaded, Plan};
use robeing_gateway::observe::process_log;
use robeing_gateway::process::cli::{Cli, Command};
use robeing_gateway::process::server::{self, RunFlags};
use robeing_gateway::process::{reload, token};

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("robeing-gateway: {message}");
    ExitCode::from(2)
}

fn run(cli: &Cli) -> ExitCode {
    let loaded = match config::load(&cli.conf) {
        Ok(loaded) => loaded,
        Err(e) => return fail(e),
    };
    // Before the state is built: building logs (a JWKS fetch that failed).
    process_log::init(&loaded.config.log.level);
    let Plan { loaded, gateway } = match plan_loaded(loaded, None) {
        Ok(plan) => plan,
        Err(e) => return fail(e),
    };
    if cli.test {
        println!(
            "{}: configuration OK ({} routes)",
            loaded.path.display(),
            gateway.routes.len()
        );
        return ExitCode::SUCCESS;
    }
    let flags = RunFlags {
        upgrade: cli.upgrade,
        daemon: cli.daemon,
    };
    match server::run(loaded, gateway, flags) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn main() -> ExitCode {
    // aws-lc-rs is the TLS provider before anything (Pingora, redis) asks.
    robeing_gateway::tls::crypto::install();
    let cli = Cli::parse();
    if cli.command.is_some() {
        process_log::init("info");
    }
    match &cli.command {
        Some(Command::Token {
            username,
            ttl_seconds,
            kid,
        }) => match token::mint(&cli.conf, username, *ttl_seconds, kid.as_deref()) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Some(Command::Reload) => match reload::reload(&cli.conf) {
            Ok(pid) => {
                println!("reload: pid {pid} is serving");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        None => run(&cli),
    }
}

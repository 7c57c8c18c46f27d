//! Entry point: parse the command line, then validate (`-t`), mint a token
//! (`token`), hand over to a new instance (`reload`) or run the gateway.

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

/// jemalloc with its defaults (docs/benchmarks.md: what it gave).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use robeing_gateway::auth::keys;
use robeing_gateway::auth::token::base_validation;
use robeing_gateway::config;
use robeing_gateway::gateway::{plan_loaded, Plan};
use robeing_gateway::observe::process_log;
use robeing_gateway::process::cli::{Cli, Command};
use robeing_gateway::process::reload;
use robeing_gateway::process::server::{self, RunFlags};

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("robeing-gateway: {message}");
    ExitCode::from(2)
}

fn mint_token(conf: &Path, username: &str, ttl_seconds: u64, kid: Option<&str>) -> ExitCode {
    let loaded = match config::load(conf) {
        Ok(loaded) => loaded,
        Err(e) => return fail(e),
    };
    let auth = &loaded.config.auth;
    let keys = match keys::load_keys(auth, &base_validation(auth)) {
        Ok(keys) => keys,
        Err(e) => return fail(e),
    };
    match keys::signing_key(&keys, kid).and_then(|key| keys::mint(auth, key, username, ttl_seconds))
    {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("cannot mint token: {e}")),
    }
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
    let cli = Cli::parse();
    if cli.command.is_some() {
        process_log::init("info");
    }
    match &cli.command {
        Some(Command::Token {
            username,
            ttl_seconds,
            kid,
        }) => mint_token(&cli.conf, username, *ttl_seconds, kid.as_deref()),
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

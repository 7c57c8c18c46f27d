//! Entry point: parse the command line, load the configuration, then either
//! validate it (`-t`), mint a token (`token`) or run the gateway.

use std::process::ExitCode;

use clap::Parser;
use robeing_gateway::cli::{Cli, Command};
use robeing_gateway::config::{self, LoadedConfig};
use robeing_gateway::gateway::Gateway;
use robeing_gateway::jwt;
use robeing_gateway::server::{self, RunFlags};

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("robeing-gateway: {message}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();

    let loaded: LoadedConfig = match config::load(&cli.conf) {
        Ok(loaded) => loaded,
        Err(e) => return fail(e),
    };

    if let Some(Command::Token {
        username,
        ttl_seconds,
    }) = &cli.command
    {
        let auth = &loaded.config.auth;
        return match jwt::load_secret(auth).map(|s| jwt::mint(auth, &s, username, *ttl_seconds)) {
            Ok(Ok(token)) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Ok(Err(e)) => fail(format!("cannot mint token: {e}")),
            Err(e) => fail(e),
        };
    }

    let gateway = match Gateway::build(&loaded) {
        Ok(gateway) => gateway,
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
    server::run(&loaded.config.server, gateway, flags)
}

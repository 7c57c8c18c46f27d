//! Maps `[server]` onto Pingora's server configuration (no YAML file) and
//! runs the proxy service with the gateway's lifecycle.

use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};

use crate::config::{LoadedConfig, ServerConfig};
use crate::gateway::Gateway;
use crate::lifecycle::{Lifecycle, SignalWatch};
use crate::proxy::GatewayProxy;

/// Process-level flags from the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunFlags {
    pub upgrade: bool,
    pub daemon: bool,
}

/// Pingora's `ServerConf` for our `[server]` section.
pub fn pingora_conf(server: &ServerConfig, flags: RunFlags) -> ServerConf {
    ServerConf {
        version: 1,
        daemon: flags.daemon,
        threads: server.threads,
        pid_file: server.pid_file.clone(),
        upgrade_sock: server.upgrade_sock.clone(),
        // Pingora sleeps its whole grace period; the lifecycle ends the
        // process earlier once drained, so this is the upper bound.
        grace_period_seconds: Some(server.graceful_shutdown_timeout_seconds),
        graceful_shutdown_timeout_seconds: Some(1),
        upstream_keepalive_pool_size: server.upstream_keepalive_pool_size,
        ..ServerConf::default()
    }
}

/// Starts the server and serves until it is told to stop.
pub fn run(loaded: LoadedConfig, gateway: Gateway, flags: RunFlags) {
    let server = loaded.config.server.clone();
    let shared = Arc::new(ArcSwap::from_pointee(gateway));
    let lifecycle = Arc::new(Lifecycle::new(loaded.path, server.clone(), shared.clone()));

    let opt = Opt {
        upgrade: flags.upgrade,
        daemon: flags.daemon,
        ..Opt::default()
    };
    let mut pingora = Server::new_with_opt_and_conf(opt, pingora_conf(&server, flags));
    // With -u this waits for the predecessor's sockets, which it sends only
    // after leaving its identity cache for us.
    pingora.bootstrap();
    if flags.upgrade {
        lifecycle.take_over_identity();
    }
    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &pingora.configuration,
        GatewayProxy::new(shared, lifecycle.draining()),
        "robeing-gateway",
    );
    for addr in &server.listen {
        proxy.add_tcp(addr);
    }
    pingora.add_service(proxy);
    lifecycle.exit_when_drained(pingora.watch_execution_phase());
    pingora.run(RunArgs {
        shutdown_signal: Box::new(SignalWatch(lifecycle.clone())),
    });
    lifecycle.release_pid_file();
}

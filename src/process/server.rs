//! Maps `[server]` onto Pingora's server configuration (no YAML file) and
//! runs the proxy service, the admin listener and the process tasks.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{ExecutionPhase, RunArgs, Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use tokio::sync::broadcast;

use crate::auth::jwks::JwksRefresh;
use crate::auth::notify::UserNotifications;
use crate::config::AdminConfig;
use crate::config::{ConfigError, LoadedConfig, ServerConfig};
use crate::gateway::{live, Gateway, SharedGateway};
use crate::observe::access_log::AccessLog;
use crate::observe::admin::{AdminApp, AllowFrom};
use crate::observe::dependencies::{Dependencies, DependencyChecks, DependencyStatus};
use crate::process::connection::{ClientListeners, ConnectionLimits, GuardedApp};
use crate::process::lifecycle::{Lifecycle, SignalWatch};
use crate::process::readiness::Readiness;
use crate::process::stdio::StdioReceiver;
use crate::proxy::GatewayProxy;
use crate::tls::{listener_settings, GatewayCerts};
use crate::upstream::health::HealthChecks;
use crate::upstream::names::NameRefresh;

/// How long a successor that has the listening sockets waits for the
/// predecessor's stdout and stderr, sent just before them.
const STDIO_WAIT: Duration = Duration::from_secs(2);

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
        work_stealing: server.work_stealing,
        ..ServerConf::default()
    }
}

/// Threads that must start after Pingora has (maybe) forked into the
/// background: the access-log writer and the drain watcher.
struct ProcessTasks {
    lifecycle: Arc<Lifecycle>,
    access_log: Arc<AccessLog>,
    phases: Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
}

#[async_trait]
impl BackgroundService for ProcessTasks {
    async fn start(&self, _shutdown: ShutdownWatch) {
        self.access_log.start_writer();
        if let Some(phases) = self.phases.lock().ok().and_then(|mut p| p.take()) {
            self.lifecycle.exit_when_drained(phases);
        }
    }
}

/// The plain and the TLS client listeners of `[server]`.
fn add_client_listeners<A>(
    proxy: &mut ClientListeners<A>,
    server: &ServerConfig,
    shared: &SharedGateway,
) -> Result<(), ConfigError> {
    for addr in &server.listen {
        proxy.add_tcp(addr);
    }
    for (i, tls) in server.tls.iter().enumerate() {
        let invalid = |m: String| ConfigError::invalid(format!("server.tls[{i}]"), m);
        let certs = GatewayCerts::new(live(shared, |g| g.tls.clone()), tls).map_err(invalid)?;
        let settings = listener_settings(tls, certs).map_err(|e| invalid(e.to_string()))?;
        proxy.add_tls(&tls.listen, settings, tls.session_resumption);
    }
    Ok(())
}

/// The guards below HTTP (`process::connection`), from `[server]`.
fn connection_limits(server: &ServerConfig, gateway: &Gateway) -> ConnectionLimits {
    ConnectionLimits {
        header_timeout: Duration::from_millis(server.header_timeout_ms),
        idle_timeout: Duration::from_secs(server.client_idle_timeout_seconds),
        max_per_ip: server.max_connections_per_ip,
        pressure_threshold: server.connection_pressure_threshold,
        uncapped: gateway.trusted_proxies.clone(),
        ipv6_prefix_length: gateway.ipv6_prefix_length,
    }
}

/// Pingora's HTTP server options: an HTTP/2 connection with no open stream
/// closes after the idle time (HTTP/1.1's is kept by `GuardedStream`).
fn server_options(server: &ServerConfig) -> HttpServerOptions {
    let mut options = HttpServerOptions::default();
    options.h2_idle_timeout = Some(Duration::from_secs(server.client_idle_timeout_seconds));
    options
}

/// The services that run beside the proxy, each given the narrow part of
/// the running state it reads; returns the dependency status they keep.
fn add_background_services(pingora: &mut Server, shared: &SharedGateway) -> Arc<DependencyStatus> {
    let upstreams = || live(shared, |g| g.upstreams.clone());
    pingora.add_service(background_service(
        "upstream health checks",
        HealthChecks::new(upstreams()),
    ));
    pingora.add_service(background_service(
        "upstream name resolution",
        NameRefresh::new(upstreams()),
    ));
    pingora.add_service(background_service(
        "user change notifications",
        UserNotifications::new(
            live(shared, |g| g.identity.clone()),
            live(shared, |g| g.user_notify.clone()),
        ),
    ));
    pingora.add_service(background_service(
        "JWKS refresh",
        JwksRefresh::new(live(shared, |g| g.jwt.jwks().cloned())),
    ));
    let dependencies = Arc::new(DependencyStatus::default());
    let running = live(shared, |g| Dependencies {
        identity: g.identity.clone(),
        redis: g.shared_limiter.clone(),
        jwks: g.jwt.jwks().cloned(),
    });
    pingora.add_service(background_service(
        "dependency checks",
        DependencyChecks::new(running, dependencies.clone()),
    ));
    dependencies
}

/// The admin listener (`/metrics`, `/healthz`, `/readyz`, `/upstreams`).
fn admin_service(
    admin: &AdminConfig,
    shared: &SharedGateway,
    readiness: Readiness,
    dependencies: Arc<DependencyStatus>,
) -> Service<AllowFrom<AdminApp>> {
    let views = (
        live(shared, |g| g.identity.clone()),
        live(shared, |g| g.upstreams.clone()),
    );
    let mut service = Service::new(
        "robeing-gateway admin".into(),
        AllowFrom::new(
            AdminApp::new(views, readiness, dependencies),
            admin.allow_from.clone(),
        ),
    );
    service.add_tcp(&admin.listen);
    service
}

/// Starts the server and serves until it is told to stop.
pub fn run(mut loaded: LoadedConfig, gateway: Gateway, flags: RunFlags) -> Result<(), ConfigError> {
    let server = loaded.config.server.clone();
    let admin = loaded.config.admin.clone();
    let access_log = Arc::new(AccessLog::new(&loaded.config.log)?);
    let limits = connection_limits(&server, &gateway);
    let shared = Arc::new(ArcSwap::from_pointee(gateway));
    let source = std::mem::take(&mut loaded.source);
    let lifecycle = Arc::new(Lifecycle::new(loaded, shared.clone(), access_log.clone()));
    // Before the upgrade socket exists: whoever sends the SIGQUIT finds
    // the offer and the stdio socket there.
    let stdio = flags
        .upgrade
        .then(|| StdioReceiver::listen(&server))
        .flatten();
    if flags.upgrade {
        lifecycle.offer_config(&source);
    }

    let opt = Opt {
        upgrade: flags.upgrade,
        daemon: flags.daemon,
        ..Opt::default()
    };
    let mut pingora = Server::new_with_opt_and_conf(opt, pingora_conf(&server, flags));
    // With -u this waits for the predecessor's sockets, which it sends only
    // after leaving its identity cache and rate limits for us.
    pingora.bootstrap();
    if let Some(stdio) = stdio {
        stdio.finish(STDIO_WAIT);
    }
    if flags.upgrade {
        lifecycle.withdraw_config_offer();
        lifecycle.take_over_state();
    }

    let mut proxy = pingora::proxy::http_proxy(
        &pingora.configuration,
        GatewayProxy::new(shared.clone(), lifecycle.draining(), access_log.clone()),
    );
    proxy.server_options = Some(server_options(&server));
    let handshake_timeout = limits.header_timeout;
    let mut proxy = ClientListeners::new(
        "robeing-gateway",
        GuardedApp::new(proxy, limits),
        handshake_timeout,
    );
    add_client_listeners(&mut proxy, &server, &shared)?;
    pingora.add_service(proxy);
    let dependencies = add_background_services(&mut pingora, &shared);
    if let Some(admin) = admin {
        pingora.add_service(admin_service(
            &admin,
            &shared,
            lifecycle.readiness(),
            dependencies,
        ));
    }
    pingora.add_service(background_service(
        "process tasks",
        ProcessTasks {
            lifecycle: lifecycle.clone(),
            access_log,
            phases: Mutex::new(Some(pingora.watch_execution_phase())),
        },
    ));
    pingora.run(RunArgs {
        shutdown_signal: Box::new(SignalWatch(lifecycle.clone())),
    });
    lifecycle.release_pid_file();
    Ok(())
}

//! Process lifecycle: readiness, signals, handoff and in-place reload.
//!
//! - When the process starts serving it writes its pid file and tells
//!   systemd (`READY=1`, `MAINPID=<pid>`), so a successor started by
//!   `robeing-gateway reload` becomes the service's main process.
//! - SIGQUIT (handoff): mark the process draining (responses close their
//!   connections), leave the identity cache and the rate limits for the
//!   successor, pass it stdout and stderr ([`crate::process::stdio`]),
//!   switch to the configuration the successor offered (it serves it too
//!   during Pingora's 5 s accept window), then let Pingora pass the
//!   listening sockets and finish in-flight work. The files are described
//!   in [`crate::process::handoff`].
//! - SIGTERM: `/readyz` answers 503 at once; after
//!   `shutdown_delay_seconds` of serving on (orchestrators remove an
//!   endpoint some time after SIGTERM), drain and stop gracefully. SIGINT:
//!   stop now.
//! - SIGHUP: re-read the configuration and swap routes, auth and users
//!   atomically; listeners and connections are untouched, and a bad file
//!   is logged and ignored. (Pingora itself does not handle SIGHUP, whose
//!   default action would kill the process.)
//! - SIGUSR1 (logrotate): a file access log is opened anew by its path.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ExecutionPhase, ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::broadcast;

use crate::config::{self, ConfigError, LoadedConfig, ServerConfig};
use crate::gateway::{plan_loaded, SharedGateway};
use crate::observe::access_log::AccessLog;
use crate::observe::metrics::metrics;
use crate::process::handoff::{self, HandoffFile, OfferedConfig};
use crate::process::readiness::{InFlight, Readiness};
use crate::process::stdio;

/// Pingora's fixed window (`CLOSE_TIMEOUT` in pingora-core's server) in
/// which a predecessor keeps accepting after it sent its sockets.
pub const HANDOVER_WINDOW_SECONDS: u64 = 5;

/// What the lifecycle needs to know about the running process.
pub struct Lifecycle {
    conf_path: PathBuf,
    /// The configuration the process started with (for what SIGHUP cannot
    /// change).
    started_with: config::Config,
    server: ServerConfig,
    gateway: SharedGateway,
    /// Draining (read by the proxy too) and stopping: what `/readyz` says.
    readiness: Readiness,
    /// Set on SIGQUIT: the successor awaits this process's final counters.
    handed_over: AtomicBool,
    /// Reopened on SIGUSR1 (logrotate).
    access_log: Arc<AccessLog>,
}

/// The pid recorded in `pid_file`, if any.
pub fn read_pid_file(pid_file: &str) -> Option<i32> {
    std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()
}

impl Lifecycle {
    pub fn new(loaded: LoadedConfig, gateway: SharedGateway, access_log: Arc<AccessLog>) -> Self {
        Self {
            conf_path: loaded.path,
            server: loaded.config.server.clone(),
            started_with: loaded.config,
            gateway,
            readiness: Readiness::default(),
            handed_over: AtomicBool::new(false),
            access_log,
        }
    }

    /// The flag the proxy reads to close connections while draining.
    pub fn draining(&self) -> Arc<AtomicBool> {
        self.readiness.draining()
    }

    /// What `/readyz` reads.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Records this process as the one serving (pid file, systemd).
    fn announce_serving(&self) {
        let pid = std::process::id();
        if let Err(e) = handoff::write_atomically(
            Path::new(&self.server.pid_file),
            format!("{pid}\n").as_bytes(),
            0o644,
        ) {
            log::error!("cannot write pid file {}: {e}", self.server.pid_file);
        }
        let states = [
            sd_notify::NotifyState::MainPid(pid),
            sd_notify::NotifyState::Ready,
        ];
        if let Err(e) = sd_notify::notify(&states) {
            log::warn!("cannot notify systemd: {e}");
        }
        log::info!("serving as pid {pid}");
    }

    /// Removes the pid file at exit, unless a successor has taken it.
    pub fn release_pid_file(&self) {
        if read_pid_file(&self.server.pid_file) == Some(std::process::id() as i32) {
            let _ = std::fs::remove_file(&self.server.pid_file);
        }
    }

    /// SIGTERM: unready at once, then serving on for
    /// `shutdown_delay_seconds` (a second SIGTERM ends the wait). `false`
    /// when SIGINT came meanwhile: stop now.
    async fn delay_shutdown(
        &self,
        term: &mut tokio::signal::unix::Signal,
        int: &mut tokio::signal::unix::Signal,
    ) -> bool {
        self.readiness.set_stopping();
        let delay = Duration::from_secs(self.server.shutdown_delay_seconds);
        if delay.is_zero() {
            return true;
        }
        log::info!(
            "SIGTERM: /readyz answers 503; serving {}s more before draining \
             (server.shutdown_delay_seconds)",
            delay.as_secs()
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = term.recv() => true,
            _ = int.recv() => false,
        }
    }

    fn begin_drain(&self) {
        self.readiness.set_draining();
    }

    /// Successor, before it listens on the upgrade socket: offers the
    /// configuration it will serve to the predecessor (see [`handoff`]).
    pub fn offer_config(&self, source: &str) {
        let offered = OfferedConfig {
            path: std::path::absolute(&self.conf_path).unwrap_or_else(|_| self.conf_path.clone()),
            source: source.to_owned(),
        };
        if let Err(e) = HandoffFile::Config.leave(&self.server, &offered) {
            log::warn!(
                "cannot offer the configuration to the predecessor ({e}): it serves its own \
                 until it stops accepting"
            );
        }
    }

    /// Successor, once it has the sockets: an offer nobody took is removed,
    /// so that no later handoff mistakes it for its own.
    pub fn withdraw_config_offer(&self) {
        HandoffFile::Config.discard(&self.server);
    }

    /// Predecessor, on SIGQUIT: serves the successor's configuration for
    /// the seconds it still accepts, so that nothing is answered with the
    /// old one once the successor serves. A configuration this process
    /// cannot apply (a key of a newer binary, a secret only the successor's
    /// environment has) leaves the running one in place, said once here.
    fn adopt_successor_config(&self) {
        let offered = match HandoffFile::Config.take::<OfferedConfig>(&self.server) {
            Ok(Some(offered)) => offered,
            Ok(None) => {
                log::warn!(
                    "SIGQUIT: the successor offered no configuration (an older binary): \
                     connections accepted in the next {}s are served with the previous one",
                    HANDOVER_WINDOW_SECONDS
                );
                return;
            }
            Err(e) => {
                log::warn!("SIGQUIT: {e}; serving the previous configuration until this process stops accepting");
                return;
            }
        };
        let applied =
            config::load_text(&offered.path, offered.source).and_then(|loaded| self.apply(loaded));
        match applied {
            Ok(routes) => log::info!(
                "SIGQUIT: serving the successor's configuration ({routes} routes) until this \
                 process stops accepting"
            ),
            Err(e) => log::warn!(
                "SIGQUIT: cannot apply the successor's configuration {} here ({e}): connections \
                 accepted in the next {}s are served with the previous one",
                offered.path.display(),
                HANDOVER_WINDOW_SECONDS
            ),
        }
    }

    /// Successor, once it has the sockets: takes over what the predecessor
    /// left, and merges what it spends in its last seconds once it exits.
    pub fn take_over_state(&self) {
        // Still the predecessor's pid: this process announces itself later.
        let predecessor = read_pid_file(&self.server.pid_file);
        let taken = handoff::take_state(&self.server, &self.gateway.load());
        handoff::merge_final_limits(
            self.server.clone(),
            self.gateway.clone(),
            taken,
            predecessor,
        );
    }

    /// SIGHUP: re-reads the configuration and swaps it in, or keeps the
    /// running one when the new file does not validate.
    pub fn reload_in_place(&self) -> Result<usize, ConfigError> {
        let loaded = config::load(&self.conf_path)?;
        let was = &self.started_with;
        let now = &loaded.config;
        if now.server != was.server || now.admin != was.admin || now.log != was.log {
            log::warn!(
                "[server], [admin] or [log] changed in {}: they change only with a handoff \
                 (robeing-gateway reload); the rest is applied now",
                loaded.path.display()
            );
        }
        self.apply(loaded)
    }

    /// Swaps the serving state for the [`plan`] of `loaded` (all but
    /// `[server]`, `[admin]` and `[log]`, which belong to the process).
    fn apply(&self, loaded: LoadedConfig) -> Result<usize, ConfigError> {
        let current = self.gateway.load_full();
        let next = plan_loaded(loaded, Some(&current))?.gateway;
        let routes = next.routes.len();
        self.gateway.store(Arc::new(next));
        Ok(routes)
    }
}

/// How long an exiting process waits for its last spans to reach the
/// collector (a hung one would otherwise hold the exit for the export's
/// 5 s deadline).
const SPAN_FLUSH_LIMIT: Duration = Duration::from_secs(2);

impl Lifecycle {
    /// Ends the process as soon as it is drained, instead of Pingora's
    /// fixed sleep: once it stops accepting, it stays at least
    /// `grace_period_seconds` and exits when no request is in flight. Pingora
    /// itself stops it after `graceful_shutdown_timeout_seconds` (its grace
    /// period is set to that), cutting what still runs.
    pub fn exit_when_drained(self: &Arc<Self>, mut phases: broadcast::Receiver<ExecutionPhase>) {
        let lifecycle = self.clone();
        let minimum = Duration::from_secs(self.server.grace_period_seconds);
        std::thread::spawn(move || {
            loop {
                match phases.blocking_recv() {
                    Ok(ExecutionPhase::ShutdownGracePeriod) => break,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
            let stopped_accepting = Instant::now();
            loop {
                if stopped_accepting.elapsed() >= minimum && InFlight::count() == 0 {
                    log::info!("drained after {:?}, exiting", stopped_accepting.elapsed());
                    if lifecycle.handed_over.load(Ordering::Relaxed) {
                        handoff::leave_final_limits(&lifecycle.server, &lifecycle.gateway.load());
                    }
                    lifecycle.release_pid_file();
                    // The lines of the last 50 ms, not yet written, and the
                    // spans waiting for their batch.
                    lifecycle.access_log.flush();
                    if let Some(traces) = &lifecycle.gateway.load().traces {
                        traces.flush(SPAN_FLUSH_LIMIT);
                    }
                    std::process::exit(0);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
    }
}

/// Pingora's shutdown watcher, extended with readiness, draining and SIGHUP.
pub struct SignalWatch(pub Arc<Lifecycle>);

#[async_trait]
impl ShutdownSignalWatch for SignalWatch {
    async fn recv(&self) -> ShutdownSignal {
        let lifecycle = &self.0;
        let signals = (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
            signal(SignalKind::user_defined1()),
        );
        let (Ok(mut quit), Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut usr1)) = signals else {
            log::error!("cannot install signal handlers; stopping");
            return ShutdownSignal::FastShutdown;
        };
        // Pingora calls this once its services run: we serve from now on.
        lifecycle.announce_serving();
        loop {
            tokio::select! {
                _ = quit.recv() => {
                    log::info!("SIGQUIT: handing over to the successor");
                    lifecycle.begin_drain();
                    lifecycle.handed_over.store(true, Ordering::Relaxed);
                    handoff::leave_state(&lifecycle.server, &lifecycle.gateway.load());
                    stdio::send_stdio(&lifecycle.server);
                    lifecycle.adopt_successor_config();
                    return ShutdownSignal::GracefulUpgrade;
                }
                _ = term.recv() => {
                    if !lifecycle.delay_shutdown(&mut term, &mut int).await {
                        return ShutdownSignal::FastShutdown;
                    }
                    log::info!("SIGTERM: draining and stopping");
                    lifecycle.begin_drain();
                    return ShutdownSignal::GracefulTerminate;
                }
                _ = int.recv() => return ShutdownSignal::FastShutdown,
                _ = usr1.recv() => {
                    log::info!("SIGUSR1: reopening the access log");
                    lifecycle.access_log.reopen();
                }
                _ = hup.recv() => match lifecycle.reload_in_place() {
                    Ok(routes) => {
                        metrics().config_reloads.with_label_values(&["ok"]).inc();
                        log::info!("SIGHUP: configuration reloaded ({routes} routes)");
                    }
                    Err(e) => {
                        metrics().config_reloads.with_label_values(&["rejected"]).inc();
                        log::error!("SIGHUP: configuration rejected, keeping the running one: {e}");
                    }
                },
            }
        }
    }
}

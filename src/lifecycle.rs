//! Process lifecycle: readiness, signals, handoff and in-place reload.
//!
//! - When the process starts serving it writes its pid file and tells
//!   systemd (`READY=1`, `MAINPID=<pid>`), so a successor started by
//!   `robeing-gateway reload` becomes the service's main process.
//! - SIGQUIT (handoff): mark the process draining (responses close their
//!   connections), hand the identity cache to the successor through a file,
//!   then let Pingora pass the listening sockets and finish in-flight work.
//! - SIGTERM: drain and stop gracefully. SIGINT: stop now.
//! - SIGHUP: re-read the configuration and swap routes, auth and users
//!   atomically; listeners and connections are untouched, and a bad file
//!   is logged and ignored. (Pingora itself does not handle SIGHUP, whose
//!   default action would kill the process.)

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ExecutionPhase, ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::broadcast;

use crate::config::{self, ConfigError, LoadedConfig, ServerConfig};
use crate::gateway::{Gateway, SharedGateway};
use crate::identity::SnapshotEntry;
use crate::metrics::metrics;

/// Requests in flight in this process (upgraded WebSockets included).
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Counts one request in flight for as long as it lives.
#[derive(Debug)]
pub struct InFlight(());

impl InFlight {
    pub fn start() -> Self {
        IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        Self(())
    }

    pub fn count() -> usize {
        IN_FLIGHT.load(Ordering::Relaxed)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the lifecycle needs to know about the running process.
pub struct Lifecycle {
    conf_path: PathBuf,
    /// The configuration the process started with (for what SIGHUP cannot
    /// change).
    started_with: config::Config,
    server: ServerConfig,
    gateway: SharedGateway,
    draining: Arc<AtomicBool>,
}

/// Where a process leaves its identity cache for its successor.
pub fn identity_snapshot_path(server: &ServerConfig) -> PathBuf {
    PathBuf::from(format!("{}.identity.json", server.upgrade_sock))
}

/// The pid recorded in `pid_file`, if any.
pub fn read_pid_file(pid_file: &str) -> Option<i32> {
    std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()
}

fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

impl Lifecycle {
    pub fn new(loaded: LoadedConfig, gateway: SharedGateway) -> Self {
        Self {
            conf_path: loaded.path,
            server: loaded.config.server.clone(),
            started_with: loaded.config,
            gateway,
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The flag the proxy reads to close connections while draining.
    pub fn draining(&self) -> Arc<AtomicBool> {
        self.draining.clone()
    }

    /// Records this process as the one serving (pid file, systemd).
    fn announce_serving(&self) {
        let pid = std::process::id();
        if let Err(e) = write_atomically(
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

    fn begin_drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Leaves the identity cache where the successor will look for it.
    fn hand_over_identity(&self) {
        let entries = self.gateway.load().identity.snapshot();
        let path = identity_snapshot_path(&self.server);
        let written = serde_json::to_vec(&entries)
            .map_err(std::io::Error::other)
            .and_then(|bytes| write_atomically(&path, &bytes, 0o600));
        match written {
            Ok(()) => log::info!("handed {} cached users to the successor", entries.len()),
            Err(e) => log::warn!("cannot write {}: {e}", path.display()),
        }
    }

    /// Takes over a predecessor's identity cache, if it left one.
    pub fn take_over_identity(&self) {
        let path = identity_snapshot_path(&self.server);
        let Ok(bytes) = std::fs::read(&path) else {
            return;
        };
        let _ = std::fs::remove_file(&path);
        match serde_json::from_slice::<Vec<SnapshotEntry>>(&bytes) {
            Ok(entries) => {
                let n = self.gateway.load().identity.restore(entries);
                log::info!("took over {n} cached users from the predecessor");
            }
            Err(e) => log::warn!("ignoring unreadable {}: {e}", path.display()),
        }
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
                self.conf_path.display()
            );
        }
        let current = self.gateway.load_full();
        let next = Gateway::rebuild(&loaded, Some(&current))?;
        let routes = next.routes.len();
        self.gateway.store(Arc::new(next));
        Ok(routes)
    }
}

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
                    lifecycle.release_pid_file();
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
        );
        let (Ok(mut quit), Ok(mut term), Ok(mut int), Ok(mut hup)) = signals else {
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
                    lifecycle.hand_over_identity();
                    return ShutdownSignal::GracefulUpgrade;
                }
                _ = term.recv() => {
                    log::info!("SIGTERM: draining and stopping");
                    lifecycle.begin_drain();
                    return ShutdownSignal::GracefulTerminate;
                }
                _ = int.recv() => return ShutdownSignal::FastShutdown,
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

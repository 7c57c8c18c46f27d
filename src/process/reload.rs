//! `robeing-gateway reload -c CONF`: replace the running instance without
//! dropping a request.
//!
//! 1. Validate the new configuration completely, as start-up does
//!    ([`plan`]: secret, users, hosts, access log); a bad one is refused
//!    with all its problems and the running instance is not touched.
//! 2. Start the successor (`-u`, this very binary: a new version takes over
//!    by running its own `reload`).
//! 3. Wait until the successor listens on `upgrade_sock`, ready to receive
//!    the listening sockets. Only then SIGQUIT the running instance: a
//!    SIGQUIT with nobody waiting would make Pingora drop its listeners.
//! 4. Succeed only once the successor announces that it serves (it writes
//!    its pid into `pid_file`).

use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::config::ConfigError;
use crate::gateway::{plan, Plan};
use crate::process::lifecycle::read_pid_file;

const POLL: Duration = Duration::from_millis(20);
/// How long the successor may take to listen on the upgrade socket.
const SOCKET_WAIT: Duration = Duration::from_secs(10);
/// How long the handoff may take once SIGQUIT is sent (Pingora's sender
/// retries for about 5 s).
const SERVE_WAIT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the new configuration is invalid, the running instance is untouched: {0}")]
    Config(#[from] ConfigError),
    #[error("no running instance: {0}")]
    NotRunning(String),
    #[error("another handoff is in progress on {0}")]
    Busy(String),
    #[error("cannot start the successor: {0}")]
    Spawn(std::io::Error),
    #[error("the successor exited ({0}) before {1}")]
    SuccessorExited(ExitStatus, &'static str),
    #[error("timed out waiting for the successor to {0}")]
    Timeout(&'static str),
    #[error("cannot signal pid {0}: {1}")]
    Signal(i32, nix::Error),
    #[error("refusing to signal pid {0} from {1}: {2}")]
    NotAGateway(i32, String, String),
}

/// Stops a successor that never took over, so that no half-started
/// process is left waiting on the upgrade socket.
fn abandon(mut child: Child, err: ReloadError) -> ReloadError {
    let _ = child.kill();
    let _ = child.wait();
    err
}

fn wait_until(
    child: &mut Child,
    limit: Duration,
    what: &'static str,
    mut done: impl FnMut() -> bool,
) -> Result<(), ReloadError> {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(ReloadError::SuccessorExited(status, what));
        }
        if Instant::now() > deadline {
            return Err(ReloadError::Timeout(what));
        }
        std::thread::sleep(POLL);
    }
}

fn is_socket(path: &str) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// Removes an upgrade socket nobody listens on; refuses a live one.
fn clear_stale_socket(path: &str) -> Result<(), ReloadError> {
    if !Path::new(path).exists() {
        return Ok(());
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(ReloadError::Busy(path.to_owned())),
        Err(_) => {
            let _ = std::fs::remove_file(path);
            Ok(())
        }
    }
}

/// Whether `pid` is a robeing-gateway process of this user: a stale or
/// planted pid file must not make `reload` signal another process.
fn is_a_gateway_of_ours(pid: i32) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let proc = format!("/proc/{pid}");
    let meta = std::fs::metadata(&proc).map_err(|e| format!("{proc}: {e}"))?;
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(format!("it belongs to uid {}", meta.uid()));
    }
    let exe = std::fs::read_link(format!("{proc}/exe")).map_err(|e| format!("{proc}/exe: {e}"))?;
    // The running binary may be an older version installed under another
    // name (`robeing-gateway-1.2`), or replaced on disk ("NAME (deleted)").
    let name = exe.file_name().map(|n| n.to_string_lossy().into_owned());
    let ours = std::env::current_exe().ok();
    let ours = ours
        .as_deref()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy());
    let is_gateway = name.as_deref().is_some_and(|name| {
        let name = name.trim_end_matches(" (deleted)");
        name.starts_with("robeing-gateway") || Some(name) == ours.as_deref()
    });
    if is_gateway {
        Ok(())
    } else {
        Err(format!("it runs {}, not robeing-gateway", exe.display()))
    }
}

/// Replaces the running instance; returns the successor's pid.
pub fn reload(conf_path: &Path) -> Result<u32, ReloadError> {
    let Plan { loaded, .. } = plan(conf_path, None)?;
    let server = &loaded.config.server;

    let old_pid = read_pid_file(&server.pid_file)
        .ok_or_else(|| ReloadError::NotRunning(format!("no pid in {}", server.pid_file)))?;
    kill(Pid::from_raw(old_pid), None).map_err(|e| {
        ReloadError::NotRunning(format!("pid {old_pid} from {}: {e}", server.pid_file))
    })?;
    is_a_gateway_of_ours(old_pid)
        .map_err(|why| ReloadError::NotAGateway(old_pid, server.pid_file.clone(), why))?;
    clear_stale_socket(&server.upgrade_sock)?;

    let exe = std::env::current_exe().map_err(ReloadError::Spawn)?;
    let mut child = Command::new(exe)
        .arg("-c")
        .arg(conf_path)
        .arg("-u")
        .stdin(Stdio::null())
        // Until it takes over, its messages (a start-up error) go to this
        // command's stderr; then it writes to the predecessor's stdout and
        // stderr (`process::stdio`). Holding our stdout open would hang
        // `reload | tee ...`.
        .stdout(Stdio::null())
        // Its own process group: a Ctrl-C meant for this command must not
        // reach the process that is about to serve.
        .process_group(0)
        .spawn()
        .map_err(ReloadError::Spawn)?;
    let new_pid = child.id();

    if let Err(e) = wait_until(
        &mut child,
        SOCKET_WAIT,
        "listen on the upgrade socket",
        || is_socket(&server.upgrade_sock),
    ) {
        return Err(abandon(child, e));
    }
    if let Err(e) = kill(Pid::from_raw(old_pid), Signal::SIGQUIT) {
        return Err(abandon(child, ReloadError::Signal(old_pid, e)));
    }
    wait_until(&mut child, SERVE_WAIT, "serve", || {
        read_pid_file(&server.pid_file) == Some(new_pid as i32)
    })?;
    Ok(new_pid)
}

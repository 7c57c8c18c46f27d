//! The files two processes exchange during a SIGQUIT handoff, beside
//! `server.upgrade_sock`:
//!
//! | file | from → to | what |
//! |---|---|---|
//! | `<upgrade_sock>.config.json` | successor → predecessor | the configuration the successor serves (path and text) |
//! | `<upgrade_sock>.identity.json` | predecessor → successor | fresh cached users |
//! | `<upgrade_sock>.limits.json` | predecessor → successor | rate-limit state |
//! | `<upgrade_sock>.limits.final.json` | predecessor → successor | its rate-limit state when it exits |
//! | `<upgrade_sock>.upstreams.json` | predecessor → successor | upstream peers' health and ejections |
//! | `<upgrade_sock>.stdio` (a socket) | predecessor → successor | stdout and stderr ([`crate::process::stdio`]) |
//!
//! The successor offers its configuration before it listens on the upgrade
//! socket, so whoever sends the SIGQUIT (`reload` or an operator) finds it
//! there: the predecessor then serves the successor's configuration during
//! Pingora's 5 s window in which both processes accept on the shared
//! sockets. The predecessor leaves its state before it hands the sockets
//! over, and the successor reads it once it has them. What the predecessor
//! counts after that (it serves for a few more seconds) reaches the
//! successor in the final file, written as the predecessor exits and merged
//! by [`merge_final_limits`].
//!
//! Every file is written atomically with mode 0600 (through a fresh
//! temporary name created with `O_EXCL|O_NOFOLLOW`) and deleted by its
//! reader. It is opened without following links or blocking, and read only
//! when the opened file is a regular file owned by this process's user,
//! closed to group and others and of bounded size: the directory of
//! `upgrade_sock` is trusted no further than that.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::auth::identity::SnapshotEntry;
use crate::config::ServerConfig;
use crate::edge::limits::{LimitSnapshotEntry, TakenOver};
use crate::gateway::{Gateway, SharedGateway};
use crate::upstream::peer::PeerSnapshot;

/// How often the successor looks for the predecessor's final counters, and
/// how long at most (past any drain bound a predecessor may have).
const FINAL_POLL: Duration = Duration::from_millis(50);
const FINAL_WAIT: Duration = Duration::from_secs(120);
/// The largest handoff file read (a full identity cache is a few MiB).
pub const MAX_HANDOFF_BYTES: u64 = 256 * 1024 * 1024;

/// One of the files of a handoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandoffFile {
    /// Successor → predecessor: [`OfferedConfig`].
    Config,
    /// Predecessor → successor: the identity cache.
    Identity,
    /// Predecessor → successor: the rate limiter.
    Limits,
    /// Predecessor → successor: the rate limiter as it exits.
    LimitsFinal,
    /// Predecessor → successor: the upstream peers' health.
    Upstreams,
}

/// Why a handoff file could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("ignoring {0}: {1}")]
    Untrusted(PathBuf, &'static str),
    #[error("ignoring unreadable {0}: {1}")]
    Format(PathBuf, serde_json::Error),
}

/// The configuration a successor serves, offered to its predecessor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct OfferedConfig {
    /// Absolute path of the file (for messages and relative look-ups).
    pub path: PathBuf,
    /// The text the successor loaded.
    pub source: String,
}

impl HandoffFile {
    fn suffix(self) -> &'static str {
        match self {
            Self::Config => "config.json",
            Self::Identity => "identity.json",
            Self::Limits => "limits.json",
            Self::LimitsFinal => "limits.final.json",
            Self::Upstreams => "upstreams.json",
        }
    }

    /// Where this file lives for a server with `upgrade_sock`.
    pub fn path(self, server: &ServerConfig) -> PathBuf {
        PathBuf::from(format!("{}.{}", server.upgrade_sock, self.suffix()))
    }

    /// Writes `value` (JSON, 0600, atomically).
    pub fn leave<T: Serialize>(self, server: &ServerConfig, value: &T) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
        write_atomically(&self.path(server), &bytes, 0o600)
    }

    /// Reads and deletes the file; `Ok(None)` when there is none. The file
    /// is opened first, without following a symbolic link and without
    /// blocking (a FIFO planted there would hang a plain read), and the
    /// opened descriptor is checked (a regular file of this user, closed to
    /// group and others, at most [`MAX_HANDOFF_BYTES`]) before a byte is read.
    pub fn take<T: DeserializeOwned>(
        self,
        server: &ServerConfig,
    ) -> Result<Option<T>, HandoffError> {
        let path = self.path(server);
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path);
        let file = match opened {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                if e.raw_os_error() == Some(libc::ELOOP) {
                    return Err(HandoffError::Untrusted(path, "a symbolic link"));
                }
                return Err(HandoffError::Read(path, e));
            }
        };
        let _ = std::fs::remove_file(&path);
        let meta = file
            .metadata()
            .map_err(|e| HandoffError::Read(path.clone(), e))?;
        if !meta.file_type().is_file() {
            return Err(HandoffError::Untrusted(path, "not a regular file"));
        }
        if meta.uid() != nix::unistd::geteuid().as_raw() {
            return Err(HandoffError::Untrusted(path, "owned by another user"));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(HandoffError::Untrusted(path, "open to group or others"));
        }
        if meta.len() > MAX_HANDOFF_BYTES {
            return Err(HandoffError::Untrusted(
                path,
                "larger than a handoff file can be",
            ));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        std::io::Read::take(&file, MAX_HANDOFF_BYTES)
            .read_to_end(&mut bytes)
            .map_err(|e| HandoffError::Read(path.clone(), e))?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| HandoffError::Format(path, e))
    }

    /// Removes a file left by an earlier, abandoned handoff.
    pub fn discard(self, server: &ServerConfig) {
        let _ = std::fs::remove_file(self.path(server));
    }
}

/// Predecessor, on SIGQUIT: leaves the identity cache and the rate limits.
pub fn leave_state(server: &ServerConfig, gateway: &Gateway) {
    let users = gateway.identity.snapshot();
    match HandoffFile::Identity.leave(server, &users) {
        Ok(()) => log::info!("handed {} cached users to the successor", users.len()),
        Err(e) => log::warn!("cannot hand the identity cache over: {e}"),
    }
    let limits = gateway.limiter.snapshot();
    match HandoffFile::Limits.leave(server, &limits) {
        Ok(()) => log::info!(
            "handed {} rate-limit counters to the successor",
            limits.len()
        ),
        Err(e) => log::warn!("cannot hand the rate limits over: {e}"),
    }
    let peers = gateway.upstreams.snapshot();
    if let Err(e) = HandoffFile::Upstreams.leave(server, &peers) {
        log::warn!("cannot hand the upstream health over: {e}");
    }
}

/// Predecessor, drained and about to exit: its counters as they are now.
pub fn leave_final_limits(server: &ServerConfig, gateway: &Gateway) {
    let limits = gateway.limiter.snapshot();
    if let Err(e) = HandoffFile::LimitsFinal.leave(server, &limits) {
        log::warn!("cannot hand the final rate limits over: {e}");
    }
}

/// Successor, once it has the sockets: loads what the predecessor left.
pub fn take_state(server: &ServerConfig, gateway: &Gateway) -> TakenOver {
    // A final file of an earlier handoff would be taken for this one's.
    HandoffFile::LimitsFinal.discard(server);
    match HandoffFile::Identity.take::<Vec<SnapshotEntry>>(server) {
        Ok(Some(entries)) => {
            let n = gateway.identity.restore(entries);
            log::info!("took over {n} cached users from the predecessor");
        }
        Ok(None) => {}
        Err(e) => log::warn!("{e}"),
    }
    match HandoffFile::Upstreams.take::<Vec<PeerSnapshot>>(server) {
        Ok(Some(peers)) => {
            let n = gateway.upstreams.restore(&peers);
            log::info!("took over the health of {n} upstream peers from the predecessor");
        }
        Ok(None) => {}
        Err(e) => log::warn!("{e}"),
    }
    match HandoffFile::Limits.take::<Vec<LimitSnapshotEntry>>(server) {
        Ok(Some(entries)) => {
            let taken = gateway.limiter.restore(entries);
            log::info!(
                "took over {} rate-limit counters from the predecessor",
                taken.len()
            );
            taken
        }
        Ok(None) => TakenOver::default(),
        Err(e) => {
            log::warn!("{e}");
            TakenOver::default()
        }
    }
}

/// Successor: in a thread, waits for the predecessor's final counters and
/// adds what it spent after the handoff. Gives up when the predecessor is
/// gone without leaving them (an older binary, a forced stop).
pub fn merge_final_limits(
    server: ServerConfig,
    gateway: SharedGateway,
    taken: TakenOver,
    predecessor: Option<i32>,
) {
    // Waited for even when nothing was handed over: the predecessor may
    // count new clients in its last seconds.
    let Some(pid) = predecessor else {
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("handoff-final-limits".into())
        .spawn(move || {
            let deadline = Instant::now() + FINAL_WAIT;
            while Instant::now() < deadline {
                let gone = !Path::new(&format!("/proc/{pid}")).exists();
                match HandoffFile::LimitsFinal.take::<Vec<LimitSnapshotEntry>>(&server) {
                    Ok(Some(last)) => {
                        let grown = gateway.load().limiter.add_predecessor_tail(&taken, last);
                        log::info!(
                            "added what the predecessor spent after the handoff to {grown} \
                             rate-limit counters"
                        );
                        return;
                    }
                    Ok(None) if gone => return,
                    Ok(None) => {}
                    Err(e) => {
                        log::warn!("{e}");
                        return;
                    }
                }
                std::thread::sleep(FINAL_POLL);
            }
        });
    if let Err(e) = spawned {
        log::warn!("cannot wait for the predecessor's final rate limits: {e}");
    }
}

/// Writes through a temporary file and a rename, so a reader never sees a
/// half-written file. The temporary name is new each time and created with
/// `O_EXCL|O_NOFOLLOW`: nothing planted in the directory (a symbolic link
/// at a predictable name) receives the bytes.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.{nanos:08x}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(mode)
        .open(&tmp)?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests;

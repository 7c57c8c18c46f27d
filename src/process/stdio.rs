//! The predecessor's stdout and stderr, passed to its successor in a
//! handoff: the access log (`[log] destination = "stdout"`) and the process
//! log keep going where the service was started with them (systemd's
//! journal, a supervisor's pipe, a file), whoever ran `reload` and wherever
//! that command's own output went.
//!
//! - The successor listens on `<upgrade_sock>.stdio` before it listens on
//!   the upgrade socket ([`StdioReceiver::listen`]).
//! - The predecessor, on SIGQUIT and before Pingora passes the listening
//!   sockets, connects and sends its descriptors 1 and 2 (`SCM_RIGHTS`,
//!   [`send_stdio`]).
//! - The successor puts them in place of its own (`dup2`) before it serves
//!   ([`StdioReceiver::finish`]): until then its messages (a start-up
//!   error) go to whoever started it, afterwards to the service's output.
//!
//! Both ends check that the other runs as the same user; the socket lives
//! in the private directory of `upgrade_sock`.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use crate::config::ServerConfig;

const POLL: Duration = Duration::from_millis(10);
/// How long either end waits on the other once connected.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the successor waits for the descriptors.
fn socket_path(server: &ServerConfig) -> PathBuf {
    PathBuf::from(format!("{}.stdio", server.upgrade_sock))
}

/// Whether the process at the other end of `stream` runs as our user.
fn same_user(stream: &UnixStream) -> Result<(), String> {
    let peer = rustix::net::sockopt::socket_peercred(stream)
        .map_err(|e| format!("cannot read the peer's credentials: {e}"))?;
    let ours = rustix::process::geteuid();
    if peer.uid == ours {
        Ok(())
    } else {
        Err(format!(
            "the peer (pid {:?}) runs as uid {}, not {}",
            peer.pid,
            peer.uid.as_raw(),
            ours.as_raw()
        ))
    }
}

/// Successor side: a thread waiting for the predecessor's stdout and
/// stderr.
pub struct StdioReceiver {
    path: PathBuf,
    outcome: mpsc::Receiver<Result<(), String>>,
    stop: Arc<AtomicBool>,
}

impl StdioReceiver {
    /// Listens for the predecessor; `None` (said in the log) when the
    /// socket cannot be made, and the successor keeps the output it has.
    pub fn listen(server: &ServerConfig) -> Option<Self> {
        let path = socket_path(server);
        let _ = std::fs::remove_file(&path);
        let listener = match UnixListener::bind(&path).and_then(|l| {
            l.set_nonblocking(true)?;
            Ok(l)
        }) {
            Ok(listener) => listener,
            Err(e) => {
                log::warn!(
                    "cannot listen on {} ({e}): this process keeps the stdout and stderr it \
                     was started with",
                    path.display()
                );
                return None;
            }
        };
        let (tell, outcome) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = tell.send(adopt_from(&stream));
                        return;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(POLL)
                    }
                    Err(e) => {
                        let _ = tell.send(Err(format!("accept: {e}")));
                        return;
                    }
                }
            }
        });
        Some(Self {
            path,
            outcome,
            stop,
        })
    }

    /// Once the successor has the listening sockets (the predecessor sent
    /// its descriptors before them): waits for the swap to be done, at most
    /// `wait`, and removes the socket.
    pub fn finish(self, wait: Duration) {
        match self.outcome.recv_timeout(wait) {
            Ok(Ok(())) => log::info!("took over the predecessor's stdout and stderr"),
            Ok(Err(e)) => log::warn!(
                "cannot take over the predecessor's stdout and stderr ({e}): this process \
                 keeps the ones it was started with"
            ),
            Err(_) => log::warn!(
                "the predecessor sent no stdout and stderr (an older binary?): this process \
                 keeps the ones it was started with"
            ),
        }
        self.stop.store(true, Ordering::Relaxed);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Receives two descriptors and makes them this process's stdout and
/// stderr.
fn adopt_from(stream: &UnixStream) -> Result<(), String> {
    stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(EXCHANGE_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    same_user(stream)?;
    let mut byte = [0u8; 1];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    rustix::net::recvmsg(
        stream,
        &mut [IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| format!("recvmsg: {e}"))?;
    let mut fds: Vec<OwnedFd> = Vec::with_capacity(2);
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    let [stdout, stderr] = <[OwnedFd; 2]>::try_from(fds)
        .map_err(|fds| format!("expected 2 descriptors, received {}", fds.len()))?;
    // What is buffered goes out on the new descriptor: nothing is lost.
    rustix::stdio::dup2_stdout(stdout.as_fd()).map_err(|e| format!("dup2 stdout: {e}"))?;
    rustix::stdio::dup2_stderr(stderr.as_fd()).map_err(|e| format!("dup2 stderr: {e}"))?;
    Ok(())
}

/// Predecessor side, on SIGQUIT: sends stdout and stderr to a successor
/// waiting for them. A successor that does not wait (an older binary, a
/// hand-started `-u` elsewhere) is not an error: it keeps its own.
pub fn send_stdio(server: &ServerConfig) {
    let path = socket_path(server);
    if !path.exists() {
        log::info!(
            "SIGQUIT: no successor waits on {} for stdout and stderr",
            path.display()
        );
        return;
    }
    if let Err(e) = send_to(&path) {
        log::warn!(
            "SIGQUIT: cannot pass stdout and stderr to the successor ({e}): it keeps the ones \
             it was started with"
        );
    }
}

fn send_to(path: &std::path::Path) -> Result<(), String> {
    let stream = UnixStream::connect(path).map_err(|e| format!("{}: {e}", path.display()))?;
    stream
        .set_write_timeout(Some(EXCHANGE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    same_user(&stream)?;
    let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
    let rights = [stdout.as_fd(), stderr.as_fd()];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&rights)) {
        return Err("the control buffer is too small".into());
    }
    rustix::net::sendmsg(
        &stream,
        &[IoSlice::new(b"1")],
        &mut control,
        SendFlags::empty(),
    )
    .map_err(|e| format!("sendmsg: {e}"))?;
    Ok(())
}

//! The access log: one line per request, written off the proxy threads.
//!
//! The proxy thread only moves an [`AccessEntry`] (cheap clones) into a
//! bounded channel; a writer thread drains it every 50 ms, formats and
//! writes the lines, then flushes. When the channel is full the line is dropped
//! and counted (`gateway_access_log_dropped_total`): logging never blocks a
//! request. Lines carry no token, no query string and no secret; strings are
//! JSON-escaped, so control characters cannot forge lines.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::HeaderValue;

use crate::config::{ConfigError, LogConfig, LogFormat};

mod line;
use crate::observe::metrics::metrics;
use crate::routing::table::Route;
use crate::upstream::peer::PeerState;
pub use line::LineFormatter;

/// What one request leaves in the log.
pub struct AccessEntry {
    pub timestamp: SystemTime,
    pub request_id: HeaderValue,
    pub method: http::Method,
    pub path: String,
    /// The client's HTTP version (HTTP/2 streams log one line each).
    pub protocol: http::Version,
    pub username: Option<HeaderValue>,
    pub user_id: Option<HeaderValue>,
    pub route: Option<Arc<Route>>,
    pub upstream_status: Option<u16>,
    /// The peer of the last try, and how many tries there were.
    pub upstream_peer: Option<Arc<PeerState>>,
    pub tries: u32,
    pub status_code: u16,
    pub response_time: Duration,
}

type Sink = Box<dyn Write + Send>;

/// The sending side, shared by the proxy threads.
pub struct AccessLog {
    sender: Option<SyncSender<AccessEntry>>,
    /// Taken by the writer thread when the server starts (after any fork).
    writer: Mutex<Option<(Receiver<AccessEntry>, Sink, LogFormat)>>,
    /// A file destination, opened anew when [`Self::reopen`] asks (SIGUSR1:
    /// logrotate renamed it); shared with the writer thread.
    reopen: Arc<Reopen>,
}

fn open_file(path: &str) -> Result<std::fs::File, ConfigError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| ConfigError::invalid("log.destination", format!("cannot open {path}: {e}")))
}

impl AccessLog {
    /// Opens the destination now, so a bad path fails at start-up.
    /// Whether the destination can be opened (a file is created if
    /// missing), without starting anything: the check of `-t` and `reload`.
    pub fn check(config: &LogConfig) -> Result<(), ConfigError> {
        match config.destination.as_str() {
            "off" | "stdout" | "stderr" => Ok(()),
            path => open_file(path).map(drop),
        }
    }

    pub fn new(config: &LogConfig) -> Result<Self, ConfigError> {
        let sink: Sink = match config.destination.as_str() {
            "off" => {
                return Ok(Self {
                    sender: None,
                    writer: Mutex::new(None),
                    reopen: Arc::new(Reopen::new(None)),
                })
            }
            "stdout" => Box::new(std::io::stdout()),
            "stderr" => Box::new(std::io::stderr()),
            path => Box::new(open_file(path)?),
        };
        let (sender, receiver) = sync_channel(config.queue_capacity);
        let file = match config.destination.as_str() {
            "stdout" | "stderr" => None,
            path => Some(path.to_owned()),
        };
        Ok(Self {
            sender: Some(sender),
            writer: Mutex::new(Some((receiver, sink, config.format))),
            reopen: Arc::new(Reopen::new(file)),
        })
    }

    /// SIGUSR1: a file destination is opened anew by its path at the
    /// writer's next drain (within 50 ms). Lines written before stay in
    /// the file that was renamed; nothing queued is lost.
    pub fn reopen(&self) {
        if self.reopen.file.is_some() {
            self.reopen.requested.store(true, Ordering::Relaxed);
        }
    }

    /// Whether lines are written at all (`destination = "off"`: no).
    pub fn is_enabled(&self) -> bool {
        self.sender.is_some()
    }

    /// Hands a line to the writer; drops and counts it if the queue is full.
    pub fn record(&self, entry: AccessEntry) {
        let Some(sender) = &self.sender else {
            return;
        };
        match sender.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                metrics().access_log_dropped.inc();
            }
        }
    }

    /// Starts the writer thread (once).
    pub fn start_writer(&self) {
        let taken = self.writer.lock().ok().and_then(|mut w| w.take());
        let Some((receiver, sink, format)) = taken else {
            return;
        };
        let reopen = self.reopen.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(receiver, sink, format, reopen))
            .map(|_| ())
            .unwrap_or_else(|e| log::error!("cannot start the access-log writer: {e}"));
    }
}

/// How often the writer drains the queue. It polls rather than blocking on
/// `recv`, so that a request never pays for waking it up (a context switch
/// per line when proxy and writer share a core).
const DRAIN_INTERVAL: Duration = Duration::from_millis(50);

/// Lines are formatted straight into this buffer, written out when it is
/// full and at the end of every drain.
const BATCH_BYTES: usize = 64 * 1024;

/// The writer's side of [`AccessLog::reopen`].
struct Reopen {
    file: Option<String>,
    requested: AtomicBool,
}

impl Reopen {
    fn new(file: Option<String>) -> Self {
        Self {
            file,
            requested: AtomicBool::new(false),
        }
    }

    /// The file opened anew, when asked; on failure the old one is kept
    /// (lines go on to the renamed file) and the operator is told.
    fn take(&self) -> Option<Sink> {
        if !self.requested.swap(false, Ordering::Relaxed) {
            return None;
        }
        let path = self.file.as_deref()?;
        match open_file(path) {
            Ok(file) => Some(Box::new(file)),
            Err(e) => {
                log::error!(
                    "SIGUSR1: cannot reopen the access log, still writing to the old file: {e}"
                );
                None
            }
        }
    }
}

fn write_lines(
    receiver: Receiver<AccessEntry>,
    mut sink: Sink,
    format: LogFormat,
    reopen: Arc<Reopen>,
) {
    let mut batch = Vec::with_capacity(BATCH_BYTES + 1024);
    let mut lines = LineFormatter::new(format);
    let write_out = |sink: &mut Sink, batch: &mut Vec<u8>| {
        let _ = sink.write_all(batch).and_then(|()| sink.flush());
        batch.clear();
    };
    loop {
        std::thread::sleep(DRAIN_INTERVAL);
        if let Some(reopened) = reopen.take() {
            sink = reopened;
        }
        loop {
            match receiver.try_recv() {
                Ok(entry) => {
                    lines.append(&entry, &mut batch);
                    if batch.len() >= BATCH_BYTES {
                        write_out(&mut sink, &mut batch);
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    write_out(&mut sink, &mut batch);
                    return;
                }
            }
        }
        if !batch.is_empty() {
            write_out(&mut sink, &mut batch);
        }
    }
}

#[cfg(test)]
mod tests;

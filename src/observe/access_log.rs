//! The access log: one line per request, its I/O off the proxy threads.
//!
//! A proxy thread formats its line straight into its own pending buffer
//! (borrowing from the request: no entry is built, cloned, queued or
//! dropped, which cost more than the formatting itself); a writer thread
//! swaps every thread's buffer out every 50 ms, writes the lines and
//! flushes. A thread holds its buffer's lock only while it appends a line,
//! the writer only for a swap; nothing waits on I/O. Past `queue_capacity`
//! lines pending in one thread, a line is dropped and counted
//! (`gateway_access_log_dropped_total`): logging never blocks a request.
//! Lines carry no token, no query string and no secret; strings are
//! JSON-escaped, so control characters cannot forge lines.

use std::cell::RefCell;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::config::{ConfigError, LogConfig, LogFormat};
use crate::observe::metrics::metrics;

mod line;
pub use line::{LineFormatter, MAX_HOST_BYTES, MAX_USER_AGENT_BYTES};

/// What one request leaves in the log, borrowed from the request.
pub struct AccessEntry<'a> {
    pub timestamp: SystemTime,
    pub request_id: &'a [u8],
    /// The W3C trace id; `None`: one is generated (until the gateway
    /// propagates trace context, every request starts a trace).
    pub trace_id: Option<[u8; 16]>,
    pub method: &'a str,
    pub path: &'a [u8],
    /// The client's HTTP version (HTTP/2 streams log one line each).
    pub protocol: http::Version,
    /// `Host` (HTTP/1) or `:authority` (HTTP/2), as the client sent it.
    pub host: Option<&'a [u8]>,
    /// The client as resolved through `trusted_proxies`.
    pub client_ip: Option<IpAddr>,
    pub user_agent: Option<&'a [u8]>,
    pub username: Option<&'a [u8]>,
    pub user_id: Option<&'a [u8]>,
    /// The route's service and pattern.
    pub service: Option<&'a str>,
    pub route: Option<&'a str>,
    pub upstream_status: Option<u16>,
    /// The peer of the last try, and how many tries there were.
    pub upstream_peer: Option<&'a str>,
    pub tries: u32,
    /// From sending the (last try's) request upstream to its response
    /// header; `None` when no upstream answered.
    pub upstream_time: Option<Duration>,
    /// 499 when the client left before the response was complete.
    pub status_code: u16,
    pub response_time: Duration,
    /// Body bytes received from the client and sent to it.
    pub request_bytes: u64,
    pub response_bytes: u64,
}

type Sink = Box<dyn Write + Send>;

/// One proxy thread's formatted lines, waiting for the writer.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    lines: usize,
}

/// What the proxy threads and the writer share.
struct Shared {
    /// Tells this log's buffers from another's (tests run several).
    id: usize,
    format: LogFormat,
    /// Lines one thread may have pending before they are dropped.
    capacity: usize,
    /// Every proxy thread's buffer (a thread registers on its first line).
    threads: Mutex<Vec<Arc<Mutex<Pending>>>>,
    /// Where lines go; the writer holds it while it writes.
    sink: Mutex<Sink>,
}

/// A proxy thread's buffer and formatter (its timestamp prefix cache).
struct Local {
    log: usize,
    pending: Arc<Mutex<Pending>>,
    lines: LineFormatter,
}

thread_local! {
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The proxy threads' side, and the handle that starts the writer.
pub struct AccessLog {
    shared: Option<Arc<Shared>>,
    writer_started: AtomicBool,
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
    /// Whether the destination can be opened (a file is created if
    /// missing), without starting anything: the check of `-t` and `reload`.
    pub fn check(config: &LogConfig) -> Result<(), ConfigError> {
        match config.destination.as_str() {
            "off" | "stdout" | "stderr" => Ok(()),
            path => open_file(path).map(drop),
        }
    }

    /// Opens the destination now, so a bad path fails at start-up.
    pub fn new(config: &LogConfig) -> Result<Self, ConfigError> {
        let sink: Sink = match config.destination.as_str() {
            "off" => {
                return Ok(Self {
                    shared: None,
                    writer_started: AtomicBool::new(false),
                    reopen: Arc::new(Reopen::new(None)),
                })
            }
            "stdout" => Box::new(std::io::stdout()),
            "stderr" => Box::new(std::io::stderr()),
            path => Box::new(open_file(path)?),
        };
        let file = match config.destination.as_str() {
            "stdout" | "stderr" => None,
            path => Some(path.to_owned()),
        };
        Ok(Self {
            shared: Some(Arc::new(Shared {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                format: config.format,
                capacity: config.queue_capacity,
                threads: Mutex::new(Vec::new()),
                sink: Mutex::new(sink),
            })),
            writer_started: AtomicBool::new(false),
            reopen: Arc::new(Reopen::new(file)),
        })
    }

    /// SIGUSR1: a file destination is opened anew by its path at the
    /// writer's next drain (within 50 ms). Lines written before stay in
    /// the file that was renamed; nothing pending is lost.
    pub fn reopen(&self) {
        if self.reopen.file.is_some() {
            self.reopen.requested.store(true, Ordering::Relaxed);
        }
    }

    /// Whether lines are written at all (`destination = "off"`: no).
    pub fn is_enabled(&self) -> bool {
        self.shared.is_some()
    }

    /// Formats the line into this thread's buffer; drops and counts it
    /// when the buffer already holds `queue_capacity` lines.
    pub fn record(&self, entry: &AccessEntry<'_>) {
        let Some(shared) = &self.shared else {
            return;
        };
        LOCAL.with(|local| {
            let Ok(mut local) = local.try_borrow_mut() else {
                return;
            };
            let local = match &mut *local {
                Some(l) if l.log == shared.id => l,
                slot => slot.insert(register(shared)),
            };
            let mut pending = locked(&local.pending);
            if pending.lines >= shared.capacity {
                metrics().access_log_dropped.inc();
                return;
            }
            local.lines.append(entry, &mut pending.bytes);
            pending.lines += 1;
        });
    }

    /// Starts the writer thread (once).
    pub fn start_writer(&self) {
        let Some(shared) = &self.shared else {
            return;
        };
        if self.writer_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let (shared, reopen) = (shared.clone(), self.reopen.clone());
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(&shared, &reopen))
            .map(|_| ())
            .unwrap_or_else(|e| log::error!("cannot start the access-log writer: {e}"));
    }

    /// Writes every pending line now (the process is about to exit).
    pub fn flush(&self) {
        if let Some(shared) = &self.shared {
            drain(shared, &mut Vec::new());
        }
    }
}

/// A new buffer for this thread, known to the writer.
fn register(shared: &Shared) -> Local {
    let pending = Arc::new(Mutex::new(Pending::default()));
    locked(&shared.threads).push(pending.clone());
    Local {
        log: shared.id,
        pending,
        lines: LineFormatter::new(shared.format),
    }
}

/// How often the writer drains the buffers. It polls rather than being
/// woken, so that a request never pays for waking it up (a context switch
/// per line when proxy and writer share a core).
const DRAIN_INTERVAL: Duration = Duration::from_millis(50);

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

fn write_lines(shared: &Shared, reopen: &Reopen) {
    // Swapped with each thread's buffer: capacities go round, no
    // allocation per drain.
    let mut spare = Vec::new();
    loop {
        std::thread::sleep(DRAIN_INTERVAL);
        if let Some(reopened) = reopen.take() {
            *locked(&shared.sink) = reopened;
        }
        drain(shared, &mut spare);
    }
}

/// Takes every thread's pending lines and writes them, then flushes.
fn drain(shared: &Shared, spare: &mut Vec<u8>) {
    let threads: Vec<Arc<Mutex<Pending>>> = locked(&shared.threads).clone();
    let mut sink = locked(&shared.sink);
    for thread in threads {
        {
            let mut pending = locked(&thread);
            std::mem::swap(&mut pending.bytes, spare);
            pending.lines = 0;
        }
        if !spare.is_empty() {
            let _ = sink.write_all(spare);
            spare.clear();
        }
    }
    let _ = sink.flush();
}

#[cfg(test)]
mod tests;

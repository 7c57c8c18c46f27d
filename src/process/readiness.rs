//! What draining and `/readyz` read, below the proxy and the admin
//! listener that read it: the requests in flight, and whether the process
//! is draining or stopping. `process::lifecycle` sets them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

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

/// Whether the process should get traffic, as `/readyz` tells it.
#[derive(Clone, Default)]
pub struct Readiness {
    /// Handing over or draining: responses close their connections.
    draining: Arc<AtomicBool>,
    /// SIGTERM arrived: still serving for `shutdown_delay_seconds`, but an
    /// orchestrator must stop sending new requests.
    stopping: Arc<AtomicBool>,
}

impl Readiness {
    /// `None` when ready, else why not.
    pub fn unready_because(&self) -> Option<&'static str> {
        if self.draining.load(Ordering::Relaxed) {
            Some("draining")
        } else if self.stopping.load(Ordering::Relaxed) {
            Some("stopping")
        } else {
            None
        }
    }

    /// The flag the proxy reads to close connections while draining.
    pub fn draining(&self) -> Arc<AtomicBool> {
        self.draining.clone()
    }

    /// A handoff or a drain began.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// SIGTERM arrived.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }
}

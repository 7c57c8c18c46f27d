//! A narrow, live view of the running state: a background service (or the
//! certificate resolver) reads the one part it needs of whichever
//! configuration runs when it looks (SIGHUP swaps the whole state), without
//! naming the state's type, which sits layers above it
//! (`docs/architecture.md`, "Layers"). `gateway::live` makes one.

use std::sync::Arc;

/// Reads one part of the running state, anew on every [`Live::get`].
pub struct Live<T>(Arc<dyn Fn() -> T + Send + Sync>);

impl<T> Live<T> {
    pub fn new(read: impl Fn() -> T + Send + Sync + 'static) -> Self {
        Self(Arc::new(read))
    }

    /// The part as the running state holds it now.
    pub fn get(&self) -> T {
        (self.0)()
    }
}

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> std::fmt::Debug for Live<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn every_read_sees_the_current_value() {
        let current = Arc::new(AtomicU32::new(1));
        let seen = current.clone();
        let live = Live::new(move || seen.load(Ordering::Relaxed));
        assert_eq!(live.get(), 1);
        current.store(2, Ordering::Relaxed);
        assert_eq!(live.clone().get(), 2);
    }
}

//! What the embedding program may measure about storage calls.
//!
//! Storage keeps plain atomic counters (tests read them) and, for latency
//! distributions, calls an observer that the program sets once at start
//! (the web node feeds Prometheus histograms). Storage itself depends on no
//! metrics library.

use std::sync::OnceLock;
use std::time::Duration;

type ObserveFn = Box<dyn Fn(Duration) + Send + Sync>;

/// An optional callback for each call's duration.
#[derive(Default)]
pub struct LatencyObserver(OnceLock<ObserveFn>);

impl std::fmt::Debug for LatencyObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LatencyObserver")
            .field(&self.0.get().is_some())
            .finish()
    }
}

impl LatencyObserver {
    /// Sets the observer; `false` (and no change) if one is set already.
    pub fn set(&self, observe: impl Fn(Duration) + Send + Sync + 'static) -> bool {
        self.0.set(Box::new(observe)).is_ok()
    }

    pub fn observe(&self, elapsed: Duration) {
        if let Some(observe) = self.0.get() {
            observe(elapsed);
        }
    }
}

/// The connections of a pool at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    /// Connections open now, in use or idle.
    pub open: usize,
    /// Open connections not in use.
    pub idle: usize,
    /// The most the pool opens.
    pub max: usize,
}

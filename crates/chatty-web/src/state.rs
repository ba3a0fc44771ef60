//! [`AppState`]: everything a handler needs, built once by the application
//! and shared (cheaply cloned) by every worker.

use std::sync::Arc;
use std::time::Duration;

use chatty_storage::{EventBus, RateLimiter, Store};

use crate::connections::ConnectionLimits;
use crate::directory::Directory;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::token::GuestTokens;

/// Shared application state.
#[derive(Debug, Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn EventBus>,
    /// Rate-limit counters (in memory, or shared through Redis).
    pub rate: Arc<dyn RateLimiter>,
    pub hub: Arc<Hub>,
    pub directory: Arc<Directory>,
    pub tokens: Arc<GuestTokens>,
    pub metrics: Metrics,
    /// Push connection counts and caps.
    pub connections: Arc<ConnectionLimits>,
}

impl AppState {
    pub fn token_ttl(&self) -> Duration {
        Duration::from_secs(self.settings.auth.token_ttl_secs)
    }
}

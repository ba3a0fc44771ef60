//! [`AppState`]: everything a handler needs, built once by the application
//! and shared (cheaply cloned) by every worker.

use std::sync::Arc;
use std::time::Duration;

use chatty_storage::{AdminStore, EventBus, Guard, Store};

use crate::connections::ConnectionLimits;
use crate::directory::Directory;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::moderation::{Visitors, WordFilters};
use crate::settings::Settings;
use crate::token::GuestTokens;

/// Shared application state.
#[derive(Debug, Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn EventBus>,
    /// Site administration and moderation (the same database).
    pub admin: Arc<dyn AdminStore>,
    /// Bans, slow mode, repeats and rate limits (in memory, or shared
    /// through Redis).
    pub guard: Arc<dyn Guard>,
    /// Visitors' addresses and their salted hashes.
    pub visitors: Arc<Visitors>,
    pub word_filters: Arc<WordFilters>,
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

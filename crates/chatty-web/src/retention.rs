//! The retention job: deletes messages older than `privacy.retention_days`.
//!
//! Every node runs it (there is no leader to elect): deletes are
//! idempotent, go in small batches by id so row locks stay short, and two
//! nodes deleting at once only share the work. A node's in-memory window
//! may hold a message for a while after its row is gone; join answers leave
//! out messages older than the retention period, so it is not shown again.

use std::sync::Arc;
use std::time::Duration;

use chatty_storage::AdminStore;

use crate::settings::PrivacySettings;

/// Rows deleted per statement.
const BATCH: u64 = 1000;

/// Runs forever: once shortly after start, then every interval.
pub async fn run(admin: Arc<dyn AdminStore>, privacy: PrivacySettings) {
    let mut ticker = tokio::time::interval(Duration::from_secs(privacy.retention_interval_secs));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match sweep(admin.as_ref(), privacy.retention_days).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "retention: deleted old messages"),
            Err(error) => tracing::warn!(%error, "retention sweep failed; the next run retries"),
        }
    }
}

/// One sweep: deletes every message older than `days` days, batch by batch.
pub async fn sweep(admin: &dyn AdminStore, days: u32) -> Result<u64, chatty_storage::StoreError> {
    let cutoff = chrono::Utc::now() - chrono::Duration::days(i64::from(days));
    let mut total = 0;
    loop {
        let deleted = admin.delete_messages_before(cutoff, BATCH).await?;
        total += deleted;
        if deleted < BATCH {
            return Ok(total);
        }
        // Leave room for the chat's own writes between batches.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

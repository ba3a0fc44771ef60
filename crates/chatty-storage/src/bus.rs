//! The event bus: how committed messages and presence changes reach every
//! node's room state.
//!
//! A node subscribes **once** (not once per visitor) and applies what it
//! receives to its in-memory rooms. The embedded mode uses
//! [`InProcessBus`], a bounded tokio broadcast channel; the shared mode uses
//! [`RedisBus`](crate::redis::RedisBus), one Redis subscription per node.
//!
//! Delivery on the bus is at-most-once and may reorder concurrent sends:
//! receivers must not trust it for completeness. They detect holes by the
//! contiguous per-room sequence numbers (and presence versions) and fill
//! them from the bus history or the [`Store`]. After a subscription was lost
//! and re-established, the bus emits [`BusEvent::Resync`] so the node checks
//! every room it holds.
//!
//! [`Store`]: crate::Store

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::domain::StoredMessage;
use crate::error::StoreError;
use crate::presence::PresenceChange;

/// What travels on the bus.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BusEvent {
    /// A message was committed.
    Message { message: StoredMessage },
    /// Someone joined or left a room.
    Presence { change: PresenceChange },
    /// A site's settings (origins, disabled, slow mode, word filter) changed:
    /// every node forgets its cached copy. `access`: who may use the site
    /// changed (its origins or its disabled flag), so its open push
    /// connections are ended and reconnect under the new rules.
    SiteChanged {
        site_id: i64,
        #[serde(default)]
        access: bool,
    },
    /// Events may have been lost (the subscription was re-established or the
    /// receiver lagged): re-check every room. Never published, only emitted
    /// locally.
    Resync,
}

/// A receiver of bus events.
pub type BusReceiver = broadcast::Receiver<BusEvent>;

/// Publish/subscribe between nodes, with an optional short per-room history
/// of messages so that nodes can fill holes without the database.
#[async_trait]
pub trait EventBus: Send + Sync + std::fmt::Debug + 'static {
    /// Publishes a committed message to every node, this one included (and,
    /// where the bus keeps history, appends it there first).
    async fn publish_message(&self, message: &StoredMessage) -> Result<(), StoreError>;
    /// Tells every node (this one included) that a site changed.
    async fn publish_site_changed(&self, site_id: i64, access: bool) -> Result<(), StoreError>;
    /// Subscribes this node.
    fn subscribe(&self) -> BusReceiver;
    /// Is the node's subscription up? Sends are refused while it is not.
    fn is_connected(&self) -> bool {
        true
    }
    /// Messages with `seq > after`, up to the newest the bus knows, if the
    /// history holds all of them (at most `limit`). `None`: ask the store.
    async fn history_after(
        &self,
        _room_id: i64,
        _after: u64,
        _limit: usize,
    ) -> Result<Option<Vec<StoredMessage>>, StoreError> {
        Ok(None)
    }
    /// The newest `limit` messages, if the history is known complete.
    async fn recent(
        &self,
        _room_id: i64,
        _limit: usize,
    ) -> Result<Option<Vec<StoredMessage>>, StoreError> {
        Ok(None)
    }
    /// Puts messages read from the store into the history (after a cache loss).
    async fn backfill(
        &self,
        _room_id: i64,
        _messages: &[StoredMessage],
        _last_seq: u64,
    ) -> Result<(), StoreError> {
        Ok(())
    }
    /// Is the bus reachable (readiness)?
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// The connection pool's state, for metrics (`None`: no pool).
    fn pool_status(&self) -> Option<crate::PoolStatus> {
        None
    }
}

/// The single-process bus of the embedded mode.
#[derive(Debug, Clone)]
pub struct InProcessBus {
    sender: broadcast::Sender<BusEvent>,
}

impl InProcessBus {
    /// A bus holding at most `capacity` events per lagging receiver.
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self { sender }
    }

    /// Sends an event to every subscriber (no subscriber is not an error:
    /// the node may be shutting down).
    pub fn send(&self, event: BusEvent) {
        let _ = self.sender.send(event);
    }
}

#[async_trait]
impl EventBus for InProcessBus {
    async fn publish_message(&self, message: &StoredMessage) -> Result<(), StoreError> {
        self.send(BusEvent::Message {
            message: message.clone(),
        });
        Ok(())
    }

    async fn publish_site_changed(&self, site_id: i64, access: bool) -> Result<(), StoreError> {
        self.send(BusEvent::SiteChanged { site_id, access });
        Ok(())
    }

    fn subscribe(&self) -> BusReceiver {
        self.sender.subscribe()
    }
}

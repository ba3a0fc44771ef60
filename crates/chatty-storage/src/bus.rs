//! The event bus: how a committed message reaches every node's room state.
//!
//! A node subscribes **once** (not once per visitor) and applies what it
//! receives to its in-memory rooms. The embedded mode uses
//! [`InProcessBus`], a bounded tokio broadcast channel; the shared mode puts
//! Redis behind the same trait.
//!
//! Delivery on the bus is at-most-once and may reorder concurrent sends:
//! receivers must not trust it for completeness. They detect holes by the
//! contiguous per-room sequence numbers and fill them from the [`Store`]
//! (see the web crate's `hub`). A receiver that falls more than the channel's
//! capacity behind is told how much it lost (`Lagged`) and resynchronises.
//!
//! [`Store`]: crate::Store

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::domain::StoredMessage;
use crate::error::StoreError;

/// What travels on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusEvent {
    /// A message was committed.
    Message(StoredMessage),
}

/// A receiver of bus events.
pub type BusReceiver = broadcast::Receiver<BusEvent>;

/// Publish/subscribe between nodes.
#[async_trait]
pub trait EventBus: Send + Sync + std::fmt::Debug + 'static {
    /// Publishes an event to every subscribed node, this one included.
    async fn publish(&self, event: BusEvent) -> Result<(), StoreError>;
    /// Subscribes this node.
    fn subscribe(&self) -> BusReceiver;
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
}

#[async_trait]
impl EventBus for InProcessBus {
    async fn publish(&self, event: BusEvent) -> Result<(), StoreError> {
        // No receiver is not an error: the node may be shutting down.
        let _ = self.sender.send(event);
        Ok(())
    }

    fn subscribe(&self) -> BusReceiver {
        self.sender.subscribe()
    }
}

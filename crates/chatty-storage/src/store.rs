//! The durable store trait.

use async_trait::async_trait;

use crate::domain::{NewMessage, NewSite, PostOutcome, Room, Site, StoredMessage};
use crate::error::StoreError;
use chatty_protocol::validate::PagePath;

/// Durable storage of sites, rooms and messages.
///
/// Implementations must make [`Store::post_message`] atomic: the message and
/// its sequence number are committed together or not at all, sequence
/// numbers per room are contiguous, and a second post with the same
/// `(room, client_message_id)` returns the first one (`created: false`).
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Creates the site if no site has its key; returns the stored site.
    async fn ensure_site(&self, site: NewSite) -> Result<Site, StoreError>;
    /// Creates or updates the site with this key so that its name, origins
    /// and disabled flag are exactly as given (configuration-managed sites).
    async fn upsert_site(&self, site: NewSite, disabled: bool) -> Result<Site, StoreError>;
    /// The site with this public key, if any.
    async fn site_by_key(&self, key: &str) -> Result<Option<Site>, StoreError>;
    /// The site with this id, if any.
    async fn site_by_id(&self, id: i64) -> Result<Option<Site>, StoreError>;
    /// The room for a site and page (`None`: the site's room), created on first use.
    async fn room_for(&self, site_id: i64, page: Option<&PagePath>) -> Result<Room, StoreError>;
    /// A room by id.
    async fn room(&self, room_id: i64) -> Result<Option<Room>, StoreError>;
    /// Stores a message, assigning the room's next sequence number. Idempotent
    /// by `(room_id, client_message_id)`.
    async fn post_message(&self, message: NewMessage) -> Result<PostOutcome, StoreError>;
    /// The message a client sent with this id, if it is stored.
    async fn message_by_client_id(
        &self,
        room_id: i64,
        client_message_id: &str,
    ) -> Result<Option<StoredMessage>, StoreError>;
    /// Messages with `seq > after`, oldest first, at most `limit`.
    async fn messages_after(
        &self,
        room_id: i64,
        after: u64,
        limit: u64,
    ) -> Result<Vec<StoredMessage>, StoreError>;
    /// The newest `limit` messages, oldest first.
    async fn recent_messages(
        &self,
        room_id: i64,
        limit: u64,
    ) -> Result<Vec<StoredMessage>, StoreError>;
    /// The newest seq of each of these rooms (rooms that do not exist are left out).
    async fn last_seqs(&self, room_ids: &[i64]) -> Result<Vec<(i64, u64)>, StoreError>;
    /// The connection pool's state, for metrics (`None`: no pool).
    fn pool_status(&self) -> Option<crate::PoolStatus> {
        None
    }
    /// Is the store reachable?
    async fn ping(&self) -> Result<(), StoreError>;
}

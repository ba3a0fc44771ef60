//! The durable side of site administration and moderation: site tokens,
//! moderation events in a room's sequence, bans, the audit log, message
//! export and retention.
//!
//! Kept apart from [`Store`](crate::Store), which serves visitors: these
//! calls come from site owners and moderators (a few per minute), never
//! from the hot path. [`SqlStore`](crate::SqlStore) implements both.

use async_trait::async_trait;
use chatty_protocol::moderation::WordFilter;
use chrono::{DateTime, Utc};

use crate::domain::{NewSite, Room, Site, StoredMessage};
use crate::error::StoreError;

/// What a site token may do. Ordered: an admin may do what a moderator may.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum TokenRole {
    /// Moderation: delete, ban, slow mode, word filter, clear, audit log.
    Moderator,
    /// Everything for the site: also origins, disabling, tokens, export.
    Admin,
}

impl TokenRole {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRole::Moderator => "moderator",
            TokenRole::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "moderator" => Some(TokenRole::Moderator),
            "admin" => Some(TokenRole::Admin),
            _ => None,
        }
    }
}

/// A stored site token (its secret is never stored, only its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteToken {
    pub id: i64,
    pub site_id: i64,
    pub role: TokenRole,
    pub label: String,
    pub created_at: DateTime<Utc>,
    pub revoked: bool,
}

/// Changes to a site; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct SiteUpdate {
    pub name: Option<String>,
    pub allowed_origins: Option<Vec<String>>,
    pub disabled: Option<bool>,
    pub slow_mode_secs: Option<u32>,
    pub word_filter: Option<WordFilter>,
}

/// A moderation event to put into a room's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moderation {
    /// Delete the chat message with this seq.
    Delete { seq: u64 },
    /// Delete every chat message of the room.
    Clear,
}

/// A chat message as moderators see it: with its author's IP hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeratedMessage {
    pub message: StoredMessage,
    pub ip_hash: String,
}

/// A ban to record.
#[derive(Debug, Clone)]
pub struct NewBan {
    pub site_id: i64,
    pub guest_id: Option<String>,
    pub ip_hash: Option<String>,
    pub reason: String,
    pub created_by: String,
    pub expires_at: DateTime<Utc>,
}

/// A recorded ban.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    pub id: i64,
    pub site_id: i64,
    pub guest_id: Option<String>,
    pub ip_hash: Option<String>,
    pub reason: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub lifted: bool,
}

/// An audit log entry to record.
#[derive(Debug, Clone)]
pub struct NewAuditEntry {
    pub site_id: i64,
    pub actor: String,
    pub action: String,
    pub room_id: Option<i64>,
    pub target: String,
    pub details: serde_json::Value,
}

/// A recorded audit log entry.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub id: i64,
    pub site_id: i64,
    pub actor: String,
    pub action: String,
    pub room_id: Option<i64>,
    pub target: String,
    pub details: serde_json::Value,
    pub at: DateTime<Utc>,
}

/// Durable administration and moderation.
#[async_trait]
pub trait AdminStore: Send + Sync + std::fmt::Debug + 'static {
    /// Creates a site and its first admin token (by hash) together.
    async fn create_site(&self, site: NewSite, admin_token_hash: &str) -> Result<Site, StoreError>;
    /// Every site, oldest first.
    async fn list_sites(&self) -> Result<Vec<Site>, StoreError>;
    /// Applies the changes and returns the site as stored.
    async fn update_site(&self, site_id: i64, update: SiteUpdate) -> Result<Site, StoreError>;

    /// Records a token by the hash of its secret.
    async fn create_token(
        &self,
        site_id: i64,
        role: TokenRole,
        label: &str,
        token_hash: &str,
    ) -> Result<SiteToken, StoreError>;
    /// The unrevoked token with this hash.
    async fn token_by_hash(&self, token_hash: &str) -> Result<Option<SiteToken>, StoreError>;
    /// The site's tokens, revoked ones included.
    async fn list_tokens(&self, site_id: i64) -> Result<Vec<SiteToken>, StoreError>;
    /// Revokes one; `false` when the site has no such token.
    async fn revoke_token(&self, site_id: i64, token_id: i64) -> Result<bool, StoreError>;

    /// The site's rooms.
    async fn rooms_of_site(&self, site_id: i64) -> Result<Vec<Room>, StoreError>;
    /// Chat messages with `seq < before` (all when `None`), newest first, at most `limit`.
    async fn messages_for_moderation(
        &self,
        room_id: i64,
        before: Option<u64>,
        limit: u64,
    ) -> Result<Vec<ModeratedMessage>, StoreError>;
    /// Puts a moderation event into the room's sequence and applies it to
    /// the stored messages, in one transaction. Deleting a message already
    /// deleted returns the first delete event (`created: false`); deleting
    /// a seq that is not a chat message is `NotFound`.
    async fn moderate(
        &self,
        room_id: i64,
        action: Moderation,
    ) -> Result<crate::PostOutcome, StoreError>;

    /// Records a ban.
    async fn add_ban(&self, ban: NewBan) -> Result<Ban, StoreError>;
    /// Bans not lifted and not expired at `now`, of one site or of all.
    async fn active_bans(
        &self,
        site_id: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Ban>, StoreError>;
    /// Lifts a ban; the ban as it was, `None` when the site has no such ban.
    async fn lift_ban(&self, site_id: i64, ban_id: i64) -> Result<Option<Ban>, StoreError>;

    /// Appends to the audit log.
    async fn record_action(&self, entry: NewAuditEntry) -> Result<(), StoreError>;
    /// Entries with `id < before` (all when `None`), newest first.
    async fn audit_log(
        &self,
        site_id: i64,
        before: Option<i64>,
        limit: u64,
    ) -> Result<Vec<AuditEntry>, StoreError>;

    /// Retention: deletes at most `batch` messages created before `cutoff`;
    /// returns how many.
    async fn delete_messages_before(
        &self,
        cutoff: DateTime<Utc>,
        batch: u64,
    ) -> Result<u64, StoreError>;
    /// The deployment's value for `name`, created from `generate` by the
    /// first node that asks (every node then reads the same one).
    async fn meta_value(&self, name: &str, generate: String) -> Result<String, StoreError>;
}

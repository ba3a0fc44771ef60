//! # chatty-storage
//!
//! Where Chatty's data lives, behind traits that speak domain types so the
//! web node never sees a table:
//!
//! * [`Store`] — the durable store of sites, rooms and messages. One
//!   implementation, [`SqlStore`], runs the same sea-orm entities and
//!   migrations on SQLite (the embedded default) and MySQL/MariaDB.
//! * [`EventBus`] — how a committed message (or a presence change) reaches
//!   every node's in-memory room state: [`InProcessBus`] for the embedded
//!   mode, [`RedisBus`] (one subscription per node, plus a capped history of
//!   recent messages per room) for the shared mode.
//! * [`PresenceStore`] — who is in each room: [`InMemoryPresence`] or
//!   [`RedisPresence`].
//!
//! Layout: `domain` (the types the traits speak), `entity` (sea-orm models,
//! private), `migration` (schema, run at start), `sql` (the store), `bus`.

pub mod admin;
pub mod bus;
pub mod domain;
mod entity;
pub mod error;
pub mod guard;
pub mod migration;
pub mod observe;
pub mod presence;
pub mod redis;
pub mod sql;
mod sql_admin;
mod store;

pub use admin::{
    AdminStore, AuditEntry, Ban, ModeratedMessage, Moderation, NewAuditEntry, NewBan, SiteToken,
    SiteUpdate, TokenRole,
};
pub use bus::{BusEvent, EventBus, InProcessBus};
pub use domain::{MessageKind, NewMessage, NewSite, PostOutcome, Room, Site, StoredMessage};
pub use error::StoreError;
pub use guard::{Admission, Bucket, Guard, InMemoryGuard, JoinCheck, RedisGuard, SendCheck};
pub use observe::{LatencyObserver, PoolStatus};
pub use presence::{
    InMemoryPresence, PresenceChange, PresenceKind, PresenceSnapshot, PresenceStore, RoomTouches,
};
pub use redis::{RedisBus, RedisClient, RedisOptions, RedisPresence, RedisStats};
pub use sql::{QueryStats, SqlStore, SqlStoreOptions};
pub use store::Store;

#[cfg(feature = "testing")]
pub mod testing;

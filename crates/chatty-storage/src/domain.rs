//! The domain types the storage traits speak.
//!
//! Validated values arrive as chatty-protocol newtypes ([`Nickname`],
//! [`MessageBody`], …), so storage never stores unchecked input.

use chatty_protocol::moderation::WordFilter;
use chatty_protocol::validate::{ClientMessageId, MessageBody, Nickname, PagePath};
use chatty_protocol::{Event, MessageView};
use chrono::{DateTime, SecondsFormat, Utc};

/// A web site that embeds Chatty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub id: i64,
    /// Public key written in the embed snippet.
    pub key: String,
    pub name: String,
    /// Origins (`scheme://host[:port]`) allowed to use the widget; `*` allows any.
    pub allowed_origins: Vec<String>,
    pub disabled: bool,
    /// Seconds a guest waits between two messages (0: off).
    pub slow_mode_secs: u32,
    /// Words the site filters (empty: none).
    pub word_filter: WordFilter,
    pub created_at: DateTime<Utc>,
}

impl Site {
    /// Is a request from `origin` allowed? Exact match of scheme, host and
    /// port, never a suffix match (`evil-example.com` is not `example.com`).
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allowed_origins
            .iter()
            .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin))
    }
}

/// What is needed to create a site.
#[derive(Debug, Clone)]
pub struct NewSite {
    pub key: String,
    pub name: String,
    pub allowed_origins: Vec<String>,
}

/// A chat room: the site's room, or one page's room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    pub id: i64,
    pub site_id: i64,
    /// `None` for the site-wide room.
    pub page: Option<String>,
    /// Sequence number of the newest message (0 = empty room).
    pub last_seq: u64,
}

/// A message to store.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub room_id: i64,
    pub guest_id: String,
    pub nickname: Nickname,
    pub body: MessageBody,
    pub client_message_id: ClientMessageId,
    pub created_at: DateTime<Utc>,
    /// Salted hash of the sender's IP address (see the web node's `privacy`).
    pub ip_hash: String,
}

/// What a row of a room's sequence is. Moderation events take a seq of
/// their own, so they travel every path a message does (bus, history,
/// window, every transport) in order and exactly once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MessageKind {
    /// A chat message.
    #[default]
    Chat,
    /// A chat message a moderator deleted: kept (its seq must not leave a
    /// hole) with its body emptied, and shown to nobody.
    Removed,
    /// The event that deleted message `target`.
    Delete { target: u64 },
    /// The event that cleared every message before it.
    Clear,
}

impl MessageKind {
    pub fn is_chat(&self) -> bool {
        *self == MessageKind::Chat
    }
}

/// A stored message with its per-room sequence number. Serialisable: it
/// travels between nodes on the bus and is kept in the Redis history.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredMessage {
    pub room_id: i64,
    pub seq: u64,
    pub guest_id: String,
    pub nickname: String,
    pub body: String,
    pub client_message_id: String,
    pub created_at: DateTime<Utc>,
    /// Absent on the wire for chat messages (and in history written before
    /// moderation existed).
    #[serde(default, skip_serializing_if = "MessageKind::is_chat")]
    pub kind: MessageKind,
}

impl StoredMessage {
    /// The event clients get for this row; `None` for a removed message.
    pub fn event(&self) -> Option<Event> {
        match self.kind {
            MessageKind::Chat => Some(Event::Message {
                message: self.to_view(),
            }),
            MessageKind::Removed => None,
            MessageKind::Delete { target } => Some(Event::Delete {
                seq: self.seq,
                deleted_seq: target,
            }),
            MessageKind::Clear => Some(Event::Clear { seq: self.seq }),
        }
    }

    /// This row as seen after a later moderation event: a chat message the
    /// event removes becomes [`MessageKind::Removed`] with an empty body.
    pub fn removed_by(&self, event: MessageKind) -> bool {
        self.kind.is_chat()
            && match event {
                MessageKind::Delete { target } => target == self.seq,
                MessageKind::Clear => true,
                _ => false,
            }
    }

    /// The message as clients see it.
    pub fn to_view(&self) -> MessageView {
        MessageView {
            seq: self.seq,
            room_id: self.room_id,
            guest_id: self.guest_id.clone(),
            nickname: self.nickname.clone(),
            body: self.body.clone(),
            created_at: self.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            client_message_id: self.client_message_id.clone(),
        }
    }
}

/// Result of a send: the stored message and whether this call created it
/// (`false`: a retry of a message already stored with that client id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostOutcome {
    pub message: StoredMessage,
    pub created: bool,
}

/// The room a join asks for: the site's, or a page's.
pub fn room_scope_key(page: Option<&PagePath>) -> String {
    page.map(|p| p.as_str().to_owned()).unwrap_or_default()
}

//! Request and response bodies of HTTP API v1. See `docs/protocol.md`.
//!
//! Request types hold raw strings: the server parses them into the newtypes
//! of [`crate::validate`] so that each rule failure gets its own error code
//! (serde would only say "malformed JSON").

use serde::{Deserialize, Serialize};

use crate::cursor::RoomCursor;
use crate::event::{Event, Member, MessageView};

/// `POST /api/v1/join`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The site key from the embed snippet (`data-site`).
    pub site_key: String,
    pub nickname: String,
    /// Set for a page-scoped room: the page's path. Absent: the site's room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    /// A token from an earlier join of the same site, to keep the same guest
    /// id (for example after a nickname change or an expired token). Ignored
    /// when invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// The guest this token proves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestView {
    pub id: String,
    pub nickname: String,
}

/// Which room a join landed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomView {
    pub id: i64,
    /// `null` for the site-wide room, else the page path.
    pub page: Option<String>,
}

/// Answer to a join: everything the widget needs to draw the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinResponse {
    /// Signed guest token; send as `Authorization: Bearer …`.
    pub token: String,
    /// Seconds until the token expires (join again before, with `token`).
    pub token_expires_in: u64,
    pub guest: GuestView,
    pub room: RoomView,
    /// Members present now, the joining guest included; in a room larger
    /// than the server's `chat.member_list_max`, a sample of that many.
    pub members: Vec<Member>,
    /// How many members are present (exact, whatever the sample size).
    pub member_count: usize,
    /// The most recent messages, oldest first.
    pub messages: Vec<MessageView>,
    /// Poll from here.
    pub cursor: RoomCursor,
    /// How often to poll, in milliseconds.
    pub poll_interval_ms: u64,
    /// A guest the server has not heard from for this long is no longer
    /// present. Behind a poll cache that answers polls without the server
    /// (nginx's micro-cache), a client makes sure one of its polls reaches
    /// the server well within it (`touch=1`).
    pub presence_timeout_ms: u64,
    /// The server's limit on message bodies, in characters.
    pub max_body_chars: usize,
}

/// `GET /api/v1/rooms/{room_id}/events?cursor=…[&wait=SECONDS]`: the query
/// string. With `wait`, a poll with nothing new is held (a long-poll) until
/// an event arrives or `wait` seconds pass (capped by the server).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollQuery {
    pub cursor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<u64>,
}

/// Answer to a poll with news.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollResponse {
    /// Events after the request's cursor, in order.
    pub events: Vec<Event>,
    /// The next cursor (also the response's `ETag`).
    pub cursor: RoomCursor,
    /// `true` when more messages are waiting: poll again at once.
    pub more: bool,
}

/// `POST /api/v1/rooms/{room_id}/messages`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// Chosen by the client (a UUID); a retry with the same id returns the
    /// original message instead of storing a duplicate.
    pub client_message_id: String,
    pub body: String,
}

/// Answer to a send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendResponse {
    pub message: MessageView,
    /// `false` when this was a retry of an already stored message.
    pub created: bool,
}

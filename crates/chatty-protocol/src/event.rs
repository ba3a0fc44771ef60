//! The events a room emits, as every transport carries them.
//!
//! One definition, serialised as JSON objects tagged by `type`. Message
//! events carry the message's per-room `seq`; presence events carry the
//! presence version they produced (see [`crate::cursor`]).

use serde::{Deserialize, Serialize};

/// A visitor currently present in a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub guest_id: String,
    pub nickname: String,
}

/// A stored chat message as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageView {
    /// Per-room sequence number. The room's sequence (1, 2, 3, … with no
    /// gaps) also numbers moderation events (`delete`, `clear`), so the
    /// seqs of *messages* a client sees may skip.
    pub seq: u64,
    pub room_id: i64,
    /// Author's guest id.
    pub guest_id: String,
    /// Author's nickname at the time of sending.
    pub nickname: String,
    pub body: String,
    /// RFC 3339 UTC timestamp with millisecond precision.
    pub created_at: String,
    /// The id the sending client chose, echoed so it can match its own sends.
    pub client_message_id: String,
}

/// Why a guest left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// The guest said goodbye (`POST …/leave`, page closed).
    Left,
    /// The guest was silent for longer than the presence timeout.
    Timeout,
}

/// Why the server told a client to start over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetReason {
    /// The client's cursor is ahead of the room (the room was reset or the
    /// cursor came from elsewhere): the client must join again.
    CursorAhead,
    /// The client is further behind than the server keeps events for
    /// resuming (`chat.resume_max_messages`): the missed events cannot be
    /// replayed, so it must join again and start from a fresh sync.
    ResumeFailed,
}

/// One event in a room's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A new message.
    Message { message: MessageView },
    /// A guest arrived.
    Join {
        presence_version: u64,
        member: Member,
    },
    /// A guest left.
    Leave {
        presence_version: u64,
        member: Member,
        reason: LeaveReason,
    },
    /// The member list, sent instead of join/leave events when the
    /// client's presence position is unknown to the server (other epoch or
    /// too old). Replace the whole list. In a room larger than the server's
    /// `chat.member_list_max`, `members` is a sample of that many and
    /// `count` says how many are present.
    Members {
        presence_version: u64,
        members: Vec<Member>,
        count: usize,
    },
    /// The client cannot continue from its cursor: join again for a fresh
    /// sync. Nothing after this event in the same response applies.
    Reset { reason: ResetReason },
    /// A moderator deleted message `deleted_seq`: remove it from view. The
    /// event has a `seq` of its own (the room's sequence counts it), so a
    /// client's cursor moves past it like past a message.
    Delete { seq: u64, deleted_seq: u64 },
    /// A moderator cleared the room: remove every message with a seq below
    /// this event's `seq`.
    Clear { seq: u64 },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_tagged_by_type() {
        let e = Event::Join {
            presence_version: 3,
            member: Member {
                guest_id: "g1".into(),
                nickname: "Ann".into(),
            },
        };
        let json = serde_json::to_value(&e).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({"type":"join","presence_version":3,"member":{"guest_id":"g1","nickname":"Ann"}})
        );
        let back: Event = serde_json::from_value(json).expect("deserialises");
        assert_eq!(back, e);
        let reset = serde_json::to_value(Event::Reset {
            reason: ResetReason::CursorAhead,
        })
        .expect("serialises");
        assert_eq!(
            reset,
            serde_json::json!({"type":"reset","reason":"cursor_ahead"})
        );
    }
}

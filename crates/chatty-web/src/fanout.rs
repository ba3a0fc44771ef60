//! Fan-out to push connections: what a room hands to its WebSocket and SSE
//! subscribers, and how.
//!
//! Every change to a room (a message, a join or leave, a new member list)
//! becomes one [`LiveFrame`]: the same `{"events":[…],"cursor":"…"}` batch a
//! poll returns, serialised **once per node**. Each transport's wire form
//! (a WebSocket text frame, an SSE `id:`/`data:` record) is encoded at most
//! once, by the first connection that needs it, and then shared: a
//! delivery is an `Arc` clone into a queue and a `Bytes` clone onto the
//! socket, whatever the room size.
//!
//! ## Ordering
//!
//! The room calls [`Subscribers::broadcast`] while it holds its own lock,
//! right after applying the change. So every subscriber receives frames in
//! exactly the order the room applied them, and a subscriber registered
//! under that same lock (after its catch-up was read from the same state)
//! gets exactly the frames that follow its catch-up: no gap, no duplicate.
//!
//! ## Backpressure
//!
//! Each subscriber has a bounded queue ([`SubscriberQueue`]); the room only
//! ever `try_send`s, so a client that stops reading can never block the
//! room or the other subscribers. When a queue is full the room drops that
//! subscriber's sender: the connection drains what is queued (all in
//! order), then sees the end of the queue and closes with a reason. The
//! client resumes from the last cursor it received and loses nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use actix_http::ws::{Codec, Message};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use chatty_protocol::RoomCursor;
use tokio::sync::mpsc;
use tokio_util::codec::Encoder;

use crate::token::GuestClaims;

/// One batch of events for push clients, shared by every connection of a
/// room on this node.
#[derive(Debug)]
pub struct LiveFrame {
    /// The room version after these events (the SSE event id).
    pub cursor: RoomCursor,
    /// `{"events":[…],"cursor":"…","more":false}`.
    pub json: ByteString,
    /// Can a client resume from `cursor`? Not after a `reset`: its SSE
    /// record then has no `id:`, so an `EventSource` that reconnects by
    /// itself keeps its last good position instead of skipping ahead.
    resumable: bool,
    ws: OnceLock<Bytes>,
    sse: OnceLock<Bytes>,
}

impl LiveFrame {
    /// A frame of already-serialised events.
    pub fn new<'a>(events: impl Iterator<Item = &'a str>, cursor: RoomCursor, more: bool) -> Self {
        Self::from_json(batch_json(events, &cursor, more), cursor)
    }

    /// A frame whose JSON body is already written.
    pub fn from_json(json: String, cursor: RoomCursor) -> Self {
        Self {
            cursor,
            json: ByteString::from(json),
            resumable: true,
            ws: OnceLock::new(),
            sse: OnceLock::new(),
        }
    }

    /// A frame holding a `reset` event: not a position to resume from.
    pub fn reset(event: &str, cursor: RoomCursor) -> Self {
        Self {
            resumable: false,
            ..Self::new(std::iter::once(event), cursor, false)
        }
    }

    /// The frame as one unmasked WebSocket text frame, encoded on first use.
    pub fn websocket(&self) -> Bytes {
        self.ws
            .get_or_init(|| encode_ws(Message::Text(self.json.clone())))
            .clone()
    }

    /// The frame as one Server-Sent Events record (`id:` is the cursor, so
    /// a reconnecting `EventSource` resumes with `Last-Event-ID`), encoded
    /// on first use.
    pub fn sse(&self) -> Bytes {
        self.sse
            .get_or_init(|| {
                let cursor = self.cursor.to_string();
                let mut out = BytesMut::with_capacity(self.json.len() + cursor.len() + 16);
                if self.resumable {
                    out.extend_from_slice(b"id: ");
                    out.extend_from_slice(cursor.as_bytes());
                    out.extend_from_slice(b"\n");
                }
                out.extend_from_slice(b"data: ");
                // The JSON is one line: serde_json escapes newlines in strings.
                out.extend_from_slice(self.json.as_bytes());
                out.extend_from_slice(b"\n\n");
                out.freeze()
            })
            .clone()
    }
}

/// Encodes one server-to-client WebSocket message.
pub fn encode_ws(message: Message) -> Bytes {
    let mut out = BytesMut::new();
    // Encoding a server frame into memory cannot fail: the codec only
    // refuses frames over its size limit on the decode side.
    let _ = Codec::new().encode(message, &mut out);
    out.freeze()
}

/// Writes `{"events":[…],"cursor":"…","more":…}` from pre-serialised events:
/// the body of a poll answer and of every push frame.
pub fn batch_json<'a>(
    events: impl Iterator<Item = &'a str>,
    cursor: &RoomCursor,
    more: bool,
) -> String {
    let mut body = String::with_capacity(256);
    body.push_str("{\"events\":[");
    for (i, event) in events.enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(event);
    }
    body.push_str("],\"cursor\":\"");
    body.push_str(&cursor.to_string());
    body.push_str(if more {
        "\",\"more\":true}"
    } else {
        "\",\"more\":false}"
    });
    body
}

/// The receiving end of a subscriber's bounded queue. `None` from it means
/// the room let go of the subscriber: its queue overflowed, or the node is
/// draining (the connection tells which from the node's drain flag).
pub type SubscriberQueue = mpsc::Receiver<Arc<LiveFrame>>;

/// One push connection registered in a room.
#[derive(Debug)]
struct Subscriber {
    queue: mpsc::Sender<Arc<LiveFrame>>,
    /// Who is connected, for the presence refresh.
    guest: Arc<GuestClaims>,
}

/// Counters of the fan-out, exported as metrics.
#[derive(Debug, Default)]
pub struct FanoutStats {
    /// Frames put in a subscriber queue.
    pub frames_queued: AtomicU64,
    /// Messages put in subscriber queues (one per message per subscriber).
    pub messages_queued: AtomicU64,
    /// Subscribers dropped because their queue was full.
    pub slow_consumers: AtomicU64,
    /// From a message's commit (its `created_at`, the accepting node's
    /// clock) to this node applying it: the fan-out lag.
    pub lag: chatty_storage::LatencyObserver,
}

/// A room's push subscribers on this node.
#[derive(Debug, Default)]
pub struct Subscribers {
    map: HashMap<u64, Subscriber>,
}

impl Subscribers {
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn insert(
        &mut self,
        id: u64,
        queue: mpsc::Sender<Arc<LiveFrame>>,
        guest: Arc<GuestClaims>,
    ) {
        self.map.insert(id, Subscriber { queue, guest });
    }

    pub fn remove(&mut self, id: u64) {
        self.map.remove(&id);
    }

    /// Lets go of every subscriber (drain): each connection sees the end of
    /// its queue after the frames already in it.
    pub fn clear(&mut self) {
        self.map.clear();
    }

    /// The guests connected, for the presence refresh.
    pub fn guests(&self) -> impl Iterator<Item = &GuestClaims> {
        self.map.values().map(|s| &*s.guest)
    }

    /// Queues `frame` (holding `messages` messages) for every subscriber
    /// without waiting; a subscriber whose queue is full (or whose
    /// connection is gone) is dropped.
    pub fn broadcast(&mut self, frame: &Arc<LiveFrame>, messages: u64, stats: &FanoutStats) {
        let mut queued = 0u64;
        let mut slow = 0u64;
        self.map.retain(
            |_, subscriber| match subscriber.queue.try_send(Arc::clone(frame)) {
                Ok(()) => {
                    queued += 1;
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    slow += 1;
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            },
        );
        stats.frames_queued.fetch_add(queued, Ordering::Relaxed);
        if messages > 0 {
            stats
                .messages_queued
                .fetch_add(queued * messages, Ordering::Relaxed);
        }
        if slow > 0 {
            stats.slow_consumers.fetch_add(slow, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(guest: &str) -> Arc<GuestClaims> {
        Arc::new(GuestClaims {
            site_id: 1,
            room_id: 1,
            guest_id: guest.into(),
            nickname: guest.into(),
            expires_at: 0,
        })
    }

    fn frame(seq: u64) -> Arc<LiveFrame> {
        Arc::new(LiveFrame::new(
            std::iter::once("{\"type\":\"x\"}"),
            RoomCursor {
                seq,
                epoch: 1,
                presence: 0,
            },
            false,
        ))
    }

    #[test]
    fn a_full_queue_drops_only_that_subscriber() {
        let stats = FanoutStats::default();
        let mut subscribers = Subscribers::default();
        let (fast_tx, mut fast_rx) = mpsc::channel(2);
        let (slow_tx, mut slow_rx) = mpsc::channel(2);
        subscribers.insert(1, fast_tx, claims("fast"));
        subscribers.insert(2, slow_tx, claims("slow"));
        for seq in 1..=3 {
            subscribers.broadcast(&frame(seq), 1, &stats);
            // The fast one reads as it goes.
            let got = fast_rx.try_recv().expect("fast subscriber receives");
            assert_eq!(got.cursor.seq, seq);
        }
        assert_eq!(subscribers.len(), 1, "the slow subscriber was dropped");
        assert_eq!(stats.slow_consumers.load(Ordering::Relaxed), 1);
        assert_eq!(stats.frames_queued.load(Ordering::Relaxed), 3 + 2);
        // The slow one still gets what was queued, in order, then the end.
        assert_eq!(slow_rx.try_recv().map(|f| f.cursor.seq).ok(), Some(1));
        assert_eq!(slow_rx.try_recv().map(|f| f.cursor.seq).ok(), Some(2));
        assert!(matches!(
            slow_rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
    }

    #[test]
    fn wire_forms_are_encoded_once_and_shared() {
        let f = frame(7);
        assert_eq!(
            &*f.json,
            "{\"events\":[{\"type\":\"x\"}],\"cursor\":\"7.1.0\",\"more\":false}"
        );
        let ws = f.websocket();
        assert_eq!(ws[0], 0x81, "FIN + text opcode");
        assert_eq!(usize::from(ws[1]), f.json.len(), "short length, unmasked");
        assert_eq!(&ws[2..], f.json.as_bytes());
        assert_eq!(
            ws.as_ptr(),
            f.websocket().as_ptr(),
            "the second connection shares the first one's bytes"
        );
        let sse = f.sse();
        assert_eq!(
            std::str::from_utf8(&sse).ok(),
            Some(
                "id: 7.1.0\ndata: {\"events\":[{\"type\":\"x\"}],\"cursor\":\"7.1.0\",\"more\":false}\n\n"
            )
        );
        assert_eq!(sse.as_ptr(), f.sse().as_ptr());
        let reset = LiveFrame::reset("{\"type\":\"reset\"}", f.cursor);
        assert!(
            std::str::from_utf8(&reset.sse())
                .is_ok_and(|r| r.starts_with("data: ") && !r.contains("id:")),
            "a reset is not a position to resume from"
        );
    }
}

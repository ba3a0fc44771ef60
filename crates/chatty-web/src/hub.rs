//! The hub: this node's in-memory state of every active room.
//!
//! The case study's lesson is that polls must be cheap. A poll is answered
//! here, from memory, under one short per-room lock:
//!
//! * the room's **version** (`RoomCursor`: last message seq, presence epoch
//!   and presence version) is what an unchanged poll's `If-None-Match` is
//!   compared with — a `304` costs no database query, no Redis call and no
//!   serialisation;
//! * a **window** of the latest messages, each serialised to its event JSON
//!   once when it arrives and then shared by every poll that needs it;
//! * a **mirror of presence**: the member list and a short log of join/leave
//!   events, so pollers get diffs. The state of record is the
//!   [`PresenceStore`]; the mirror follows it through the bus.
//!
//! A poll also records "this guest was here" in the room (no I/O); the
//! presence ticker hands those to the presence store in one batch per
//! flush interval. Only a client further behind than the window (or a room
//! not yet loaded) costs a read from the bus history or the database.
//!
//! ## Ordering
//!
//! Messages and presence changes reach the hub from the local request path
//! and from the bus, in any order and possibly twice. The window only ever
//! holds a contiguous run of sequence numbers, and the mirror only applies
//! presence versions in order: early arrivals wait in `pending`, duplicates
//! are dropped, and a hole that does not close by itself within
//! `gap_fill_delay` is filled from the bus history or the store (messages)
//! or by a snapshot (presence). A committed seq `n` implies every seq below
//! `n` is committed (see `chatty_storage::sql`), so a fill always succeeds.
//!
//! ## Push
//!
//! WebSocket and SSE connections are [`Subscription`]s of a room: every
//! change the room applies is serialised once into a [`LiveFrame`] and
//! queued for each subscriber under the room lock (see [`crate::fanout`]
//! for ordering and backpressure). Long-polls wait on the room's
//! [`Notify`], which every announced change wakes (a large room's presence
//! changes are announced together, once per presence flush). A subscriber resuming from a
//! cursor gets its catch-up from the window, else the bus history (Redis),
//! else the store, and is registered under the same lock that computed the
//! end of its catch-up, so the live frames continue exactly where the
//! catch-up stopped.
//!
//! ## Locks
//!
//! The room map is a `std::sync::RwLock`, each room a `std::sync::Mutex`;
//! both are held only for short synchronous sections, never across `.await`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};

use chatty_protocol::event::{Event, LeaveReason, Member, MessageView, ResetReason};
use chatty_protocol::moderation::nickname_key;
use chatty_protocol::{ErrorCode, RoomCursor};
use chatty_storage::{
    EventBus, MessageKind, PresenceChange, PresenceKind, PresenceSnapshot, PresenceStore,
    RoomTouches, Store, StoredMessage,
};

use actix_web::http::header::HeaderValue;

use crate::error::ApiError;
use crate::fanout::{FanoutStats, LiveFrame, SubscriberQueue, Subscribers, batch_json};
use crate::token::GuestClaims;

/// Hub tuning, from `[chat]` settings.
#[derive(Debug, Clone)]
pub struct HubSettings {
    pub window_messages: usize,
    pub history_messages: usize,
    pub presence_log_events: usize,
    pub presence_timeout: Duration,
    pub max_events_per_poll: usize,
    pub room_idle: Duration,
    pub gap_fill_delay: Duration,
    /// A client further behind than this many messages cannot resume: it
    /// gets a `reset` (`resume_failed`) and joins afresh.
    pub resume_max_messages: u64,
    /// Most members listed in a join answer or a `members` event.
    pub member_list_max: usize,
    /// Messages older than this are not shown on join (the retention job
    /// deletes them from the store; the window may hold them a while longer).
    pub retention: Option<Duration>,
}

/// A row of the room's sequence in the window, with its event JSON
/// serialised once.
#[derive(Debug)]
struct WindowMessage {
    seq: u64,
    created_at: chrono::DateTime<chrono::Utc>,
    /// The chat message, for join answers; `None` for a removed message and
    /// for moderation events.
    view: Option<MessageView>,
    /// The event clients get; empty for a removed message (nobody gets it).
    event_json: Box<str>,
}

impl WindowMessage {
    /// What a removed message leaves in the window: its seq, nothing to show.
    fn removed(seq: u64) -> Arc<Self> {
        Arc::new(Self {
            seq,
            created_at: chrono::DateTime::UNIX_EPOCH,
            view: None,
            event_json: Box::from(""),
        })
    }
}

#[derive(Debug)]
struct RoomInner {
    /// Highest contiguous sequence number this node holds.
    last_seq: u64,
    /// The newest messages, contiguous, ending at `last_seq`.
    window: VecDeque<Arc<WindowMessage>>,
    /// Messages that arrived ahead of a hole, by seq.
    pending: BTreeMap<u64, StoredMessage>,
    gap_fill_scheduled: bool,
    /// Presence mirror: epoch and version of the state below.
    epoch: u32,
    presence_version: u64,
    /// guest id → nickname
    members: HashMap<String, String>,
    /// Look-alike key of each member's nickname (see
    /// [`chatty_protocol::moderation::nickname_key`]) → the guests using it,
    /// so a join can refuse an impersonation without scanning the room.
    nickname_keys: HashMap<String, Vec<String>>,
    /// guest id → its nickname's look-alike key (computed once per nickname).
    member_keys: HashMap<String, String>,
    /// Join/leave events by the presence version they produced.
    presence_log: VecDeque<(u64, Arc<str>)>,
    /// Presence changes that arrived ahead of a hole (same epoch).
    presence_pending: BTreeMap<u64, PresenceChange>,
    /// The mirror needs a snapshot (another epoch, or a hole).
    presence_stale: bool,
    presence_resync_scheduled: bool,
    /// Guests seen by polls since the last presence tick: guest id → nickname.
    touched: HashMap<String, String>,
    last_active: Instant,
    /// The `ETag` header for `etag_cursor`, rebuilt only when the version
    /// changes, so an unchanged poll neither formats nor allocates it.
    etag: HeaderValue,
    etag_cursor: RoomCursor,
    /// Push connections of this room on this node.
    subscribers: Subscribers,
    /// When the connected guests were last handed to the presence store.
    subscribers_refreshed: Instant,
    /// Woken on every change (long-polls wait on it).
    changed: Arc<Notify>,
    stats: Arc<FanoutStats>,
    /// Most members listed in a `members` event. A room with more members
    /// than this is *large*: its join/leave events are coalesced.
    member_list_max: usize,
    /// A large room changed since its last `members` announcement.
    presence_dirty: bool,
    /// The presence version clients can learn of: `presence_version`,
    /// except in a large room between two flushes, where changes are not
    /// announced yet. Cursors carry this one, so a client never holds a
    /// cursor that claims presence it was not told about.
    presence_announced: u64,
    /// Taken out of the hub's map (idle): a subscription must not register
    /// here, it would never hear of the room again.
    evicted: bool,
    /// The `members` event of (epoch, version), built once per version.
    members_cache: Option<(u32, u64, Arc<str>)>,
}

/// One room's state on this node.
#[derive(Debug)]
pub struct RoomState {
    pub id: i64,
    inner: Mutex<RoomInner>,
    /// Bumped when the room's push connections are let go because their
    /// site's access rules changed, so a connection can tell that from a
    /// queue overflow.
    access_epoch: AtomicU64,
    /// Notified on every change of the room's version; long-polls wait here
    /// without holding the lock.
    changed: Arc<Notify>,
}

impl RoomState {
    /// Resolves at the room's next change. Create it (and `enable()` it)
    /// *before* looking at the room, so a change in between is not missed.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }
}

/// Which path answered a poll (for metrics and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollPath {
    /// `304`, from the in-memory version.
    NotModified,
    /// Events from the in-memory window.
    Window,
    /// Messages older than the window, read from the store.
    Store,
    /// The cursor could not be honoured: a `reset` event.
    Reset,
}

impl PollPath {
    pub fn as_str(self) -> &'static str {
        match self {
            PollPath::NotModified => "not_modified",
            PollPath::Window => "window",
            PollPath::Store => "store",
            PollPath::Reset => "reset",
        }
    }
}

/// The answer to a poll.
#[derive(Debug)]
pub enum PollAnswer {
    NotModified {
        etag: HeaderValue,
    },
    /// A ready JSON body (a `PollResponse`).
    Events {
        body: String,
        cursor: RoomCursor,
        path: PollPath,
        /// Does the body carry any event? (A long-poll keeps waiting if not.)
        has_events: bool,
    },
}

/// A push connection's place in a room: the catch-up to send first, then
/// the live frames. Dropping it unregisters the connection.
#[derive(Debug)]
pub struct Subscription {
    room: Arc<RoomState>,
    id: u64,
    /// The room's access epoch when this subscription started.
    access_epoch: u64,
    /// Frames to send before the live ones, in order.
    pub catch_up: VecDeque<Arc<LiveFrame>>,
    /// The live frames; `None` when the catch-up ends in a `reset` (the
    /// client must join again, so the connection ends after it).
    pub queue: Option<SubscriberQueue>,
}

impl Subscription {
    /// Was this subscription let go because its site's access changed?
    pub fn site_changed(&self) -> bool {
        self.room.access_epoch.load(Ordering::Acquire) > self.access_epoch
    }

    /// A subscription that ends after its catch-up (which ends in a `reset`).
    fn ended(room: Arc<RoomState>, catch_up: VecDeque<Arc<LiveFrame>>) -> Self {
        Self {
            access_epoch: room.access_epoch.load(Ordering::Acquire),
            room,
            id: 0,
            catch_up,
            queue: None,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.queue.is_some() {
            lock(&self.room).subscribers.remove(self.id);
        }
    }
}

/// What a join sees.
#[derive(Debug)]
pub struct JoinSnapshot {
    pub members: Vec<Member>,
    pub member_count: usize,
    pub messages: Vec<MessageView>,
    pub cursor: RoomCursor,
}

fn reset_event(reason: ResetReason) -> Arc<str> {
    event_json(&Event::Reset { reason })
}

fn event_json(event: &Event) -> Arc<str> {
    // Serialising our own types to a string cannot fail.
    Arc::from(serde_json::to_string(event).unwrap_or_default())
}

fn lock(room: &RoomState) -> MutexGuard<'_, RoomInner> {
    // A panic while holding the lock leaves consistent data (every mutation
    // is a single step), so poisoning is ignored rather than spread.
    room.inner
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn client_event(change: &PresenceChange) -> Event {
    let member = Member {
        guest_id: change.guest_id.clone(),
        nickname: change.nickname.clone(),
    };
    match change.kind {
        PresenceKind::Join => Event::Join {
            presence_version: change.version,
            member,
        },
        PresenceKind::Left => Event::Leave {
            presence_version: change.version,
            member,
            reason: LeaveReason::Left,
        },
        PresenceKind::Timeout => Event::Leave {
            presence_version: change.version,
            member,
            reason: LeaveReason::Timeout,
        },
    }
}

impl RoomInner {
    /// A room whose presence is not known yet (`presence_stale`): the
    /// caller takes a snapshot once the room receives bus events.
    fn new(now: Instant) -> Self {
        Self {
            last_seq: 0,
            window: VecDeque::new(),
            pending: BTreeMap::new(),
            gap_fill_scheduled: false,
            epoch: 0,
            presence_version: 0,
            members: HashMap::new(),
            nickname_keys: HashMap::new(),
            member_keys: HashMap::new(),
            presence_log: VecDeque::new(),
            presence_pending: BTreeMap::new(),
            presence_stale: true,
            presence_resync_scheduled: false,
            touched: HashMap::new(),
            last_active: now,
            etag: HeaderValue::from_static("\"0.0.0\""),
            etag_cursor: RoomCursor::default(),
            subscribers: Subscribers::default(),
            subscribers_refreshed: now,
            changed: Arc::new(Notify::new()),
            stats: Arc::new(FanoutStats::default()),
            member_list_max: usize::MAX,
            presence_dirty: false,
            presence_announced: 0,
            evicted: false,
            members_cache: None,
        }
    }

    /// Is the room too large for one event per join and leave? In a room of
    /// 10,000 every join would be 10,000 deliveries, and a reconnect wave
    /// (a node restarting) 10,000²: a large room instead announces one
    /// `members` event (a sample and the count) per presence flush.
    fn coalesced(&self) -> bool {
        self.members.len() > self.member_list_max
    }

    /// The `members` event of the current presence version (cached).
    fn current_members_event(&mut self) -> Arc<str> {
        if let Some((epoch, version, json)) = &self.members_cache
            && *epoch == self.epoch
            && *version == self.presence_version
        {
            return Arc::clone(json);
        }
        let json = self.members_event(self.member_list_max);
        self.members_cache = Some((self.epoch, self.presence_version, Arc::clone(&json)));
        json
    }

    /// Announces a large room's coalesced presence changes, if any (called
    /// once per presence flush).
    fn flush_presence(&mut self) {
        if self.presence_dirty {
            self.presence_dirty = false;
            self.presence_announced = self.presence_version;
            let members = self.current_members_event();
            self.announce(&members, 0);
        }
    }

    /// A `members` event: the (sampled) list and the exact count.
    fn members_event(&self, limit: usize) -> Arc<str> {
        event_json(&Event::Members {
            presence_version: self.presence_version,
            members: self.member_list(limit),
            count: self.members.len(),
        })
    }

    /// Announces a change that `event` (one serialised event) describes:
    /// wakes long-polls and queues one shared frame for every subscriber.
    /// Called with the room locked, right after the change, so subscribers
    /// see changes in the order they were applied.
    fn announce(&mut self, event: &str, messages: u64) {
        self.changed.notify_waiters();
        if self.subscribers.is_empty() {
            return;
        }
        let frame = Arc::new(LiveFrame::new(std::iter::once(event), self.cursor(), false));
        self.subscribers.broadcast(&frame, messages, &self.stats);
    }

    fn cursor(&self) -> RoomCursor {
        RoomCursor {
            seq: self.last_seq,
            epoch: self.epoch,
            presence: self.presence_announced,
        }
    }

    /// The first seq the window holds (`last_seq + 1` when empty).
    fn window_start(&self) -> u64 {
        self.window.front().map_or(self.last_seq + 1, |m| m.seq)
    }

    fn push_window(&mut self, message: &StoredMessage, capacity: usize) {
        let view = message.kind.is_chat().then(|| message.to_view());
        let event_json = message
            .event()
            .and_then(|event| serde_json::to_string(&event).ok())
            .unwrap_or_default()
            .into_boxed_str();
        // A moderation event takes what it removes out of the window first,
        // so no poll or join after this point can hand it out again.
        match message.kind {
            MessageKind::Delete { target } => {
                if let Some(slot) = self.window.iter_mut().find(|m| m.seq == target) {
                    *slot = WindowMessage::removed(target);
                }
            }
            MessageKind::Clear => {
                for slot in self.window.iter_mut() {
                    if slot.view.is_some() {
                        *slot = WindowMessage::removed(slot.seq);
                    }
                }
            }
            MessageKind::Chat | MessageKind::Removed => {}
        }
        self.last_seq = message.seq;
        let message = Arc::new(WindowMessage {
            seq: message.seq,
            created_at: message.created_at,
            view,
            event_json,
        });
        if message.event_json.is_empty() {
            // Nothing to tell anyone; long-polls still see the cursor move.
            self.changed.notify_waiters();
        } else {
            let messages = u64::from(message.view.is_some());
            self.announce(&message.event_json, messages);
        }
        self.window.push_back(message);
        while self.window.len() > capacity {
            self.window.pop_front();
        }
    }

    /// Moves `last_seq` up to `next - 1` over seqs that no longer exist
    /// (removed placeholders keep the window contiguous), then applies what
    /// was waiting behind them.
    fn skip_gone(&mut self, next: u64, capacity: usize) {
        if next.saturating_sub(self.last_seq) > capacity as u64 {
            self.window.clear();
            self.last_seq = next - 1;
        }
        while self.last_seq + 1 < next {
            self.last_seq += 1;
            self.window.push_back(WindowMessage::removed(self.last_seq));
            while self.window.len() > capacity {
                self.window.pop_front();
            }
        }
        while let Some(waiting) = self.pending.remove(&(self.last_seq + 1)) {
            self.push_window(&waiting, capacity);
        }
        let last = self.last_seq;
        self.pending.retain(|seq, _| *seq > last);
        self.changed.notify_waiters();
    }

    /// Accepts a message in any order. Returns `true` when a hole is open and
    /// no fill is scheduled yet (the caller schedules one).
    fn accept(&mut self, message: StoredMessage, capacity: usize) -> bool {
        if message.seq <= self.last_seq {
            return false; // already have it
        }
        if message.seq == self.last_seq + 1 {
            self.push_window(&message, capacity);
            while let Some(next) = self.pending.remove(&(self.last_seq + 1)) {
                self.push_window(&next, capacity);
            }
            let last = self.last_seq;
            self.pending.retain(|seq, _| *seq > last);
        } else {
            self.pending.insert(message.seq, message);
        }
        if self.pending.is_empty() || self.gap_fill_scheduled {
            false
        } else {
            self.gap_fill_scheduled = true;
            true
        }
    }

    fn index_nickname(&mut self, guest_id: &str, nickname: &str) {
        let key = nickname_key(nickname);
        if !key.is_empty() {
            self.nickname_keys
                .entry(key.clone())
                .or_default()
                .push(guest_id.to_owned());
        }
        self.member_keys.insert(guest_id.to_owned(), key);
    }

    fn forget_nickname(&mut self, guest_id: &str) {
        let Some(key) = self.member_keys.remove(guest_id) else {
            return;
        };
        if let Some(guests) = self.nickname_keys.get_mut(&key) {
            guests.retain(|g| g != guest_id);
            if guests.is_empty() {
                self.nickname_keys.remove(&key);
            }
        }
    }

    /// Does a member other than `guest_id` use `nickname` or a look-alike?
    fn nickname_taken(&self, guest_id: &str, nickname: &str) -> bool {
        let key = nickname_key(nickname);
        !key.is_empty()
            && self
                .nickname_keys
                .get(&key)
                .is_some_and(|guests| guests.iter().any(|g| g != guest_id))
    }

    fn apply_change(&mut self, change: &PresenceChange, log_capacity: usize) {
        match change.kind {
            PresenceKind::Join => {
                let old = self
                    .members
                    .insert(change.guest_id.clone(), change.nickname.clone());
                if old.as_deref() != Some(change.nickname.as_str()) {
                    self.forget_nickname(&change.guest_id);
                    self.index_nickname(&change.guest_id, &change.nickname);
                }
            }
            PresenceKind::Left | PresenceKind::Timeout => {
                if self.members.remove(&change.guest_id).is_some() {
                    self.forget_nickname(&change.guest_id);
                }
            }
        }
        self.presence_version = change.version;
        let event = event_json(&client_event(change));
        if self.coalesced() {
            self.presence_dirty = true;
        } else if self.presence_dirty {
            // The room just became small again with coalesced changes not
            // yet announced: one `members` event covers them and this one.
            self.flush_presence();
        } else {
            self.presence_announced = self.presence_version;
            self.announce(&event, 0);
        }
        self.presence_log.push_back((change.version, event));
        while self.presence_log.len() > log_capacity {
            self.presence_log.pop_front();
        }
    }

    /// Accepts a presence change in any order. Returns `true` when the
    /// mirror needs a snapshot and none is scheduled yet.
    fn accept_presence(&mut self, change: PresenceChange, log_capacity: usize) -> bool {
        if change.epoch == self.epoch && !self.presence_stale {
            if change.version > self.presence_version {
                self.presence_pending.insert(change.version, change);
                self.drain_presence(log_capacity);
            }
        } else {
            // Another epoch, or no valid state yet: keep the change until a
            // snapshot says which epoch and version are current.
            self.presence_stale = true;
            self.presence_pending.insert(change.version, change);
        }
        let needs_resync = !self.presence_in_order();
        if needs_resync && !self.presence_resync_scheduled {
            self.presence_resync_scheduled = true;
            true
        } else {
            false
        }
    }

    /// Applies pending changes that follow the mirror's version.
    fn drain_presence(&mut self, log_capacity: usize) {
        while let Some(next) = self.presence_pending.remove(&(self.presence_version + 1)) {
            if next.epoch != self.epoch {
                break;
            }
            self.apply_change(&next, log_capacity);
        }
        let (epoch, version) = (self.epoch, self.presence_version);
        self.presence_pending
            .retain(|v, c| c.epoch == epoch && *v > version);
    }

    /// Replaces the mirror with the store's member list, then applies any
    /// pending changes that came after it. The log is cleared, so clients at
    /// older versions get a full member list.
    fn apply_snapshot(&mut self, snapshot: PresenceSnapshot, log_capacity: usize) {
        if !self.presence_stale
            && snapshot.epoch == self.epoch
            && snapshot.version <= self.presence_version
        {
            return; // the mirror is already at or past it
        }
        self.epoch = snapshot.epoch;
        self.presence_version = snapshot.version;
        // The look-alike keys of members whose nickname did not change are
        // kept: a snapshot of a big room must not recompute them all while
        // the room is locked.
        let old_members = std::mem::take(&mut self.members);
        let old_keys = std::mem::take(&mut self.member_keys);
        self.members = snapshot.members.into_iter().collect();
        self.nickname_keys.clear();
        for (guest, nickname) in &self.members {
            let key = match (old_members.get(guest), old_keys.get(guest)) {
                (Some(old), Some(key)) if old == nickname => key.clone(),
                _ => nickname_key(nickname),
            };
            if !key.is_empty() {
                self.nickname_keys
                    .entry(key.clone())
                    .or_default()
                    .push(guest.clone());
            }
            self.member_keys.insert(guest.clone(), key);
        }
        self.presence_log.clear();
        self.presence_stale = false;
        self.presence_dirty = false;
        self.presence_announced = self.presence_version;
        if self.subscribers.is_empty() {
            self.changed.notify_waiters();
        } else {
            let members = self.current_members_event();
            self.announce(&members, 0);
        }
        self.drain_presence(log_capacity);
    }

    fn presence_in_order(&self) -> bool {
        !self.presence_stale && self.presence_pending.is_empty()
    }

    /// The members, sorted by nickname; at most `limit` of them. A larger
    /// room is sampled (whoever the map yields first) rather than sorted in
    /// full: a join into a room of 10,000 must not sort 10,000 names.
    fn member_list(&self, limit: usize) -> Vec<Member> {
        let mut members: Vec<Member> = self
            .members
            .iter()
            .take(limit)
            .map(|(id, nickname)| Member {
                guest_id: id.clone(),
                nickname: nickname.clone(),
            })
            .collect();
        members.sort_by(|a, b| {
            a.nickname
                .cmp(&b.nickname)
                .then_with(|| a.guest_id.cmp(&b.guest_id))
        });
        members
    }

    /// Presence events a client at `cursor` has not seen: a diff from the
    /// log when it covers the client's position, else a full snapshot.
    fn presence_since(&mut self, cursor: &RoomCursor) -> Vec<Arc<str>> {
        if cursor.epoch == self.epoch && cursor.presence == self.presence_announced {
            return Vec::new();
        }
        if self.presence_stale && self.epoch == 0 {
            // Never loaded yet (the room is being loaded right now): say
            // nothing rather than "nobody is here"; the next poll carries
            // the member list.
            return Vec::new();
        }
        if self.coalesced() {
            return vec![self.current_members_event()];
        }
        let log_start = self
            .presence_log
            .front()
            .map_or(self.presence_version + 1, |(v, _)| *v);
        if cursor.epoch == self.epoch
            && cursor.presence < self.presence_version
            && cursor.presence + 1 >= log_start
        {
            return self
                .presence_log
                .iter()
                .filter(|(v, _)| *v > cursor.presence)
                .map(|(_, json)| Arc::clone(json))
                .collect();
        }
        vec![self.current_members_event()]
    }
}

/// What the locked part of a poll decided.
enum PollPlan {
    Done(PollAnswer),
    /// The client is behind the window: read older messages.
    Older {
        presence: Vec<Arc<str>>,
        snapshot: RoomCursor,
    },
    /// The client is ahead of this node: catch up, then look again.
    CatchUp,
}

/// What the locked part of a subscription decided (when not done).
enum SubscribePlan {
    Older {
        presence: Vec<Arc<str>>,
        snapshot: RoomCursor,
    },
    CatchUp,
    /// The room was evicted meanwhile: load it again.
    Reload,
}

/// The refusal of a new push connection on a draining node.
pub fn draining() -> ApiError {
    ApiError::client(
        ErrorCode::Draining,
        "This node is shutting down: connect again (to another node).",
    )
}

/// A cursor's position against a room.
enum Position {
    /// Past the room's last seq on this node (maybe only this node is behind).
    Ahead,
    /// Cannot continue from it.
    Reset(ResetReason),
    /// Behind the window, within the resume limit.
    Older,
    /// Within (or right at the end of) the window.
    InWindow,
}

/// The window's messages after `cursor`, at most `take`.
fn window_after<'a>(
    inner: &'a RoomInner,
    cursor: &RoomCursor,
    take: usize,
) -> Vec<&'a Arc<WindowMessage>> {
    let skip = usize::try_from(cursor.seq + 1 - inner.window_start()).unwrap_or(usize::MAX);
    inner.window.iter().skip(skip).take(take).collect()
}

fn keep_for(keep: Duration) -> chrono::Duration {
    chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX)
}

/// This node's rooms.
#[derive(Debug)]
pub struct Hub {
    rooms: RwLock<HashMap<i64, Arc<RoomState>>>,
    store: Arc<dyn Store>,
    bus: Arc<dyn EventBus>,
    presence: Arc<dyn PresenceStore>,
    settings: HubSettings,
    stats: Arc<FanoutStats>,
    next_subscriber: AtomicU64,
    draining: AtomicBool,
}

impl Hub {
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn EventBus>,
        presence: Arc<dyn PresenceStore>,
        settings: HubSettings,
    ) -> Arc<Self> {
        Arc::new(Self {
            rooms: RwLock::new(HashMap::new()),
            store,
            bus,
            presence,
            settings,
            stats: Arc::new(FanoutStats::default()),
            next_subscriber: AtomicU64::new(1),
            draining: AtomicBool::new(false),
        })
    }

    /// Fan-out counters (for metrics).
    pub fn fanout_stats(&self) -> Arc<FanoutStats> {
        Arc::clone(&self.stats)
    }

    /// Push connections held by this node, over all rooms.
    pub fn subscriber_count(&self) -> usize {
        self.all_rooms()
            .iter()
            .map(|room| lock(room).subscribers.len())
            .sum()
    }

    /// Is the node draining (shutting down)?
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Starts the drain: no new subscriptions; every push connection is let
    /// go of (it sends what it has queued, then tells its client to
    /// reconnect elsewhere) and every waiting long-poll is answered.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Release);
        for room in self.all_rooms() {
            let mut inner = lock(&room);
            inner.subscribers.clear();
            inner.changed.notify_waiters();
        }
    }

    /// Lets go of the push connections of a site's rooms (its origins or
    /// enabled state changed): they close with `site_changed`, reconnect, and
    /// the handshake applies the site's new rules.
    pub fn release_site(&self, site_id: i64) {
        for room in self.all_rooms() {
            let mut inner = lock(&room);
            let of_site = inner
                .subscribers
                .guests()
                .next()
                .is_some_and(|guest| guest.site_id == site_id);
            if of_site {
                room.access_epoch.fetch_add(1, Ordering::AcqRel);
                inner.subscribers.clear();
                inner.changed.notify_waiters();
            }
        }
    }

    pub fn settings(&self) -> &HubSettings {
        &self.settings
    }

    /// Number of rooms held in memory.
    pub fn room_count(&self) -> usize {
        self.rooms.read().map(|r| r.len()).unwrap_or(0)
    }

    fn loaded(&self, room_id: i64) -> Option<Arc<RoomState>> {
        self.rooms
            .read()
            .ok()
            .and_then(|rooms| rooms.get(&room_id).cloned())
    }

    fn all_rooms(&self) -> Vec<Arc<RoomState>> {
        self.rooms
            .read()
            .map(|r| r.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The room's state, loaded on first use: messages from the bus history
    /// (else the store, which then refills the history), presence from the
    /// presence store.
    pub async fn room(self: &Arc<Self>, room_id: i64) -> Result<Arc<RoomState>, ApiError> {
        if let Some(room) = self.loaded(room_id) {
            return Ok(room);
        }
        let window = self.settings.window_messages;
        let mut empty_at = 0;
        let recent = match self.bus.recent(room_id, window).await {
            Ok(Some(recent)) => recent,
            other => {
                if let Err(error) = other {
                    tracing::debug!(room = room_id, %error, "history unavailable; loading the room from the store");
                }
                let stored = self
                    .store
                    .room(room_id)
                    .await?
                    .ok_or_else(|| ApiError::client(ErrorCode::UnknownRoom, "No such room."))?;
                let recent = self.store.recent_messages(room_id, window as u64).await?;
                if let Err(error) = self.bus.backfill(room_id, &recent, stored.last_seq).await {
                    tracing::debug!(room = room_id, %error, "could not refill the history");
                }
                if recent.is_empty() {
                    // Every message is gone (retention): the room goes on
                    // from its counter, not from zero.
                    empty_at = stored.last_seq;
                }
                recent
            }
        };
        let mut inner = RoomInner::new(Instant::now());
        inner.stats = Arc::clone(&self.stats);
        inner.member_list_max = self.settings.member_list_max;
        inner.last_seq = recent.first().map_or(empty_at, |m| m.seq - 1);
        for message in &recent {
            inner.push_window(message, window);
        }
        let fresh = Arc::new(RoomState {
            id: room_id,
            access_epoch: AtomicU64::new(0),
            changed: Arc::clone(&inner.changed),
            inner: Mutex::new(inner),
        });
        let room = {
            let mut rooms = self
                .rooms
                .write()
                .map_err(|_| ApiError::Internal("room map poisoned".into()))?;
            Arc::clone(rooms.entry(room_id).or_insert(fresh))
        };
        // A message committed while we were reading may have been published
        // before the room was in the map, and so dropped: read once more now
        // that the room receives events. Presence is read only now, for the
        // same reason; changes arriving meanwhile wait in `presence_pending`.
        let caught_up = self.catch_up(&room).await;
        match self.presence.snapshot(room_id).await {
            Ok(snapshot) => lock(&room).apply_snapshot(snapshot, self.settings.presence_log_events),
            Err(error) => {
                tracing::warn!(room = room_id, %error, "presence unavailable; the member list follows when it is back")
            }
        }
        self.schedule_presence_resync_if_needed(&room);
        caught_up?;
        Ok(room)
    }

    /// Applies every message after the room's `last_seq`: from the bus
    /// history when it has them all, else from the store.
    async fn catch_up(self: &Arc<Self>, room: &Arc<RoomState>) -> Result<(), ApiError> {
        self.catch_up_from(room, true).await
    }

    /// For a client whose cursor is ahead of this node's room: first from
    /// the bus history, then from the store. Another node may have shown
    /// the client a message it has committed and applied but not yet
    /// published (the send path applies, then publishes), so the history
    /// can lag the cursor for a moment; the store cannot. Only when both
    /// are behind the cursor is it believed to be wrong (`cursor_ahead`).
    async fn catch_up_ahead(
        self: &Arc<Self>,
        room: &Arc<RoomState>,
        catch_ups: &mut u32,
    ) -> Result<(), ApiError> {
        self.catch_up_from(room, *catch_ups == 0).await?;
        *catch_ups += 1;
        Ok(())
    }

    /// Like [`Hub::catch_up`]; `use_history: false` reads the store only,
    /// for when the store is known to be ahead of the bus history.
    async fn catch_up_from(
        self: &Arc<Self>,
        room: &Arc<RoomState>,
        use_history: bool,
    ) -> Result<(), ApiError> {
        let from = lock(room).last_seq;
        let limit = self.settings.window_messages;
        let history = if use_history {
            self.bus.history_after(room.id, from, limit).await
        } else {
            Ok(None)
        };
        let missing = match history {
            Ok(Some(messages)) => messages,
            _ => {
                self.store
                    .messages_after(room.id, from, limit as u64)
                    .await?
            }
        };
        for message in missing {
            self.apply_to(room, message);
        }
        Ok(())
    }

    /// Applies a committed message (from the send path or the bus). Messages
    /// for rooms this node does not hold are ignored: they are read when the
    /// room is loaded.
    pub fn apply_message(self: &Arc<Self>, message: StoredMessage) {
        if let Some(room) = self.loaded(message.room_id) {
            self.apply_to(&room, message);
        }
    }

    fn apply_to(self: &Arc<Self>, room: &Arc<RoomState>, message: StoredMessage) {
        let lag = chrono::Utc::now() - message.created_at;
        self.stats.lag.observe(lag.to_std().unwrap_or_default());
        let needs_fill = lock(room).accept(message, self.settings.window_messages);
        if needs_fill {
            let hub = Arc::clone(self);
            let room = Arc::clone(room);
            tokio::spawn(async move { hub.fill_gaps(room).await });
        }
    }

    /// Waits for a hole to close by itself, then fills it from the bus
    /// history or the store.
    async fn fill_gaps(self: Arc<Self>, room: Arc<RoomState>) {
        let mut delay = self.settings.gap_fill_delay;
        loop {
            tokio::time::sleep(delay).await;
            let (from, upto) = {
                let mut inner = lock(&room);
                match inner.pending.keys().next() {
                    None => {
                        inner.gap_fill_scheduled = false;
                        return;
                    }
                    Some(first_pending) => (inner.last_seq, *first_pending),
                }
            };
            tracing::debug!(room = room.id, from, upto, "filling a sequence gap");
            let count = usize::try_from(upto - from).unwrap_or(usize::MAX);
            let found = match self.bus.history_after(room.id, from, count).await {
                Ok(Some(messages)) => Ok((messages, false)),
                _ => self
                    .store
                    .messages_after(room.id, from, upto - from)
                    .await
                    .map(|messages| (messages, true)),
            };
            match found {
                Ok((messages, from_store)) => {
                    let mut inner = lock(&room);
                    // Sequence numbers are committed in order, so a seq the
                    // store no longer has below one it has was deleted
                    // (retention): skip it instead of waiting for ever.
                    let first_present = messages.first().map_or(upto, |m| m.seq);
                    if from_store && inner.last_seq == from && first_present > from + 1 {
                        tracing::debug!(
                            room = room.id,
                            from,
                            first_present,
                            "skipping deleted seqs"
                        );
                        inner.skip_gone(first_present, self.settings.window_messages);
                    }
                    for message in messages {
                        inner.accept(message, self.settings.window_messages);
                    }
                }
                Err(error) => {
                    tracing::warn!(room = room.id, %error, "gap fill failed; retrying");
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Applies a presence change (from the request path or the bus).
    pub fn apply_presence(self: &Arc<Self>, change: PresenceChange) {
        if let Some(room) = self.loaded(change.room_id) {
            self.apply_presence_to(&room, change);
        }
    }

    fn apply_presence_to(self: &Arc<Self>, room: &Arc<RoomState>, change: PresenceChange) {
        let needs_resync = lock(room).accept_presence(change, self.settings.presence_log_events);
        if needs_resync {
            self.spawn_presence_resync(room);
        }
    }

    fn schedule_presence_resync_if_needed(self: &Arc<Self>, room: &Arc<RoomState>) {
        let needed = {
            let mut inner = lock(room);
            let needed = !inner.presence_in_order() && !inner.presence_resync_scheduled;
            if needed {
                inner.presence_resync_scheduled = true;
            }
            needed
        };
        if needed {
            self.spawn_presence_resync(room);
        }
    }

    fn spawn_presence_resync(self: &Arc<Self>, room: &Arc<RoomState>) {
        let hub = Arc::clone(self);
        let room = Arc::clone(room);
        tokio::spawn(async move { hub.presence_resync(room).await });
    }

    /// Waits for in-flight changes to land, then replaces the mirror with a
    /// snapshot if it is still out of order.
    async fn presence_resync(self: Arc<Self>, room: Arc<RoomState>) {
        let mut delay = self.settings.gap_fill_delay;
        loop {
            tokio::time::sleep(delay).await;
            {
                let mut inner = lock(&room);
                if inner.presence_in_order() {
                    inner.presence_resync_scheduled = false;
                    return;
                }
            }
            match self.presence.snapshot(room.id).await {
                Ok(snapshot) => {
                    let mut inner = lock(&room);
                    inner.apply_snapshot(snapshot, self.settings.presence_log_events);
                    if inner.presence_in_order() {
                        inner.presence_resync_scheduled = false;
                        return;
                    }
                }
                Err(error) => {
                    tracing::warn!(room = room.id, %error, "presence snapshot failed; retrying");
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Re-checks every held room (after the bus lost events).
    pub async fn resync_all(self: &Arc<Self>) {
        for room in self.all_rooms() {
            if let Err(error) = self.catch_up(&room).await {
                tracing::warn!(room = room.id, %error, "resync failed");
            }
            match self.presence.snapshot(room.id).await {
                Ok(snapshot) => {
                    lock(&room).apply_snapshot(snapshot, self.settings.presence_log_events)
                }
                Err(error) => tracing::warn!(room = room.id, %error, "presence resync failed"),
            }
        }
    }

    /// Compares every held room with the store's newest seq and catches up
    /// the ones behind: the safety net for a message whose announcement was
    /// lost (its node died between commit and publish). One query per call.
    pub async fn reconcile(self: &Arc<Self>) -> Result<(), ApiError> {
        let rooms = self.all_rooms();
        if rooms.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = rooms.iter().map(|r| r.id).collect();
        let newest: HashMap<i64, u64> = self.store.last_seqs(&ids).await?.into_iter().collect();
        for room in rooms {
            let behind = newest
                .get(&room.id)
                .is_some_and(|last| *last > lock(&room).last_seq);
            if behind {
                tracing::info!(room = room.id, "room was behind the store; catching up");
                self.catch_up_from(&room, false).await?;
            }
        }
        Ok(())
    }

    /// A guest joins: registers it with the presence store at once (not
    /// batched: the others should see the join promptly) and returns what
    /// the widget draws.
    pub async fn join(
        self: &Arc<Self>,
        room: &Arc<RoomState>,
        guest_id: &str,
        nickname: &str,
    ) -> Result<JoinSnapshot, ApiError> {
        let touch = RoomTouches {
            room_id: room.id,
            guests: vec![(guest_id.to_owned(), nickname.to_owned())],
        };
        let changes = self.presence.tick(None, &[touch]).await?;
        for change in changes {
            self.apply_presence_to(room, change);
        }
        if !lock(room).presence_in_order() {
            // Earlier changes (other guests' joins, typically) are still on
            // their way through the bus. Wait for them a moment; only if
            // they do not come, take a snapshot so the joiner's member list
            // is complete. A snapshot reads every member from Redis: one
            // per join during a join storm into a big room made Redis do
            // O(members²) work and time out (found with
            // `chatty-bench run case-study`, 10,000 visitors).
            let deadline = Instant::now() + self.settings.gap_fill_delay;
            while !lock(room).presence_in_order() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if !lock(room).presence_in_order() {
                let snapshot = self.presence.snapshot(room.id).await?;
                lock(room).apply_snapshot(snapshot, self.settings.presence_log_events);
            }
        }
        let mut inner = lock(room);
        inner.last_active = Instant::now();
        Ok(JoinSnapshot {
            members: inner.member_list(self.settings.member_list_max),
            member_count: inner.members.len(),
            // The newest `history_messages` that can be shown: removed
            // messages and moderation events do not count against it.
            messages: {
                let now = chrono::Utc::now();
                let mut shown: Vec<MessageView> = inner
                    .window
                    .iter()
                    .rev()
                    .filter(|m| {
                        self.settings
                            .retention
                            .is_none_or(|keep| now - m.created_at < keep_for(keep))
                    })
                    .filter_map(|m| m.view.clone())
                    .take(self.settings.history_messages)
                    .collect();
                shown.reverse();
                shown
            },
            cursor: inner.cursor(),
        })
    }

    /// Would `nickname` impersonate someone present in the room (the same
    /// name or a look-alike used by another guest)? Read from this node's
    /// mirror of the room's presence, which every node keeps current.
    pub fn nickname_taken(&self, room: &RoomState, guest_id: &str, nickname: &str) -> bool {
        lock(room).nickname_taken(guest_id, nickname)
    }

    /// A guest says goodbye.
    pub async fn leave(
        self: &Arc<Self>,
        room: &Arc<RoomState>,
        guest_id: &str,
    ) -> Result<(), ApiError> {
        lock(room).touched.remove(guest_id);
        if let Some(change) = self.presence.leave(room.id, guest_id).await? {
            self.apply_presence_to(room, change);
        }
        Ok(())
    }

    /// Records that a guest was here (no I/O; flushed by [`Hub::presence_tick`]).
    pub fn touch(&self, room: &RoomState, guest_id: &str, nickname: &str, now: Instant) {
        lock(room).note_seen(guest_id, nickname, now);
    }

    /// The batched presence refresh: hands every guest seen since the last
    /// tick to the presence store and expires the silent ones, for all held
    /// rooms in one call.
    pub async fn presence_tick(self: &Arc<Self>) -> Result<(), ApiError> {
        let rooms = self.all_rooms();
        let mut batch = Vec::with_capacity(rooms.len());
        // Push connections keep their guests present; they are handed over
        // a few times per presence timeout rather than at every tick.
        let refresh_every = self.settings.presence_timeout / 3;
        let now = Instant::now();
        for room in &rooms {
            let mut guard = lock(room);
            let inner = &mut *guard;
            inner.flush_presence();
            if !inner.subscribers.is_empty()
                && now.saturating_duration_since(inner.subscribers_refreshed) >= refresh_every
            {
                // Into the same map polls note their guests in, which
                // already keeps one entry per guest.
                inner.subscribers_refreshed = now;
                inner.last_active = now;
                for guest in inner.subscribers.guests() {
                    if !inner.touched.contains_key(&guest.guest_id) {
                        inner
                            .touched
                            .insert(guest.guest_id.clone(), guest.nickname.clone());
                    }
                }
            }
            let guests: Vec<(String, String)> = inner.touched.drain().collect();
            drop(guard);
            batch.push(RoomTouches {
                room_id: room.id,
                guests,
            });
        }
        if batch.is_empty() {
            return Ok(());
        }
        match self
            .presence
            .tick(Some(self.settings.presence_timeout), &batch)
            .await
        {
            Ok(changes) => {
                for change in changes {
                    self.apply_presence(change);
                }
                Ok(())
            }
            Err(error) => {
                // Keep the touches for the next tick, so nobody is expired
                // because a refresh was lost.
                for (room, touches) in rooms.iter().zip(batch) {
                    let mut inner = lock(room);
                    for (guest, nick) in touches.guests {
                        inner.touched.entry(guest).or_insert(nick);
                    }
                }
                Err(error.into())
            }
        }
    }

    /// Answers a poll. The common cases (`304`, events within the window)
    /// are decided under the room lock with no I/O.
    pub async fn poll(
        self: &Arc<Self>,
        room: &Arc<RoomState>,
        guest_id: &str,
        nickname: &str,
        cursor: RoomCursor,
        if_none_match: Option<&str>,
        now: Instant,
    ) -> Result<PollAnswer, ApiError> {
        let mut catch_ups = 0;
        loop {
            match self.plan_poll(
                room,
                guest_id,
                nickname,
                &cursor,
                if_none_match,
                now,
                catch_ups >= 2,
            ) {
                PollPlan::Done(answer) => return Ok(answer),
                PollPlan::CatchUp => self.catch_up_ahead(room, &mut catch_ups).await?,
                PollPlan::Older { presence, snapshot } => {
                    let (body, next) = self
                        .older_batch(room, &cursor, &presence, &snapshot, true)
                        .await?;
                    if next.seq == cursor.seq {
                        // Nothing stored after the cursor although the
                        // window starts later: it cannot be resumed from
                        // (an answer with `more` would be polled forever).
                        let reset = reset_event(ResetReason::ResumeFailed);
                        return Ok(PollAnswer::Events {
                            body: batch_json(std::iter::once(&*reset), &snapshot, false),
                            cursor: snapshot,
                            path: PollPath::Reset,
                            has_events: true,
                        });
                    }
                    return Ok(PollAnswer::Events {
                        body,
                        cursor: next,
                        path: PollPath::Store,
                        has_events: true,
                    });
                }
            }
        }
    }

    /// The messages after `cursor` that the window no longer holds (up to
    /// `snapshot.seq`, at most `max_events_per_poll`), from the bus history
    /// (Redis) when it has them, else from the store, as one batch after
    /// the presence events; with the cursor the batch ends at.
    /// `for_poll`: say `more: true` when messages remain (a poller asks
    /// again at once); push frames always say `false` (the next frame
    /// follows by itself).
    async fn older_batch(
        &self,
        room: &RoomState,
        cursor: &RoomCursor,
        presence: &[Arc<str>],
        snapshot: &RoomCursor,
        for_poll: bool,
    ) -> Result<(String, RoomCursor), ApiError> {
        let limit = self.settings.max_events_per_poll;
        let wanted = usize::try_from(snapshot.seq - cursor.seq)
            .unwrap_or(usize::MAX)
            .min(limit);
        let messages = match self.bus.history_after(room.id, cursor.seq, wanted).await {
            Ok(Some(messages)) => messages,
            _ => {
                self.store
                    .messages_after(room.id, cursor.seq, wanted as u64)
                    .await?
            }
        };
        let messages: Vec<&StoredMessage> =
            messages.iter().filter(|m| m.seq <= snapshot.seq).collect();
        // The bus history keeps rows as they were published: a message a
        // later event of this batch removes is left out here, so a client
        // catching up never sees text a moderator already took down.
        let cleared_below = messages
            .iter()
            .filter(|m| m.kind == MessageKind::Clear)
            .map(|m| m.seq)
            .max()
            .unwrap_or(0);
        let deleted: std::collections::HashSet<u64> = messages
            .iter()
            .filter_map(|m| match m.kind {
                MessageKind::Delete { target } => Some(target),
                _ => None,
            })
            .collect();
        let jsons: Vec<Arc<str>> = messages
            .iter()
            .filter(|m| !(m.kind.is_chat() && (m.seq < cleared_below || deleted.contains(&m.seq))))
            .filter_map(|m| m.event().map(|event| event_json(&event)))
            .collect();
        let last = messages.last().map_or(cursor.seq, |m| m.seq);
        let next = RoomCursor {
            seq: last,
            ..*snapshot
        };
        let body = batch_json(
            presence.iter().chain(jsons.iter()).map(|s| &**s),
            &next,
            for_poll && last < snapshot.seq,
        );
        Ok((body, next))
    }

    #[allow(clippy::too_many_arguments)]
    fn plan_poll(
        &self,
        room: &RoomState,
        guest_id: &str,
        nickname: &str,
        cursor: &RoomCursor,
        if_none_match: Option<&str>,
        now: Instant,
        caught_up: bool,
    ) -> PollPlan {
        let mut inner = lock(room);
        inner.note_seen(guest_id, nickname, now);
        let current = inner.cursor();
        if let Some(tag) = if_none_match {
            if inner.etag_cursor != current {
                inner.etag = HeaderValue::from_str(&current.etag())
                    .unwrap_or(HeaderValue::from_static("\"\""));
                inner.etag_cursor = current;
            }
            // The common case is byte-equal to our own ETag; lists and weak
            // tags take the parsing path.
            if tag.as_bytes() == inner.etag.as_bytes() || current.matches_if_none_match(tag) {
                return PollPlan::Done(PollAnswer::NotModified {
                    etag: inner.etag.clone(),
                });
            }
        }
        match self.position(&inner, cursor, caught_up) {
            Position::Ahead => PollPlan::CatchUp,
            Position::Reset(reason) => {
                let reset = reset_event(reason);
                PollPlan::Done(PollAnswer::Events {
                    body: batch_json(std::iter::once(&*reset), &current, false),
                    cursor: current,
                    path: PollPath::Reset,
                    has_events: true,
                })
            }
            Position::Older => PollPlan::Older {
                presence: inner.presence_since(cursor),
                snapshot: current,
            },
            Position::InWindow => {
                let presence = inner.presence_since(cursor);
                let messages = window_after(&inner, cursor, self.settings.max_events_per_poll);
                let last = messages.last().map_or(cursor.seq, |m| m.seq);
                let next = RoomCursor {
                    seq: last,
                    ..current
                };
                let body = batch_json(
                    presence.iter().map(|s| &**s).chain(
                        messages
                            .iter()
                            .map(|m| &*m.event_json)
                            .filter(|e| !e.is_empty()),
                    ),
                    &next,
                    last < current.seq,
                );
                PollPlan::Done(PollAnswer::Events {
                    body,
                    cursor: next,
                    path: PollPath::Window,
                    has_events: !presence.is_empty() || !messages.is_empty(),
                })
            }
        }
    }

    /// Where a client's cursor stands against the room (locked).
    fn position(&self, inner: &RoomInner, cursor: &RoomCursor, caught_up: bool) -> Position {
        if cursor.seq > inner.last_seq {
            // Maybe this node is behind (a message announced elsewhere has
            // not reached it yet): catch up (`catch_up_ahead`: history,
            // then store), then believe it.
            return if caught_up {
                Position::Reset(ResetReason::CursorAhead)
            } else {
                Position::Ahead
            };
        }
        if inner.last_seq - cursor.seq > self.settings.resume_max_messages {
            return Position::Reset(ResetReason::ResumeFailed);
        }
        if cursor.seq + 1 < inner.window_start() {
            Position::Older
        } else {
            Position::InWindow
        }
    }

    /// Registers a push connection at `cursor`: returns the catch-up frames
    /// (window, else bus history, else store) and the queue of live frames
    /// that continue exactly after them. `queue_frames` bounds the queue.
    pub async fn subscribe(
        self: &Arc<Self>,
        room: &Arc<RoomState>,
        guest: Arc<GuestClaims>,
        cursor: RoomCursor,
        queue_frames: usize,
    ) -> Result<Subscription, ApiError> {
        let mut room = Arc::clone(room);
        let mut cursor = cursor;
        let mut catch_up = VecDeque::new();
        let mut catch_ups = 0;
        loop {
            if self.is_draining() {
                return Err(draining());
            }
            let plan = {
                let mut inner = lock(&room);
                let current = inner.cursor();
                match self.position(&inner, &cursor, catch_ups >= 2) {
                    Position::Ahead => SubscribePlan::CatchUp,
                    Position::Reset(reason) => {
                        catch_up
                            .push_back(Arc::new(LiveFrame::reset(&reset_event(reason), current)));
                        drop(inner);
                        return Ok(Subscription::ended(room, catch_up));
                    }
                    Position::Older => SubscribePlan::Older {
                        presence: inner.presence_since(&cursor),
                        snapshot: current,
                    },
                    // Both checked again under the room lock: a drain that
                    // started after the check above has not reached this
                    // room yet, and an evicted room hears of nothing more.
                    Position::InWindow if self.is_draining() => return Err(draining()),
                    Position::InWindow if inner.evicted => SubscribePlan::Reload,
                    Position::InWindow => {
                        // Everything up to now, then registration under the
                        // same lock: the live frames start right after.
                        let presence = inner.presence_since(&cursor);
                        let messages = window_after(&inner, &cursor, usize::MAX);
                        if cursor != current || !presence.is_empty() || !messages.is_empty() {
                            catch_up.push_back(Arc::new(LiveFrame::new(
                                presence.iter().map(|s| &**s).chain(
                                    messages
                                        .iter()
                                        .map(|m| &*m.event_json)
                                        .filter(|e| !e.is_empty()),
                                ),
                                current,
                                false,
                            )));
                        }
                        // Present from now on (the presence flush keeps
                        // connected guests present from here).
                        inner.note_seen(&guest.guest_id, &guest.nickname, Instant::now());
                        let id = self.next_subscriber.fetch_add(1, Ordering::Relaxed);
                        let (sender, queue) = mpsc::channel(queue_frames.max(1));
                        inner.subscribers.insert(id, sender, guest);
                        drop(inner);
                        return Ok(Subscription {
                            access_epoch: room.access_epoch.load(Ordering::Acquire),
                            room,
                            id,
                            catch_up,
                            queue: Some(queue),
                        });
                    }
                }
            };
            match plan {
                SubscribePlan::CatchUp => self.catch_up_ahead(&room, &mut catch_ups).await?,
                SubscribePlan::Reload => room = self.room(room.id).await?,
                SubscribePlan::Older { presence, snapshot } => {
                    let (body, next) = self
                        .older_batch(&room, &cursor, &presence, &snapshot, false)
                        .await?;
                    if next.seq == cursor.seq {
                        // Nothing is stored after the cursor although the
                        // window starts later (messages removed since):
                        // this cursor cannot be resumed from.
                        let reset = reset_event(ResetReason::ResumeFailed);
                        catch_up.push_back(Arc::new(LiveFrame::reset(&reset, snapshot)));
                        return Ok(Subscription::ended(room, catch_up));
                    }
                    catch_up.push_back(Arc::new(LiveFrame::from_json(body, next)));
                    cursor = next;
                }
            }
        }
    }

    /// Drops rooms nobody on this node polled for `room_idle`.
    ///
    /// A room is marked `evicted` under its own lock when it is found idle,
    /// so a subscription racing with the eviction sees the mark (under the
    /// same lock) and loads the room afresh instead of registering in a
    /// room nobody delivers to any more.
    pub fn evict_idle(&self, now: Instant) {
        let idle: Vec<Arc<RoomState>> = self
            .all_rooms()
            .into_iter()
            .filter(|room| {
                let mut inner = lock(room);
                let idle = inner.touched.is_empty()
                    && inner.pending.is_empty()
                    && inner.subscribers.is_empty()
                    && now.saturating_duration_since(inner.last_active) > self.settings.room_idle;
                inner.evicted |= idle;
                idle
            })
            .collect();
        if !idle.is_empty()
            && let Ok(mut rooms) = self.rooms.write()
        {
            for room in idle {
                if rooms
                    .get(&room.id)
                    .is_some_and(|held| Arc::ptr_eq(held, &room))
                {
                    rooms.remove(&room.id);
                }
            }
        }
    }
}

impl RoomInner {
    /// Notes a guest for the next presence tick. Allocates only the first
    /// time a guest is seen in a tick, not on every poll.
    fn note_seen(&mut self, guest_id: &str, nickname: &str, now: Instant) {
        self.last_active = now;
        if self.touched.get(guest_id).map(String::as_str) != Some(nickname) {
            self.touched
                .insert(guest_id.to_owned(), nickname.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(epoch: u32, version: u64, guest: &str, kind: PresenceKind) -> PresenceChange {
        PresenceChange {
            room_id: 1,
            epoch,
            version,
            guest_id: guest.into(),
            nickname: guest.to_uppercase(),
            kind,
        }
    }

    fn snapshot(epoch: u32, version: u64, guests: &[&str]) -> PresenceSnapshot {
        PresenceSnapshot {
            room_id: 1,
            epoch,
            version,
            members: guests
                .iter()
                .map(|g| ((*g).to_owned(), g.to_uppercase()))
                .collect(),
        }
    }

    fn message(seq: u64) -> StoredMessage {
        StoredMessage {
            room_id: 1,
            seq,
            guest_id: "g".into(),
            nickname: "G".into(),
            body: format!("m{seq}"),
            client_message_id: format!("c{seq}"),
            created_at: chrono::Utc::now(),
            kind: MessageKind::Chat,
        }
    }

    fn members(inner: &RoomInner) -> Vec<String> {
        inner
            .member_list(usize::MAX)
            .into_iter()
            .map(|m| m.guest_id)
            .collect()
    }

    #[test]
    fn messages_are_windowed_in_order_whatever_order_they_arrive_in() {
        let mut inner = RoomInner::new(Instant::now());
        assert!(!inner.accept(message(1), 10));
        assert!(inner.accept(message(3), 10), "a hole asks for one fill");
        assert!(
            !inner.accept(message(4), 10),
            "the fill is already scheduled"
        );
        assert!(!inner.accept(message(3), 10), "duplicates are dropped");
        assert_eq!(inner.last_seq, 1);
        inner.accept(message(2), 10);
        assert_eq!(inner.last_seq, 4);
        assert!(inner.pending.is_empty());
        let seqs: Vec<u64> = inner.window.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4]);
    }

    #[test]
    fn seqs_the_store_no_longer_has_are_skipped_and_what_waited_behind_them_applies() {
        let mut inner = RoomInner::new(Instant::now());
        inner.accept(message(1), 10);
        assert!(inner.accept(message(4), 10), "a hole");
        inner.skip_gone(4, 10);
        assert_eq!(inner.last_seq, 4);
        assert!(inner.pending.is_empty());
        let shown: Vec<(u64, bool)> = inner
            .window
            .iter()
            .map(|m| (m.seq, m.view.is_some()))
            .collect();
        assert_eq!(shown, vec![(1, true), (2, false), (3, false), (4, true)]);
        // A hole wider than the window: the window restarts after it.
        inner.accept(message(100), 10);
        inner.skip_gone(100, 10);
        assert_eq!(inner.last_seq, 100);
        assert_eq!(inner.window_start(), 100);
    }

    #[test]
    fn a_large_room_lists_a_sample_of_its_members_with_the_exact_count() {
        let mut inner = RoomInner::new(Instant::now());
        inner.member_list_max = 3;
        let guests: Vec<String> = (0..10).map(|i| format!("g{i}")).collect();
        let guests: Vec<&str> = guests.iter().map(String::as_str).collect();
        inner.apply_snapshot(snapshot(1, 10, &guests), 16);
        let event: Event =
            serde_json::from_str(&inner.members_event(inner.member_list_max)).expect("event");
        match event {
            Event::Members { members, count, .. } => {
                assert_eq!(members.len(), 3);
                assert_eq!(count, 10);
                let mut sorted = members.clone();
                sorted.sort_by(|a, b| a.nickname.cmp(&b.nickname));
                assert_eq!(members, sorted, "the sample is sorted");
            }
            other => panic!("expected members, got {other:?}"),
        }
        // A client whose presence position is unknown gets the same.
        let stale = RoomCursor {
            seq: 0,
            epoch: 2,
            presence: 0,
        };
        assert_eq!(inner.presence_since(&stale).len(), 1);
    }

    #[test]
    fn a_large_room_coalesces_joins_and_leaves_into_one_members_event_per_flush() {
        let mut inner = RoomInner::new(Instant::now());
        inner.member_list_max = 2;
        inner.apply_snapshot(snapshot(1, 0, &[]), 16);
        let (sender, mut queue) = mpsc::channel(64);
        inner.subscribers.insert(
            1,
            sender,
            Arc::new(GuestClaims {
                site_id: 1,
                room_id: 1,
                guest_id: "s".into(),
                nickname: "S".into(),
                expires_at: 0,
            }),
        );
        let types = |queue: &mut SubscriberQueue| {
            let mut out = Vec::new();
            while let Ok(frame) = queue.try_recv() {
                let batch: serde_json::Value = serde_json::from_str(&frame.json).expect("json");
                for event in batch["events"].as_array().cloned().unwrap_or_default() {
                    out.push(event["type"].as_str().unwrap_or_default().to_owned());
                }
            }
            out
        };
        for (version, guest) in [(1, "a"), (2, "b")] {
            inner.accept_presence(change(1, version, guest, PresenceKind::Join), 16);
        }
        assert_eq!(
            types(&mut queue),
            vec!["join", "join"],
            "a small room: one event each"
        );
        for (version, guest) in [(3, "c"), (4, "d"), (5, "e")] {
            inner.accept_presence(change(1, version, guest, PresenceKind::Join), 16);
        }
        assert!(
            types(&mut queue).is_empty(),
            "a large room waits for the flush"
        );
        assert_eq!(
            inner.cursor().presence,
            2,
            "cursors claim only the presence clients were told about"
        );
        inner.flush_presence();
        assert_eq!(types(&mut queue), vec!["members"]);
        assert_eq!(inner.cursor().presence, 5);
        inner.flush_presence();
        assert!(types(&mut queue).is_empty(), "nothing new, nothing sent");
        // Shrinking back: the change that makes it small is covered by one
        // members event when coalesced changes were pending…
        inner.accept_presence(change(1, 6, "e", PresenceKind::Left), 16);
        inner.accept_presence(change(1, 7, "d", PresenceKind::Left), 16);
        assert!(types(&mut queue).is_empty(), "three members: still large");
        inner.accept_presence(change(1, 8, "c", PresenceKind::Left), 16);
        assert_eq!(types(&mut queue), vec!["members"]);
        // …and then it is one event per change again.
        inner.accept_presence(change(1, 9, "b", PresenceKind::Left), 16);
        assert_eq!(types(&mut queue), vec!["leave"]);
    }

    #[test]
    fn the_window_keeps_only_the_newest_messages() {
        let mut inner = RoomInner::new(Instant::now());
        for seq in 1..=5 {
            inner.accept(message(seq), 3);
        }
        assert_eq!(inner.window_start(), 3);
        assert_eq!(inner.last_seq, 5);
    }

    #[test]
    fn presence_changes_apply_in_version_order() {
        let mut inner = RoomInner::new(Instant::now());
        inner.apply_snapshot(snapshot(7, 0, &[]), 16);
        inner.accept_presence(change(7, 2, "b", PresenceKind::Join), 16);
        assert_eq!(inner.presence_version, 0, "v2 waits for v1");
        assert!(!inner.presence_in_order());
        inner.accept_presence(change(7, 1, "a", PresenceKind::Join), 16);
        assert_eq!(inner.presence_version, 2);
        assert!(inner.presence_in_order());
        assert_eq!(members(&inner), vec!["a", "b"]);
        inner.accept_presence(change(7, 3, "a", PresenceKind::Timeout), 16);
        assert_eq!(members(&inner), vec!["b"]);
        assert_eq!(inner.presence_log.len(), 3);
    }

    #[test]
    fn a_change_that_arrives_before_the_first_snapshot_is_not_lost() {
        // The room entered the map; a change was published before the
        // snapshot was read, and one after.
        let mut inner = RoomInner::new(Instant::now());
        inner.accept_presence(change(9, 5, "e", PresenceKind::Join), 16);
        inner.accept_presence(change(9, 6, "f", PresenceKind::Join), 16);
        // The snapshot was read between the two publishes: it has v5, not v6.
        inner.apply_snapshot(snapshot(9, 5, &["a", "e"]), 16);
        assert!(inner.presence_in_order());
        assert_eq!(inner.presence_version, 6);
        assert_eq!(members(&inner), vec!["a", "e", "f"]);
    }

    #[test]
    fn a_new_epoch_makes_the_mirror_stale_until_a_snapshot() {
        let mut inner = RoomInner::new(Instant::now());
        inner.apply_snapshot(snapshot(1, 4, &["a"]), 16);
        let needs = inner.accept_presence(change(2, 1, "b", PresenceKind::Join), 16);
        assert!(needs, "asks for a snapshot");
        assert!(!inner.presence_in_order());
        inner.apply_snapshot(snapshot(2, 1, &["b"]), 16);
        assert_eq!((inner.epoch, inner.presence_version), (2, 1));
        assert_eq!(members(&inner), vec!["b"]);
        // Clients of the old epoch get a full member list.
        let old = RoomCursor {
            seq: 0,
            epoch: 1,
            presence: 4,
        };
        let events = inner.presence_since(&old);
        assert_eq!(events.len(), 1);
        assert!(events[0].contains("\"type\":\"members\""), "{}", events[0]);
    }

    #[test]
    fn an_older_snapshot_does_not_roll_the_mirror_back() {
        let mut inner = RoomInner::new(Instant::now());
        inner.apply_snapshot(snapshot(3, 2, &["a", "b"]), 16);
        inner.accept_presence(change(3, 3, "c", PresenceKind::Join), 16);
        inner.apply_snapshot(snapshot(3, 2, &["a", "b"]), 16);
        assert_eq!(inner.presence_version, 3);
        assert_eq!(members(&inner), vec!["a", "b", "c"]);
    }

    #[test]
    fn presence_diffs_come_from_the_log_when_it_covers_the_client() {
        let mut inner = RoomInner::new(Instant::now());
        inner.apply_snapshot(snapshot(5, 0, &[]), 2);
        for (v, g) in [(1, "a"), (2, "b"), (3, "c")] {
            inner.accept_presence(change(5, v, g, PresenceKind::Join), 2);
        }
        let diff = inner.presence_since(&RoomCursor {
            seq: 0,
            epoch: 5,
            presence: 1,
        });
        assert_eq!(diff.len(), 2, "v2 and v3 from the log");
        let too_old = inner.presence_since(&RoomCursor {
            seq: 0,
            epoch: 5,
            presence: 0,
        });
        assert_eq!(too_old.len(), 1);
        assert!(
            too_old[0].contains("\"type\":\"members\""),
            "the log (2 events) no longer reaches v1"
        );
    }
}

//! The hub: this node's in-memory state of every active room.
//!
//! The case study's lesson is that polls must be cheap. A poll is answered
//! here, from memory, under one short per-room lock:
//!
//! * the room's **version** (`RoomCursor`: last message seq, presence epoch
//!   and presence version) is what an unchanged poll's `If-None-Match` is
//!   compared with — a `304` costs no database query and no allocation
//!   beyond the response;
//! * a **window** of the latest messages, each serialised to its event JSON
//!   once when it arrives and then shared by every poll that needs it;
//! * **presence**: members and when each was last seen, plus a short log of
//!   join/leave events so pollers get diffs.
//!
//! Only a client further behind than the window (or a room not yet loaded)
//! costs a database query.
//!
//! ## Ordering
//!
//! Messages reach the hub from the local send path and from the bus, in any
//! order and possibly twice. The window only ever holds a contiguous run of
//! sequence numbers: a message that arrives early waits in `pending`, a
//! duplicate is dropped, and a hole that does not close by itself within
//! `gap_fill_delay` is filled from the store (a committed seq `n` implies
//! every seq below `n` is committed, see `chatty_storage::sql`).
//!
//! ## Locks
//!
//! The room map is a `std::sync::RwLock`, each room a `std::sync::Mutex`;
//! both are held only for short synchronous sections, never across `.await`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use chatty_protocol::RoomCursor;
use chatty_protocol::event::{Event, LeaveReason, Member, MessageView, ResetReason};
use chatty_storage::{Store, StoredMessage};

use crate::error::ApiError;

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
}

/// A message in the window, with its event JSON serialised once.
#[derive(Debug)]
struct WindowMessage {
    view: MessageView,
    event_json: Box<str>,
}

#[derive(Debug)]
struct MemberEntry {
    nickname: String,
    last_seen: Instant,
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
    epoch: u32,
    presence_version: u64,
    members: HashMap<String, MemberEntry>,
    /// Join/leave events by the presence version they produced.
    presence_log: VecDeque<(u64, Arc<str>)>,
    last_active: Instant,
}

/// One room's state on this node.
#[derive(Debug)]
pub struct RoomState {
    pub id: i64,
    pub site_id: i64,
    inner: Mutex<RoomInner>,
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
        cursor: RoomCursor,
    },
    /// A ready JSON body (a `PollResponse`).
    Events {
        body: String,
        cursor: RoomCursor,
        path: PollPath,
    },
}

/// What a join sees.
#[derive(Debug)]
pub struct JoinSnapshot {
    pub members: Vec<Member>,
    pub messages: Vec<MessageView>,
    pub cursor: RoomCursor,
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

impl RoomInner {
    fn cursor(&self) -> RoomCursor {
        RoomCursor {
            seq: self.last_seq,
            epoch: self.epoch,
            presence: self.presence_version,
        }
    }

    /// The first seq the window holds (`last_seq + 1` when empty).
    fn window_start(&self) -> u64 {
        self.window
            .front()
            .map_or(self.last_seq + 1, |m| m.view.seq)
    }

    fn push_window(&mut self, message: &StoredMessage, capacity: usize) {
        let view = message.to_view();
        let event_json = serde_json::to_string(&Event::Message {
            message: view.clone(),
        })
        .unwrap_or_default()
        .into_boxed_str();
        self.window
            .push_back(Arc::new(WindowMessage { view, event_json }));
        self.last_seq = message.seq;
        while self.window.len() > capacity {
            self.window.pop_front();
        }
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
            // Anything pending at or below last_seq is now a duplicate.
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

    fn record_presence(&mut self, event: Event, log_capacity: usize) {
        self.presence_version += 1;
        let event = match event {
            Event::Join { member, .. } => Event::Join {
                presence_version: self.presence_version,
                member,
            },
            Event::Leave { member, reason, .. } => Event::Leave {
                presence_version: self.presence_version,
                member,
                reason,
            },
            other => other,
        };
        self.presence_log
            .push_back((self.presence_version, event_json(&event)));
        while self.presence_log.len() > log_capacity {
            self.presence_log.pop_front();
        }
    }

    /// Marks a guest present; a newcomer (or a new nickname) is a join.
    fn touch(&mut self, guest_id: &str, nickname: &str, now: Instant, log_capacity: usize) {
        self.last_active = now;
        if let Some(entry) = self.members.get_mut(guest_id) {
            entry.last_seen = now;
            if entry.nickname == nickname {
                return;
            }
            entry.nickname = nickname.to_owned();
        } else {
            self.members.insert(
                guest_id.to_owned(),
                MemberEntry {
                    nickname: nickname.to_owned(),
                    last_seen: now,
                },
            );
        }
        let member = Member {
            guest_id: guest_id.to_owned(),
            nickname: nickname.to_owned(),
        };
        self.record_presence(
            Event::Join {
                presence_version: 0,
                member,
            },
            log_capacity,
        );
    }

    fn remove_member(&mut self, guest_id: &str, reason: LeaveReason, log_capacity: usize) -> bool {
        let Some(entry) = self.members.remove(guest_id) else {
            return false;
        };
        let member = Member {
            guest_id: guest_id.to_owned(),
            nickname: entry.nickname,
        };
        self.record_presence(
            Event::Leave {
                presence_version: 0,
                member,
                reason,
            },
            log_capacity,
        );
        true
    }

    fn member_list(&self) -> Vec<Member> {
        let mut members: Vec<Member> = self
            .members
            .iter()
            .map(|(id, m)| Member {
                guest_id: id.clone(),
                nickname: m.nickname.clone(),
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
    fn presence_since(&self, cursor: &RoomCursor) -> Vec<Arc<str>> {
        if cursor.epoch == self.epoch && cursor.presence == self.presence_version {
            return Vec::new();
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
        vec![event_json(&Event::Members {
            presence_version: self.presence_version,
            members: self.member_list(),
        })]
    }
}

/// Writes `{"events":[…],"cursor":"…","more":…}` from pre-serialised events.
fn poll_body<'a>(events: impl Iterator<Item = &'a str>, cursor: &RoomCursor, more: bool) -> String {
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

/// What the locked part of a poll decided.
enum PollPlan {
    Done(PollAnswer),
    /// The client is behind the window: read messages from the store.
    FromStore {
        presence: Vec<Arc<str>>,
        snapshot: RoomCursor,
    },
    /// The client is ahead of this node: catch up from the store, then retry.
    CatchUp,
}

/// This node's rooms.
#[derive(Debug)]
pub struct Hub {
    rooms: RwLock<HashMap<i64, Arc<RoomState>>>,
    store: Arc<dyn Store>,
    settings: HubSettings,
}

impl Hub {
    pub fn new(store: Arc<dyn Store>, settings: HubSettings) -> Arc<Self> {
        Arc::new(Self {
            rooms: RwLock::new(HashMap::new()),
            store,
            settings,
        })
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

    /// The room's state, loaded from the store on first use.
    pub async fn room(self: &Arc<Self>, room_id: i64) -> Result<Arc<RoomState>, ApiError> {
        if let Some(room) = self.loaded(room_id) {
            return Ok(room);
        }
        let stored = self.store.room(room_id).await?.ok_or_else(|| {
            ApiError::client(chatty_protocol::ErrorCode::UnknownRoom, "No such room.")
        })?;
        let recent = self
            .store
            .recent_messages(room_id, self.settings.window_messages as u64)
            .await?;
        let now = Instant::now();
        let mut inner = RoomInner {
            last_seq: recent.first().map_or(stored.last_seq, |m| m.seq - 1),
            window: VecDeque::with_capacity(self.settings.window_messages.min(64)),
            pending: BTreeMap::new(),
            gap_fill_scheduled: false,
            epoch: rand::random::<u32>(),
            presence_version: 0,
            members: HashMap::new(),
            presence_log: VecDeque::new(),
            last_active: now,
        };
        for message in &recent {
            inner.push_window(message, self.settings.window_messages);
        }
        let fresh = Arc::new(RoomState {
            id: room_id,
            site_id: stored.site_id,
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
        // before the room was in the map, and so dropped: read once more.
        self.catch_up(&room).await?;
        Ok(room)
    }

    /// Applies every stored message after the room's `last_seq`.
    async fn catch_up(self: &Arc<Self>, room: &Arc<RoomState>) -> Result<(), ApiError> {
        let from = lock(room).last_seq;
        let missing = self
            .store
            .messages_after(room.id, from, self.settings.window_messages as u64)
            .await?;
        for message in missing {
            self.apply_to(room, message);
        }
        Ok(())
    }

    /// Applies a committed message (from the send path or the bus). Messages
    /// for rooms this node does not hold are ignored: they are read from the
    /// store when the room is loaded.
    pub fn apply_message(self: &Arc<Self>, message: StoredMessage) {
        if let Some(room) = self.loaded(message.room_id) {
            self.apply_to(&room, message);
        }
    }

    fn apply_to(self: &Arc<Self>, room: &Arc<RoomState>, message: StoredMessage) {
        let needs_fill = lock(room).accept(message, self.settings.window_messages);
        if needs_fill {
            let hub = Arc::clone(self);
            let room = Arc::clone(room);
            tokio::spawn(async move { hub.fill_gaps(room).await });
        }
    }

    /// Waits for a hole to close by itself, then fills it from the store.
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
            tracing::debug!(
                room = room.id,
                from,
                upto,
                "filling a sequence gap from the store"
            );
            match self.store.messages_after(room.id, from, upto - from).await {
                Ok(messages) => {
                    let mut inner = lock(&room);
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

    /// Re-reads every held room from the store (after the bus lost events).
    pub async fn resync_all(self: &Arc<Self>) {
        let rooms: Vec<Arc<RoomState>> = self
            .rooms
            .read()
            .map(|r| r.values().cloned().collect())
            .unwrap_or_default();
        for room in rooms {
            if let Err(error) = self.catch_up(&room).await {
                tracing::warn!(room = room.id, %error, "resync failed");
            }
        }
    }

    /// A guest joins: marks it present and returns what the widget draws.
    pub fn join(
        &self,
        room: &RoomState,
        guest_id: &str,
        nickname: &str,
        now: Instant,
    ) -> JoinSnapshot {
        let mut inner = lock(room);
        inner.touch(guest_id, nickname, now, self.settings.presence_log_events);
        let skip = inner
            .window
            .len()
            .saturating_sub(self.settings.history_messages);
        JoinSnapshot {
            members: inner.member_list(),
            messages: inner
                .window
                .iter()
                .skip(skip)
                .map(|m| m.view.clone())
                .collect(),
            cursor: inner.cursor(),
        }
    }

    /// A guest says goodbye.
    pub fn leave(&self, room: &RoomState, guest_id: &str) -> bool {
        lock(room).remove_member(
            guest_id,
            LeaveReason::Left,
            self.settings.presence_log_events,
        )
    }

    /// Refreshes a guest's presence (on send).
    pub fn touch(&self, room: &RoomState, guest_id: &str, nickname: &str, now: Instant) {
        lock(room).touch(guest_id, nickname, now, self.settings.presence_log_events);
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
        let mut caught_up = false;
        loop {
            match self.plan_poll(
                room,
                guest_id,
                nickname,
                &cursor,
                if_none_match,
                now,
                caught_up,
            ) {
                PollPlan::Done(answer) => return Ok(answer),
                PollPlan::CatchUp => {
                    self.catch_up(room).await?;
                    caught_up = true;
                }
                PollPlan::FromStore { presence, snapshot } => {
                    let limit = self.settings.max_events_per_poll as u64;
                    let messages = self
                        .store
                        .messages_after(room.id, cursor.seq, limit)
                        .await?;
                    let messages: Vec<&StoredMessage> =
                        messages.iter().filter(|m| m.seq <= snapshot.seq).collect();
                    let jsons: Vec<Arc<str>> = messages
                        .iter()
                        .map(|m| {
                            event_json(&Event::Message {
                                message: m.to_view(),
                            })
                        })
                        .collect();
                    let last = messages.last().map_or(cursor.seq, |m| m.seq);
                    let next = RoomCursor {
                        seq: last,
                        ..snapshot
                    };
                    let body = poll_body(
                        presence.iter().chain(jsons.iter()).map(|s| &**s),
                        &next,
                        last < snapshot.seq,
                    );
                    return Ok(PollAnswer::Events {
                        body,
                        cursor: next,
                        path: PollPath::Store,
                    });
                }
            }
        }
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
        inner.touch(guest_id, nickname, now, self.settings.presence_log_events);
        let current = inner.cursor();
        if if_none_match.is_some_and(|tag| current.matches_if_none_match(tag)) {
            return PollPlan::Done(PollAnswer::NotModified { cursor: current });
        }
        if cursor.seq > inner.last_seq {
            if !caught_up {
                return PollPlan::CatchUp;
            }
            let reset = event_json(&Event::Reset {
                reason: ResetReason::CursorAhead,
            });
            return PollPlan::Done(PollAnswer::Events {
                body: poll_body(std::iter::once(&*reset), &current, false),
                cursor: current,
                path: PollPath::Reset,
            });
        }
        let presence = inner.presence_since(cursor);
        if cursor.seq + 1 < inner.window_start() {
            return PollPlan::FromStore {
                presence,
                snapshot: current,
            };
        }
        let skip = usize::try_from(cursor.seq + 1 - inner.window_start()).unwrap_or(usize::MAX);
        let take = self.settings.max_events_per_poll;
        let messages: Vec<&Arc<WindowMessage>> =
            inner.window.iter().skip(skip).take(take).collect();
        let last = messages.last().map_or(cursor.seq, |m| m.view.seq);
        let next = RoomCursor {
            seq: last,
            ..current
        };
        let body = poll_body(
            presence
                .iter()
                .map(|s| &**s)
                .chain(messages.iter().map(|m| &*m.event_json)),
            &next,
            last < current.seq,
        );
        PollPlan::Done(PollAnswer::Events {
            body,
            cursor: next,
            path: PollPath::Window,
        })
    }

    /// Expires silent guests (leave events) and drops idle rooms.
    pub fn sweep(&self, now: Instant) {
        let rooms: Vec<Arc<RoomState>> = self
            .rooms
            .read()
            .map(|r| r.values().cloned().collect())
            .unwrap_or_default();
        let mut idle = Vec::new();
        for room in rooms {
            let mut inner = lock(&room);
            let expired: Vec<String> = inner
                .members
                .iter()
                .filter(|(_, m)| {
                    now.saturating_duration_since(m.last_seen) > self.settings.presence_timeout
                })
                .map(|(id, _)| id.clone())
                .collect();
            for guest in expired {
                inner.remove_member(
                    &guest,
                    LeaveReason::Timeout,
                    self.settings.presence_log_events,
                );
            }
            if inner.members.is_empty()
                && inner.pending.is_empty()
                && now.saturating_duration_since(inner.last_active) > self.settings.room_idle
            {
                idle.push(room.id);
            }
        }
        if !idle.is_empty()
            && let Ok(mut rooms) = self.rooms.write()
        {
            for id in idle {
                rooms.remove(&id);
            }
        }
    }
}

//! Presence: who is in a room, shared by every node.
//!
//! The state of record lives in a [`PresenceStore`] — Redis in the shared
//! mode, [`InMemoryPresence`] in the embedded mode. Every membership change
//! (a join, a leave, a timeout) gets the room's next **presence version**
//! and is published on the bus, in version order, so every node mirrors the
//! member list and hands clients diffs. Versions belong to an **epoch**: a
//! random number chosen when a room's presence state is created. If that
//! state is lost (Redis restarted empty, the process restarted), the new
//! epoch tells every node and client to take a fresh snapshot instead of
//! trusting old version numbers.
//!
//! Refreshes are batched: a node collects the guests its polls saw and
//! calls [`PresenceStore::tick`] once per flush interval for all its rooms
//! (touch the seen guests, expire the silent ones): one round trip per node
//! per interval, whatever the number of pollers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::bus::{BusEvent, InProcessBus};
use crate::error::StoreError;

/// What happened to a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceKind {
    Join,
    Left,
    Timeout,
}

/// One membership change, numbered within its room's epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceChange {
    pub room_id: i64,
    pub epoch: u32,
    pub version: u64,
    pub guest_id: String,
    pub nickname: String,
    pub kind: PresenceKind,
}

/// A room's whole member list at one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceSnapshot {
    pub room_id: i64,
    pub epoch: u32,
    pub version: u64,
    /// `(guest_id, nickname)`.
    pub members: Vec<(String, String)>,
}

/// Guests a node saw in one room since its last tick: `(guest_id, nickname)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomTouches {
    pub room_id: i64,
    pub guests: Vec<(String, String)>,
}

/// The presence state of record.
#[async_trait]
pub trait PresenceStore: Send + Sync + std::fmt::Debug + 'static {
    /// Marks the given guests present now (a guest not present, or present
    /// under another nickname, joins), then, when `expire_after` is set,
    /// removes from the same rooms every guest not seen for that long.
    /// "Now" is the presence store's own clock (Redis `TIME` in the shared
    /// mode), so nodes with skewed clocks cannot expire each other's guests.
    /// Changes are published on the bus and returned.
    async fn tick(
        &self,
        expire_after: Option<Duration>,
        rooms: &[RoomTouches],
    ) -> Result<Vec<PresenceChange>, StoreError>;
    /// A guest leaves; `None` if it was not present.
    async fn leave(
        &self,
        room_id: i64,
        guest_id: &str,
    ) -> Result<Option<PresenceChange>, StoreError>;
    /// The room's member list now.
    async fn snapshot(&self, room_id: i64) -> Result<PresenceSnapshot, StoreError>;
}

#[derive(Debug)]
struct RoomPresence {
    epoch: u32,
    version: u64,
    /// guest id → (nickname, last seen ms)
    members: HashMap<String, (String, i64)>,
}

impl RoomPresence {
    fn new() -> Self {
        Self {
            epoch: rand::random(),
            version: 0,
            members: HashMap::new(),
        }
    }

    fn change(
        &mut self,
        room_id: i64,
        guest_id: &str,
        nickname: &str,
        kind: PresenceKind,
    ) -> PresenceChange {
        self.version += 1;
        PresenceChange {
            room_id,
            epoch: self.epoch,
            version: self.version,
            guest_id: guest_id.to_owned(),
            nickname: nickname.to_owned(),
            kind,
        }
    }
}

/// Presence of the embedded mode: one process holds it all. Changes are
/// published on the in-process bus while the lock is held, so they leave
/// in version order.
#[derive(Debug)]
pub struct InMemoryPresence {
    rooms: Mutex<HashMap<i64, RoomPresence>>,
    bus: InProcessBus,
}

impl InMemoryPresence {
    pub fn new(bus: InProcessBus) -> Self {
        Self {
            rooms: Mutex::new(HashMap::new()),
            bus,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, RoomPresence>> {
        self.rooms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn publish(&self, change: &PresenceChange) {
        self.bus.send(BusEvent::Presence {
            change: change.clone(),
        });
    }
}

#[async_trait]
impl PresenceStore for InMemoryPresence {
    async fn tick(
        &self,
        expire_after: Option<Duration>,
        touches: &[RoomTouches],
    ) -> Result<Vec<PresenceChange>, StoreError> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let expire_before_ms =
            expire_after.map(|after| now_ms - i64::try_from(after.as_millis()).unwrap_or(i64::MAX));
        let mut changes = Vec::new();
        let mut rooms = self.lock();
        for touch in touches {
            let room = rooms.entry(touch.room_id).or_insert_with(RoomPresence::new);
            for (guest_id, nickname) in &touch.guests {
                let known = room
                    .members
                    .get(guest_id)
                    .is_some_and(|(nick, _)| nick == nickname);
                room.members
                    .insert(guest_id.clone(), (nickname.clone(), now_ms));
                if !known {
                    let change = room.change(touch.room_id, guest_id, nickname, PresenceKind::Join);
                    self.publish(&change);
                    changes.push(change);
                }
            }
            if let Some(cutoff) = expire_before_ms {
                let expired: Vec<(String, String)> = room
                    .members
                    .iter()
                    .filter(|(_, (_, seen))| *seen < cutoff)
                    .map(|(id, (nick, _))| (id.clone(), nick.clone()))
                    .collect();
                for (guest_id, nickname) in expired {
                    room.members.remove(&guest_id);
                    let change =
                        room.change(touch.room_id, &guest_id, &nickname, PresenceKind::Timeout);
                    self.publish(&change);
                    changes.push(change);
                }
            }
        }
        if expire_before_ms.is_some() {
            // Forget rooms nobody is in (a later join starts a new epoch,
            // which every mirror handles with a snapshot).
            rooms.retain(|_, room| !room.members.is_empty());
        }
        Ok(changes)
    }

    async fn leave(
        &self,
        room_id: i64,
        guest_id: &str,
    ) -> Result<Option<PresenceChange>, StoreError> {
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(&room_id) else {
            return Ok(None);
        };
        let Some((nickname, _)) = room.members.remove(guest_id) else {
            return Ok(None);
        };
        let change = room.change(room_id, guest_id, &nickname, PresenceKind::Left);
        self.publish(&change);
        Ok(Some(change))
    }

    async fn snapshot(&self, room_id: i64) -> Result<PresenceSnapshot, StoreError> {
        let mut rooms = self.lock();
        let room = rooms.entry(room_id).or_insert_with(RoomPresence::new);
        Ok(PresenceSnapshot {
            room_id,
            epoch: room.epoch,
            version: room.version,
            members: room
                .members
                .iter()
                .map(|(id, (nick, _))| (id.clone(), nick.clone()))
                .collect(),
        })
    }
}

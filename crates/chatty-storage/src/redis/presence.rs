//! [`RedisPresence`]: presence of record in Redis, shared by every node.
//!
//! Per room: `…:members` (sorted set, guest id → last-seen ms), `…:nicks`
//! (hash, guest id → nickname), `…:pver` (presence version) and `…:epoch`.
//! Membership only changes inside Lua scripts, which bump the version and
//! `PUBLISH` the change in the same atomic step: versions are contiguous and
//! published in order, whichever node made the change. If the keys vanish
//! (Redis restarted empty, or they expired), the next script picks a new
//! epoch, and nodes and clients re-snapshot.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::redis::Script;

use super::RedisClient;
use crate::bus::BusEvent;
use crate::error::StoreError;
use crate::presence::{PresenceChange, PresenceSnapshot, PresenceStore, RoomTouches};

/// Touches guests and expires silent ones, for many rooms in one call.
/// KEYS: 4 per room (members, nicks, pver, epoch).
/// ARGV: expire after ms ('' = no expiry), candidate epoch, ttl ms,
/// channel, then per room: room id, guest count, guest, nick, guest, nick, …
/// "Now" is Redis's clock (`TIME`), the same for every node.
const TICK: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = ''
if ARGV[1] ~= '' then cutoff = tostring(now - tonumber(ARGV[1])) end
local candidate, ttl, channel = ARGV[2], ARGV[3], ARGV[4]
local out = {}
local a = 5
for r = 0, (#KEYS / 4) - 1 do
  local members, nicks, pver, epochk = KEYS[r*4+1], KEYS[r*4+2], KEYS[r*4+3], KEYS[r*4+4]
  local room = tonumber(ARGV[a])
  local count = tonumber(ARGV[a + 1])
  a = a + 2
  local epoch = redis.call('GET', epochk)
  if not epoch then
    epoch = candidate
    redis.call('SET', epochk, epoch)
    redis.call('SET', pver, 0)
    redis.call('DEL', members, nicks)
  end
  local function emit(guest, nick, kind)
    local v = redis.call('INCR', pver)
    local ev = cjson.encode({kind = 'presence', change = {room_id = room, epoch = tonumber(epoch),
      version = v, guest_id = guest, nickname = nick, kind = kind}})
    redis.call('PUBLISH', channel, ev)
    table.insert(out, ev)
  end
  for i = 1, count do
    local guest, nick = ARGV[a], ARGV[a + 1]
    a = a + 2
    local seen = redis.call('ZSCORE', members, guest)
    local old = redis.call('HGET', nicks, guest)
    redis.call('ZADD', members, now, guest)
    if (not seen) or old ~= nick then
      redis.call('HSET', nicks, guest, nick)
      emit(guest, nick, 'join')
    end
  end
  if cutoff ~= '' then
    local expired = redis.call('ZRANGEBYSCORE', members, '-inf', '(' .. cutoff)
    for _, guest in ipairs(expired) do
      local nick = redis.call('HGET', nicks, guest) or ''
      redis.call('ZREM', members, guest)
      redis.call('HDEL', nicks, guest)
      emit(guest, nick, 'timeout')
    end
  end
  for _, k in ipairs({members, nicks, pver, epochk}) do redis.call('PEXPIRE', k, ttl) end
end
return out
"#;

/// KEYS: members, nicks, pver, epoch. ARGV: channel, room id, guest.
const LEAVE: &str = r#"
if redis.call('ZREM', KEYS[1], ARGV[3]) == 0 then return false end
local nick = redis.call('HGET', KEYS[2], ARGV[3]) or ''
redis.call('HDEL', KEYS[2], ARGV[3])
local epoch = redis.call('GET', KEYS[4]) or '0'
local v = redis.call('INCR', KEYS[3])
local ev = cjson.encode({kind = 'presence', change = {room_id = tonumber(ARGV[2]), epoch = tonumber(epoch),
  version = v, guest_id = ARGV[3], nickname = nick, kind = 'left'}})
redis.call('PUBLISH', ARGV[1], ev)
return ev
"#;

/// KEYS: members, nicks, pver, epoch. ARGV: candidate epoch, ttl ms.
/// Returns {epoch, version, guest, nick, guest, nick, …}.
const SNAPSHOT: &str = r#"
local epoch = redis.call('GET', KEYS[4])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[4], epoch, 'PX', ARGV[2])
  redis.call('SET', KEYS[3], 0, 'PX', ARGV[2])
  redis.call('DEL', KEYS[1], KEYS[2])
end
local out = {epoch, redis.call('GET', KEYS[3]) or '0'}
for _, guest in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  table.insert(out, guest)
  table.insert(out, redis.call('HGET', KEYS[2], guest) or '')
end
return out
"#;

/// Presence in Redis.
#[derive(Debug, Clone)]
pub struct RedisPresence {
    redis: RedisClient,
    tick: Arc<Script>,
    leave: Arc<Script>,
    snapshot: Arc<Script>,
}

impl RedisPresence {
    pub fn new(redis: RedisClient) -> Self {
        Self {
            redis,
            tick: Arc::new(Script::new(TICK)),
            leave: Arc::new(Script::new(LEAVE)),
            snapshot: Arc::new(Script::new(SNAPSHOT)),
        }
    }

    fn keys(&self, room_id: i64) -> [String; 4] {
        ["members", "nicks", "pver", "epoch"]
            .map(|k| self.redis.key(&format!("room:{room_id}:{k}")))
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.redis.options().key_ttl.as_millis()).unwrap_or(u64::MAX)
    }
}

fn parse_change(json: &str) -> Result<PresenceChange, StoreError> {
    match serde_json::from_str::<BusEvent>(json) {
        Ok(BusEvent::Presence { change }) => Ok(change),
        _ => Err(StoreError::Other(format!(
            "unreadable presence change {json:?}"
        ))),
    }
}

/// A random epoch that fits a Lua number exactly and is never 0.
fn candidate_epoch() -> u32 {
    rand::random::<u32>().max(1)
}

#[async_trait]
impl PresenceStore for RedisPresence {
    async fn tick(
        &self,
        expire_after: Option<Duration>,
        rooms: &[RoomTouches],
    ) -> Result<Vec<PresenceChange>, StoreError> {
        if rooms.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = self.tick.prepare_invoke();
        invocation
            .arg(
                expire_after
                    .map(|after| after.as_millis().to_string())
                    .unwrap_or_default(),
            )
            .arg(candidate_epoch())
            .arg(self.ttl_ms())
            .arg(self.redis.key("events"));
        for room in rooms {
            for key in self.keys(room.room_id) {
                invocation.key(key);
            }
            invocation.arg(room.room_id).arg(room.guests.len());
            for (guest, nick) in &room.guests {
                invocation.arg(guest).arg(nick);
            }
        }
        let raw: Vec<String> = self
            .redis
            .call(async |c| invocation.invoke_async(c).await)
            .await?;
        raw.iter().map(|json| parse_change(json)).collect()
    }

    async fn leave(
        &self,
        room_id: i64,
        guest_id: &str,
    ) -> Result<Option<PresenceChange>, StoreError> {
        let mut invocation = self.leave.prepare_invoke();
        for key in self.keys(room_id) {
            invocation.key(key);
        }
        invocation
            .arg(self.redis.key("events"))
            .arg(room_id)
            .arg(guest_id);
        let raw: Option<String> = self
            .redis
            .call(async |c| invocation.invoke_async(c).await)
            .await?;
        raw.as_deref().map(parse_change).transpose()
    }

    async fn snapshot(&self, room_id: i64) -> Result<PresenceSnapshot, StoreError> {
        let mut invocation = self.snapshot.prepare_invoke();
        for key in self.keys(room_id) {
            invocation.key(key);
        }
        invocation.arg(candidate_epoch()).arg(self.ttl_ms());
        let raw: Vec<String> = self
            .redis
            .call(async |c| invocation.invoke_async(c).await)
            .await?;
        let bad = || StoreError::Other("unreadable presence snapshot".into());
        let epoch = raw
            .first()
            .and_then(|e| e.parse::<u32>().ok())
            .ok_or_else(bad)?;
        let version = raw
            .get(1)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(bad)?;
        let members = raw[2..].chunks(2).filter_map(|pair| match pair {
            [guest, nick] => Some((guest.clone(), nick.clone())),
            _ => None,
        });
        Ok(PresenceSnapshot {
            room_id,
            epoch,
            version,
            members: members.collect(),
        })
    }
}

//! [`RedisBus`]: the event bus over Redis pub/sub, with a capped history.
//!
//! ## One subscription per node
//!
//! A background task holds one pub/sub connection subscribed to
//! `{prefix}events` (every room's events) and to this node's heartbeat
//! channel, and forwards events into a local broadcast channel that the
//! node's hub reads. A connection can die silently (no FIN from a frozen
//! server), so the node publishes to its heartbeat channel every
//! `heartbeat` and reconnects when none came back for three periods. After
//! every (re)subscription it emits [`BusEvent::Resync`]: whatever was
//! published while it was away is recovered from the history or the store.
//!
//! ## History
//!
//! Publishing a message is one Lua script: add it to the room's sorted set
//! (scored by seq, capped), raise `…:last`, then `PUBLISH`. Because the
//! history is written before the publish, a node that sees a hole can read
//! the missing messages from Redis instead of MySQL.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::redis::{self, Script};
use futures_util::StreamExt;
use tokio::sync::broadcast;

use super::RedisClient;
use crate::bus::{BusEvent, BusReceiver, EventBus};
use crate::domain::{MessageKind, StoredMessage};
use crate::error::StoreError;

const PUBLISH_MESSAGE: &str = r#"
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[3]) + 1))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) > last then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[4])
else
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
"#;

/// A moderation event also takes what it removes out of the history, in the
/// same script (this, then [`PUBLISH_MESSAGE`]): the rows keep their place (their seq) with the body emptied
/// and `kind` removed, so no node or catching-up client reads the text from
/// Redis after the event is published. ARGV[7]: `delete` (ARGV[8]: the
/// target seq) or `clear` (everything before ARGV[1]).
const REDACT_HISTORY: &str = r#"
local lo, hi
if ARGV[7] == 'delete' then
  lo = ARGV[8]
  hi = ARGV[8]
else
  lo = '-inf'
  hi = '(' .. ARGV[1]
end
local rows = redis.call('ZRANGEBYSCORE', KEYS[1], lo, hi, 'WITHSCORES')
for i = 1, #rows, 2 do
  local ok, row = pcall(cjson.decode, rows[i])
  if ok and type(row) == 'table' and row.kind == nil then
    redis.call('ZREM', KEYS[1], rows[i])
    row.body = ''
    row.kind = {type = 'removed'}
    redis.call('ZADD', KEYS[1], rows[i + 1], cjson.encode(row))
  end
end
"#;

/// The shared mode's bus.
#[derive(Debug, Clone)]
pub struct RedisBus {
    redis: RedisClient,
    local: broadcast::Sender<BusEvent>,
    connected: Arc<AtomicBool>,
    publish_script: Arc<Script>,
    moderation_script: Arc<Script>,
}

impl RedisBus {
    /// Creates the bus and starts the node's subscription task; the caller
    /// owns the task's handle and aborts it at shutdown.
    pub fn start(
        redis: RedisClient,
        node_id: String,
        heartbeat: Duration,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (local, _) = broadcast::channel(4096);
        let bus = Self {
            redis,
            local,
            connected: Arc::new(AtomicBool::new(false)),
            publish_script: Arc::new(Script::new(PUBLISH_MESSAGE)),
            moderation_script: Arc::new(Script::new(&format!("{REDACT_HISTORY}{PUBLISH_MESSAGE}"))),
        };
        let task = tokio::spawn(subscription(bus.clone(), node_id, heartbeat));
        (bus, task)
    }

    fn channel(&self) -> String {
        self.redis.key("events")
    }
}

/// Publishes a `SiteChanged` event without a subscription of one's own
/// (the `chatty site` command, which is not a node).
pub async fn announce_site_changed(
    redis: &RedisClient,
    site_id: i64,
    access: bool,
) -> Result<(), StoreError> {
    let envelope = serde_json::to_string(&BusEvent::SiteChanged { site_id, access })
        .map_err(|e| StoreError::Other(e.to_string()))?;
    redis
        .query::<i64>(redis::cmd("PUBLISH").arg(redis.key("events")).arg(envelope))
        .await
        .map(|_| ())
}

impl RedisBus {
    fn recent_key(&self, room_id: i64) -> String {
        self.redis.key(&format!("room:{room_id}:recent"))
    }

    fn last_key(&self, room_id: i64) -> String {
        self.redis.key(&format!("room:{room_id}:last"))
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.redis.options().key_ttl.as_millis()).unwrap_or(u64::MAX)
    }
}

fn parse_messages(raw: Vec<String>) -> Option<Vec<StoredMessage>> {
    raw.iter()
        .map(|json| serde_json::from_str::<StoredMessage>(json).ok())
        .collect()
}

fn contiguous(messages: &[StoredMessage]) -> bool {
    messages
        .windows(2)
        .all(|pair| pair[1].seq == pair[0].seq + 1)
}

#[async_trait]
impl EventBus for RedisBus {
    async fn publish_message(&self, message: &StoredMessage) -> Result<(), StoreError> {
        let json = serde_json::to_string(message).map_err(|e| StoreError::Other(e.to_string()))?;
        let envelope = serde_json::to_string(&BusEvent::Message {
            message: message.clone(),
        })
        .map_err(|e| StoreError::Other(e.to_string()))?;
        let script = match message.kind {
            MessageKind::Delete { .. } | MessageKind::Clear => &self.moderation_script,
            MessageKind::Chat | MessageKind::Removed => &self.publish_script,
        };
        let mut invocation = script.prepare_invoke();
        invocation
            .key(self.recent_key(message.room_id))
            .key(self.last_key(message.room_id))
            .arg(message.seq)
            .arg(json)
            .arg(self.redis.options().history_messages)
            .arg(self.ttl_ms())
            .arg(self.channel())
            .arg(envelope);
        match message.kind {
            MessageKind::Delete { target } => {
                invocation.arg("delete").arg(target);
            }
            MessageKind::Clear => {
                invocation.arg("clear").arg(0);
            }
            MessageKind::Chat | MessageKind::Removed => {}
        }
        self.redis
            .call(async |c| invocation.invoke_async::<i64>(c).await)
            .await
            .map(|_| ())
    }

    async fn publish_site_changed(&self, site_id: i64, access: bool) -> Result<(), StoreError> {
        announce_site_changed(&self.redis, site_id, access).await
    }

    fn subscribe(&self) -> BusReceiver {
        self.local.subscribe()
    }

    fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    fn pool_status(&self) -> Option<crate::PoolStatus> {
        Some(self.redis.pool_status())
    }

    async fn history_after(
        &self,
        room_id: i64,
        after: u64,
        limit: usize,
    ) -> Result<Option<Vec<StoredMessage>>, StoreError> {
        let mut pipe = redis::pipe();
        pipe.get(self.last_key(room_id))
            .cmd("ZRANGEBYSCORE")
            .arg(self.recent_key(room_id))
            .arg(format!("({after}"))
            .arg("+inf")
            .arg("LIMIT")
            .arg(0)
            .arg(limit);
        let (last, raw): (Option<u64>, Vec<String>) =
            self.redis.call(async |c| pipe.query_async(c).await).await?;
        let Some(last) = last else { return Ok(None) };
        let Some(messages) = parse_messages(raw) else {
            return Ok(None);
        };
        let complete = match (messages.first(), messages.last()) {
            (Some(first), Some(newest)) => {
                first.seq == after + 1
                    && contiguous(&messages)
                    && (newest.seq == last || messages.len() == limit)
            }
            _ => last <= after,
        };
        Ok(complete.then_some(messages))
    }

    async fn recent(
        &self,
        room_id: i64,
        limit: usize,
    ) -> Result<Option<Vec<StoredMessage>>, StoreError> {
        let mut pipe = redis::pipe();
        pipe.get(self.last_key(room_id))
            .cmd("ZRANGE")
            .arg(self.recent_key(room_id))
            .arg(0)
            .arg(
                isize::try_from(limit)
                    .unwrap_or(isize::MAX)
                    .saturating_sub(1),
            )
            .arg("REV");
        let (last, raw): (Option<u64>, Vec<String>) =
            self.redis.call(async |c| pipe.query_async(c).await).await?;
        let Some(last) = last else { return Ok(None) };
        let Some(mut messages) = parse_messages(raw) else {
            return Ok(None);
        };
        messages.reverse();
        let complete = match (messages.first(), messages.last()) {
            (Some(first), Some(newest)) => {
                newest.seq == last
                    && contiguous(&messages)
                    && (messages.len() == limit || first.seq == 1)
            }
            _ => last == 0,
        };
        Ok(complete.then_some(messages))
    }

    async fn backfill(
        &self,
        room_id: i64,
        messages: &[StoredMessage],
        last_seq: u64,
    ) -> Result<(), StoreError> {
        let ttl = self.ttl_ms();
        let mut pipe = redis::pipe();
        for message in messages {
            let json =
                serde_json::to_string(message).map_err(|e| StoreError::Other(e.to_string()))?;
            pipe.zadd(self.recent_key(room_id), json, message.seq)
                .ignore();
        }
        let cap = isize::try_from(self.redis.options().history_messages).unwrap_or(isize::MAX);
        pipe.zremrangebyrank(self.recent_key(room_id), 0, -(cap + 1))
            .ignore();
        pipe.pexpire(
            self.recent_key(room_id),
            i64::try_from(ttl).unwrap_or(i64::MAX),
        )
        .ignore();
        // Only ever raise `last`: a concurrent publish may already be ahead.
        pipe.cmd("SET")
            .arg(self.last_key(room_id))
            .arg(last_seq)
            .arg("PX")
            .arg(ttl)
            .arg("NX")
            .ignore();
        self.redis
            .call(async |c| pipe.query_async::<()>(c).await)
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.redis.ping().await
    }
}

/// The node's subscription, reconnecting with backoff for as long as the bus lives.
async fn subscription(bus: RedisBus, node_id: String, heartbeat: Duration) {
    let heartbeat_channel = bus.redis.key(&format!("heartbeat:{node_id}"));
    let mut backoff = Duration::from_millis(100);
    loop {
        if let Err(error) = subscribe_once(&bus, &heartbeat_channel, heartbeat).await {
            tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "redis subscription lost");
        }
        if bus.connected.swap(false, Ordering::Relaxed) {
            // It was up: start the backoff over.
            backoff = Duration::from_millis(100);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn subscribe_once(
    bus: &RedisBus,
    heartbeat_channel: &str,
    heartbeat: Duration,
) -> Result<(), StoreError> {
    let timeout = bus.redis.options().timeout;
    let client = bus.redis.client.clone();
    let mut pubsub = tokio::time::timeout(timeout, client.get_async_pubsub())
        .await
        .map_err(|_| super::unavailable("pub/sub connect timed out"))?
        .map_err(super::unavailable)?;
    let channel = bus.channel();
    tokio::time::timeout(timeout, async {
        pubsub.subscribe(&channel).await?;
        pubsub.subscribe(heartbeat_channel).await
    })
    .await
    .map_err(|_| super::unavailable("subscribe timed out"))?
    .map_err(super::unavailable)?;
    bus.connected.store(true, Ordering::Relaxed);
    tracing::info!(%channel, "redis subscription up");
    // Whatever was published while we were away is recovered by a resync.
    let _ = bus.local.send(BusEvent::Resync);

    let mut messages = pubsub.into_on_message();
    let mut ticker = tokio::time::interval(heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heartbeat = tokio::time::Instant::now();
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else {
                    return Err(super::unavailable("pub/sub connection closed"));
                };
                if message.get_channel_name() == heartbeat_channel {
                    last_heartbeat = tokio::time::Instant::now();
                    continue;
                }
                let payload: Vec<u8> = message.get_payload_bytes().to_vec();
                match serde_json::from_slice::<BusEvent>(&payload) {
                    Ok(BusEvent::Resync) | Err(_) => tracing::warn!("ignoring an unreadable bus message"),
                    Ok(event) => {
                        let _ = bus.local.send(event);
                    }
                }
            }
            _ = ticker.tick() => {
                if last_heartbeat.elapsed() > heartbeat * 3 {
                    return Err(super::unavailable("no heartbeat on the subscription"));
                }
                // The publish goes through the pool; its echo proves the
                // subscription alive. Spawned, so a slow Redis never pauses
                // the reading of events here.
                let redis = bus.redis.clone();
                let channel = heartbeat_channel.to_owned();
                tokio::spawn(async move {
                    let _ = redis.query::<i64>(redis::cmd("PUBLISH").arg(channel).arg("1")).await;
                });
            }
        }
    }
}

//! [`Guard`]: the checks a send or a join passes before it reaches the
//! store — bans, slow mode, repeated messages and token-bucket rate limits —
//! shared by every node of a deployment.
//!
//! ## One round trip
//!
//! In the shared mode a send's checks are **one** Lua script in Redis: it
//! reads the ban keys, the slow-mode key, the repeated-message key and the
//! buckets, and only if all pass does it take a token from every bucket and
//! set the slow-mode and repeat keys. Checking everything before taking
//! anything means a send refused by the per-IP bucket does not also use up
//! the guest's own tokens; doing it in one script makes it atomic, so two
//! nodes cannot both admit the one message slow mode allows. Redis's own
//! clock (`TIME`) times the buckets, so nodes' clocks do not matter.
//!
//! ## Retries are not floods
//!
//! The slow-mode and repeat keys hold the client message id that set them:
//! a retry of the *same* message (same id — the send is idempotent) passes
//! both, so a client that lost an answer can always retry safely.
//!
//! The embedded mode runs the same rules on a map in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::Script;

use crate::error::StoreError;
use crate::redis::RedisClient;

/// A token bucket: holds up to `capacity` tokens, refilled at `per_minute`.
/// `per_minute == 0` turns it off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// Which limit this is, for the refusal (`guest`, `ip`, `site`, `join`).
    pub name: &'static str,
    /// The counter's key (without the deployment prefix).
    pub key: String,
    pub capacity: u32,
    pub per_minute: u32,
}

/// A send to admit.
#[derive(Debug, Clone)]
pub struct SendCheck<'a> {
    pub site_id: i64,
    pub room_id: i64,
    pub guest_id: &'a str,
    pub ip_hash: &'a str,
    pub client_message_id: &'a str,
    /// The body's flood fingerprint.
    pub fingerprint: &'a str,
    /// Slow mode of the site (zero: off).
    pub slow_mode: Duration,
    /// The same text from the same guest within this is refused (zero: off).
    pub repeat_window: Duration,
    pub buckets: Vec<Bucket>,
}

/// A join to admit.
#[derive(Debug, Clone)]
pub struct JoinCheck<'a> {
    pub site_id: i64,
    /// The guest id of the token the visitor rejoins with, if any.
    pub guest_id: Option<&'a str>,
    pub ip_hash: &'a str,
    pub buckets: Vec<Bucket>,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// A ban of the guest id or the IP hash is in force.
    Banned,
    /// Slow mode: the guest's next message is allowed after this.
    SlowMode {
        retry_after: Duration,
    },
    /// The same text again within the repeat window.
    Repeated,
    /// A bucket is empty; a token is back after this.
    Limited {
        bucket: &'static str,
        retry_after: Duration,
    },
}

/// Bans, slow mode, repeats and rate limits, shared by every node.
#[async_trait]
pub trait Guard: Send + Sync + std::fmt::Debug + 'static {
    async fn admit_send(&self, check: &SendCheck<'_>) -> Result<Admission, StoreError>;
    async fn admit_join(&self, check: &JoinCheck<'_>) -> Result<Admission, StoreError>;
    /// Bans a guest id and/or an IP hash of a site until `until` (on every
    /// node at once: the next check anywhere sees it).
    async fn ban(
        &self,
        site_id: i64,
        guest_id: Option<&str>,
        ip_hash: Option<&str>,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Lifts the bans of a guest id and/or an IP hash.
    async fn unban(
        &self,
        site_id: i64,
        guest_id: Option<&str>,
        ip_hash: Option<&str>,
    ) -> Result<(), StoreError>;
}

fn ban_guest_key(site_id: i64, guest_id: &str) -> String {
    format!("guard:ban:{site_id}:g:{guest_id}")
}

fn ban_ip_key(site_id: i64, ip_hash: &str) -> String {
    format!("guard:ban:{site_id}:ip:{ip_hash}")
}

/// Slow mode is per guest across the site's rooms: one message per
/// interval, whichever page it is sent from.
/// The ban keys of a guest id and/or an address.
fn ban_keys(
    site_id: i64,
    guest_id: Option<&str>,
    ip_hash: Option<&str>,
) -> impl Iterator<Item = String> {
    guest_id
        .map(|g| ban_guest_key(site_id, g))
        .into_iter()
        .chain(ip_hash.map(|ip| ban_ip_key(site_id, ip)))
}

fn slow_key(site_id: i64, guest_id: &str) -> String {
    format!("guard:slow:{site_id}:{guest_id}")
}

/// The guest-ban key of a join: a visitor without a guest id yet has none
/// to be banned by, so its key is one no ban ever sets.
fn join_ban_key(site_id: i64, guest_id: Option<&str>) -> String {
    guest_id.map_or_else(|| "guard:none".to_owned(), |g| ban_guest_key(site_id, g))
}

fn repeat_key(site_id: i64, guest_id: &str, fingerprint: &str) -> String {
    format!("guard:repeat:{site_id}:{guest_id}:{fingerprint}")
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How long until a bucket holding `tokens` has one whole token.
fn refill_wait(tokens: f64, per_minute: u32) -> Duration {
    let missing = (1.0 - tokens).max(0.0);
    Duration::from_millis((missing * 60_000.0 / f64::from(per_minute.max(1))).ceil() as u64)
}

// --- Redis -------------------------------------------------------------------

/// KEYS: ban guest, ban ip, slow, repeat, bucket…
/// ARGV: slow ms, client message id, repeat ms, then capacity and
/// per-minute of each bucket. Returns {verdict, bucket index, wait ms}.
const ADMIT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return {'banned', 0, 0} end
local slow_ms = tonumber(ARGV[1])
if slow_ms > 0 then
  local holder = redis.call('GET', KEYS[3])
  if holder and holder ~= ARGV[2] then
    return {'slow', 0, redis.call('PTTL', KEYS[3])}
  end
end
local repeat_ms = tonumber(ARGV[3])
if repeat_ms > 0 then
  local holder = redis.call('GET', KEYS[4])
  if holder and holder ~= ARGV[2] then return {'repeated', 0, 0} end
end
local levels = {}
for i = 5, #KEYS do
  local capacity = tonumber(ARGV[4 + (i - 5) * 2])
  local per_minute = tonumber(ARGV[5 + (i - 5) * 2])
  local state = redis.call('HMGET', KEYS[i], 't', 'ts')
  local tokens = capacity
  if state[1] then
    tokens = math.min(capacity, tonumber(state[1]) + (now - tonumber(state[2])) * per_minute / 60000)
  end
  if tokens < 1 then
    return {'limited', i - 4, math.ceil((1 - tokens) * 60000 / per_minute)}
  end
  levels[i] = tokens
end
for i = 5, #KEYS do
  local capacity = tonumber(ARGV[4 + (i - 5) * 2])
  local per_minute = tonumber(ARGV[5 + (i - 5) * 2])
  redis.call('HSET', KEYS[i], 't', tostring(levels[i] - 1), 'ts', now)
  redis.call('PEXPIRE', KEYS[i], math.ceil(capacity * 60000 / per_minute) + 1000)
end
if slow_ms > 0 then redis.call('SET', KEYS[3], ARGV[2], 'PX', slow_ms) end
if repeat_ms > 0 then redis.call('SET', KEYS[4], ARGV[2], 'PX', repeat_ms) end
return {'ok', 0, 0}
"#;

/// The shared mode's guard: keys in Redis, one script per check.
#[derive(Debug, Clone)]
pub struct RedisGuard {
    redis: RedisClient,
    script: Arc<Script>,
}

impl RedisGuard {
    pub fn new(redis: RedisClient) -> Self {
        Self {
            redis,
            script: Arc::new(Script::new(ADMIT)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn admit(
        &self,
        ban_guest: String,
        ban_ip: String,
        slow: String,
        repeat: String,
        slow_ms: u64,
        client_message_id: &str,
        repeat_ms: u64,
        buckets: &[Bucket],
    ) -> Result<Admission, StoreError> {
        let active: Vec<&Bucket> = buckets.iter().filter(|b| b.per_minute > 0).collect();
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(self.redis.key(&ban_guest))
            .key(self.redis.key(&ban_ip))
            .key(self.redis.key(&slow))
            .key(self.redis.key(&repeat))
            .arg(slow_ms)
            .arg(client_message_id)
            .arg(repeat_ms);
        for bucket in &active {
            invocation
                .key(self.redis.key(&format!("guard:bucket:{}", bucket.key)))
                .arg(bucket.capacity.max(1))
                .arg(bucket.per_minute);
        }
        let (verdict, index, wait_ms): (String, usize, i64) = self
            .redis
            .call(async |c| invocation.invoke_async(c).await)
            .await?;
        let wait = Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0));
        Ok(match verdict.as_str() {
            "banned" => Admission::Banned,
            "slow" => Admission::SlowMode { retry_after: wait },
            "repeated" => Admission::Repeated,
            "limited" => Admission::Limited {
                bucket: active
                    .get(index.saturating_sub(1))
                    .map_or("rate", |b| b.name),
                retry_after: wait,
            },
            _ => Admission::Allowed,
        })
    }
}

#[async_trait]
impl Guard for RedisGuard {
    async fn admit_send(&self, check: &SendCheck<'_>) -> Result<Admission, StoreError> {
        self.admit(
            ban_guest_key(check.site_id, check.guest_id),
            ban_ip_key(check.site_id, check.ip_hash),
            slow_key(check.site_id, check.guest_id),
            repeat_key(check.site_id, check.guest_id, check.fingerprint),
            millis(check.slow_mode),
            check.client_message_id,
            millis(check.repeat_window),
            &check.buckets,
        )
        .await
    }

    async fn admit_join(&self, check: &JoinCheck<'_>) -> Result<Admission, StoreError> {
        self.admit(
            join_ban_key(check.site_id, check.guest_id),
            ban_ip_key(check.site_id, check.ip_hash),
            "guard:none".into(),
            "guard:none".into(),
            0,
            "",
            0,
            &check.buckets,
        )
        .await
    }

    async fn ban(
        &self,
        site_id: i64,
        guest_id: Option<&str>,
        ip_hash: Option<&str>,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let at_ms = until.timestamp_millis();
        // MULTI/EXEC: a key is never left set without its expiry.
        let mut pipe = redis::pipe();
        pipe.atomic();
        for key in ban_keys(site_id, guest_id, ip_hash) {
            let key = self.redis.key(&key);
            // Never shorten a longer ban already in force.
            pipe.cmd("SET").arg(&key).arg(1).arg("KEEPTTL").ignore();
            pipe.cmd("PEXPIREAT")
                .arg(&key)
                .arg(at_ms)
                .arg("GT")
                .ignore();
            pipe.cmd("PEXPIREAT")
                .arg(&key)
                .arg(at_ms)
                .arg("NX")
                .ignore();
        }
        self.redis
            .call(async |c| pipe.query_async::<()>(c).await)
            .await
    }

    async fn unban(
        &self,
        site_id: i64,
        guest_id: Option<&str>,
        ip_hash: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut del = redis::cmd("DEL");
        for key in ban_keys(site_id, guest_id, ip_hash) {
            del.arg(self.redis.key(&key));
        }
        self.redis.query::<i64>(&del).await.map(|_| ())
    }
}

// --- In memory ----------------------------------------------------------------

/// Bound on the keys the in-memory guard keeps before it drops expired ones.
const IN_MEMORY_SWEEP_AT: usize = 100_000;

#[derive(Debug)]
enum Entry {
    /// A ban, slow-mode or repeat key: the client message id that set it.
    Flag { holder: String, expires: Instant },
    Bucket {
        tokens: f64,
        at: Instant,
        expires: Instant,
    },
}

impl Entry {
    fn expires(&self) -> Instant {
        match self {
            Entry::Flag { expires, .. } | Entry::Bucket { expires, .. } => *expires,
        }
    }
}

/// The embedded mode's guard.
#[derive(Debug, Default)]
pub struct InMemoryGuard {
    entries: Mutex<HashMap<String, Entry>>,
}

impl InMemoryGuard {
    #[allow(clippy::too_many_arguments)]
    fn admit(
        &self,
        bans: [String; 2],
        slow: Option<(String, Duration)>,
        repeat: Option<(String, Duration)>,
        client_message_id: &str,
        buckets: &[Bucket],
    ) -> Admission {
        let now = Instant::now();
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() >= IN_MEMORY_SWEEP_AT {
            entries.retain(|_, e| e.expires() > now);
        }
        let live_flag = |entries: &HashMap<String, Entry>, key: &str| match entries.get(key) {
            Some(Entry::Flag { holder, expires }) if *expires > now => {
                Some((holder.clone(), *expires - now))
            }
            _ => None,
        };
        if bans.iter().any(|k| live_flag(&entries, k).is_some()) {
            return Admission::Banned;
        }
        if let Some((key, _)) = &slow
            && let Some((holder, left)) = live_flag(&entries, key)
            && holder != client_message_id
        {
            return Admission::SlowMode { retry_after: left };
        }
        if let Some((key, _)) = &repeat
            && let Some((holder, _)) = live_flag(&entries, key)
            && holder != client_message_id
        {
            return Admission::Repeated;
        }
        let active: Vec<&Bucket> = buckets.iter().filter(|b| b.per_minute > 0).collect();
        let mut levels = Vec::with_capacity(active.len());
        for bucket in &active {
            let capacity = f64::from(bucket.capacity.max(1));
            let rate_per_ms = f64::from(bucket.per_minute) / 60_000.0;
            let tokens = match entries.get(&bucket.key) {
                Some(Entry::Bucket { tokens, at, .. }) => (tokens
                    + now.duration_since(*at).as_millis() as f64 * rate_per_ms)
                    .min(capacity),
                _ => capacity,
            };
            if tokens < 1.0 {
                return Admission::Limited {
                    bucket: bucket.name,
                    retry_after: refill_wait(tokens, bucket.per_minute),
                };
            }
            levels.push(tokens);
        }
        for (bucket, tokens) in active.iter().zip(levels) {
            let full_after = Duration::from_millis(
                u64::from(bucket.capacity.max(1)) * 60_000 / u64::from(bucket.per_minute) + 1000,
            );
            entries.insert(
                bucket.key.clone(),
                Entry::Bucket {
                    tokens: tokens - 1.0,
                    at: now,
                    expires: now + full_after,
                },
            );
        }
        for (key, ttl) in slow.into_iter().chain(repeat) {
            entries.insert(
                key,
                Entry::Flag {
                    holder: client_message_id.to_owned(),
                    expires: now.checked_add(ttl).unwrap_or(now),
                },
            );
        }
        Admission::Allowed
    }
}

#[async_trait]
impl Guard for InMemoryGuard {
    async fn admit_send(&self, check: &SendCheck<'_>) -> Result<Admission, StoreError> {
        Ok(self.admit(
            [
                ban_guest_key(check.site_id, check.guest_id),
                ban_ip_key(check.site_id, check.ip_hash),
            ],
            (!check.slow_mode.is_zero())
                .then(|| (slow_key(check.site_id, check.guest_id), check.slow_mode)),
            (!check.repeat_window.is_zero()).then(|| {
                (
                    repeat_key(check.site_id, check.guest_id, check.fingerprint),
                    check.repeat_window,
                )
            }),
            check.client_message_id,
            &check.buckets,
        ))
    }

    async fn admit_join(&self, check: &JoinCheck<'_>) -> Result<Admission, StoreError> {
        Ok(self.admit(
            [
                join_ban_key(check.site_id, check.guest_id),
                ban_ip_key(check.site_id, check.ip_hash),
            ],
            None,
            None,
            "",
            &check.buckets,
        ))
    }

    async fn ban(
        &self,
        site_id: i64,
        guest_id: Option<&str>,
        ip_hash: Option<&str>,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let left = (until - Utc::now()).to_std().unwrap_or_default();
        let now = Instant::now();
        let expires = now.checked_add(left).unwrap_or(now);
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for key in ban_keys(site_id, guest_id, ip_hash) {
            let longer = match entries.get(&key) {
                Some(existing) => existing.expires().max(expires),
                None => expires,
            };
            entries.insert(
                key,
                Entry::Flag {
                    holder: String::new(),
                    expires: longer,
                },
            );
        }
        Ok(())
    }

    async fn unban(
        &self,
        site_id: i64,
        guest_id: Option<&str>,
        ip_hash: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for key in ban_keys(site_id, guest_id, ip_hash) {
            entries.remove(&key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send<'a>(cmid: &'a str, fingerprint: &'a str, buckets: Vec<Bucket>) -> SendCheck<'a> {
        SendCheck {
            site_id: 1,
            room_id: 2,
            guest_id: "g",
            ip_hash: "ip",
            client_message_id: cmid,
            fingerprint,
            slow_mode: Duration::ZERO,
            repeat_window: Duration::ZERO,
            buckets,
        }
    }

    #[test]
    fn refill_wait_rounds_up_to_the_next_whole_token() {
        assert_eq!(refill_wait(0.0, 60), Duration::from_millis(1000));
        assert_eq!(refill_wait(0.5, 60), Duration::from_millis(500));
        assert_eq!(refill_wait(1.0, 60), Duration::ZERO);
    }

    #[tokio::test]
    async fn an_empty_bucket_refuses_without_taking_from_the_others() {
        let guard = InMemoryGuard::default();
        let buckets = |guest_capacity| {
            vec![
                Bucket {
                    name: "guest",
                    key: "guest:g".into(),
                    capacity: guest_capacity,
                    per_minute: 1,
                },
                Bucket {
                    name: "ip",
                    key: "ip:x".into(),
                    capacity: 2,
                    per_minute: 1,
                },
            ]
        };
        for i in 0..2 {
            let id = format!("m{i}");
            let fp = format!("f{i}");
            assert_eq!(
                guard.admit_send(&send(&id, &fp, buckets(10))).await.ok(),
                Some(Admission::Allowed)
            );
        }
        let refused = guard.admit_send(&send("m2", "f2", buckets(10))).await.ok();
        assert!(
            matches!(refused, Some(Admission::Limited { bucket: "ip", .. })),
            "{refused:?}"
        );
        // The guest bucket lost only the two admitted tokens.
        match guard.entries.lock().map(|e| match e.get("guest:g") {
            Some(Entry::Bucket { tokens, .. }) => *tokens,
            _ => -1.0,
        }) {
            Ok(tokens) => assert!((7.9..8.1).contains(&tokens), "{tokens}"),
            Err(_) => panic!("lock"),
        }
    }
}

//! The shared mode's hot path on Redis (through a deadpool-redis pool).
//!
//! * [`RedisBus`] — one subscription per node on `{prefix}events`; message
//!   publishes also append to a capped per-room history (`{prefix}room:{id}:recent`,
//!   a sorted set scored by seq, with the newest seq in `…:last`).
//! * [`RedisPresence`] — members per room (sorted set by last-seen time,
//!   nicknames in a hash, presence version and epoch), changed only by Lua
//!   scripts that bump the version and publish the change atomically.
//!
//! Every call goes through [`RedisClient`], which bounds it by
//! `redis.timeout_ms` (pool wait included) and counts it, so tests can
//! prove which paths touch Redis. All keys start with the configured
//! prefix, so deployments (and parallel tests) can share one Redis.

mod bus;
mod presence;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deadpool_redis::redis::{self, FromRedisValue};
use deadpool_redis::{Pool, PoolConfig, Runtime, Timeouts};

pub use bus::{RedisBus, announce_site_changed};
pub use presence::RedisPresence;

use crate::error::StoreError;

/// How to reach Redis.
#[derive(Clone)]
pub struct RedisOptions {
    /// `redis://host:port/db`
    pub url: String,
    /// Prefix of every key and channel, e.g. `chatty:`.
    pub key_prefix: String,
    pub pool_size: usize,
    /// Bound on every call, waiting for a pooled connection included.
    pub timeout: Duration,
    /// Messages kept per room in the history.
    pub history_messages: usize,
    /// Lifetime of per-room keys after their last write.
    pub key_ttl: Duration,
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: show the host part only.
        let host = self
            .url
            .rsplit_once('@')
            .map_or(self.url.as_str(), |(_, host)| host);
        f.debug_struct("RedisOptions")
            .field("host", &host)
            .field("key_prefix", &self.key_prefix)
            .field("pool_size", &self.pool_size)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Counters of the calls (round trips) made to Redis.
#[derive(Debug, Default)]
pub struct RedisStats {
    pub calls: AtomicU64,
    pub errors: AtomicU64,
    pub micros: AtomicU64,
    /// Each round trip's duration, for a histogram.
    pub latency: crate::LatencyObserver,
}

impl RedisStats {
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

/// A pooled, bounded, counted Redis client.
#[derive(Clone)]
pub struct RedisClient {
    pool: Pool,
    client: redis::Client,
    options: RedisOptions,
    stats: Arc<RedisStats>,
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClient")
            .field("prefix", &self.options.key_prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(what: impl std::fmt::Display) -> StoreError {
    StoreError::BusUnavailable(format!("redis: {what}"))
}

impl RedisClient {
    /// The pool's connections now.
    pub fn pool_status(&self) -> crate::PoolStatus {
        let status = self.pool.status();
        crate::PoolStatus {
            open: status.size,
            idle: status.available,
            max: status.max_size,
        }
    }

    /// Builds the pool (connections open lazily).
    pub fn new(options: RedisOptions) -> Result<Self, StoreError> {
        let client = redis::Client::open(options.url.as_str())
            .map_err(|e| StoreError::Other(format!("redis url: {e}")))?;
        let mut config = deadpool_redis::Config::from_url(options.url.clone());
        config.pool = Some(PoolConfig {
            max_size: options.pool_size.max(1),
            timeouts: Timeouts {
                wait: Some(options.timeout),
                create: Some(options.timeout),
                recycle: Some(options.timeout),
            },
            ..PoolConfig::default()
        });
        let pool = config
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| StoreError::Other(format!("redis pool: {e}")))?;
        Ok(Self {
            pool,
            client,
            options,
            stats: Arc::new(RedisStats::default()),
        })
    }

    pub fn stats(&self) -> Arc<RedisStats> {
        Arc::clone(&self.stats)
    }

    pub fn options(&self) -> &RedisOptions {
        &self.options
    }

    /// `{prefix}{rest}`
    pub fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.options.key_prefix)
    }

    /// Runs one round trip (a command, a pipeline or a script) within the timeout.
    pub(crate) async fn call<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&mut deadpool_redis::Connection) -> redis::RedisResult<T>,
    {
        let started = Instant::now();
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let result = tokio::time::timeout(self.options.timeout, async {
            let mut connection = self.pool.get().await.map_err(unavailable)?;
            op(&mut connection).await.map_err(unavailable)
        })
        .await
        .unwrap_or_else(|_| {
            Err(unavailable(format!(
                "no answer within {:?}",
                self.options.timeout
            )))
        });
        let elapsed = started.elapsed();
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.stats.micros.fetch_add(micros, Ordering::Relaxed);
        self.stats.latency.observe(elapsed);
        if result.is_err() {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Runs a command.
    pub async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        self.call(async |c| cmd.query_async(c).await).await
    }

    /// `PING`
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.query::<String>(&redis::cmd("PING")).await.map(|_| ())
    }
}

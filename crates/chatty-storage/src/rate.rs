//! Rate-limit counters, shared by every node of a deployment.
//!
//! A fixed window per key: the first hit starts a window of `window`, and
//! at most `limit` hits are allowed in it. In the shared mode the counter
//! is one Redis key (`INCR`, and `PEXPIRE` on the first hit, in one atomic
//! script), so a guest cannot multiply its allowance by spreading requests
//! over nodes; in the embedded mode it is a map in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::Script;

use crate::error::StoreError;
use crate::redis::RedisClient;

/// The answer to a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    Allowed,
    /// Refused; the window ends after this long.
    Limited {
        retry_after: Duration,
    },
}

/// Counts hits per key.
#[async_trait]
pub trait RateLimiter: Send + Sync + std::fmt::Debug + 'static {
    /// Counts one hit on `key` and says whether it is within `limit` per `window`.
    async fn hit(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
    ) -> Result<RateDecision, StoreError>;
}

/// Bound on the keys the in-memory limiter keeps before it drops expired ones.
const IN_MEMORY_SWEEP_AT: usize = 100_000;

/// The embedded mode's limiter.
#[derive(Debug, Default)]
pub struct InMemoryRateLimiter {
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

#[async_trait]
impl RateLimiter for InMemoryRateLimiter {
    async fn hit(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
    ) -> Result<RateDecision, StoreError> {
        let now = Instant::now();
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if windows.len() >= IN_MEMORY_SWEEP_AT {
            windows.retain(|_, (started, _)| now.duration_since(*started) < window);
        }
        let entry = windows.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0) >= window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        Ok(if entry.1 <= limit {
            RateDecision::Allowed
        } else {
            RateDecision::Limited {
                retry_after: window.saturating_sub(now.duration_since(entry.0)),
            }
        })
    }
}

/// KEYS: counter. ARGV: window ms. Returns {count, ms left}.
const HIT: &str = r#"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  left = tonumber(ARGV[1])
end
return {n, left}
"#;

/// The shared mode's limiter: one Redis key per counter.
#[derive(Debug, Clone)]
pub struct RedisRateLimiter {
    redis: RedisClient,
    script: Arc<Script>,
}

impl RedisRateLimiter {
    pub fn new(redis: RedisClient) -> Self {
        Self {
            redis,
            script: Arc::new(Script::new(HIT)),
        }
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn hit(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
    ) -> Result<RateDecision, StoreError> {
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(self.redis.key(&format!("rate:{key}")))
            .arg(u64::try_from(window.as_millis()).unwrap_or(u64::MAX));
        let (count, left_ms): (u64, i64) = self
            .redis
            .call(async |c| invocation.invoke_async(c).await)
            .await?;
        Ok(if count <= u64::from(limit) {
            RateDecision::Allowed
        } else {
            RateDecision::Limited {
                retry_after: Duration::from_millis(u64::try_from(left_ms).unwrap_or(0)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_in_memory_limiter_allows_the_limit_per_window() {
        let limiter = InMemoryRateLimiter::default();
        let window = Duration::from_millis(200);
        for _ in 0..3 {
            assert_eq!(
                limiter.hit("a", 3, window).await.ok(),
                Some(RateDecision::Allowed)
            );
        }
        assert!(matches!(
            limiter.hit("a", 3, window).await,
            Ok(RateDecision::Limited { .. })
        ));
        assert_eq!(
            limiter.hit("b", 3, window).await.ok(),
            Some(RateDecision::Allowed),
            "keys are separate"
        );
        tokio::time::sleep(window).await;
        assert_eq!(
            limiter.hit("a", 3, window).await.ok(),
            Some(RateDecision::Allowed),
            "a new window"
        );
    }
}

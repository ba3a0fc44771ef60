//! Prometheus metrics, in a registry owned by the application (no globals,
//! so two nodes can run in one process — the tests do).
//!
//! Requests are labelled by route *pattern* (`/api/v1/rooms/{room_id}/events`),
//! never by raw path, so label cardinality stays bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chatty_protocol::ErrorCode;
use chatty_storage::{PoolStatus, QueryStats, RedisStats};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::fanout::FanoutStats;

/// The node's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub polls: IntCounterVec,
    /// `polls_total{path="not_modified"}`, resolved once: the hot path.
    pub polls_not_modified: IntCounter,
    pub messages_received: IntCounter,
    pub rooms_in_memory: IntGauge,
    /// `push_connections{transport}`: WebSocket, SSE and long-poll connections held.
    pub push_connections: IntGaugeVec,
    /// `push_disconnects_total{transport,reason}`.
    pub push_disconnects: IntCounterVec,
    /// `messages_delivered_total{transport}`: messages handed to clients
    /// (a poll answer, a push queue), one per message per client.
    pub messages_delivered: IntCounterVec,
    /// `rate_limited_total{code}`: requests refused by a limit.
    pub rate_limited: IntCounterVec,
    /// `moderation_refusals_total{code}`: joins and sends refused by a
    /// moderation rule (ban, word filter, links, nickname guard, origin).
    pub moderation_refusals: IntCounterVec,
    /// `moderation_actions_total{action}`: actions taken through the admin API.
    pub moderation_actions: IntCounterVec,
    db_pool: IntGaugeVec,
    redis_pool: IntGaugeVec,
    query_stats: Arc<QueryStats>,
    fanout: Arc<FanoutStats>,
    /// Push deliveries already added to `messages_delivered` (the fan-out
    /// counts them in an atomic, without a label lookup per message).
    push_delivered_seen: Arc<AtomicU64>,
}

/// Values read at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    pub rooms_in_memory: usize,
    pub db_pool: Option<PoolStatus>,
    pub redis_pool: Option<PoolStatus>,
}

/// Latency buckets (seconds) for storage calls and the fan-out lag: from
/// 100 µs (a Redis call on the same box) to 5 s (a stalled query).
const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

fn histogram(name: &str, help: &str) -> Result<Histogram, prometheus::Error> {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()))
}

fn pool_gauge(name: &str, help: &str) -> Result<IntGaugeVec, prometheus::Error> {
    IntGaugeVec::new(Opts::new(name, help), &["state"])
}

fn set_pool(gauge: &IntGaugeVec, status: PoolStatus) {
    let as_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    gauge.with_label_values(&["open"]).set(as_i64(status.open));
    gauge.with_label_values(&["idle"]).set(as_i64(status.idle));
    gauge
        .with_label_values(&["in_use"])
        .set(as_i64(status.open.saturating_sub(status.idle)));
    gauge.with_label_values(&["max"]).set(as_i64(status.max));
}

impl Metrics {
    pub fn new(
        query_stats: Arc<QueryStats>,
        redis_stats: Option<Arc<RedisStats>>,
        fanout: Arc<FanoutStats>,
    ) -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("chatty".into()), None)?;
        let http_requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route pattern, method and status",
            ),
            &["route", "method", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time to answer, by route pattern",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 5.0,
            ]),
            &["route"],
        )?;
        let polls = IntCounterVec::new(
            Opts::new("polls_total", "Polls by the path that answered them"),
            &["path"],
        )?;
        let messages_received = IntCounter::new(
            "messages_received_total",
            "Messages stored (retries not counted)",
        )?;
        let rooms_in_memory = IntGauge::new("rooms_in_memory", "Rooms held in this node's hub")?;
        let push_connections = IntGaugeVec::new(
            Opts::new(
                "push_connections",
                "Long-lived connections held, by transport",
            ),
            &["transport"],
        )?;
        let push_disconnects = IntCounterVec::new(
            Opts::new(
                "push_disconnects_total",
                "Push connections ended, by transport and reason",
            ),
            &["transport", "reason"],
        )?;
        let messages_delivered = IntCounterVec::new(
            Opts::new(
                "messages_delivered_total",
                "Messages handed to clients, one per message per client, by transport \
                 (poll: in poll answers; push: queued for WebSocket/SSE connections)",
            ),
            &["transport"],
        )?;
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "rate_limited_total",
                "Requests refused by a limit, by error code",
            ),
            &["code"],
        )?;
        let moderation_refusals = IntCounterVec::new(
            Opts::new(
                "moderation_refusals_total",
                "Joins and sends refused by a moderation rule, by error code",
            ),
            &["code"],
        )?;
        let moderation_actions = IntCounterVec::new(
            Opts::new(
                "moderation_actions_total",
                "Actions taken through the admin API (recorded in the audit log), by action",
            ),
            &["action"],
        )?;
        let fanout_lag = histogram(
            "fanout_lag_seconds",
            "From a message's commit (the accepting node's clock) to this node applying it",
        )?;
        let db_duration = histogram("db_query_duration_seconds", "Duration of SQL statements")?;
        let db_pool = pool_gauge(
            "db_pool_connections",
            "Database pool connections by state (open, idle, in_use, max)",
        )?;
        let redis_pool = pool_gauge(
            "redis_pool_connections",
            "Redis pool connections by state (open, idle, in_use, max)",
        )?;
        // Storage calls these at each statement / round trip / message.
        let observe = |h: &Histogram| {
            let h = h.clone();
            move |d: std::time::Duration| h.observe(d.as_secs_f64())
        };
        query_stats.latency.set(observe(&db_duration));
        fanout.lag.set(observe(&fanout_lag));
        if let Some(redis_stats) = &redis_stats {
            let redis_duration = histogram(
                "redis_call_duration_seconds",
                "Duration of Redis round trips",
            )?;
            redis_stats.latency.set(observe(&redis_duration));
            registry.register(Box::new(redis_duration))?;
            registry.register(Box::new(redis_pool.clone()))?;
        }
        registry.register(Box::new(messages_delivered.clone()))?;
        registry.register(Box::new(rate_limited.clone()))?;
        registry.register(Box::new(moderation_refusals.clone()))?;
        registry.register(Box::new(moderation_actions.clone()))?;
        registry.register(Box::new(fanout_lag))?;
        registry.register(Box::new(db_duration))?;
        registry.register(Box::new(db_pool.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        registry.register(Box::new(push_connections.clone()))?;
        registry.register(Box::new(push_disconnects.clone()))?;
        registry.register(Box::new(AtomicTotals::fanout(Arc::clone(&fanout))?))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(polls.clone()))?;
        registry.register(Box::new(messages_received.clone()))?;
        registry.register(Box::new(AtomicTotals::sql(Arc::clone(&query_stats))?))?;
        if let Some(redis_stats) = redis_stats {
            registry.register(Box::new(AtomicTotals::redis(redis_stats)?))?;
        }
        registry.register(Box::new(rooms_in_memory.clone()))?;
        let polls_not_modified = polls.with_label_values(&["not_modified"]);
        Ok(Self {
            polls_not_modified,
            registry,
            http_requests,
            http_duration,
            polls,
            messages_received,
            rooms_in_memory,
            push_connections,
            push_disconnects,
            messages_delivered,
            rate_limited,
            moderation_refusals,
            moderation_actions,
            db_pool,
            redis_pool,
            query_stats,
            fanout,
            push_delivered_seen: Arc::new(AtomicU64::new(0)),
        })
    }

    /// SQL statements sent so far.
    pub fn db_queries(&self) -> u64 {
        self.query_stats.queries()
    }

    /// Counts a refusal by a limit (from the error code of a response).
    pub fn count_refusal(&self, code: ErrorCode) {
        use ErrorCode::*;
        match code {
            RateLimited | TooManyConnections | NodeFull | SlowMode | RepeatedMessage => {
                self.rate_limited.with_label_values(&[code.as_str()]).inc();
            }
            Banned | WordFiltered | TooManyLinks | NicknameTaken | NicknameReserved
            | OriginNotAllowed => {
                self.moderation_refusals
                    .with_label_values(&[code.as_str()])
                    .inc();
            }
            _ => {}
        }
    }

    /// The text exposition format.
    pub fn render(&self, snapshot: Snapshot) -> String {
        self.rooms_in_memory
            .set(i64::try_from(snapshot.rooms_in_memory).unwrap_or(i64::MAX));
        if let Some(status) = snapshot.db_pool {
            set_pool(&self.db_pool, status);
        }
        if let Some(status) = snapshot.redis_pool {
            set_pool(&self.redis_pool, status);
        }
        let pushed = self.fanout.messages_queued.load(Ordering::Relaxed);
        let before = self.push_delivered_seen.swap(pushed, Ordering::Relaxed);
        self.messages_delivered
            .with_label_values(&["push"])
            .inc_by(pushed.saturating_sub(before));
        self.messages_delivered.with_label_values(&["poll"]);
        let mut buffer = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// Reads a set of totals kept as atomics elsewhere.
type ReadTotals = Box<dyn Fn() -> Vec<f64> + Send + Sync>;

/// Exports totals that other crates keep as atomics (SQL statements, Redis
/// calls) as Prometheus counters, read at scrape time.
struct AtomicTotals {
    names: Vec<(&'static str, &'static str)>,
    read: ReadTotals,
    descs: Vec<prometheus::core::Desc>,
}

impl std::fmt::Debug for AtomicTotals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtomicTotals")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl AtomicTotals {
    fn new(
        names: Vec<(&'static str, &'static str)>,
        read: ReadTotals,
    ) -> Result<Self, prometheus::Error> {
        let mut descs = Vec::new();
        for (name, help) in &names {
            let counter = prometheus::Counter::new(*name, *help)?;
            descs.extend(
                prometheus::core::Collector::desc(&counter)
                    .into_iter()
                    .cloned(),
            );
        }
        Ok(Self { names, read, descs })
    }

    fn sql(stats: Arc<QueryStats>) -> Result<Self, prometheus::Error> {
        Self::new(
            vec![
                ("db_queries_total", "SQL statements sent since start"),
                ("db_query_errors_total", "SQL statements that failed"),
                ("db_query_seconds_total", "Time spent in SQL statements"),
            ],
            Box::new(move || {
                use std::sync::atomic::Ordering::Relaxed;
                vec![
                    stats.queries.load(Relaxed) as f64,
                    stats.failed.load(Relaxed) as f64,
                    stats.micros.load(Relaxed) as f64 / 1e6,
                ]
            }),
        )
    }

    fn fanout(stats: Arc<FanoutStats>) -> Result<Self, prometheus::Error> {
        Self::new(
            vec![
                (
                    "push_frames_queued_total",
                    "Frames queued for push connections (one per event per connection)",
                ),
                (
                    "push_slow_consumers_total",
                    "Push connections let go because their queue was full",
                ),
            ],
            Box::new(move || {
                use std::sync::atomic::Ordering::Relaxed;
                vec![
                    stats.frames_queued.load(Relaxed) as f64,
                    stats.slow_consumers.load(Relaxed) as f64,
                ]
            }),
        )
    }

    fn redis(stats: Arc<RedisStats>) -> Result<Self, prometheus::Error> {
        Self::new(
            vec![
                (
                    "redis_calls_total",
                    "Redis round trips (commands, pipelines, scripts)",
                ),
                (
                    "redis_call_errors_total",
                    "Redis round trips that failed or timed out",
                ),
                (
                    "redis_call_seconds_total",
                    "Time spent in Redis round trips",
                ),
            ],
            Box::new(move || {
                use std::sync::atomic::Ordering::Relaxed;
                vec![
                    stats.calls.load(Relaxed) as f64,
                    stats.errors.load(Relaxed) as f64,
                    stats.micros.load(Relaxed) as f64 / 1e6,
                ]
            }),
        )
    }
}

impl prometheus::core::Collector for AtomicTotals {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.names
            .iter()
            .zip((self.read)())
            .filter_map(|((name, help), value)| {
                let counter = prometheus::Counter::new(*name, *help).ok()?;
                counter.inc_by(value);
                Some(prometheus::core::Collector::collect(&counter))
            })
            .flatten()
            .collect()
    }
}

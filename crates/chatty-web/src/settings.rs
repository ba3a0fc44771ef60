//! Typed configuration, loaded in layers by the `config` crate:
//!
//! 1. compiled defaults ([`Settings::default`]) — enough to run a complete
//!    single node with no configuration at all;
//! 2. a TOML file: `chatty.toml` in the working directory if present, or the
//!    file named by `CHATTY_CONFIG` (then it must exist);
//! 3. environment variables `CHATTY__SECTION__KEY` (for example
//!    `CHATTY__SERVER__PORT=9000`).
//!
//! Every struct denies unknown fields, so a misspelt key stops the start
//! with a message naming it instead of being silently ignored. Every key is
//! documented in `docs/configuration.md`; a test keeps `config/example.toml`
//! equal to the defaults.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use serde::{Deserialize, Serialize};

/// All of Chatty's settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub chat: ChatSettings,
    pub auth: AuthSettings,
    pub redis: RedisSettings,
    pub push: PushSettings,
    pub log: LogSettings,
    pub demo: DemoSettings,
    pub limits: LimitSettings,
    pub privacy: PrivacySettings,
    pub admin: AdminSettings,
}

/// The HTTP listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address to bind. `127.0.0.1` keeps a single node private; a node
    /// behind a load balancer binds the address the balancer reaches.
    pub host: String,
    /// Port to bind; 0 picks a free one (tests).
    pub port: u16,
    /// actix-web worker threads; 0 = one per CPU core.
    pub workers: usize,
    /// Largest request body accepted, in bytes. Larger bodies are refused
    /// from their `Content-Length` before being read.
    pub max_request_bytes: usize,
    /// On shutdown, how long in-flight requests may take to finish.
    pub shutdown_timeout_secs: u64,
    /// How long an idle keep-alive connection is kept open. It must be
    /// longer than the load balancer's idle timeout for its upstream
    /// connections (the shipped nginx: `keepalive_timeout 60s`): a node that
    /// closes first races nginx reusing the connection, and the request
    /// nginx just wrote on it fails (a 502 for a send, which is not retried).
    pub keep_alive_secs: u64,
    /// Proxies whose `X-Forwarded-For` is believed (addresses or CIDR
    /// ranges). The client's address is the right-most one in the header
    /// that is not a trusted proxy; a request from any other peer is
    /// taken to come from the peer itself, whatever headers it sends.
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub trusted_proxies: Vec<String>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            workers: 0,
            max_request_bytes: 32 * 1024,
            shutdown_timeout_secs: 10,
            keep_alive_secs: 75,
            trusted_proxies: vec!["127.0.0.1".into(), "::1".into()],
        }
    }
}

/// The durable store.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// `sqlite://PATH?mode=rwc` (embedded default; the directory is created)
    /// or `mysql://USER:PASSWORD@HOST:PORT/DATABASE`.
    pub url: String,
    pub max_connections: u32,
    pub min_connections: u32,
    /// Bound on opening a connection or waiting for a free pooled one.
    pub connect_timeout_ms: u64,
    /// Bound on every database call (a send's whole transaction included).
    pub query_timeout_ms: u64,
}

impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &redact_url_password(&self.url))
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("query_timeout_ms", &self.query_timeout_ms)
            .finish()
    }
}

/// `mysql://user:secret@host/db` → `mysql://user:***@host/db`.
pub fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((credentials, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: "sqlite://data/chatty.db?mode=rwc".into(),
            max_connections: 10,
            min_connections: 0,
            connect_timeout_ms: 5000,
            query_timeout_ms: 5000,
        }
    }
}

impl DatabaseSettings {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    pub fn query_timeout(&self) -> Duration {
        Duration::from_millis(self.query_timeout_ms)
    }
}

/// Chat behaviour.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ChatSettings {
    /// How often widgets poll, in milliseconds (sent to them on join).
    pub poll_interval_ms: u64,
    /// A guest silent for this many poll intervals leaves the room.
    pub presence_timeout_polls: u32,
    /// Messages sent on join (initial sync). At most `window_messages`.
    pub history_messages: usize,
    /// Messages each node keeps in memory per active room; polls within this
    /// window are answered without touching the database.
    pub window_messages: usize,
    /// Join/leave events kept in memory per room for presence diffs; a
    /// client further behind gets a full member list.
    pub presence_log_events: usize,
    /// Longest message body, in characters.
    pub max_body_chars: usize,
    /// Most message events in one poll answer (`more: true` beyond).
    pub max_events_per_poll: usize,
    /// A room nobody polled for this long is dropped from memory.
    pub room_idle_secs: u64,
    /// How often a node hands the guests its polls saw to the presence
    /// store (one batched call for all its rooms) and expires silent ones.
    /// Capped at a third of the presence timeout.
    pub presence_flush_ms: u64,
    /// Refill rate of a guest's send bucket (all rooms of the site, counted
    /// across all nodes; the bucket holds `limits.guest_burst`): messages a
    /// guest may send per minute in the long run. Beyond: 429
    /// `rate_limited` with `Retry-After`. 0 turns the guest bucket off.
    pub sends_per_minute: u32,
    /// How often a node compares its rooms with the database's newest
    /// message (one query), to recover a message whose announcement was lost.
    pub reconcile_secs: u64,
    /// How far behind (in messages) a client may resume from its cursor, on
    /// any transport; further behind it gets a `reset` event with reason
    /// `resume_failed` and joins afresh.
    pub resume_max_messages: u64,
    /// Most members listed in a join answer or a `members` event; a larger
    /// room sends a sample of this many and the exact count.
    pub member_list_max: usize,
}

impl Default for ChatSettings {
    fn default() -> Self {
        Self {
            poll_interval_ms: 2000,
            presence_timeout_polls: 3,
            history_messages: 50,
            window_messages: 256,
            presence_log_events: 256,
            max_body_chars: chatty_protocol::validate::DEFAULT_BODY_MAX_CHARS,
            max_events_per_poll: 200,
            room_idle_secs: 600,
            presence_flush_ms: 1000,
            sends_per_minute: 30,
            reconcile_secs: 30,
            resume_max_messages: 1000,
            member_list_max: 100,
        }
    }
}

impl ChatSettings {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
    pub fn presence_timeout(&self) -> Duration {
        self.poll_interval() * self.presence_timeout_polls
    }
    /// The presence flush period actually used: `presence_flush_ms`, but
    /// never more than a third of the presence timeout.
    pub fn presence_flush(&self) -> Duration {
        Duration::from_millis(self.presence_flush_ms).min(self.presence_timeout() / 3)
    }
}

/// Push transports (WebSocket, Server-Sent Events, long-poll) and their limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PushSettings {
    /// Frames queued per connection for a client that reads slowly; when the
    /// queue is full the connection is closed (`slow_consumer`) and the
    /// client resumes from its cursor.
    pub queue_frames: usize,
    /// WebSocket, SSE and long-poll connections this node holds at most
    /// (503 `node_full` beyond). Each needs a file descriptor: raise the
    /// process's open-file limit to match.
    pub max_connections: usize,
    /// Push connections one client address may hold (429 `too_many_connections`).
    pub max_connections_per_ip: usize,
    /// Largest WebSocket frame a client may send, in bytes (close 1009 beyond).
    pub max_frame_bytes: usize,
    /// Seconds between WebSocket pings from the server.
    pub ping_interval_secs: u64,
    /// A WebSocket client that sends nothing (not even a pong) for this many
    /// seconds is closed.
    pub idle_timeout_secs: u64,
    /// Seconds between SSE keep-alive comments.
    pub sse_keepalive_secs: u64,
    /// Longest a long-poll is held, in seconds (a client asks with `wait`).
    pub long_poll_max_secs: u64,
    /// Milliseconds a new connection has to send its request head (the
    /// WebSocket handshake included) before it is closed.
    pub handshake_timeout_ms: u64,
    /// Seconds unacknowledged data may sit on a connection (a peer that
    /// stopped reading, or vanished) before the kernel drops it
    /// (`TCP_USER_TIMEOUT`); 0 leaves the system default.
    pub write_timeout_secs: u64,
}

impl Default for PushSettings {
    fn default() -> Self {
        Self {
            queue_frames: 64,
            max_connections: 50_000,
            max_connections_per_ip: 64,
            max_frame_bytes: 4096,
            ping_interval_secs: 25,
            idle_timeout_secs: 60,
            sse_keepalive_secs: 15,
            long_poll_max_secs: 25,
            handshake_timeout_ms: 5000,
            write_timeout_secs: 30,
        }
    }
}

impl PushSettings {
    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.ping_interval_secs)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
    pub fn sse_keepalive(&self) -> Duration {
        Duration::from_secs(self.sse_keepalive_secs)
    }
    pub fn long_poll_max(&self) -> Duration {
        Duration::from_secs(self.long_poll_max_secs)
    }
}

/// Redis: empty `url` = the embedded mode (in-process bus and presence);
/// set = the shared mode, where any number of nodes share MySQL and Redis.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSettings {
    /// `redis://HOST:PORT/DB`; empty for the embedded mode.
    pub url: String,
    /// Prefix of every Redis key and channel; deployments sharing one Redis
    /// need different prefixes.
    pub key_prefix: String,
    /// Pooled connections per node (the subscription has its own).
    pub pool_size: usize,
    /// Bound on every Redis call, waiting for a pooled connection included.
    pub timeout_ms: u64,
    /// Messages kept per room in Redis (the history nodes load rooms from).
    pub history_messages: usize,
    /// Per-room keys expire this long after their last write.
    pub key_ttl_secs: u64,
    /// How often a node checks its subscription with a heartbeat; it
    /// reconnects when three are missed.
    pub heartbeat_ms: u64,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: String::new(),
            key_prefix: "chatty:".into(),
            pool_size: 16,
            timeout_ms: 1000,
            history_messages: 256,
            key_ttl_secs: 86_400,
            heartbeat_ms: 2000,
        }
    }
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redact_url_password(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("pool_size", &self.pool_size)
            .field("timeout_ms", &self.timeout_ms)
            .field("history_messages", &self.history_messages)
            .field("key_ttl_secs", &self.key_ttl_secs)
            .field("heartbeat_ms", &self.heartbeat_ms)
            .finish()
    }
}

impl RedisSettings {
    /// Is this node part of a shared deployment?
    pub fn shared_mode(&self) -> bool {
        !self.url.is_empty()
    }
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// A string that never appears in logs or `Debug` output.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "Secret(<empty>)"
        } else {
            "Secret(***)"
        })
    }
}

/// Guest tokens.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// HMAC key for guest tokens, at least 32 bytes. Empty: a random key
    /// per process (fine for one node; tokens die with the process). Nodes
    /// that share a database must share this secret.
    pub token_secret: Secret,
    /// Lifetime of a guest token in seconds.
    pub token_ttl_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            token_secret: Secret::default(),
            token_ttl_secs: 24 * 3600,
        }
    }
}

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `text` (human-readable) or `json` (one object per line).
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `info,chatty_web::request=debug`.
    pub filter: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The demo site that `/` embeds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DemoSettings {
    /// Serve the demo page at `/` and create the demo site at start.
    pub enabled: bool,
    pub site_key: String,
    pub site_name: String,
    /// Origins allowed to use the demo site's widget; `*` allows any. In the
    /// environment, a comma-separated list.
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub allowed_origins: Vec<String>,
}

impl Default for DemoSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            site_key: "demo".into(),
            site_name: "Chatty demo".into(),
            allowed_origins: vec!["*".into()],
        }
    }
}

/// Abuse protection: token buckets shared by every node (through Redis in
/// the shared mode), repeated messages and links. A bucket holds `burst`
/// tokens and gets back `per_minute` of them a minute; a request takes one.
/// `0` per minute turns that bucket off. The guest's own send bucket refills
/// at `chat.sends_per_minute`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Messages a guest may send at once before `chat.sends_per_minute` applies.
    pub guest_burst: u32,
    /// Messages per minute from one IP address, all its guests together.
    pub ip_sends_per_minute: u32,
    pub ip_burst: u32,
    /// Messages per minute to one site, all rooms and guests together.
    pub site_sends_per_minute: u32,
    pub site_burst: u32,
    /// Joins per minute from one IP address.
    pub joins_per_minute_per_ip: u32,
    pub join_burst: u32,
    /// The same text from the same guest again within this many seconds is
    /// refused (`repeated_message`); 0 turns it off.
    pub repeat_window_secs: u64,
    /// Most links (URLs, `www.` hosts, bare domains) in one message.
    pub max_links_per_message: usize,
    /// Addresses or CIDR ranges the per-IP buckets do not count (a load
    /// generator, a monitoring probe). In the environment, comma-separated.
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub exempt_ips: Vec<String>,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            guest_burst: 5,
            ip_sends_per_minute: 120,
            ip_burst: 30,
            site_sends_per_minute: 6000,
            site_burst: 600,
            joins_per_minute_per_ip: 60,
            join_burst: 30,
            repeat_window_secs: 30,
            max_links_per_message: 3,
            exempt_ips: Vec::new(),
        }
    }
}

/// What Chatty keeps about visitors.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacySettings {
    /// Key of the salted hash that replaces every IP address Chatty keeps
    /// (HMAC-SHA256; IPv6 addresses by their /64). Empty: a random salt is
    /// created once and stored in the database, so every node uses the same.
    pub ip_hash_salt: Secret,
    /// Messages older than this many days are deleted by a background job
    /// on every node; 0 keeps them forever.
    pub retention_days: u32,
    /// How often the retention job runs, in seconds.
    pub retention_interval_secs: u64,
}

impl Default for PrivacySettings {
    fn default() -> Self {
        Self {
            ip_hash_salt: Secret::default(),
            retention_days: 30,
            retention_interval_secs: 3600,
        }
    }
}

/// Site administration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// A token (at least 32 characters) that may create sites and
    /// administer every site over the admin API; empty turns it off (sites
    /// are then created with `chatty site create`).
    pub operator_token: Secret,
    /// Chatty's public base URL (`https://chat.example.com`), written into
    /// embed snippets; empty: taken from the request (or
    /// `http://HOST:PORT` on the command line).
    pub public_url: String,
}

/// Accepts a list, or a comma-separated string (how lists arrive from
/// environment variables).
fn list_or_comma_separated<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrString {
        List(Vec<String>),
        String(String),
    }
    Ok(match ListOrString::deserialize(d)? {
        ListOrString::List(items) => items,
        ListOrString::String(text) => text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("configuration error: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration error: key `{key}`: {problem}")]
    Invalid { key: &'static str, problem: String },
}

impl Settings {
    /// Loads defaults < file < environment, from the real environment.
    pub fn load() -> Result<Self, SettingsError> {
        let file = std::env::var_os("CHATTY_CONFIG").map(PathBuf::from);
        Self::load_from(file, std::env::vars())
    }

    /// Loads defaults < `file` (or `./chatty.toml` if present) < `env`.
    /// Taking the environment as a parameter lets tests run in parallel.
    pub fn load_from(
        file: Option<PathBuf>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SettingsError> {
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(key, _)| key.starts_with("CHATTY__"))
            .collect();
        let file_source = match file {
            Some(path) => File::from(path).format(FileFormat::Toml).required(true),
            None => File::new("chatty.toml", FileFormat::Toml).required(false),
        };
        let settings: Settings = Config::builder()
            .add_source(Config::try_from(&Settings::default())?)
            .add_source(file_source)
            .add_source(
                Environment::with_prefix("CHATTY")
                    .prefix_separator("__")
                    .separator("__")
                    // No `try_parsing`: it would turn a numeric-looking secret into a
                    // number. Typed fields parse their strings during deserialisation.
                    .source(Some(env)),
            )
            .build()?
            .try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks rules between keys that serde cannot express.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |key, problem: &str| {
            Err(SettingsError::Invalid {
                key,
                problem: problem.to_owned(),
            })
        };
        let chat = &self.chat;
        if chat.poll_interval_ms == 0 {
            return invalid("chat.poll_interval_ms", "must be at least 1");
        }
        if chat.presence_timeout_polls == 0 {
            return invalid("chat.presence_timeout_polls", "must be at least 1");
        }
        if chat.window_messages == 0 {
            return invalid("chat.window_messages", "must be at least 1");
        }
        if chat.history_messages > chat.window_messages {
            return invalid(
                "chat.history_messages",
                "must not exceed chat.window_messages",
            );
        }
        if chat.max_body_chars == 0 {
            return invalid("chat.max_body_chars", "must be at least 1");
        }
        if chat.member_list_max == 0 {
            return invalid("chat.member_list_max", "must be at least 1");
        }
        if chat.max_events_per_poll == 0 {
            return invalid("chat.max_events_per_poll", "must be at least 1");
        }
        // A body of max_body_chars characters of up to 4 UTF-8 bytes each must fit.
        if self.server.max_request_bytes < chat.max_body_chars * 4 + 256 {
            return invalid(
                "server.max_request_bytes",
                "must be at least 4 × chat.max_body_chars + 256",
            );
        }
        let secret = self.auth.token_secret.expose();
        if !secret.is_empty() && secret.len() < 32 {
            return invalid(
                "auth.token_secret",
                "must be empty (random per process) or at least 32 bytes long",
            );
        }
        if self.auth.token_ttl_secs == 0 {
            return invalid("auth.token_ttl_secs", "must be at least 1");
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections", "must be at least 1");
        }
        if self.database.url.starts_with("mysql://") && self.database.max_connections < 2 {
            // One connection holds the migration lock while another migrates.
            return invalid("database.max_connections", "must be at least 2 with MySQL");
        }
        if self.database.min_connections > self.database.max_connections {
            return invalid(
                "database.min_connections",
                "must not exceed database.max_connections",
            );
        }
        if self.database.query_timeout_ms == 0 {
            return invalid("database.query_timeout_ms", "must be at least 1");
        }
        if self.database.connect_timeout_ms == 0 {
            return invalid("database.connect_timeout_ms", "must be at least 1");
        }
        if !(self.database.url.starts_with("sqlite:") || self.database.url.starts_with("mysql://"))
        {
            return invalid("database.url", "must start with sqlite: or mysql://");
        }
        if chat.presence_flush_ms == 0 {
            return invalid("chat.presence_flush_ms", "must be at least 1");
        }
        if chat.reconcile_secs == 0 {
            return invalid("chat.reconcile_secs", "must be at least 1");
        }
        if chat.resume_max_messages == 0 {
            return invalid("chat.resume_max_messages", "must be at least 1");
        }
        let push = &self.push;
        if push.max_connections == 0 {
            return invalid("push.max_connections", "must be at least 1");
        }
        if push.max_connections_per_ip == 0 {
            return invalid("push.max_connections_per_ip", "must be at least 1");
        }
        if push.queue_frames == 0 {
            return invalid("push.queue_frames", "must be at least 1");
        }
        if push.max_frame_bytes < 125 {
            return invalid(
                "push.max_frame_bytes",
                "must be at least 125 (a control frame)",
            );
        }
        if push.ping_interval_secs == 0 {
            return invalid("push.ping_interval_secs", "must be at least 1");
        }
        if push.idle_timeout_secs <= push.ping_interval_secs {
            return invalid(
                "push.idle_timeout_secs",
                "must be longer than push.ping_interval_secs (a client answers pings)",
            );
        }
        if push.sse_keepalive_secs == 0 {
            return invalid("push.sse_keepalive_secs", "must be at least 1");
        }
        if push.handshake_timeout_ms == 0 {
            return invalid("push.handshake_timeout_ms", "must be at least 1");
        }
        let redis = &self.redis;
        if redis.shared_mode() {
            // TLS (`rediss://`) is not compiled in: Redis is expected on the
            // private network of the database box.
            if !redis.url.starts_with("redis://") {
                return invalid(
                    "redis.url",
                    "must be empty (embedded mode) or start with redis://",
                );
            }
            if !self.database.url.starts_with("mysql://") {
                return invalid(
                    "database.url",
                    "the shared mode (redis.url set) needs a mysql:// database shared by every node",
                );
            }
            if self.auth.token_secret.expose().is_empty() {
                return invalid(
                    "auth.token_secret",
                    "the shared mode needs a secret shared by every node (32 bytes or more)",
                );
            }
        }
        if redis.pool_size == 0 {
            return invalid("redis.pool_size", "must be at least 1");
        }
        if redis.timeout_ms == 0 {
            return invalid("redis.timeout_ms", "must be at least 1");
        }
        if redis.history_messages < chat.window_messages {
            return invalid(
                "redis.history_messages",
                "must be at least chat.window_messages",
            );
        }
        if redis.key_ttl_secs == 0 {
            return invalid("redis.key_ttl_secs", "must be at least 1");
        }
        if redis.heartbeat_ms == 0 {
            return invalid("redis.heartbeat_ms", "must be at least 1");
        }
        for entry in &self.server.trusted_proxies {
            if crate::client_ip::parse_net(entry).is_none() {
                return invalid(
                    "server.trusted_proxies",
                    &format!("{entry:?} is not an IP address or CIDR range"),
                );
            }
        }
        for entry in &self.limits.exempt_ips {
            if crate::client_ip::parse_net(entry).is_none() {
                return invalid(
                    "limits.exempt_ips",
                    &format!("{entry:?} is not an IP address or CIDR range"),
                );
            }
        }
        let operator = self.admin.operator_token.expose();
        if !operator.is_empty() && operator.len() < 32 {
            return invalid("admin.operator_token", "must be at least 32 characters");
        }
        if self.limits.repeat_window_secs > 86_400 {
            return invalid("limits.repeat_window_secs", "must be at most 86400 (a day)");
        }
        if self.privacy.retention_interval_secs == 0 {
            return invalid("privacy.retention_interval_secs", "must be at least 1");
        }
        if self.demo.enabled
            && chatty_protocol::validate::SiteKey::parse(&self.demo.site_key).is_err()
        {
            return invalid(
                "demo.site_key",
                "must be 1-64 characters of A-Z a-z 0-9 - _",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn toml_file(contents: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile()
            .expect("temp file");
        file.write_all(contents.as_bytes()).expect("write");
        file
    }

    fn error_text(result: Result<Settings, SettingsError>) -> String {
        result.expect_err("must be refused").to_string()
    }

    /// The shipped nginx keeps idle upstream connections `keepalive_timeout`
    /// long; a node that closed them sooner would race nginx's reuse.
    #[test]
    fn the_default_keep_alive_outlasts_nginx_upstream_idle_timeout() {
        let nginx = include_str!("../../../nginx/chatty-http.conf");
        let upstream = nginx
            .split("\nupstream chatty {")
            .nth(1)
            .and_then(|block| block.split("\n}").next())
            .expect("the upstream block");
        let nginx_secs: u64 = upstream
            .lines()
            .find_map(|line| line.trim().strip_prefix("keepalive_timeout "))
            .and_then(|value| value.trim_end_matches(';').strip_suffix('s'))
            .and_then(|secs| secs.parse().ok())
            .expect("keepalive_timeout in seconds in the upstream block");
        let node_secs = Settings::default().server.keep_alive_secs;
        assert!(
            node_secs > nginx_secs,
            "server.keep_alive_secs ({node_secs}) must exceed nginx's upstream keepalive_timeout ({nginx_secs})"
        );
    }

    #[test]
    fn no_configuration_gives_the_defaults() {
        let settings = Settings::load_from(None, env(&[])).expect("defaults load");
        assert_eq!(settings, Settings::default());
        assert_eq!(settings.server.port, 8080);
        assert_eq!(settings.server.host, "127.0.0.1");
        assert!(settings.database.url.starts_with("sqlite:"));
    }

    #[test]
    fn the_environment_overrides_the_file_which_overrides_defaults() {
        let file =
            toml_file("[server]\nport = 9000\nworkers = 3\n[chat]\npoll_interval_ms = 1500\n");
        let settings = Settings::load_from(
            Some(file.path().to_owned()),
            env(&[
                ("CHATTY__SERVER__PORT", "9100"),
                (
                    "CHATTY__DEMO__ALLOWED_ORIGINS",
                    "https://a.example,https://b.example",
                ),
                (
                    "CHATTY__AUTH__TOKEN_SECRET",
                    "0123456789012345678901234567890123",
                ),
                ("UNRELATED", "ignored"),
            ]),
        )
        .expect("loads");
        assert_eq!(settings.server.port, 9100, "env beats file");
        assert_eq!(settings.server.workers, 3, "file beats default");
        assert_eq!(settings.chat.poll_interval_ms, 1500);
        assert_eq!(
            settings.demo.allowed_origins,
            vec!["https://a.example", "https://b.example"]
        );
        assert_eq!(
            settings.auth.token_secret.expose(),
            "0123456789012345678901234567890123"
        );
        assert_eq!(
            settings.chat.history_messages,
            ChatSettings::default().history_messages
        );
    }

    #[test]
    fn an_unknown_key_in_the_file_stops_the_start_naming_it() {
        let file = toml_file("[server]\nprot = 9000\n");
        let text = error_text(Settings::load_from(Some(file.path().to_owned()), env(&[])));
        assert!(text.contains("prot"), "{text}");
        let file = toml_file("[sever]\nport = 9000\n");
        let text = error_text(Settings::load_from(Some(file.path().to_owned()), env(&[])));
        assert!(text.contains("sever"), "{text}");
    }

    #[test]
    fn an_unknown_environment_key_stops_the_start_naming_it() {
        let text = error_text(Settings::load_from(
            None,
            env(&[("CHATTY__CHAT__POLL_INTERVAL", "5")]),
        ));
        assert!(text.contains("poll_interval"), "{text}");
    }

    #[test]
    fn a_bad_value_stops_the_start_naming_the_key() {
        let text = error_text(Settings::load_from(
            None,
            env(&[("CHATTY__SERVER__PORT", "eighty")]),
        ));
        assert!(text.contains("server.port"), "{text}");
        let text = error_text(Settings::load_from(
            None,
            env(&[("CHATTY__LOG__FORMAT", "xml")]),
        ));
        assert!(text.contains("log.format"), "{text}");
        let file = toml_file("[chat]\nmax_body_chars = -5\n");
        let text = error_text(Settings::load_from(Some(file.path().to_owned()), env(&[])));
        assert!(text.contains("chat.max_body_chars"), "{text}");
    }

    #[test]
    fn rules_between_keys_are_checked() {
        let text = error_text(Settings::load_from(
            None,
            env(&[
                ("CHATTY__CHAT__HISTORY_MESSAGES", "500"),
                ("CHATTY__CHAT__WINDOW_MESSAGES", "100"),
            ]),
        ));
        assert!(text.contains("chat.history_messages"), "{text}");
        let text = error_text(Settings::load_from(
            None,
            env(&[("CHATTY__AUTH__TOKEN_SECRET", "short")]),
        ));
        assert!(text.contains("auth.token_secret"), "{text}");
        let text = error_text(Settings::load_from(
            None,
            env(&[("CHATTY__DATABASE__URL", "postgres://x")]),
        ));
        assert!(text.contains("database.url"), "{text}");
    }

    #[test]
    fn a_missing_explicit_file_is_an_error() {
        let result = Settings::load_from(Some(PathBuf::from("/nonexistent/chatty.toml")), env(&[]));
        assert!(result.is_err());
    }

    #[test]
    fn debug_output_hides_secrets_and_passwords() {
        let mut settings = Settings::default();
        settings.auth.token_secret = Secret::new("super-secret-value-that-is-long-enough");
        settings.database.url = "mysql://chatty:hunter2@db:3306/chatty".into();
        settings.redis.url = "redis://:hunter2@redis:6379/0".into();
        let text = format!("{settings:?}");
        assert!(
            !text.contains("super-secret") && !text.contains("hunter2"),
            "{text}"
        );
        assert!(text.contains("mysql://chatty:***@db:3306/chatty"));
    }

    #[test]
    fn the_example_file_holds_every_key_with_its_default() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/example.toml");
        let text = std::fs::read_to_string(&path).expect("config/example.toml exists");
        let loaded = Settings::load_from(Some(path), env(&[])).expect("the example loads");
        assert_eq!(
            loaded,
            Settings::default(),
            "config/example.toml drifted from the defaults"
        );
        // Every key is written out, not just left to its default.
        let example: toml::Table = toml::from_str(&text).expect("valid TOML");
        let defaults = toml::Table::try_from(Settings::default()).expect("defaults serialise");
        for (section, keys) in &defaults {
            let keys = keys.as_table().expect("sections are tables");
            let written = example.get(section).and_then(|s| s.as_table());
            for key in keys.keys() {
                assert!(
                    written.is_some_and(|w| w.contains_key(key)),
                    "config/example.toml lacks {section}.{key}"
                );
            }
        }
    }
}

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
    pub log: LogSettings,
    pub demo: DemoSettings,
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
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            workers: 0,
            max_request_bytes: 32 * 1024,
            shutdown_timeout_secs: 10,
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
    /// HMAC key for guest tokens, at least 32 characters. Empty: a random key
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
    /// Origins allowed to use the demo site's widget; `*` allows any.
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
                    .try_parsing(true)
                    .list_separator(",")
                    .with_list_parse_key("demo.allowed_origins")
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
                "must be empty (random per process) or at least 32 characters",
            );
        }
        if self.auth.token_ttl_secs == 0 {
            return invalid("auth.token_ttl_secs", "must be at least 1");
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections", "must be at least 1");
        }
        if self.database.min_connections > self.database.max_connections {
            return invalid(
                "database.min_connections",
                "must not exceed database.max_connections",
            );
        }
        if self.database.query_timeout_ms == 0 || self.database.connect_timeout_ms == 0 {
            return invalid(
                "database.query_timeout_ms",
                "timeouts must be at least 1 ms",
            );
        }
        if !(self.database.url.starts_with("sqlite:") || self.database.url.starts_with("mysql://"))
        {
            return invalid("database.url", "must start with sqlite: or mysql://");
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

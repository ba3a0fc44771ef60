//! `spawn_app()`: a real node on port 0 with its own fresh deployment.
//!
//! The mode comes from the environment, so the same suite runs three ways:
//! * default: embedded mode on SQLite;
//! * `CHATTY_TEST_BACKEND=mysql`: embedded mode on a fresh MariaDB database
//!   (server `CHATTY_TEST_MYSQL_URL`);
//! * `CHATTY_TEST_MODE=shared`: shared mode on a fresh MariaDB database and
//!   Redis (`CHATTY_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`) under
//!   a key prefix unique to the test.
//!
//! Set `TEST_LOG=1` to see the nodes' logs.

use std::time::Duration;

use chatty_protocol::api::JoinResponse;
use chatty_protocol::{ErrorBody, ErrorCode};
use chatty_storage::testing::{Backend, TestDatabase};

use chatty_web::settings::{LogSettings, Secret};
use chatty_web::{Application, Settings};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

pub const TEST_SECRET: &str = "test-secret-0123456789abcdef0123456789";

/// What the nodes of one test share: a database and, in the shared mode, a
/// Redis key prefix.
#[derive(Debug)]
pub struct Deployment {
    pub db: TestDatabase,
    pub redis_prefix: Option<String>,
}

impl Deployment {
    pub async fn from_env() -> std::sync::Arc<Self> {
        let shared = std::env::var("CHATTY_TEST_MODE").as_deref() == Ok("shared");
        Self::new(shared).await
    }

    pub async fn new(shared: bool) -> std::sync::Arc<Self> {
        let backend = if shared {
            Backend::MySql
        } else {
            Backend::from_env()
        };
        let db = TestDatabase::new(backend).await;
        let redis_prefix =
            shared.then(|| format!("chatty_test_{}:", uuid::Uuid::new_v4().simple()));
        std::sync::Arc::new(Self { db, redis_prefix })
    }

    pub fn redis_url() -> String {
        std::env::var("CHATTY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }
}

#[derive(Debug)]
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub state: chatty_web::state::AppState,
    pub query_stats: std::sync::Arc<chatty_storage::QueryStats>,
    pub redis_stats: Option<std::sync::Arc<chatty_storage::RedisStats>>,
    pub db: std::sync::Arc<Deployment>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    stopped: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Starts a node with the default test settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a node after `customise` has adjusted its settings.
pub async fn spawn_app_with(customise: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_node(Deployment::from_env().await, customise).await
}

/// Starts a node on an existing test database (another node of the same
/// deployment, or the same node restarted).
pub async fn spawn_node(
    db: std::sync::Arc<Deployment>,
    customise: impl FnOnce(&mut Settings),
) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = chatty_web::telemetry::init(&LogSettings {
            filter: "debug".into(),
            ..Default::default()
        });
    }
    let mut settings = Settings::default();
    settings.server.port = 0;
    settings.server.workers = 1;
    settings.database.url = db.db.url.clone();
    if let Some(prefix) = &db.redis_prefix {
        settings.redis.url = Deployment::redis_url();
        settings.redis.key_prefix = prefix.clone();
        settings.redis.key_ttl_secs = 600;
    }
    settings.database.max_connections = 5;
    settings.auth.token_secret = Secret::new(TEST_SECRET);
    // The abuse limits have tests of their own (tests/api/moderation.rs,
    // tests/cluster/moderation.rs), which turn on what they test. Elsewhere
    // every test guest comes from 127.0.0.1 and many send the same text, so
    // the per-IP, per-site and join buckets and the repeat check are off and
    // a guest may send 30 at once (the fixed window these tests were
    // written against allowed 30 a minute).
    settings.limits.guest_burst = 30;
    settings.limits.ip_sends_per_minute = 0;
    settings.limits.site_sends_per_minute = 0;
    settings.limits.joins_per_minute_per_ip = 0;
    settings.limits.repeat_window_secs = 0;
    customise(&mut settings);
    let app = Application::build(settings)
        .await
        .expect("the application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    let query_stats = app.query_stats();
    let redis_stats = app.redis_stats();
    let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
    let stopped = tokio::spawn(app.run_until(async move {
        let _ = stop.await;
    }));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");
    TestApp {
        address,
        client,
        state,
        query_stats,
        redis_stats,
        db,
        shutdown: Some(shutdown),
        stopped: Some(stopped),
    }
}

impl TestApp {
    /// Stops the node as SIGTERM would (stop accepting, finish in-flight
    /// requests, stop background tasks) and waits for it.
    pub async fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(stopped) = self.stopped.take() {
            let _ = stopped.await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Redis round trips the node has made so far (0 in the embedded mode).
    pub fn redis_calls(&self) -> u64 {
        self.redis_stats.as_ref().map_or(0, |s| s.calls())
    }

    /// SQL statements the node has sent so far.
    pub fn queries(&self) -> u64 {
        self.query_stats.queries()
    }

    pub async fn post_json(&self, path: &str, body: &Value, token: Option<&str>) -> Response {
        let mut request = self.client.post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request sent")
    }

    pub async fn join_raw(&self, body: &Value) -> Response {
        self.post_json("/api/v1/join", body, None).await
    }

    /// Joins the demo site's room as `nickname`.
    pub async fn join(&self, nickname: &str) -> JoinResponse {
        let response = self
            .join_raw(&json!({"site_key": "demo", "nickname": nickname}))
            .await;
        assert_eq!(response.status(), StatusCode::OK, "join failed");
        response.json().await.expect("join response")
    }

    pub async fn send(
        &self,
        guest: &JoinResponse,
        client_message_id: &str,
        body: &str,
    ) -> Response {
        self.post_json(
            &format!("/api/v1/rooms/{}/messages", guest.room.id),
            &json!({"client_message_id": client_message_id, "body": body}),
            Some(&guest.token),
        )
        .await
    }

    pub async fn poll(
        &self,
        guest: &JoinResponse,
        cursor: &str,
        if_none_match: Option<&str>,
    ) -> Response {
        let mut request = self
            .client
            .get(self.url(&format!("/api/v1/rooms/{}/events", guest.room.id)))
            .query(&[("cursor", cursor)])
            .bearer_auth(&guest.token);
        if let Some(tag) = if_none_match {
            request = request.header("If-None-Match", tag);
        }
        request.send().await.expect("poll sent")
    }
}

/// The seqs of the chat messages in a poll answer (other events left out).
pub fn message_seqs(poll: &chatty_protocol::api::PollResponse) -> Vec<u64> {
    poll.events
        .iter()
        .filter_map(|e| match e {
            chatty_protocol::Event::Message { message } => Some(message.seq),
            _ => None,
        })
        .collect()
}

/// A response header as text (empty when absent or not text).
pub fn header(response: &Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Asserts a JSON error response with the given status and code.
pub async fn assert_error(response: Response, status: u16, code: ErrorCode) {
    let actual_status = response.status().as_u16();
    let content_type = header(&response, "content-type");
    let text = response.text().await.expect("body");
    assert_eq!(actual_status, status, "status for {code}: body {text}");
    assert!(
        content_type.starts_with("application/json"),
        "content type {content_type:?} for {code}"
    );
    let body: ErrorBody =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("error body {text:?}: {e}"));
    assert_eq!(body.error.code, code, "body {text}");
    assert!(!body.error.message.is_empty());
}

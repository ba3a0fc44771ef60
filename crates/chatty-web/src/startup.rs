//! [`Application`]: builds a complete node from [`Settings`] — store, bus,
//! hub, background tasks, HTTP server — and runs it until a shutdown future
//! resolves. `main` and the tests use exactly this.

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use chatty_storage::bus::BusReceiver;
use chatty_storage::{
    AdminStore, BusEvent, EventBus, Guard, InMemoryGuard, InMemoryPresence, InProcessBus, NewSite,
    PresenceStore, QueryStats, RedisBus, RedisClient, RedisGuard, RedisOptions, RedisPresence,
    RedisStats, SqlStore, SqlStoreOptions, Store,
};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use crate::connections::ConnectionLimits;
use crate::directory::Directory;
use crate::hub::{Hub, HubSettings};
use crate::metrics::Metrics;
use crate::moderation::Visitors;
use crate::routes::{self, WidgetAsset};
use crate::settings::{Settings, redact_url_password};
use crate::state::AppState;
use crate::telemetry;
use crate::token::GuestTokens;

/// The mode-specific parts: bus, presence store, guard, Redis counters.
type Backends = (
    Arc<dyn EventBus>,
    Arc<dyn PresenceStore>,
    Arc<dyn Guard>,
    Option<Arc<RedisStats>>,
);

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot open the database {url}: {source}")]
    Store {
        url: String,
        source: chatty_storage::StoreError,
    },
    #[error("cannot create the demo site: {0}")]
    DemoSite(chatty_storage::StoreError),
    #[error("cannot read or create the IP hash salt: {0}")]
    Salt(chatty_storage::StoreError),
    #[error("cannot bind {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("cannot set up Redis: {0}")]
    Redis(chatty_storage::StoreError),
    #[error("cannot set up metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// A built, bound, not yet running node.
pub struct Application {
    port: u16,
    server: Server,
    state: AppState,
    query_stats: Arc<QueryStats>,
    redis_stats: Option<Arc<RedisStats>>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Connects the store (running migrations), seeds the demo site, binds
    /// the listener and starts the background tasks.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let options = SqlStoreOptions {
            url: settings.database.url.clone(),
            max_connections: settings.database.max_connections,
            min_connections: settings.database.min_connections,
            connect_timeout: settings.database.connect_timeout(),
            query_timeout: settings.database.query_timeout(),
        };
        let sql = SqlStore::connect(&options)
            .await
            .map_err(|source| StartupError::Store {
                url: redact_url_password(&settings.database.url),
                source,
            })?;
        let query_stats = sql.stats();
        let sql = Arc::new(sql);
        let store: Arc<dyn Store> = sql.clone();
        let admin: Arc<dyn AdminStore> = sql;
        // The demo site follows the configuration at every start: renamed,
        // re-originated, or disabled when the demo is turned off.
        let demo_exists = store
            .site_by_key(&settings.demo.site_key)
            .await
            .map_err(StartupError::DemoSite)?
            .is_some();
        if settings.demo.enabled || demo_exists {
            store
                .upsert_site(
                    NewSite {
                        key: settings.demo.site_key.clone(),
                        name: settings.demo.site_name.clone(),
                        allowed_origins: settings.demo.allowed_origins.clone(),
                    },
                    !settings.demo.enabled,
                )
                .await
                .map_err(StartupError::DemoSite)?;
        }
        // The two modes differ only in which bus and presence store they
        // plug in; everything above and below is the same code path.
        let mut tasks = Vec::new();
        let (bus, presence, guard, redis_stats): Backends = if settings.redis.shared_mode() {
            let redis = RedisClient::new(RedisOptions {
                url: settings.redis.url.clone(),
                key_prefix: settings.redis.key_prefix.clone(),
                pool_size: settings.redis.pool_size,
                timeout: settings.redis.timeout(),
                history_messages: settings.redis.history_messages,
                key_ttl: Duration::from_secs(settings.redis.key_ttl_secs),
            })
            .map_err(StartupError::Redis)?;
            let node_id = uuid::Uuid::new_v4().simple().to_string();
            let (bus, subscription) = RedisBus::start(
                redis.clone(),
                node_id,
                Duration::from_millis(settings.redis.heartbeat_ms),
            );
            tasks.push(subscription);
            let stats = redis.stats();
            (
                Arc::new(bus),
                Arc::new(RedisPresence::new(redis.clone())),
                Arc::new(RedisGuard::new(redis)),
                Some(stats),
            )
        } else {
            let bus = InProcessBus::new(4096);
            let presence = InMemoryPresence::new(bus.clone());
            (
                Arc::new(bus),
                Arc::new(presence),
                Arc::new(InMemoryGuard::default()),
                None,
            )
        };
        let chat = &settings.chat;
        let hub = Hub::new(
            Arc::clone(&store),
            Arc::clone(&bus),
            presence,
            HubSettings {
                window_messages: chat.window_messages,
                history_messages: chat.history_messages,
                presence_log_events: chat.presence_log_events,
                presence_timeout: chat.presence_timeout(),
                max_events_per_poll: chat.max_events_per_poll,
                room_idle: Duration::from_secs(chat.room_idle_secs),
                gap_fill_delay: Duration::from_millis(200),
                resume_max_messages: chat.resume_max_messages,
                member_list_max: chat.member_list_max,
                retention: (settings.privacy.retention_days > 0).then(|| {
                    Duration::from_secs(u64::from(settings.privacy.retention_days) * 86_400)
                }),
            },
        );
        if settings.auth.token_secret.expose().is_empty() {
            tracing::warn!(
                "auth.token_secret is empty: using a random key; guest tokens end with this process and are not valid on other nodes"
            );
        }
        let metrics = Metrics::new(
            Arc::clone(&query_stats),
            redis_stats.clone(),
            hub.fanout_stats(),
        )?;
        let connections = ConnectionLimits::new(
            settings.push.max_connections,
            settings.push.max_connections_per_ip,
            metrics.push_connections.clone(),
            metrics.push_disconnects.clone(),
        );
        let salt = ip_hash_salt(&settings, admin.as_ref())
            .await
            .map_err(StartupError::Salt)?;
        let visitors = Visitors::new(
            &settings.server.trusted_proxies,
            &settings.limits.exempt_ips,
            &salt,
        );
        restore_bans(admin.as_ref(), guard.as_ref()).await;
        let state = AppState {
            admin,
            guard,
            visitors: Arc::new(visitors),
            word_filters: Arc::default(),
            tokens: Arc::new(GuestTokens::new(settings.auth.token_secret.expose())),
            metrics,
            connections,
            directory: Arc::new(Directory::new(Arc::clone(&store))),
            settings: Arc::new(settings),
            store,
            bus: Arc::clone(&bus),
            hub: Arc::clone(&hub),
        };

        let chat = &state.settings.chat;
        tasks.push(tokio::spawn(apply_bus_events(
            state.clone(),
            bus.subscribe(),
        )));
        if state.settings.privacy.retention_days > 0 {
            tasks.push(tokio::spawn(crate::retention::run(
                Arc::clone(&state.admin),
                state.settings.privacy.clone(),
            )));
        }
        tasks.push(every(
            &hub,
            chat.presence_flush(),
            "presence tick",
            |hub| async move { hub.presence_tick().await },
        ));
        tasks.push(every(
            &hub,
            Duration::from_secs(chat.reconcile_secs),
            "reconcile",
            |hub| async move { hub.reconcile().await },
        ));
        let idle_check = Duration::from_secs(chat.room_idle_secs.clamp(1, 60));
        tasks.push(every(
            &hub,
            idle_check,
            "evict idle rooms",
            |hub| async move {
                hub.evict_idle(Instant::now());
                Ok(())
            },
        ));

        let address = format!(
            "{}:{}",
            state.settings.server.host, state.settings.server.port
        );
        let listener = TcpListener::bind(&address).map_err(|source| StartupError::Bind {
            address: address.clone(),
            source,
        })?;
        let port = listener
            .local_addr()
            .map_err(|source| StartupError::Bind { address, source })?
            .port();
        let server = build_server(listener, state.clone())?;
        Ok(Self {
            port,
            server,
            state,
            query_stats,
            redis_stats,
            tasks,
        })
    }

    /// The bound port (useful with `server.port = 0`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The shared state (tests read counters from it).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// SQL statement counters.
    pub fn query_stats(&self) -> Arc<QueryStats> {
        Arc::clone(&self.query_stats)
    }

    /// Redis call counters (shared mode only).
    pub fn redis_stats(&self) -> Option<Arc<RedisStats>> {
        self.redis_stats.clone()
    }

    /// Serves until `shutdown` resolves, then drains: stops accepting, tells
    /// push clients to reconnect elsewhere (WebSocket close 1012, SSE
    /// `close` event), answers waiting long-polls, lets in-flight requests
    /// finish (all within `server.shutdown_timeout_secs`) and stops the
    /// background tasks.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let handle = self.server.handle();
        let server = self.server;
        let running = tokio::spawn(server);
        shutdown.await;
        tracing::info!(connections = self.state.connections.total(), "draining");
        // Stop accepting first, then let go of the push connections: their
        // clients reconnect to other nodes, not to this one.
        let stopped = handle.stop(true);
        self.state.hub.drain();
        stopped.await;
        let result = running.await.unwrap_or(Ok(()));
        for task in self.tasks {
            task.abort();
        }
        result
    }
}

fn build_server(listener: TcpListener, state: AppState) -> Result<Server, StartupError> {
    let max_request_bytes = state.settings.server.max_request_bytes;
    let workers = state.settings.server.workers;
    let shutdown_timeout = state.settings.server.shutdown_timeout_secs;
    let keep_alive_secs = state.settings.server.keep_alive_secs;
    let push = state.settings.push.clone();
    let write_timeout = Duration::from_secs(push.write_timeout_secs);
    let widget = web::Data::new(WidgetAsset::default());
    tracing::info!(
        versioned_path = %widget.versioned_path(),
        gzip_bytes = widget.gzip_len(),
        "serving the widget script"
    );
    let data = web::Data::new(state);
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(widget.clone())
            .wrap(from_fn(crate::cors::cors))
            .wrap(from_fn(telemetry::observe))
            .configure(|cfg| routes::configure(cfg, max_request_bytes))
    })
    .disable_signals()
    .shutdown_timeout(shutdown_timeout)
    // Bounds the wait for a request head, the WebSocket handshake included.
    .client_request_timeout(Duration::from_millis(push.handshake_timeout_ms))
    .backlog(4096)
    .keep_alive(Duration::from_secs(keep_alive_secs))
    // Push frames are small writes that must leave at once: without this,
    // Nagle's algorithm holds a frame until the previous one is
    // acknowledged (up to the peer's delayed-ACK timer, 40 ms).
    .tcp_nodelay(true)
    // Per worker; push connections are long-lived.
    .max_connections(push.max_connections.max(25_000))
    .on_connect(move |connection, _| set_write_timeout(connection, write_timeout));
    if workers > 0 {
        server = server.workers(workers);
    }
    let address = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    Ok(server
        .listen(listener)
        .map_err(|source| StartupError::Bind { address, source })?
        .run())
}

/// `TCP_USER_TIMEOUT` on an accepted connection: a peer that stops reading
/// (or vanishes) would otherwise keep its socket and buffers forever.
/// Linux only; elsewhere the system's retransmission limits apply.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn set_write_timeout(connection: &dyn std::any::Any, timeout: Duration) {
    if timeout.is_zero() {
        return;
    }
    if let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
        let _ = socket2::SockRef::from(stream).set_tcp_user_timeout(Some(timeout));
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn set_write_timeout(_connection: &dyn std::any::Any, _timeout: Duration) {}

/// The node's single bus subscription: every committed message and
/// presence change, from any node, goes into this node's hub.
async fn apply_bus_events(state: AppState, mut events: BusReceiver) {
    let (hub, directory) = (&state.hub, &state.directory);
    loop {
        match events.recv().await {
            Ok(BusEvent::Message { message }) => hub.apply_message(message),
            Ok(BusEvent::Presence { change }) => hub.apply_presence(change),
            Ok(BusEvent::SiteChanged { site_id, access }) => {
                directory.invalidate_site(site_id);
                if access {
                    hub.release_site(site_id);
                }
            }
            Ok(BusEvent::Resync) => {
                // Whatever was published while the subscription was down is
                // lost: site changes (drop the cached sites) and, if Redis
                // itself restarted, the bans it held (put them back).
                directory.invalidate_all();
                restore_bans(state.admin.as_ref(), state.guard.as_ref()).await;
                hub.resync_all().await;
            }
            Err(RecvError::Lagged(lost)) => {
                tracing::warn!(lost, "bus subscriber lagged; resynchronising rooms");
                hub.resync_all().await;
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// The salt of IP hashes: configured, or created once in the database and
/// shared by every node from then on.
async fn ip_hash_salt(
    settings: &Settings,
    admin: &dyn AdminStore,
) -> Result<String, chatty_storage::StoreError> {
    let configured = settings.privacy.ip_hash_salt.expose();
    if !configured.is_empty() {
        return Ok(configured.to_owned());
    }
    let mut random = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut random);
    let generated: String = random.iter().map(|b| format!("{b:02x}")).collect();
    admin.meta_value("ip_hash_salt", generated).await
}

/// Bans live in the database; the guard's copy (Redis keys, or memory in
/// the embedded mode) is rebuilt from it at every start, so a restarted
/// embedded node or a flushed Redis forgets no ban.
async fn restore_bans(admin: &dyn AdminStore, guard: &dyn Guard) {
    match admin.active_bans(None, chrono::Utc::now()).await {
        Ok(bans) => {
            for ban in bans {
                if let Err(error) = guard
                    .ban(
                        ban.site_id,
                        ban.guest_id.as_deref(),
                        ban.ip_hash.as_deref(),
                        ban.expires_at,
                    )
                    .await
                {
                    tracing::warn!(%error, ban = ban.id, "cannot restore a ban");
                }
            }
        }
        Err(error) => tracing::warn!(%error, "cannot read the bans to restore"),
    }
}

/// Spawns `job` on the hub every `period`, logging failures (the next run
/// retries).
fn every<F, Fut>(hub: &Arc<Hub>, period: Duration, what: &'static str, job: F) -> JoinHandle<()>
where
    F: Fn(Arc<Hub>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), crate::error::ApiError>> + Send,
{
    let hub = Arc::clone(hub);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period.max(Duration::from_millis(10)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if let Err(error) = job(Arc::clone(&hub)).await {
                tracing::warn!(%error, "{what} failed");
            }
        }
    })
}

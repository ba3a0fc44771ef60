//! [`SqlStore`]: the [`Store`] on sea-orm, for SQLite and MySQL/MariaDB.
//!
//! ## How a send gets its sequence number
//!
//! In one transaction: look for the `(room, client_message_id)` pair (a
//! retry returns the stored message), then `UPDATE rooms SET last_seq =
//! last_seq + 1`, read the new value and insert the message with it. The
//! `UPDATE` takes the room row's write lock, so concurrent sends to one room
//! queue there and get consecutive numbers; a transaction that fails rolls
//! its increment back with it, so numbers are never skipped. Two concurrent
//! sends with the same client id both pass the first check; the second one's
//! insert then hits the unique key, is rolled back, and returns the first.
//!
//! SQLite allows one writer at a time and answers `SQLITE_BUSY` when two
//! deferred transactions both try to upgrade to writing, so on SQLite writes
//! are also queued on an in-process mutex (readers are not: WAL mode).
//!
//! ## Timeouts
//!
//! Every call is bounded by [`SqlStoreOptions::query_timeout`]; a database
//! that stops answering yields [`StoreError::Unavailable`] instead of a hung
//! request.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseBackend,
    DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, SqlErr,
    TransactionTrait,
};
use sea_orm_migration::MigratorTrait;

use crate::domain::{
    MessageKind, NewMessage, NewSite, PostOutcome, Room, Site, StoredMessage, room_scope_key,
};
use crate::entity::{message, room, site};
use crate::error::StoreError;
use crate::migration::Migrator;
use crate::store::Store;
use chatty_protocol::validate::PagePath;

/// How to connect.
#[derive(Debug, Clone)]
pub struct SqlStoreOptions {
    /// `sqlite://path?mode=rwc` or `mysql://user:pass@host:port/db`.
    pub url: String,
    pub max_connections: u32,
    pub min_connections: u32,
    /// Bound on opening a connection and on waiting for a pooled one.
    pub connect_timeout: Duration,
    /// Bound on every store call, transaction included.
    pub query_timeout: Duration,
}

/// Counters of the statements this store sent, fed by sea-orm's metric
/// callback. Tests read them to prove a path touched no database; `/metrics`
/// exports them.
#[derive(Debug, Default)]
pub struct QueryStats {
    pub queries: AtomicU64,
    pub failed: AtomicU64,
    pub micros: AtomicU64,
    /// Each statement's duration, for a histogram.
    pub latency: crate::LatencyObserver,
}

impl QueryStats {
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }
}

/// The sea-orm store.
#[derive(Clone)]
pub struct SqlStore {
    pub(crate) db: DatabaseConnection,
    stats: Arc<QueryStats>,
    query_timeout: Duration,
    /// SQLite only: serialises writers (see the module documentation).
    sqlite_writer: Option<Arc<tokio::sync::Mutex<()>>>,
}

impl fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStore")
            .field("backend", &self.db.get_database_backend())
            .field("queries", &self.stats.queries())
            .finish()
    }
}

impl SqlStore {
    /// Connects and runs the migrations.
    pub async fn connect(options: &SqlStoreOptions) -> Result<Self, StoreError> {
        if let Some(dir) = sqlite_file(&options.url)
            .and_then(|path| Path::new(path).parent())
            .filter(|dir| !dir.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Other(format!("cannot create directory {}: {e}", dir.display()))
            })?;
        }
        let mut connect = ConnectOptions::new(options.url.clone());
        connect
            .max_connections(options.max_connections)
            .min_connections(options.min_connections)
            .connect_timeout(options.connect_timeout)
            .acquire_timeout(options.connect_timeout)
            .sqlx_logging(false)
            // WAL: readers never wait for the writer. FULL sync: an acknowledged
            // message survives a power cut, not just a process crash.
            .map_sqlx_sqlite_opts(|opts| {
                opts.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(5))
                    .foreign_keys(true)
            });
        let mut db = tokio::time::timeout(options.connect_timeout, Database::connect(connect))
            .await
            .map_err(|_| {
                StoreError::Unavailable("timed out connecting to the database".into())
            })??;

        let stats = Arc::new(QueryStats::default());
        let counter = Arc::clone(&stats);
        db.set_metric_callback(move |info| {
            counter.queries.fetch_add(1, Ordering::Relaxed);
            if info.failed {
                counter.failed.fetch_add(1, Ordering::Relaxed);
            }
            let micros = u64::try_from(info.elapsed.as_micros()).unwrap_or(u64::MAX);
            counter.micros.fetch_add(micros, Ordering::Relaxed);
            counter.latency.observe(info.elapsed);
        });

        // Up to 60 s waiting for another node's migrations, then time for ours.
        tokio::time::timeout(
            options.query_timeout.max(Duration::from_secs(120)),
            migrate(&db),
        )
        .await
        .map_err(|_| StoreError::Unavailable("timed out running migrations".into()))??;

        let sqlite_writer = (db.get_database_backend() == DatabaseBackend::Sqlite)
            .then(|| Arc::new(tokio::sync::Mutex::new(())));
        Ok(Self {
            db,
            stats,
            query_timeout: options.query_timeout,
            sqlite_writer,
        })
    }

    /// Statement counters.
    pub fn stats(&self) -> Arc<QueryStats> {
        Arc::clone(&self.stats)
    }

    /// The database backend in use.
    pub fn backend(&self) -> DatabaseBackend {
        self.db.get_database_backend()
    }

    /// Runs `op` within the query timeout.
    pub(crate) async fn bounded<T>(
        &self,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.query_timeout, op)
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!("no answer within {:?}", self.query_timeout))
            })?
    }

    pub(crate) async fn write_lock(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.sqlite_writer {
            Some(lock) => Some(lock.lock().await),
            None => None,
        }
    }

    async fn find_by_client_id<C: ConnectionTrait>(
        conn: &C,
        room_id: i64,
        client_message_id: &str,
    ) -> Result<Option<message::Model>, StoreError> {
        Ok(message::Entity::find()
            .filter(message::Column::RoomId.eq(room_id))
            .filter(message::Column::ClientMessageId.eq(client_message_id))
            .one(conn)
            .await?)
    }

    /// One transaction of five round trips: `BEGIN`, the `UPDATE` that
    /// numbers the message under the room's row lock, the `SELECT` of that
    /// number, the `INSERT`, `COMMIT`. A retry (same client id) is not looked
    /// up first: its `INSERT` hits the unique key, the transaction rolls
    /// back (taking the number back with it, so no gap) and the stored
    /// original is returned. Retries are rare; every send saves the lookup.
    async fn post_message_unbounded(&self, new: NewMessage) -> Result<PostOutcome, StoreError> {
        let _writer = self.write_lock().await;
        let txn = self.db.begin().await?;
        let bumped = room::Entity::update_many()
            .col_expr(
                room::Column::LastSeq,
                Expr::col(room::Column::LastSeq).add(1),
            )
            .filter(room::Column::Id.eq(new.room_id))
            .exec(&txn)
            .await?;
        if bumped.rows_affected == 0 {
            return Err(StoreError::NotFound(format!("room {}", new.room_id)));
        }
        let seq = room::Entity::find_by_id(new.room_id)
            .one(&txn)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("room {}", new.room_id)))?
            .last_seq;
        let created_at_ms = new.created_at.timestamp_millis();
        // `exec`, not `insert`: sea-orm's `insert` reads the row back with
        // another round trip, and every value is already known here.
        let inserted = message::Entity::insert(message::ActiveModel {
            room_id: Set(new.room_id),
            seq: Set(seq),
            guest_id: Set(new.guest_id.clone()),
            nickname: Set(new.nickname.as_str().to_owned()),
            body: Set(new.body.as_str().to_owned()),
            client_message_id: Set(new.client_message_id.as_str().to_owned()),
            created_at_ms: Set(created_at_ms),
            kind: Set(KIND_CHAT.to_owned()),
            target_seq: Set(None),
            ip_hash: Set(new.ip_hash.clone()),
            ..Default::default()
        })
        .exec(&txn)
        .await;
        match inserted {
            Ok(result) => {
                txn.commit().await?;
                Ok(PostOutcome {
                    message: stored(message::Model {
                        id: result.last_insert_id,
                        room_id: new.room_id,
                        seq,
                        guest_id: new.guest_id,
                        nickname: new.nickname.into_inner(),
                        body: new.body.into_inner(),
                        client_message_id: new.client_message_id.as_str().to_owned(),
                        created_at_ms,
                        kind: KIND_CHAT.to_owned(),
                        target_seq: None,
                        ip_hash: new.ip_hash,
                    })?,
                    created: true,
                })
            }
            Err(err) => {
                let err = StoreError::from(err);
                txn.rollback().await?;
                if matches!(err, StoreError::Conflict(_)) {
                    // A concurrent send with the same client id won: return it.
                    let existing = Self::find_by_client_id(
                        &self.db,
                        new.room_id,
                        new.client_message_id.as_str(),
                    )
                    .await?
                    .ok_or(err)?;
                    return Ok(PostOutcome {
                        message: stored(existing)?,
                        created: false,
                    });
                }
                Err(err)
            }
        }
    }
}

/// Runs the migrations. Nodes of a shared deployment often start together:
/// on MySQL they take turns under an advisory lock (`GET_LOCK`, held by one
/// dedicated connection), so two nodes never apply the same migration at once.
async fn migrate(db: &DatabaseConnection) -> Result<(), StoreError> {
    if db.get_database_backend() != DatabaseBackend::MySql {
        return Ok(Migrator::up(db, None).await?);
    }
    let mut lock_holder = db
        .get_mysql_connection_pool()
        .acquire()
        .await
        .map_err(|e| StoreError::Unavailable(format!("migration lock connection: {e}")))?;
    let locked: Option<i64> =
        sea_orm::sqlx::query_scalar("SELECT GET_LOCK('chatty_migrations', 60)")
            .fetch_one(&mut *lock_holder)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migration lock: {e}")))?;
    if locked != Some(1) {
        return Err(StoreError::Unavailable(
            "another node held the migration lock for 60 s".into(),
        ));
    }
    let result = Migrator::up(db, None).await;
    let _ = sea_orm::sqlx::query("SELECT RELEASE_LOCK('chatty_migrations')")
        .execute(&mut *lock_holder)
        .await;
    Ok(result?)
}

fn sqlite_file(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then_some(path)
}

pub(crate) fn to_u64(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Other(format!("negative {what}: {value}")))
}

pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(crate) fn stored(m: message::Model) -> Result<StoredMessage, StoreError> {
    Ok(StoredMessage {
        room_id: m.room_id,
        seq: to_u64(m.seq, "seq")?,
        guest_id: m.guest_id,
        nickname: m.nickname,
        body: m.body,
        client_message_id: m.client_message_id,
        created_at: timestamp(m.created_at_ms)?,
        kind: match (m.kind.as_str(), m.target_seq) {
            (KIND_REMOVED, _) => MessageKind::Removed,
            (KIND_DELETE, Some(target)) => MessageKind::Delete {
                target: to_u64(target, "target_seq")?,
            },
            (KIND_CLEAR, _) => MessageKind::Clear,
            _ => MessageKind::Chat,
        },
    })
}

/// `messages.kind` values.
pub(crate) const KIND_CHAT: &str = "chat";
pub(crate) const KIND_REMOVED: &str = "removed";
pub(crate) const KIND_DELETE: &str = "delete";
pub(crate) const KIND_CLEAR: &str = "clear";

/// Milliseconds since the epoch as a UTC time.
pub(crate) fn timestamp(ms: i64) -> Result<chrono::DateTime<Utc>, StoreError> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .ok_or_else(|| StoreError::Other(format!("bad timestamp {ms}")))
}

pub(crate) fn site_from(m: site::Model) -> Site {
    Site {
        id: m.id,
        key: m.site_key,
        allowed_origins: serde_json::from_str(&m.allowed_origins).unwrap_or_default(),
        name: m.name,
        disabled: m.disabled,
        slow_mode_secs: u32::try_from(m.slow_mode_secs).unwrap_or(0),
        word_filter: m
            .word_filter
            .as_deref()
            .and_then(|json| serde_json::from_str(json).ok())
            .unwrap_or_default(),
        created_at: Utc
            .timestamp_millis_opt(m.created_at_ms)
            .single()
            .unwrap_or_default(),
    }
}

pub(crate) fn room_from(m: room::Model) -> Result<Room, StoreError> {
    Ok(Room {
        id: m.id,
        site_id: m.site_id,
        page: (!m.scope.is_empty()).then_some(m.scope),
        last_seq: to_u64(m.last_seq, "last_seq")?,
    })
}

#[async_trait]
impl Store for SqlStore {
    async fn ensure_site(&self, new: NewSite) -> Result<Site, StoreError> {
        self.bounded(async {
            if let Some(found) = self.site_by_key(&new.key).await? {
                return Ok(found);
            }
            let _writer = self.write_lock().await;
            let origins = serde_json::to_string(&new.allowed_origins)
                .map_err(|e| StoreError::Other(e.to_string()))?;
            let inserted = site::ActiveModel {
                site_key: Set(new.key.clone()),
                name: Set(new.name),
                allowed_origins: Set(origins),
                disabled: Set(false),
                created_at_ms: Set(Utc::now().timestamp_millis()),
                slow_mode_secs: Set(0),
                word_filter: Set(None),
                ..Default::default()
            }
            .insert(&self.db)
            .await;
            match inserted {
                Ok(model) => Ok(site_from(model)),
                // Another node created it first.
                Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                    drop(_writer);
                    self.site_by_key(&new.key)
                        .await?
                        .ok_or_else(|| StoreError::NotFound(new.key.clone()))
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    async fn upsert_site(&self, new: NewSite, disabled: bool) -> Result<Site, StoreError> {
        let site = self.ensure_site(new.clone()).await?;
        if site.name == new.name
            && site.allowed_origins == new.allowed_origins
            && site.disabled == disabled
        {
            return Ok(site);
        }
        self.bounded(async {
            let origins = serde_json::to_string(&new.allowed_origins)
                .map_err(|e| StoreError::Other(e.to_string()))?;
            let _writer = self.write_lock().await;
            site::Entity::update_many()
                .col_expr(site::Column::Name, Expr::value(new.name.clone()))
                .col_expr(site::Column::AllowedOrigins, Expr::value(origins))
                .col_expr(site::Column::Disabled, Expr::value(disabled))
                .filter(site::Column::Id.eq(site.id))
                .exec(&self.db)
                .await?;
            Ok(Site {
                name: new.name,
                allowed_origins: new.allowed_origins,
                disabled,
                ..site
            })
        })
        .await
    }

    async fn site_by_key(&self, key: &str) -> Result<Option<Site>, StoreError> {
        self.bounded(async {
            Ok(site::Entity::find()
                .filter(site::Column::SiteKey.eq(key))
                .one(&self.db)
                .await?
                .map(site_from))
        })
        .await
    }

    async fn site_by_id(&self, id: i64) -> Result<Option<Site>, StoreError> {
        self.bounded(async {
            Ok(site::Entity::find_by_id(id)
                .one(&self.db)
                .await?
                .map(site_from))
        })
        .await
    }

    async fn room_for(&self, site_id: i64, page: Option<&PagePath>) -> Result<Room, StoreError> {
        let scope = room_scope_key(page);
        self.bounded(async {
            let find = || {
                room::Entity::find()
                    .filter(room::Column::SiteId.eq(site_id))
                    .filter(room::Column::Scope.eq(scope.clone()))
                    .one(&self.db)
            };
            if let Some(found) = find().await? {
                return room_from(found);
            }
            let writer = self.write_lock().await;
            let inserted = room::ActiveModel {
                site_id: Set(site_id),
                scope: Set(scope.clone()),
                last_seq: Set(0),
                created_at_ms: Set(Utc::now().timestamp_millis()),
                ..Default::default()
            }
            .insert(&self.db)
            .await;
            drop(writer);
            match inserted {
                Ok(model) => room_from(model),
                Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                    room_from(
                        find()
                            .await?
                            .ok_or_else(|| StoreError::NotFound(scope.clone()))?,
                    )
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    async fn room(&self, room_id: i64) -> Result<Option<Room>, StoreError> {
        self.bounded(async {
            room::Entity::find_by_id(room_id)
                .one(&self.db)
                .await?
                .map(room_from)
                .transpose()
        })
        .await
    }

    async fn post_message(&self, message: NewMessage) -> Result<PostOutcome, StoreError> {
        self.bounded(self.post_message_unbounded(message)).await
    }

    async fn message_by_client_id(
        &self,
        room_id: i64,
        client_message_id: &str,
    ) -> Result<Option<StoredMessage>, StoreError> {
        self.bounded(async {
            Self::find_by_client_id(&self.db, room_id, client_message_id)
                .await?
                .map(stored)
                .transpose()
        })
        .await
    }

    async fn messages_after(
        &self,
        room_id: i64,
        after: u64,
        limit: u64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.bounded(async {
            message::Entity::find()
                .filter(message::Column::RoomId.eq(room_id))
                .filter(message::Column::Seq.gt(to_i64(after)))
                .order_by_asc(message::Column::Seq)
                .limit(limit)
                .all(&self.db)
                .await?
                .into_iter()
                .map(stored)
                .collect()
        })
        .await
    }

    async fn recent_messages(
        &self,
        room_id: i64,
        limit: u64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.bounded(async {
            let mut newest_first = message::Entity::find()
                .filter(message::Column::RoomId.eq(room_id))
                .order_by_desc(message::Column::Seq)
                .limit(limit)
                .all(&self.db)
                .await?;
            newest_first.reverse();
            newest_first.into_iter().map(stored).collect()
        })
        .await
    }

    async fn last_seqs(&self, room_ids: &[i64]) -> Result<Vec<(i64, u64)>, StoreError> {
        if room_ids.is_empty() {
            return Ok(Vec::new());
        }
        self.bounded(async {
            room::Entity::find()
                .filter(room::Column::Id.is_in(room_ids.iter().copied()))
                .all(&self.db)
                .await?
                .into_iter()
                .map(|r| Ok((r.id, to_u64(r.last_seq, "last_seq")?)))
                .collect()
        })
        .await
    }

    fn pool_status(&self) -> Option<crate::PoolStatus> {
        // Each getter panics for another backend: ask the backend first.
        match self.db.get_database_backend() {
            sea_orm::DbBackend::MySql => {
                let pool = self.db.get_mysql_connection_pool();
                Some(crate::PoolStatus {
                    open: pool.size() as usize,
                    idle: pool.num_idle(),
                    max: pool.options().get_max_connections() as usize,
                })
            }
            sea_orm::DbBackend::Sqlite => {
                let pool = self.db.get_sqlite_connection_pool();
                Some(crate::PoolStatus {
                    open: pool.size() as usize,
                    idle: pool.num_idle(),
                    max: pool.options().get_max_connections() as usize,
                })
            }
            _ => None,
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(async { Ok(self.db.ping().await?) }).await
    }
}

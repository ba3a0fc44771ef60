//! [`AdminStore`] for [`SqlStore`]: administration and moderation on the
//! same sea-orm connection as the visitor-facing store.
//!
//! ## How a moderation event gets into a room
//!
//! Exactly like a send (see [`crate::sql`]): in one transaction the room's
//! `last_seq` is bumped under its row lock, the event row is inserted with
//! that seq, and the messages it removes are emptied and marked `removed`.
//! The event row's client message id (`!delete:<seq>`, `!clear:<…>`) starts
//! with a character clients may not use, so no visitor can occupy it, and
//! the unique `(room, client_message_id)` key makes deleting one message
//! twice return the first event instead of a second one.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Set, SqlErr, TransactionTrait,
};

use crate::admin::{
    AdminStore, AuditEntry, Ban, ModeratedMessage, Moderation, NewAuditEntry, NewBan, SiteToken,
    SiteUpdate, TokenRole,
};
use crate::domain::{NewSite, PostOutcome, Room, Site};
use crate::entity::{ban, message, meta, moderation_action, room, site, site_token};
use crate::error::StoreError;
use crate::sql::{
    KIND_CHAT, KIND_CLEAR, KIND_DELETE, KIND_REMOVED, SqlStore, room_from, site_from, stored,
    timestamp, to_i64,
};

fn token_from(m: site_token::Model) -> Result<SiteToken, StoreError> {
    Ok(SiteToken {
        id: m.id,
        site_id: m.site_id,
        role: TokenRole::parse(&m.role)
            .ok_or_else(|| StoreError::Other(format!("unknown token role {:?}", m.role)))?,
        label: m.label,
        created_at: timestamp(m.created_at_ms)?,
        revoked: m.revoked_at_ms.is_some(),
    })
}

fn ban_from(m: ban::Model) -> Result<Ban, StoreError> {
    Ok(Ban {
        id: m.id,
        site_id: m.site_id,
        guest_id: m.guest_id,
        ip_hash: m.ip_hash,
        reason: m.reason,
        created_by: m.created_by,
        created_at: timestamp(m.created_at_ms)?,
        expires_at: timestamp(m.expires_at_ms)?,
        lifted: m.lifted_at_ms.is_some(),
    })
}

fn audit_from(m: moderation_action::Model) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        id: m.id,
        site_id: m.site_id,
        actor: m.actor,
        action: m.action,
        room_id: m.room_id,
        target: m.target,
        details: serde_json::from_str(&m.details).unwrap_or(serde_json::Value::Null),
        at: timestamp(m.created_at_ms)?,
    })
}

/// Cuts `text` to at most `max` characters (column widths).
fn clip(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

impl SqlStore {
    /// One transaction: number the event, insert it, apply it.
    async fn moderate_unbounded(
        &self,
        room_id: i64,
        action: Moderation,
    ) -> Result<PostOutcome, StoreError> {
        let _writer = self.write_lock().await;
        let txn = self.db.begin().await?;
        let client_message_id = match action {
            Moderation::Delete { seq } => {
                let target = message::Entity::find()
                    .filter(message::Column::RoomId.eq(room_id))
                    .filter(message::Column::Seq.eq(to_i64(seq)))
                    .one(&txn)
                    .await?;
                let key = format!("!delete:{seq}");
                match target.as_ref().map(|t| t.kind.as_str()) {
                    Some(KIND_CHAT) => {}
                    Some(KIND_REMOVED) => {
                        // Deleted before: by this event, or by a clear.
                        let earlier = message::Entity::find()
                            .filter(message::Column::RoomId.eq(room_id))
                            .filter(message::Column::ClientMessageId.eq(key.clone()))
                            .one(&txn)
                            .await?;
                        txn.rollback().await?;
                        return match earlier {
                            Some(event) => Ok(PostOutcome {
                                message: stored(event)?,
                                created: false,
                            }),
                            None => Err(StoreError::NotFound(format!(
                                "message {seq} was removed by a clear"
                            ))),
                        };
                    }
                    _ => {
                        txn.rollback().await?;
                        return Err(StoreError::NotFound(format!(
                            "room {room_id} has no message {seq}"
                        )));
                    }
                }
                key
            }
            Moderation::Clear => {
                let mut nonce = [0u8; 8];
                rand::rng().fill_bytes(&mut nonce);
                let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
                format!("!clear:{}:{nonce}", Utc::now().timestamp_millis())
            }
        };
        let bumped = room::Entity::update_many()
            .col_expr(
                room::Column::LastSeq,
                Expr::col(room::Column::LastSeq).add(1),
            )
            .filter(room::Column::Id.eq(room_id))
            .exec(&txn)
            .await?;
        if bumped.rows_affected == 0 {
            txn.rollback().await?;
            return Err(StoreError::NotFound(format!("room {room_id}")));
        }
        let seq = room::Entity::find_by_id(room_id)
            .one(&txn)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("room {room_id}")))?
            .last_seq;
        let (kind, target_seq) = match action {
            Moderation::Delete { seq } => (KIND_DELETE, Some(to_i64(seq))),
            Moderation::Clear => (KIND_CLEAR, None),
        };
        let model = message::Model {
            id: 0,
            room_id,
            seq,
            guest_id: String::new(),
            nickname: String::new(),
            body: String::new(),
            client_message_id,
            created_at_ms: Utc::now().timestamp_millis(),
            kind: kind.to_owned(),
            target_seq,
            ip_hash: String::new(),
        };
        let inserted = message::Entity::insert(message::ActiveModel {
            room_id: Set(model.room_id),
            seq: Set(model.seq),
            guest_id: Set(String::new()),
            nickname: Set(String::new()),
            body: Set(String::new()),
            client_message_id: Set(model.client_message_id.clone()),
            created_at_ms: Set(model.created_at_ms),
            kind: Set(model.kind.clone()),
            target_seq: Set(model.target_seq),
            ip_hash: Set(String::new()),
            ..Default::default()
        })
        .exec(&txn)
        .await;
        let id = match inserted {
            Ok(result) => result.last_insert_id,
            Err(err) => {
                let err = StoreError::from(err);
                txn.rollback().await?;
                if matches!(err, StoreError::Conflict(_)) {
                    // A concurrent delete of the same message won.
                    let existing = message::Entity::find()
                        .filter(message::Column::RoomId.eq(room_id))
                        .filter(message::Column::ClientMessageId.eq(model.client_message_id))
                        .one(&self.db)
                        .await?
                        .ok_or(err)?;
                    return Ok(PostOutcome {
                        message: stored(existing)?,
                        created: false,
                    });
                }
                return Err(err);
            }
        };
        // Empty what the event removes: the body must not stay readable.
        let removed = message::Entity::update_many()
            .col_expr(message::Column::Kind, Expr::value(KIND_REMOVED))
            .col_expr(message::Column::Body, Expr::value(""))
            .filter(message::Column::RoomId.eq(room_id))
            .filter(message::Column::Kind.eq(KIND_CHAT));
        let removed = match action {
            Moderation::Delete { seq } => removed.filter(message::Column::Seq.eq(to_i64(seq))),
            Moderation::Clear => removed.filter(message::Column::Seq.lt(seq)),
        };
        removed.exec(&txn).await?;
        txn.commit().await?;
        Ok(PostOutcome {
            message: stored(message::Model { id, ..model })?,
            created: true,
        })
    }
}

#[async_trait]
impl AdminStore for SqlStore {
    async fn create_site(&self, new: NewSite, admin_token_hash: &str) -> Result<Site, StoreError> {
        self.bounded(async {
            let origins = serde_json::to_string(&new.allowed_origins)
                .map_err(|e| StoreError::Other(e.to_string()))?;
            let _writer = self.write_lock().await;
            let txn = self.db.begin().await?;
            let now = Utc::now().timestamp_millis();
            let created = site::ActiveModel {
                site_key: Set(new.key),
                name: Set(new.name),
                allowed_origins: Set(origins),
                disabled: Set(false),
                created_at_ms: Set(now),
                slow_mode_secs: Set(0),
                word_filter: Set(None),
                ..Default::default()
            }
            .insert(&txn)
            .await;
            let created = match created {
                Ok(created) => created,
                Err(e) => {
                    txn.rollback().await?;
                    return Err(e.into());
                }
            };
            site_token::ActiveModel {
                site_id: Set(created.id),
                role: Set(TokenRole::Admin.as_str().to_owned()),
                label: Set("site owner".to_owned()),
                token_hash: Set(admin_token_hash.to_owned()),
                created_at_ms: Set(now),
                revoked_at_ms: Set(None),
                ..Default::default()
            }
            .insert(&txn)
            .await?;
            txn.commit().await?;
            Ok(site_from(created))
        })
        .await
    }

    async fn list_sites(&self) -> Result<Vec<Site>, StoreError> {
        self.bounded(async {
            Ok(site::Entity::find()
                .order_by_asc(site::Column::Id)
                .all(&self.db)
                .await?
                .into_iter()
                .map(site_from)
                .collect())
        })
        .await
    }

    async fn update_site(&self, site_id: i64, update: SiteUpdate) -> Result<Site, StoreError> {
        self.bounded(async {
            let mut change = site::Entity::update_many().filter(site::Column::Id.eq(site_id));
            if let Some(name) = update.name {
                change = change.col_expr(site::Column::Name, Expr::value(name));
            }
            if let Some(origins) = update.allowed_origins {
                let json = serde_json::to_string(&origins)
                    .map_err(|e| StoreError::Other(e.to_string()))?;
                change = change.col_expr(site::Column::AllowedOrigins, Expr::value(json));
            }
            if let Some(disabled) = update.disabled {
                change = change.col_expr(site::Column::Disabled, Expr::value(disabled));
            }
            if let Some(secs) = update.slow_mode_secs {
                let secs = i32::try_from(secs).unwrap_or(i32::MAX);
                change = change.col_expr(site::Column::SlowModeSecs, Expr::value(secs));
            }
            if let Some(filter) = update.word_filter {
                let json = if filter.words.is_empty() && filter == Default::default() {
                    None
                } else {
                    Some(
                        serde_json::to_string(&filter)
                            .map_err(|e| StoreError::Other(e.to_string()))?,
                    )
                };
                change = change.col_expr(site::Column::WordFilter, Expr::value(json));
            }
            {
                let _writer = self.write_lock().await;
                change.exec(&self.db).await?;
            }
            site::Entity::find_by_id(site_id)
                .one(&self.db)
                .await?
                .map(site_from)
                .ok_or_else(|| StoreError::NotFound(format!("site {site_id}")))
        })
        .await
    }

    async fn create_token(
        &self,
        site_id: i64,
        role: TokenRole,
        label: &str,
        token_hash: &str,
    ) -> Result<SiteToken, StoreError> {
        self.bounded(async {
            let _writer = self.write_lock().await;
            let model = site_token::ActiveModel {
                site_id: Set(site_id),
                role: Set(role.as_str().to_owned()),
                label: Set(clip(label, 100)),
                token_hash: Set(token_hash.to_owned()),
                created_at_ms: Set(Utc::now().timestamp_millis()),
                revoked_at_ms: Set(None),
                ..Default::default()
            }
            .insert(&self.db)
            .await?;
            token_from(model)
        })
        .await
    }

    async fn token_by_hash(&self, token_hash: &str) -> Result<Option<SiteToken>, StoreError> {
        self.bounded(async {
            site_token::Entity::find()
                .filter(site_token::Column::TokenHash.eq(token_hash))
                .filter(site_token::Column::RevokedAtMs.is_null())
                .one(&self.db)
                .await?
                .map(token_from)
                .transpose()
        })
        .await
    }

    async fn list_tokens(&self, site_id: i64) -> Result<Vec<SiteToken>, StoreError> {
        self.bounded(async {
            site_token::Entity::find()
                .filter(site_token::Column::SiteId.eq(site_id))
                .order_by_asc(site_token::Column::Id)
                .all(&self.db)
                .await?
                .into_iter()
                .map(token_from)
                .collect()
        })
        .await
    }

    async fn revoke_token(&self, site_id: i64, token_id: i64) -> Result<bool, StoreError> {
        self.bounded(async {
            let _writer = self.write_lock().await;
            let done = site_token::Entity::update_many()
                .col_expr(
                    site_token::Column::RevokedAtMs,
                    Expr::value(Utc::now().timestamp_millis()),
                )
                .filter(site_token::Column::Id.eq(token_id))
                .filter(site_token::Column::SiteId.eq(site_id))
                .filter(site_token::Column::RevokedAtMs.is_null())
                .exec(&self.db)
                .await?;
            if done.rows_affected > 0 {
                return Ok(true);
            }
            // Already revoked counts as done; unknown does not.
            Ok(site_token::Entity::find_by_id(token_id)
                .one(&self.db)
                .await?
                .is_some_and(|t| t.site_id == site_id))
        })
        .await
    }

    async fn rooms_of_site(&self, site_id: i64) -> Result<Vec<Room>, StoreError> {
        self.bounded(async {
            room::Entity::find()
                .filter(room::Column::SiteId.eq(site_id))
                .order_by_asc(room::Column::Id)
                .limit(1000)
                .all(&self.db)
                .await?
                .into_iter()
                .map(room_from)
                .collect()
        })
        .await
    }

    async fn messages_for_moderation(
        &self,
        room_id: i64,
        before: Option<u64>,
        limit: u64,
    ) -> Result<Vec<ModeratedMessage>, StoreError> {
        self.bounded(async {
            let mut query = message::Entity::find()
                .filter(message::Column::RoomId.eq(room_id))
                .filter(message::Column::Kind.eq(KIND_CHAT));
            if let Some(before) = before {
                query = query.filter(message::Column::Seq.lt(to_i64(before)));
            }
            query
                .order_by_desc(message::Column::Seq)
                .limit(limit)
                .all(&self.db)
                .await?
                .into_iter()
                .map(|m| {
                    let ip_hash = m.ip_hash.clone();
                    Ok(ModeratedMessage {
                        message: stored(m)?,
                        ip_hash,
                    })
                })
                .collect()
        })
        .await
    }

    async fn moderate(&self, room_id: i64, action: Moderation) -> Result<PostOutcome, StoreError> {
        self.bounded(self.moderate_unbounded(room_id, action)).await
    }

    async fn add_ban(&self, new: NewBan) -> Result<Ban, StoreError> {
        self.bounded(async {
            let _writer = self.write_lock().await;
            let model = ban::ActiveModel {
                site_id: Set(new.site_id),
                guest_id: Set(new.guest_id),
                ip_hash: Set(new.ip_hash),
                reason: Set(clip(&new.reason, 200)),
                created_by: Set(clip(&new.created_by, 120)),
                created_at_ms: Set(Utc::now().timestamp_millis()),
                expires_at_ms: Set(new.expires_at.timestamp_millis()),
                lifted_at_ms: Set(None),
                ..Default::default()
            }
            .insert(&self.db)
            .await?;
            ban_from(model)
        })
        .await
    }

    async fn active_bans(
        &self,
        site_id: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Ban>, StoreError> {
        self.bounded(async {
            let mut query = ban::Entity::find()
                .filter(ban::Column::LiftedAtMs.is_null())
                .filter(ban::Column::ExpiresAtMs.gt(now.timestamp_millis()));
            if let Some(site_id) = site_id {
                query = query.filter(ban::Column::SiteId.eq(site_id));
            }
            query
                .order_by_desc(ban::Column::Id)
                .limit(10_000)
                .all(&self.db)
                .await?
                .into_iter()
                .map(ban_from)
                .collect()
        })
        .await
    }

    async fn lift_ban(&self, site_id: i64, ban_id: i64) -> Result<Option<Ban>, StoreError> {
        self.bounded(async {
            let Some(found) = ban::Entity::find_by_id(ban_id)
                .filter(ban::Column::SiteId.eq(site_id))
                .one(&self.db)
                .await?
            else {
                return Ok(None);
            };
            let _writer = self.write_lock().await;
            ban::Entity::update_many()
                .col_expr(
                    ban::Column::LiftedAtMs,
                    Expr::value(Utc::now().timestamp_millis()),
                )
                .filter(ban::Column::Id.eq(ban_id))
                .filter(ban::Column::LiftedAtMs.is_null())
                .exec(&self.db)
                .await?;
            ban_from(found).map(Some)
        })
        .await
    }

    async fn record_action(&self, entry: NewAuditEntry) -> Result<(), StoreError> {
        self.bounded(async {
            let _writer = self.write_lock().await;
            moderation_action::ActiveModel {
                site_id: Set(entry.site_id),
                actor: Set(clip(&entry.actor, 120)),
                action: Set(clip(&entry.action, 32)),
                room_id: Set(entry.room_id),
                target: Set(clip(&entry.target, 200)),
                details: Set(entry.details.to_string()),
                created_at_ms: Set(Utc::now().timestamp_millis()),
                ..Default::default()
            }
            .insert(&self.db)
            .await?;
            Ok(())
        })
        .await
    }

    async fn audit_log(
        &self,
        site_id: i64,
        before: Option<i64>,
        limit: u64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.bounded(async {
            let mut query = moderation_action::Entity::find()
                .filter(moderation_action::Column::SiteId.eq(site_id));
            if let Some(before) = before {
                query = query.filter(moderation_action::Column::Id.lt(before));
            }
            query
                .order_by_desc(moderation_action::Column::Id)
                .limit(limit)
                .all(&self.db)
                .await?
                .into_iter()
                .map(audit_from)
                .collect()
        })
        .await
    }

    async fn delete_messages_before(
        &self,
        cutoff: DateTime<Utc>,
        batch: u64,
    ) -> Result<u64, StoreError> {
        self.bounded(async {
            // Ids first, then delete by id: `DELETE … LIMIT` is not portable
            // (SQLite needs a compile-time option) and small batches keep
            // row locks short on MySQL.
            let ids: Vec<i64> = message::Entity::find()
                .select_only()
                .column(message::Column::Id)
                .filter(message::Column::CreatedAtMs.lt(cutoff.timestamp_millis()))
                .order_by_asc(message::Column::Id)
                .limit(batch)
                .into_tuple()
                .all(&self.db)
                .await?;
            if ids.is_empty() {
                return Ok(0);
            }
            let _writer = self.write_lock().await;
            let done = message::Entity::delete_many()
                .filter(Condition::all().add(message::Column::Id.is_in(ids)))
                .exec(&self.db)
                .await?;
            Ok(done.rows_affected)
        })
        .await
    }

    async fn meta_value(&self, name: &str, generate: String) -> Result<String, StoreError> {
        self.bounded(async {
            if let Some(found) = meta::Entity::find_by_id(name.to_owned())
                .one(&self.db)
                .await?
            {
                return Ok(found.value);
            }
            let inserted = {
                let _writer = self.write_lock().await;
                meta::Entity::insert(meta::ActiveModel {
                    name: Set(name.to_owned()),
                    value: Set(generate.clone()),
                })
                .exec(&self.db)
                .await
            };
            match inserted {
                Ok(_) => Ok(generate),
                // Another node wrote it first: everyone uses that one.
                Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                    meta::Entity::find_by_id(name.to_owned())
                        .one(&self.db)
                        .await?
                        .map(|m| m.value)
                        .ok_or_else(|| StoreError::NotFound(name.to_owned()))
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
    }
}

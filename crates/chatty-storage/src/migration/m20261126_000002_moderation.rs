//! Moderation: site tokens, bans, the audit log, per-site moderation
//! settings, moderation events in the message table, salted IP hashes and
//! an index for the retention job.
//!
//! Like the first migration, every step checks before it changes, so a
//! start that died half-way is completed by the next one (MySQL DDL is not
//! transactional). Columns are added one statement each: SQLite's `ALTER
//! TABLE` takes one change at a time.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use super::for_backend;
use sea_orm_migration::sea_orm::{ConnectionTrait, DatabaseBackend, Statement};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Counts rows of a schema query (names here are this file's constants,
/// never input). sea-orm-migration's own `has_column` does not run on the
/// bundled SQLite, so the two catalogue queries are written out.
async fn count(manager: &SchemaManager<'_>, sqlite: String, mysql: String) -> Result<bool, DbErr> {
    let sql = if manager.get_database_backend() == DatabaseBackend::MySql {
        mysql
    } else {
        sqlite
    };
    let row = manager
        .get_connection()
        .query_one_raw(Statement::from_string(manager.get_database_backend(), sql))
        .await?
        .ok_or_else(|| DbErr::Custom("no answer from a schema query".into()))?;
    let found: i64 = row.try_get_by_index(0)?;
    Ok(found > 0)
}

async fn has_column(manager: &SchemaManager<'_>, table: &str, name: &str) -> Result<bool, DbErr> {
    count(
        manager,
        format!("SELECT COUNT(*) FROM pragma_table_info('{table}') WHERE name = '{name}'"),
        format!(
            "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = '{table}' AND column_name = '{name}'"
        ),
    )
    .await
}

async fn has_index(manager: &SchemaManager<'_>, table: &str, name: &str) -> Result<bool, DbErr> {
    count(
        manager,
        format!("SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = '{table}' AND name = '{name}'"),
        format!(
            "SELECT COUNT(*) FROM information_schema.statistics WHERE table_schema = DATABASE() AND table_name = '{table}' AND index_name = '{name}'"
        ),
    )
    .await
}

async fn add_column(
    manager: &SchemaManager<'_>,
    table: &str,
    name: &str,
    column: ColumnDef,
) -> Result<(), DbErr> {
    if has_column(manager, table, name).await? {
        return Ok(());
    }
    let mut column = column;
    manager
        .alter_table(
            Table::alter()
                .table(Alias::new(table))
                .add_column(&mut column)
                .to_owned(),
        )
        .await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Per-site moderation settings.
        add_column(
            manager,
            "sites",
            "slow_mode_secs",
            integer("slow_mode_secs").default(0).to_owned(),
        )
        .await?;
        add_column(
            manager,
            "sites",
            "word_filter",
            text_null("word_filter").to_owned(),
        )
        .await?;
        // Messages: what a row is (a chat message, one removed by a
        // moderator, or a moderation event with its own seq), the target of
        // a delete event, and the author's salted IP hash.
        add_column(
            manager,
            "messages",
            "kind",
            string_len("kind", 16).default("chat").to_owned(),
        )
        .await?;
        add_column(
            manager,
            "messages",
            "target_seq",
            big_integer_null("target_seq").to_owned(),
        )
        .await?;
        add_column(
            manager,
            "messages",
            "ip_hash",
            string_len("ip_hash", 64).default("").to_owned(),
        )
        .await?;
        if !has_index(manager, "messages", "ix_messages_created_at").await? {
            manager
                .create_index(
                    Index::create()
                        .name("ix_messages_created_at")
                        .table("messages")
                        .col("created_at_ms")
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_table(for_backend(
                manager,
                Table::create()
                    .table("site_tokens")
                    .if_not_exists()
                    .col(big_pk_auto("id"))
                    .col(big_integer("site_id"))
                    .col(string_len("role", 16))
                    .col(string_len("label", 100))
                    .col(string_len_uniq("token_hash", 64))
                    .col(big_integer("created_at_ms"))
                    .col(big_integer_null("revoked_at_ms"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_site_tokens_site")
                            .from("site_tokens", "site_id")
                            .to("sites", "id"),
                    ),
            ))
            .await?;
        manager
            .create_table(for_backend(
                manager,
                Table::create()
                    .table("bans")
                    .if_not_exists()
                    .col(big_pk_auto("id"))
                    .col(big_integer("site_id"))
                    .col(string_len_null("guest_id", 64))
                    .col(string_len_null("ip_hash", 64))
                    .col(string_len("reason", 200))
                    .col(string_len("created_by", 120))
                    .col(big_integer("created_at_ms"))
                    .col(big_integer("expires_at_ms"))
                    .col(big_integer_null("lifted_at_ms"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_bans_site")
                            .from("bans", "site_id")
                            .to("sites", "id"),
                    ),
            ))
            .await?;
        manager
            .create_table(for_backend(
                manager,
                Table::create()
                    .table("moderation_actions")
                    .if_not_exists()
                    .col(big_pk_auto("id"))
                    .col(big_integer("site_id"))
                    .col(string_len("actor", 120))
                    .col(string_len("action", 32))
                    .col(big_integer_null("room_id"))
                    .col(string_len("target", 200))
                    .col(text("details"))
                    .col(big_integer("created_at_ms"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_moderation_actions_site")
                            .from("moderation_actions", "site_id")
                            .to("sites", "id"),
                    ),
            ))
            .await?;
        // Plain indexes separately: SQLite has no inline `INDEX` clause.
        for (table, name, columns) in [
            (
                "bans",
                "ix_bans_site_expiry",
                &["site_id", "expires_at_ms"][..],
            ),
            (
                "moderation_actions",
                "ix_moderation_actions_site",
                &["site_id", "id"][..],
            ),
        ] {
            if !has_index(manager, table, name).await? {
                let mut index = Index::create();
                index.name(name).table(Alias::new(table));
                for column in columns {
                    index.col(Alias::new(*column));
                }
                manager.create_index(index.to_owned()).await?;
            }
        }
        // Deployment-wide values generated once (the IP hash salt).
        manager
            .create_table(for_backend(
                manager,
                Table::create()
                    .table("chatty_meta")
                    .if_not_exists()
                    .col(string_len("name", 64).primary_key())
                    .col(string_len("value", 255)),
            ))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["chatty_meta", "moderation_actions", "bans", "site_tokens"] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}

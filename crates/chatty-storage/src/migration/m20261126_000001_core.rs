//! Sites, rooms and messages.
//!
//! Every statement is `CREATE TABLE IF NOT EXISTS` with its indexes inline,
//! so a first start that died half-way (MySQL DDL is not transactional) is
//! completed by the next start instead of failing on an existing index.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use super::for_backend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(for_backend(
                manager,
                Table::create()
                    .table("sites")
                    .if_not_exists()
                    .col(big_pk_auto("id"))
                    .col(string_len_uniq("site_key", 64))
                    .col(string_len("name", 200))
                    .col(text("allowed_origins"))
                    .col(boolean("disabled").default(false))
                    .col(big_integer("created_at_ms")),
            ))
            .await?;
        manager
            .create_table(for_backend(
                manager,
                Table::create()
                    .table("rooms")
                    .if_not_exists()
                    .col(big_pk_auto("id"))
                    .col(big_integer("site_id"))
                    .col(string_len("scope", 256))
                    .col(big_integer("last_seq").default(0))
                    .col(big_integer("created_at_ms"))
                    .index(
                        Index::create()
                            .name("ux_rooms_site_scope")
                            .col("site_id")
                            .col("scope")
                            .unique(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_rooms_site")
                            .from("rooms", "site_id")
                            .to("sites", "id"),
                    ),
            ))
            .await?;
        manager
            .create_table(for_backend(
                manager,
                Table::create()
                    .table("messages")
                    .if_not_exists()
                    .col(big_pk_auto("id"))
                    .col(big_integer("room_id"))
                    .col(big_integer("seq"))
                    .col(string_len("guest_id", 64))
                    .col(string_len("nickname", 64))
                    .col(text("body"))
                    .col(string_len("client_message_id", 64))
                    .col(big_integer("created_at_ms"))
                    .index(
                        Index::create()
                            .name("ux_messages_room_seq")
                            .col("room_id")
                            .col("seq")
                            .unique(),
                    )
                    .index(
                        Index::create()
                            .name("ux_messages_room_client_id")
                            .col("room_id")
                            .col("client_message_id")
                            .unique(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_messages_room")
                            .from("messages", "room_id")
                            .to("rooms", "id"),
                    ),
            ))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["messages", "rooms", "sites"] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}

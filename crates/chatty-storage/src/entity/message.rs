//! `messages`: unique on `(room_id, seq)` and on `(room_id, client_message_id)`.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "messages")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub room_id: i64,
    pub seq: i64,
    pub guest_id: String,
    pub nickname: String,
    #[sea_orm(column_type = "Text")]
    pub body: String,
    pub client_message_id: String,
    pub created_at_ms: i64,
    /// `chat`, `removed` (a chat message a moderator deleted: body emptied),
    /// `delete` (the event that deleted `target_seq`) or `clear`.
    pub kind: String,
    pub target_seq: Option<i64>,
    /// Salted hash of the sender's IP address (empty for events).
    pub ip_hash: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

//! `sites`: web sites that embed Chatty.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sites")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub site_key: String,
    pub name: String,
    /// JSON array of allowed origins.
    pub allowed_origins: String,
    pub disabled: bool,
    /// Milliseconds since the Unix epoch (UTC): same precision on every backend.
    pub created_at_ms: i64,
    /// Slow mode: seconds a guest waits between two messages (0: off).
    pub slow_mode_secs: i32,
    /// JSON of the word filter (`None`: no filter).
    #[sea_orm(column_type = "Text", nullable)]
    pub word_filter: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

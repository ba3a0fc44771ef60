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
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

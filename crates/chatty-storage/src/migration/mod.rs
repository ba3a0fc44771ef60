//! Schema migrations, run at every start (`Migrator::up` is idempotent).
//!
//! The same migrations run on SQLite and MySQL/MariaDB. On MySQL the tables
//! use `utf8mb4` with the binary collation, so keys compare byte for byte
//! (a client message id `A` is not the same as `a`) and any Unicode fits.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

mod m20261126_000001_core;
mod m20261126_000002_moderation;

/// A table as every migration creates it: on MySQL, InnoDB with `utf8mb4`
/// and the binary collation (see above); SQLite takes it as it is.
pub(crate) fn for_backend(
    manager: &SchemaManager,
    table: &mut TableCreateStatement,
) -> TableCreateStatement {
    if manager.get_database_backend() == DatabaseBackend::MySql {
        table
            .engine("InnoDB")
            .character_set("utf8mb4")
            .collate("utf8mb4_bin");
    }
    table.to_owned()
}

/// Chatty's migrator.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261126_000001_core::Migration),
            Box::new(m20261126_000002_moderation::Migration),
        ]
    }
}

//! Schema migrations, run at every start (`Migrator::up` is idempotent).
//!
//! The same migrations run on SQLite and MySQL/MariaDB. On MySQL the tables
//! use `utf8mb4` with the binary collation, so keys compare byte for byte
//! (a client message id `A` is not the same as `a`) and any Unicode fits.

use sea_orm_migration::prelude::*;

mod m20261126_000001_core;
mod m20261126_000002_moderation;

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

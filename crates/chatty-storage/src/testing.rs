//! Test support (feature `testing`): a fresh, empty database per test.
//!
//! * SQLite: a file in a new temporary directory, removed when dropped.
//! * MySQL/MariaDB: a new database named `chatty_test_<uuid>` on the server
//!   at `CHATTY_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306`),
//!   created with `utf8mb4` and the binary collation. The test command drops
//!   leftovers (`scripts/test.sh`).
//!
//! Each test gets its own database, so tests run in parallel and never see
//! each other's data.

use std::time::Duration;

use sea_orm::{ConnectionTrait, Database};

use crate::sql::SqlStoreOptions;

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    MySql,
}

impl Backend {
    /// `CHATTY_TEST_BACKEND=mysql` selects MySQL; anything else SQLite.
    pub fn from_env() -> Self {
        match std::env::var("CHATTY_TEST_BACKEND").as_deref() {
            Ok("mysql") | Ok("mariadb") => Backend::MySql,
            _ => Backend::Sqlite,
        }
    }
}

/// A fresh database; keep it alive for as long as the test uses it.
#[derive(Debug)]
pub struct TestDatabase {
    pub url: String,
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
}

/// The MySQL server tests use.
pub fn mysql_server_url() -> String {
    std::env::var("CHATTY_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

impl TestDatabase {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => Self::sqlite(),
            Backend::MySql => Self::mysql().await,
        }
    }

    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory for the test database");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("chatty.db").display()
        );
        Self {
            url,
            backend: Backend::Sqlite,
            _dir: Some(dir),
        }
    }

    pub async fn mysql() -> Self {
        let server = mysql_server_url();
        let name = format!("chatty_test_{}", uuid::Uuid::new_v4().simple());
        let admin = Database::connect(server.clone()).await.unwrap_or_else(|e| {
            panic!("cannot reach MariaDB at {server} (set CHATTY_TEST_MYSQL_URL): {e}")
        });
        admin
            .execute_unprepared(&format!(
                "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
            ))
            .await
            .expect("create the test database");
        let _ = admin.close().await;
        Self {
            url: format!("{}/{name}", server.trim_end_matches('/')),
            backend: Backend::MySql,
            _dir: None,
        }
    }

    /// Store options for this database with test-friendly timeouts.
    pub fn options(&self) -> SqlStoreOptions {
        SqlStoreOptions {
            url: self.url.clone(),
            max_connections: 8,
            min_connections: 0,
            connect_timeout: Duration::from_secs(10),
            query_timeout: Duration::from_secs(10),
        }
    }
}

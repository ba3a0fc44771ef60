//! The storage error type: what callers can act on, not which driver failed.

use sea_orm::{DbErr, RuntimeErr, SqlErr};

/// A storage failure, classified for the caller.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The thing asked for does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A uniqueness rule was broken.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database did not answer in time or could not be reached. Callers
    /// answer 503 and the client retries.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The bus (Redis) did not answer in time or could not be reached.
    #[error("bus unavailable: {0}")]
    BusUnavailable(String),
    /// Anything else. Logged, answered as an opaque 500.
    #[error("storage error: {0}")]
    Other(String),
}

impl From<DbErr> for StoreError {
    fn from(err: DbErr) -> Self {
        if let Some(SqlErr::UniqueConstraintViolation(what)) = err.sql_err() {
            return StoreError::Conflict(what);
        }
        match err {
            DbErr::RecordNotFound(what) => StoreError::NotFound(what),
            DbErr::ConnectionAcquire(e) => StoreError::Unavailable(e.to_string()),
            DbErr::Conn(e) => StoreError::Unavailable(e.to_string()),
            DbErr::Exec(e) | DbErr::Query(e) if is_connection_failure(&e) => {
                StoreError::Unavailable(e.to_string())
            }
            other => StoreError::Other(other.to_string()),
        }
    }
}

/// Did a statement fail because the database went away or was too busy
/// (rather than because of the statement)? Worth a retry: 503, not 500.
fn is_connection_failure(err: &RuntimeErr) -> bool {
    use sea_orm::sqlx::Error;
    match err {
        RuntimeErr::SqlxError(e) => match &**e {
            Error::Io(_)
            | Error::Tls(_)
            | Error::PoolTimedOut
            | Error::PoolClosed
            | Error::WorkerCrashed
            | Error::Protocol(_) => true,
            // Contention, not a bad statement: SQLite busy/locked (5, 6,
            // 517), MySQL deadlock (SQLSTATE 40001) or lock wait timeout.
            Error::Database(db) => {
                matches!(db.code().as_deref(), Some("5" | "6" | "517" | "40001"))
                    || db.message().contains("Lock wait timeout")
            }
            _ => false,
        },
        _ => false,
    }
}

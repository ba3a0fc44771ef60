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

/// Did a statement fail because the database went away (rather than because
/// of the statement)? Those failures are worth a retry: 503, not 500.
fn is_connection_failure(err: &RuntimeErr) -> bool {
    use sea_orm::sqlx::Error;
    match err {
        RuntimeErr::SqlxError(e) => matches!(
            **e,
            Error::Io(_)
                | Error::Tls(_)
                | Error::PoolTimedOut
                | Error::PoolClosed
                | Error::WorkerCrashed
                | Error::Protocol(_)
        ),
        _ => false,
    }
}

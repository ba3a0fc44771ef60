//! [`ApiError`]: the one error type handlers return, and its mapping to the
//! JSON error body `{"error":{"code":"…","message":"…"}}`.
//!
//! Client errors carry a stable [`ErrorCode`] and a message safe to show.
//! Internal failures are logged with their cause and answered as an opaque
//! `internal_error`; a store that does not answer in time is a `503
//! store_unavailable`, so clients know to retry.

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use chatty_protocol::{ErrorBody, ErrorCode};
use chatty_storage::StoreError;

/// An error answered to the client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The client's fault (or a condition it can act on): a 4xx.
    #[error("{code}: {message}")]
    Client { code: ErrorCode, message: String },
    /// Not now (a rate limit, slow mode): answered with `Retry-After`.
    #[error("{code}: wait {retry_after:?}")]
    Wait {
        code: ErrorCode,
        message: String,
        retry_after: std::time::Duration,
    },
    /// A store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bug or unexpected condition; the text goes to the log only.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A refusal the client may retry after `retry_after` (429 + `Retry-After`).
    pub fn wait(
        code: ErrorCode,
        message: impl Into<String>,
        retry_after: std::time::Duration,
    ) -> Self {
        ApiError::Wait {
            code,
            message: message.into(),
            retry_after,
        }
    }

    pub fn client(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError::Client {
            code,
            message: message.into(),
        }
    }

    /// The code sent to the client.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Client { code, .. } => *code,
            ApiError::Wait { code, .. } => *code,
            ApiError::Store(StoreError::Unavailable(_)) => ErrorCode::StoreUnavailable,
            ApiError::Store(StoreError::BusUnavailable(_)) => ErrorCode::BusUnavailable,
            ApiError::Store(_) | ApiError::Internal(_) => ErrorCode::InternalError,
        }
    }

    fn public_message(&self) -> String {
        match self {
            ApiError::Client { message, .. } => message.clone(),
            ApiError::Wait {
                message,
                retry_after,
                ..
            } => format!("{message} Wait {} s.", retry_after_secs(*retry_after)),
            ApiError::Store(StoreError::Unavailable(_)) => {
                "The chat store did not answer in time. Retry shortly; a send retried with the same client_message_id is never stored twice."
                    .into()
            }
            ApiError::Store(StoreError::BusUnavailable(_)) => {
                "The chat bus did not answer in time. Retry shortly; a send retried with the same client_message_id is never stored twice."
                    .into()
            }
            ApiError::Store(_) | ApiError::Internal(_) => {
                "Something went wrong on our side.".into()
            }
        }
    }
}

/// Whole seconds to wait, rounded up, at least 1.
fn retry_after_secs(wait: std::time::Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.is_zero()))
}

/// The JSON error response for a code and message.
pub fn error_response(code: ErrorCode, message: &str) -> HttpResponse {
    let status =
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status);
    if code.http_status() == 503 {
        response.insert_header(("Retry-After", "1"));
    } else if code == ErrorCode::TooManyConnections {
        // Slots come back as this address's connections close.
        response.insert_header(("Retry-After", "5"));
    }
    let mut response = response
        .insert_header((CONTENT_TYPE, HeaderValue::from_static("application/json")))
        .json(ErrorBody::new(code, message));
    // For the metrics middleware (refusals by a limit are counted by code).
    response.extensions_mut().insert(code);
    response
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code().http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ApiError::Client { .. } | ApiError::Wait { .. } => {}
            ApiError::Store(StoreError::Unavailable(cause)) => {
                tracing::warn!(%cause, "store unavailable")
            }
            ApiError::Store(StoreError::BusUnavailable(cause)) => {
                tracing::warn!(%cause, "bus unavailable")
            }
            other => tracing::error!(error = %other, "request failed"),
        }
        let mut response = error_response(self.code(), &self.public_message());
        if let ApiError::Wait { retry_after, .. } = self
            && let Ok(value) = actix_web::http::header::HeaderValue::from_str(
                &retry_after_secs(*retry_after).to_string(),
            )
        {
            response
                .headers_mut()
                .insert(actix_web::http::header::RETRY_AFTER, value);
        }
        response
    }
}

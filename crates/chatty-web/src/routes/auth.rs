//! Reading and checking the guest token of a request.

use actix_web::HttpRequest;
use actix_web::http::header::{AUTHORIZATION, ORIGIN};
use chatty_protocol::{ErrorCode, RoomCursor};
use chatty_storage::Site;

use crate::error::ApiError;
use crate::state::AppState;
use crate::token::{GuestClaims, TokenError};
use std::sync::Arc;

/// The verified claims of the request's `Authorization: Bearer` token, which
/// must belong to `room_id`.
pub fn authenticate(
    req: &HttpRequest,
    state: &AppState,
    room_id: i64,
) -> Result<Arc<GuestClaims>, ApiError> {
    authenticate_with(req, state, room_id, None)
}

/// Like [`authenticate`], but a `token` from the query string is accepted
/// when there is no `Authorization` header: browsers cannot set headers on
/// a WebSocket or an `EventSource`.
pub fn authenticate_with(
    req: &HttpRequest,
    state: &AppState,
    room_id: i64,
    query_token: Option<&str>,
) -> Result<Arc<GuestClaims>, ApiError> {
    if req.headers().get(AUTHORIZATION).is_none()
        && let Some(token) = query_token
    {
        return verify(state, token, room_id);
    }
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::client(
                ErrorCode::MissingToken,
                "Send the guest token from join as Authorization: Bearer <token>.",
            )
        })?;
    let token = header.strip_prefix("Bearer ").ok_or_else(|| {
        ApiError::client(
            ErrorCode::MissingToken,
            "The Authorization header must be: Bearer <token>.",
        )
    })?;
    verify(state, token, room_id)
}

/// The verified claims of `token`, which must belong to `room_id`.
pub fn verify(state: &AppState, token: &str, room_id: i64) -> Result<Arc<GuestClaims>, ApiError> {
    let claims = state
        .tokens
        .verify(token.trim(), unix_now())
        .map_err(|e| match e {
            TokenError::Invalid => ApiError::client(
                ErrorCode::InvalidToken,
                "The guest token is not valid: join again.",
            ),
            TokenError::Expired => ApiError::client(
                ErrorCode::TokenExpired,
                "The guest token has expired: join again.",
            ),
        })?;
    if claims.room_id != room_id {
        return Err(ApiError::client(
            ErrorCode::WrongRoom,
            "This guest token belongs to another room.",
        ));
    }
    Ok(claims)
}

/// Refuses a browser request whose `Origin` the site does not allow
/// (403 `origin_not_allowed`). Requests without `Origin` (not from a
/// browser page) pass.
pub fn check_origin(req: &HttpRequest, site: &Site) -> Result<(), ApiError> {
    match req.headers().get(ORIGIN) {
        Some(origin) if !site.allows_origin(origin.to_str().unwrap_or_default()) => {
            Err(ApiError::client(
                ErrorCode::OriginNotAllowed,
                "This site does not allow chat from this origin.",
            ))
        }
        _ => Ok(()),
    }
}

/// For a request with a guest token: a browser request (it has an
/// `Origin`) must come from one of the site's origins, and the site must
/// still be enabled. Requests without `Origin` skip the lookup: the poll
/// path stays free of it for non-browser clients, and a send checks its
/// site anyway.
pub async fn check_token_origin(
    req: &HttpRequest,
    state: &AppState,
    claims: &GuestClaims,
) -> Result<(), ApiError> {
    if req.headers().contains_key(ORIGIN) {
        let site = state.directory.site_by_id(claims.site_id).await?;
        check_origin(req, &site)?;
    }
    Ok(())
}

/// A cursor from the query string or a header (400 `invalid_cursor`).
pub fn parse_cursor(text: &str) -> Result<RoomCursor, ApiError> {
    text.parse().map_err(|e: chatty_protocol::CursorError| {
        ApiError::client(ErrorCode::InvalidCursor, e.to_string())
    })
}

/// Seconds since the Unix epoch (cheaper than a calendar clock on every poll).
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

//! `GET /api/v1/rooms/{room_id}/events?cursor=…` — the 2-second poll.
//!
//! The hot path of the whole service. With `If-None-Match` equal to the
//! room's version it answers `304` from memory: a token check (cached after
//! the first poll), one hash map lookup and one short lock; no database, no
//! Redis, no serialisation, no formatting.

use std::time::Instant;

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, HeaderValue, IF_NONE_MATCH};
use actix_web::{HttpRequest, HttpResponse, web};
use chatty_protocol::api::PollQuery;
use chatty_protocol::{ErrorCode, RoomCursor};

use super::auth::authenticate;
use crate::error::ApiError;
use crate::hub::PollAnswer;
use crate::state::AppState;

const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");

/// The `cursor` query parameter. Cursors are digits, dots and hex, which no
/// client needs to percent-encode; anything else goes through the full
/// query-string parser.
fn cursor_param(query: &str) -> Result<String, ApiError> {
    let direct = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("cursor="))
        .filter(|value| !value.contains(['%', '+']));
    match direct {
        Some(value) => Ok(value.to_owned()),
        None => web::Query::<PollQuery>::from_query(query)
            .map(|q| q.into_inner().cursor)
            .map_err(|e| {
                ApiError::client(
                    ErrorCode::InvalidQuery,
                    format!("Malformed query string: {e}."),
                )
            }),
    }
}

pub async fn poll(
    req: HttpRequest,
    room_id: web::Path<i64>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let room_id = room_id.into_inner();
    let claims = authenticate(&req, &state, room_id)?;
    let cursor: RoomCursor =
        cursor_param(req.query_string())?
            .parse()
            .map_err(|e: chatty_protocol::CursorError| {
                ApiError::client(ErrorCode::InvalidCursor, e.to_string())
            })?;
    let room = state.hub.room(room_id).await?;
    let if_none_match = req
        .headers()
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    let answer = state
        .hub
        .poll(
            &room,
            &claims.guest_id,
            &claims.nickname,
            cursor,
            if_none_match,
            Instant::now(),
        )
        .await?;
    Ok(match answer {
        PollAnswer::NotModified { etag } => {
            state.metrics.polls_not_modified.inc();
            HttpResponse::NotModified()
                .insert_header((ETAG, etag))
                .insert_header((CACHE_CONTROL, NO_CACHE))
                .finish()
        }
        PollAnswer::Events { body, cursor, path } => {
            state
                .metrics
                .polls
                .with_label_values(&[path.as_str()])
                .inc();
            HttpResponse::Ok()
                .insert_header((ETAG, cursor.etag()))
                .insert_header((CACHE_CONTROL, NO_CACHE))
                .insert_header((CONTENT_TYPE, "application/json"))
                .body(body)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_is_read_directly_or_through_the_full_parser() {
        assert_eq!(
            cursor_param("cursor=1.ab.2").ok().as_deref(),
            Some("1.ab.2")
        );
        assert_eq!(
            cursor_param("x=1&cursor=1.ab.2").ok().as_deref(),
            Some("1.ab.2")
        );
        assert_eq!(
            cursor_param("cursor=1%2Eab.2").ok().as_deref(),
            Some("1.ab.2")
        );
        assert!(cursor_param("").is_err());
        assert!(cursor_param("other=1").is_err());
    }
}

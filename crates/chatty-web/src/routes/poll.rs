//! `GET /api/v1/rooms/{room_id}/events?cursor=…` — the 2-second poll.
//!
//! The hot path of the whole service. With `If-None-Match` equal to the
//! room's version it answers `304` from memory: a token check, one hash map
//! lookup and one short lock, no database, no serialisation.

use std::time::Instant;

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use actix_web::{HttpRequest, HttpResponse, web};
use chatty_protocol::api::PollQuery;
use chatty_protocol::{ErrorCode, RoomCursor};

use super::auth::authenticate;
use crate::error::ApiError;
use crate::hub::{PollAnswer, PollPath};
use crate::state::AppState;

pub async fn poll(
    req: HttpRequest,
    room_id: web::Path<i64>,
    query: web::Query<PollQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let room_id = room_id.into_inner();
    let claims = authenticate(&req, &state, room_id)?;
    let cursor: RoomCursor = query
        .cursor
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
        PollAnswer::NotModified { cursor } => {
            state
                .metrics
                .polls
                .with_label_values(&[PollPath::NotModified.as_str()])
                .inc();
            HttpResponse::NotModified()
                .insert_header((ETAG, cursor.etag()))
                .insert_header((CACHE_CONTROL, "no-cache"))
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
                .insert_header((CACHE_CONTROL, "no-cache"))
                .insert_header((CONTENT_TYPE, "application/json"))
                .body(body)
        }
    })
}

//! `GET /api/v1/rooms/{room_id}/events?cursor=…[&wait=N]` — the 2-second
//! poll, and the long-poll.
//!
//! The hot path of the whole service. With `If-None-Match` equal to the
//! room's version it answers `304` from memory: a token check (cached after
//! the first poll), one hash map lookup and one short lock; no database, no
//! Redis, no serialisation, no formatting.
//!
//! With `wait=N` it is a long-poll: when there is nothing new the request
//! is held on the room's change notification (no polling loop, no I/O)
//! until something happens, `N` seconds pass (at most
//! `push.long_poll_max_secs`) or the node drains, and then answered
//! exactly like a plain poll.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, HeaderValue, IF_NONE_MATCH};
use actix_web::{HttpRequest, HttpResponse, web};
use chatty_protocol::api::PollQuery;
use chatty_protocol::{ErrorCode, RoomCursor};

use super::auth::parse_cursor;
use super::auth::{authenticate, check_token_origin};
use crate::connections::Transport;
use crate::error::ApiError;
use crate::hub::RoomState;
use crate::hub::{PollAnswer, PollPath};
use crate::state::AppState;
use crate::token::GuestClaims;

const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");

/// The `cursor` and `wait` query parameters. Cursors are digits, dots and
/// hex, which no client needs to percent-encode; a query with anything
/// encoded goes through the full query-string parser.
fn poll_params(query: &str) -> Result<PollQuery, ApiError> {
    if !query.contains(['%', '+']) {
        let mut cursor = None;
        let mut wait = None;
        for pair in query.split('&') {
            if let Some(value) = pair.strip_prefix("cursor=") {
                cursor = Some(value);
            } else if let Some(value) = pair.strip_prefix("wait=") {
                wait = Some(value.parse::<u64>().map_err(|_| {
                    ApiError::client(
                        ErrorCode::InvalidQuery,
                        "wait must be a whole number of seconds.",
                    )
                })?);
            }
        }
        if let Some(cursor) = cursor {
            return Ok(PollQuery {
                cursor: cursor.to_owned(),
                wait,
            });
        }
    }
    web::Query::<PollQuery>::from_query(query)
        .map(web::Query::into_inner)
        .map_err(|e| {
            ApiError::client(
                ErrorCode::InvalidQuery,
                format!("Malformed query string: {e}."),
            )
        })
}

/// Is this answer "nothing new" (a long-poll keeps waiting)?
fn nothing_new(answer: &PollAnswer) -> bool {
    match answer {
        PollAnswer::NotModified { .. } => true,
        PollAnswer::Events { has_events, .. } => !has_events,
    }
}

/// A poll held until the room changes, `wait` is over or the node drains.
/// Only a poll that is actually held counts as a connection for the caps.
async fn long_poll(
    req: &HttpRequest,
    state: &AppState,
    room: &Arc<RoomState>,
    claims: &GuestClaims,
    cursor: RoomCursor,
    if_none_match: Option<&str>,
    wait: Duration,
) -> Result<PollAnswer, ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    // A held poll keeps its guest present: it looks again (which notes the
    // guest, no I/O) a few times per presence timeout.
    let touch_every = (state.settings.chat.presence_timeout() / 3).max(Duration::from_millis(100));
    let mut slot = None;
    loop {
        // Registered before looking, so a change in between wakes us.
        let mut changed = std::pin::pin!(room.changed());
        changed.as_mut().enable();
        let answer = state
            .hub
            .poll(
                room,
                &claims.guest_id,
                &claims.nickname,
                cursor,
                if_none_match,
                Instant::now(),
            )
            .await?;
        if !nothing_new(&answer)
            || state.hub.is_draining()
            || tokio::time::Instant::now() >= deadline
        {
            return Ok(answer);
        }
        if slot.is_none() {
            slot = Some(state.connections.acquire(
                crate::client_ip::connection_key(state.visitors.address(req)),
                Transport::LongPoll,
            )?);
        }
        let wake = deadline.min(tokio::time::Instant::now() + touch_every);
        tokio::select! {
            () = changed => {}
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}

pub async fn poll(
    req: HttpRequest,
    room_id: web::Path<i64>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let room_id = room_id.into_inner();
    let claims = authenticate(&req, &state, room_id)?;
    check_token_origin(&req, &state, &claims).await?;
    let params = poll_params(req.query_string())?;
    let cursor = parse_cursor(&params.cursor)?;
    let from_seq = cursor.seq;
    let room = state.hub.room(room_id).await?;
    let if_none_match = req
        .headers()
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    let wait =
        Duration::from_secs(params.wait.unwrap_or(0)).min(state.settings.push.long_poll_max());
    let answer = if wait.is_zero() {
        state
            .hub
            .poll(
                &room,
                &claims.guest_id,
                &claims.nickname,
                cursor,
                if_none_match,
                Instant::now(),
            )
            .await?
    } else {
        long_poll(&req, &state, &room, &claims, cursor, if_none_match, wait).await?
    };
    let long = !wait.is_zero();
    let mut response = match answer {
        PollAnswer::NotModified { etag } => {
            state.metrics.polls_not_modified.inc();
            HttpResponse::NotModified()
                .insert_header((ETAG, etag))
                .insert_header((CACHE_CONTROL, NO_CACHE))
                .finish()
        }
        PollAnswer::Events {
            body, cursor, path, ..
        } => {
            state
                .metrics
                .polls
                .with_label_values(&[path.as_str()])
                .inc();
            // The answer holds the messages from the request's cursor up to
            // its own (a reset holds none).
            if !matches!(path, PollPath::Reset) {
                state
                    .metrics
                    .messages_delivered
                    .with_label_values(&["poll"])
                    .inc_by(cursor.seq.saturating_sub(from_seq));
            }
            HttpResponse::Ok()
                .insert_header((ETAG, cursor.etag()))
                .insert_header((CACHE_CONTROL, NO_CACHE))
                .insert_header((CONTENT_TYPE, "application/json"))
                .body(body)
        }
    };
    if long {
        // A held answer goes out unbuffered through nginx, like an event
        // stream (nginx does not pass this header on to the client).
        response.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        );
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_and_wait_are_read_directly_or_through_the_full_parser() {
        let cursor = |q: &str| poll_params(q).ok().map(|p| p.cursor);
        assert_eq!(cursor("cursor=1.ab.2").as_deref(), Some("1.ab.2"));
        assert_eq!(cursor("x=1&cursor=1.ab.2").as_deref(), Some("1.ab.2"));
        assert_eq!(cursor("cursor=1%2Eab.2").as_deref(), Some("1.ab.2"));
        assert!(poll_params("").is_err());
        assert!(poll_params("other=1").is_err());
        let wait = |q: &str| poll_params(q).ok().and_then(|p| p.wait);
        assert_eq!(wait("cursor=1.ab.2&wait=25"), Some(25));
        assert_eq!(wait("wait=3&cursor=1%2Eab.2"), Some(3));
        assert_eq!(wait("cursor=1.ab.2"), None);
        assert!(poll_params("cursor=1.ab.2&wait=soon").is_err());
        assert!(poll_params("cursor=1.ab.2&wait=-1").is_err());
    }
}

//! `GET /api/v1/rooms/{room_id}/ws` (WebSocket) and
//! `GET /api/v1/rooms/{room_id}/sse` (Server-Sent Events): push transports.
//!
//! Both are checked in full before anything is upgraded or streamed: the
//! handshake, the guest token (`Authorization` or `?token=`), the `Origin`
//! against the site's allowed origins, the connection caps, and the cursor
//! to resume from (`?cursor=`, or SSE's `Last-Event-ID`). A refusal is an
//! ordinary JSON error response; a client never sees a `101` or a stream
//! that is then cut. The one exception is a WebSocket opened without a
//! token, to authenticate in its first message (keeping the token out of
//! URLs and logs): the room, the `Origin`, the drain and the caps are
//! checked before the upgrade, the token and cursor after it (a refusal is
//! then a close frame, see [`crate::websocket`]).

use actix_web::body::{BodyStream, MessageBody};
use actix_web::http::header::{self, HeaderValue, ORIGIN};
use actix_web::{HttpRequest, HttpResponse, web};
use chatty_protocol::ErrorCode;
use serde::Deserialize;

use std::time::Duration;

use super::auth::{authenticate_with, check_origin, check_token_origin, parse_cursor, verify};
use crate::connections::Transport;
use crate::error::ApiError;
use crate::hub::{Subscription, draining};
use crate::sse::SseConnection;
use crate::state::AppState;
use crate::websocket::{Authorize, Phase, WsConnection, WsLimits};

/// Query string of the push endpoints.
#[derive(Debug, Deserialize)]
pub struct PushQuery {
    /// The guest token (when no `Authorization` header can be sent).
    pub token: Option<String>,
    /// The cursor to resume from (from join, or the last frame seen).
    pub cursor: Option<String>,
}

/// Everything both transports check, then the subscription.
async fn open(
    req: &HttpRequest,
    state: &AppState,
    room_id: i64,
    query: &PushQuery,
    cursor: Option<&str>,
    transport: Transport,
) -> Result<(Subscription, crate::connections::ConnectionGuard), ApiError> {
    let claims = authenticate_with(req, state, room_id, query.token.as_deref())?;
    let cursor = parse_cursor(cursor.ok_or_else(|| {
        ApiError::client(
            ErrorCode::InvalidQuery,
            "Send the cursor to start from: ?cursor= (from join, or the last one received).",
        )
    })?)?;
    // A browser always sends Origin on a WebSocket handshake, and CORS does
    // not protect WebSockets: this check is what keeps a copied widget on
    // another site out. Clients that are not browsers send none.
    check_token_origin(req, state, &claims).await?;
    if state.hub.is_draining() {
        return Err(draining());
    }
    let guard = state.connections.acquire(
        crate::client_ip::connection_key(state.visitors.address(req)),
        transport,
    )?;
    let room = state.hub.room(room_id).await?;
    let subscription = state
        .hub
        .subscribe(&room, claims, cursor, state.settings.push.queue_frames)
        .await?;
    Ok((subscription, guard))
}

pub async fn websocket(
    req: HttpRequest,
    room_id: web::Path<i64>,
    query: web::Query<PushQuery>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let handshake = actix_http::ws::handshake(req.head()).map_err(|e| {
        ApiError::client(
            ErrorCode::NotWebsocket,
            format!("This endpoint speaks WebSocket only: {e}."),
        )
    })?;
    let room_id = room_id.into_inner();
    let push = &state.settings.push;
    let has_credentials =
        req.headers().contains_key(header::AUTHORIZATION) || query.token.is_some();
    let (phase, guard) = if has_credentials {
        let (subscription, guard) = open(
            &req,
            &state,
            room_id,
            &query,
            query.cursor.as_deref(),
            Transport::WebSocket,
        )
        .await?;
        (Phase::Live(subscription), guard)
    } else {
        // The token comes in the first message. Everything that can be
        // checked without it is checked now, before the upgrade.
        let room = state.directory.room_by_id(room_id).await?;
        if req.headers().contains_key(ORIGIN) {
            let site = state.directory.site_by_id(room.site_id).await?;
            check_origin(&req, &site)?;
        }
        if state.hub.is_draining() {
            return Err(draining());
        }
        let guard = state.connections.acquire(
            crate::client_ip::connection_key(state.visitors.address(&req)),
            Transport::WebSocket,
        )?;
        let node = state.get_ref().clone();
        let authorize: Authorize = Box::new(move |token, cursor| {
            Box::pin(async move {
                let claims = verify(&node, &token, room_id)?;
                let cursor = parse_cursor(&cursor)?;
                let room = node.hub.room(room_id).await?;
                node.hub
                    .subscribe(&room, claims, cursor, node.settings.push.queue_frames)
                    .await
            })
        });
        let deadline = Box::pin(tokio::time::sleep(Duration::from_millis(
            push.handshake_timeout_ms,
        )));
        (
            Phase::AwaitingAuth {
                deadline,
                authorize,
            },
            guard,
        )
    };
    let connection = WsConnection::new(
        payload,
        phase,
        state.hub.clone(),
        WsLimits {
            max_frame_bytes: push.max_frame_bytes,
            ping_interval: push.ping_interval(),
            idle_timeout: push.idle_timeout(),
        },
        guard,
    );
    let mut response = handshake;
    let response = response
        .message_body(BodyStream::new(connection).boxed())
        .map_err(|e| ApiError::Internal(format!("cannot build the 101 response: {e}")))?;
    Ok(response.into())
}

pub async fn sse(
    req: HttpRequest,
    room_id: web::Path<i64>,
    query: web::Query<PushQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // A reconnecting EventSource names the last record it received.
    let last_event_id = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty());
    let cursor = last_event_id.or(query.cursor.as_deref());
    let (subscription, guard) = open(
        &req,
        &state,
        room_id.into_inner(),
        &query,
        cursor,
        Transport::Sse,
    )
    .await?;
    let connection = SseConnection::new(
        subscription,
        state.hub.clone(),
        state.settings.push.sse_keepalive(),
        guard,
    );
    Ok(HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        ))
        .insert_header((
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache, no-transform"),
        ))
        // nginx: do not buffer this response.
        .insert_header(("X-Accel-Buffering", HeaderValue::from_static("no")))
        .streaming(connection))
}

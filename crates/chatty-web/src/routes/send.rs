//! `POST /api/v1/rooms/{room_id}/messages` — send a message.
//!
//! The answer is given only after the message is committed. The commit and
//! the hand-over to the hub and the bus run in their own task, so a client
//! that hangs up mid-request cannot leave a committed message unannounced.

use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, web};
use chatty_protocol::ErrorCode;
use chatty_protocol::api::{SendRequest, SendResponse};
use chatty_protocol::validate::{ClientMessageId, MessageBody, Nickname};
use chatty_storage::{NewMessage, StoreError};

use super::auth::{authenticate, check_origin};
use super::json_object::JsonObject;
use crate::error::ApiError;
use crate::state::AppState;

pub async fn send(
    req: HttpRequest,
    room_id: web::Path<i64>,
    body: JsonObject<SendRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let room_id = room_id.into_inner();
    let claims = authenticate(&req, &state, room_id)?;
    let JsonObject(request) = body;
    let client_message_id = ClientMessageId::parse(&request.client_message_id)
        .map_err(|e| ApiError::client(e.code, e.message))?;
    let message_body = MessageBody::parse(&request.body, state.settings.chat.max_body_chars)
        .map_err(|e| ApiError::client(MessageBody::error_code(&e), format!("The message {e}.")))?;
    // The nickname was validated at join and is signed into the token.
    let nickname = Nickname::parse(&claims.nickname).map_err(|_| {
        ApiError::client(
            ErrorCode::InvalidToken,
            "The guest token carries an invalid nickname.",
        )
    })?;

    // The site as it is now (cached; refreshed on every change): disabled
    // sites, origins, slow mode and the word filter apply to every send.
    let site = state.directory.site_by_id(claims.site_id).await?;
    check_origin(&req, &site)?;
    // Refuse before committing when this node cannot announce the message.
    if !state.bus.is_connected() {
        return Err(
            StoreError::BusUnavailable("this node's bus subscription is down".into()).into(),
        );
    }
    let visitor = state.visitors.of(&req);
    let admitted = match crate::moderation::admit_send(
        &state,
        &site,
        room_id,
        &claims.guest_id,
        client_message_id.as_str(),
        message_body,
        &visitor,
    )
    .await
    {
        Ok(admitted) => admitted,
        Err(refusal) => {
            // A retry of a message already stored (its answer was lost) is
            // answered with the message, whatever the limits say now: it
            // was accepted once and everyone has it.
            return match state
                .store
                .message_by_client_id(room_id, client_message_id.as_str())
                .await?
            {
                Some(message) if message.guest_id == claims.guest_id => Ok(HttpResponse::Ok()
                    .json(SendResponse {
                        message: message.to_view(),
                        created: false,
                    })),
                _ => Err(refusal),
            };
        }
    };
    let room = state.hub.room(room_id).await?;
    state
        .hub
        .touch(&room, &claims.guest_id, &claims.nickname, Instant::now());

    let new = NewMessage {
        room_id,
        guest_id: claims.guest_id.clone(),
        nickname,
        body: admitted.body,
        client_message_id,
        created_at: chrono::Utc::now(),
        ip_hash: visitor.ip_hash,
    };
    let task_state = state.clone();
    let outcome = tokio::spawn(async move {
        let outcome = task_state.store.post_message(new).await?;
        // Local first, so the sender's next poll sees it on this node; then
        // the bus for every node. A retry publishes again: if the first
        // attempt died between commit and publish, this repairs it, and
        // receivers drop duplicates by seq. If the publish fails the client
        // gets a 503 and retries; the message is stored either way.
        task_state.hub.apply_message(outcome.message.clone());
        task_state.bus.publish_message(&outcome.message).await?;
        Ok::<_, ApiError>(outcome)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("send task failed: {e}")))??;

    if outcome.created {
        state.metrics.messages_received.inc();
    }
    let response = SendResponse {
        message: outcome.message.to_view(),
        created: outcome.created,
    };
    Ok(if outcome.created {
        HttpResponse::Created().json(response)
    } else {
        HttpResponse::Ok().json(response)
    })
}

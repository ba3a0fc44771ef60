//! `POST /api/v1/rooms/{room_id}/leave` — the widget says goodbye
//! (sent with `keepalive` when the page is hidden), so others see the leave
//! at once instead of after the presence timeout.

use actix_web::{HttpRequest, HttpResponse, web};

use super::auth::{authenticate, check_token_origin};
use crate::error::ApiError;
use crate::state::AppState;

pub async fn leave(
    req: HttpRequest,
    room_id: web::Path<i64>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let room_id = room_id.into_inner();
    let claims = authenticate(&req, &state, room_id)?;
    check_token_origin(&req, &state, &claims).await?;
    let room = state.hub.room(room_id).await?;
    state.hub.leave(&room, &claims.guest_id).await?;
    Ok(HttpResponse::NoContent().finish())
}

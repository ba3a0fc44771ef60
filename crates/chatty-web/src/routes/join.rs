//! `POST /api/v1/join` — initial sync: a guest token, the members present
//! and the latest messages, with the cursor to poll from.

use actix_web::{HttpRequest, HttpResponse, web};

use chatty_protocol::api::{GuestView, JoinRequest, JoinResponse, RoomView};
use chatty_protocol::validate::{Nickname, PagePath, SiteKey};

use super::auth::check_origin;
use super::json_object::JsonObject;
use crate::error::ApiError;
use crate::state::AppState;
use crate::token::GuestClaims;

pub async fn join(
    req: HttpRequest,
    body: JsonObject<JoinRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let JsonObject(request) = body;
    let site_key =
        SiteKey::parse(&request.site_key).map_err(|e| ApiError::client(e.code, e.message))?;
    let nickname = Nickname::parse(&request.nickname)
        .map_err(|e| ApiError::client(Nickname::error_code(&e), format!("The nickname {e}.")))?;
    let page = request
        .page
        .as_deref()
        .map(PagePath::parse)
        .transpose()
        .map_err(|e| ApiError::client(e.code, e.message))?;

    // The origin is checked before any room is created for this request.
    let site = state.directory.site(&site_key).await?;
    check_origin(&req, &site)?;
    let room = state.directory.room(&site, page.as_ref()).await?;

    let now = chrono::Utc::now().timestamp();
    // Keep the guest id of an earlier token of the same site, if any, even
    // an expired one: the widget rejoins with it after `token_expired`. A
    // banned guest therefore stays recognisable across rejoins.
    let earlier_guest = request
        .token
        .as_deref()
        .and_then(|t| state.tokens.verify_signature(t).ok())
        .filter(|claims| claims.site_id == site.id)
        .map(|claims| claims.guest_id);

    let room_state = state.hub.room(room.id).await?;
    let visitor = state.visitors.of(&req);
    crate::moderation::admit_join(
        &state,
        &site,
        &room_state,
        earlier_guest.as_deref(),
        nickname.as_str(),
        &visitor,
    )
    .await?;
    let guest_id = earlier_guest.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let snapshot = state
        .hub
        .join(&room_state, &guest_id, nickname.as_str())
        .await?;
    let ttl = state.token_ttl().as_secs();
    let token = state.tokens.sign(&GuestClaims {
        site_id: site.id,
        room_id: room.id,
        guest_id: guest_id.clone(),
        nickname: nickname.as_str().to_owned(),
        expires_at: now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)),
    });
    Ok(HttpResponse::Ok().json(JoinResponse {
        token,
        token_expires_in: ttl,
        guest: GuestView {
            id: guest_id,
            nickname: nickname.into_inner(),
        },
        room: RoomView {
            id: room.id,
            page: room.page,
        },
        members: snapshot.members,
        member_count: snapshot.member_count,
        messages: snapshot.messages,
        cursor: snapshot.cursor,
        poll_interval_ms: state.settings.chat.poll_interval_ms,
        presence_timeout_ms: u64::try_from(state.settings.chat.presence_timeout().as_millis())
            .unwrap_or(u64::MAX),
        max_body_chars: state.settings.chat.max_body_chars,
    }))
}

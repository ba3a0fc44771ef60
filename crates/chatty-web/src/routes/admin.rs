//! The admin API (`/api/v1/admin/…`): sites, tokens, moderation, bans, the
//! audit log and export, for site owners, moderators and the operator.
//! Handlers are thin: authorise, validate, call the admin store / guard /
//! hub, record the action, answer. Every reference is in docs/moderation.md.
//!
//! A moderation event (delete, clear) goes the way a message goes: stored
//! with its own seq, applied to this node's room, published on the bus —
//! so every node, every transport and the join history see it in order.

use actix_web::http::header::AUTHORIZATION;
use actix_web::{HttpRequest, HttpResponse, web};
use chatty_protocol::ErrorCode;
use chatty_protocol::moderation::WordFilter;
use chatty_storage::{
    AuditEntry, Ban, Moderation, NewAuditEntry, NewBan, Room, Site, SiteToken, SiteUpdate,
    StoreError, TokenRole,
};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::json_object::JsonObject;
use crate::admin::{Principal, hash_secret, new_secret, normalize_origins, principal, snippet};
use crate::client_ip::is_ip_hash;
use crate::error::ApiError;
use crate::state::AppState;

/// Longest slow-mode interval: six hours.
pub const SLOW_MODE_MAX_SECS: u32 = 6 * 3600;
/// Longest ban: a year.
const BAN_MAX_SECS: u64 = 365 * 86_400;
/// Most messages in one export answer (continue with `?after=`).
const EXPORT_MAX_MESSAGES: u64 = 50_000;

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::client(ErrorCode::InvalidRequest, message)
}

fn forbidden() -> ApiError {
    ApiError::client(
        ErrorCode::Forbidden,
        "This token may not do that (another site, or a moderator token where an admin token is needed).",
    )
}

/// The JSON view of a site.
#[derive(Debug, Serialize)]
struct SiteView<'a> {
    key: &'a str,
    name: &'a str,
    origins: &'a [String],
    disabled: bool,
    slow_mode_secs: u32,
    word_filter: &'a WordFilter,
    created_at: String,
}

fn site_view(site: &Site) -> SiteView<'_> {
    SiteView {
        key: &site.key,
        name: &site.name,
        origins: &site.allowed_origins,
        disabled: site.disabled,
        slow_mode_secs: site.slow_mode_secs,
        word_filter: &site.word_filter,
        created_at: time(site.created_at),
    }
}

fn token_view(token: &SiteToken) -> serde_json::Value {
    json!({
        "id": token.id,
        "role": token.role,
        "label": token.label,
        "created_at": time(token.created_at),
        "revoked": token.revoked,
    })
}

fn ban_view(ban: &Ban) -> serde_json::Value {
    json!({
        "id": ban.id,
        "guest_id": ban.guest_id,
        "ip_hash": ban.ip_hash,
        "reason": ban.reason,
        "by": ban.created_by,
        "created_at": time(ban.created_at),
        "expires_at": time(ban.expires_at),
    })
}

fn audit_view(entry: &AuditEntry) -> serde_json::Value {
    json!({
        "id": entry.id,
        "at": time(entry.at),
        "actor": entry.actor,
        "action": entry.action,
        "room_id": entry.room_id,
        "target": entry.target,
        "details": entry.details,
    })
}

/// The caller, from `Authorization: Bearer …`.
async fn caller(req: &HttpRequest, state: &AppState) -> Result<Principal, ApiError> {
    let secret = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::client(
                ErrorCode::MissingToken,
                "Send an admin or moderator token as Authorization: Bearer <token>.",
            )
        })?;
    principal(
        state.admin.as_ref(),
        state.settings.admin.operator_token.expose(),
        secret,
    )
    .await
}

/// The caller and the site of the path, if the caller may act on it with
/// at least `role`. An unknown key and a site of someone else both answer
/// 403 to a site token, so keys of other sites cannot be probed.
async fn authorize(
    req: &HttpRequest,
    state: &AppState,
    key: &str,
    role: TokenRole,
) -> Result<(Principal, Site), ApiError> {
    let who = caller(req, state).await?;
    let site = state.store.site_by_key(key).await?;
    match site {
        Some(site) if who.may(site.id, role) => Ok((who, site)),
        None if who == Principal::Operator => Err(ApiError::client(
            ErrorCode::UnknownSite,
            "No site has this key.",
        )),
        _ => Err(forbidden()),
    }
}

/// The room of the path, which must belong to the site.
async fn site_room(state: &AppState, site: &Site, room_id: i64) -> Result<Room, ApiError> {
    match state.store.room(room_id).await? {
        Some(room) if room.site_id == site.id => Ok(room),
        _ => Err(ApiError::client(
            ErrorCode::UnknownRoom,
            "This site has no such room.",
        )),
    }
}

async fn record(
    state: &AppState,
    who: &Principal,
    site: &Site,
    action: &str,
    room_id: Option<i64>,
    target: String,
    details: serde_json::Value,
) -> Result<(), ApiError> {
    state
        .metrics
        .moderation_actions
        .with_label_values(&[action])
        .inc();
    state
        .admin
        .record_action(NewAuditEntry {
            site_id: site.id,
            actor: who.actor(),
            action: action.to_owned(),
            room_id,
            target,
            details,
        })
        .await?;
    Ok(())
}

/// Stores a change of a site, tells every node, records it, answers the site.
async fn change_site(
    state: &AppState,
    who: &Principal,
    site: &Site,
    action: &str,
    update: SiteUpdate,
    details: serde_json::Value,
) -> Result<HttpResponse, ApiError> {
    // Origins or the disabled flag: who may use the site changed, and its
    // open push connections must meet the new rules.
    let access = update.allowed_origins.is_some() || update.disabled.is_some();
    let updated = state.admin.update_site(site.id, update).await?;
    announce_site(state, site.id, access).await;
    record(state, who, site, action, None, site.key.clone(), details).await?;
    Ok(HttpResponse::Ok().json(json!({ "site": site_view(&updated) })))
}

/// Tells every node the site changed. A failure is logged, not answered:
/// the change is stored, and nodes pick it up within the directory's TTL.
async fn announce_site(state: &AppState, site_id: i64, access: bool) {
    if let Err(error) = state.bus.publish_site_changed(site_id, access).await {
        tracing::warn!(%error, site_id, "could not announce a site change; nodes see it within 30 s");
        state.directory.invalidate_site(site_id);
        if access {
            state.hub.release_site(site_id);
        }
    }
}

fn public_url(req: &HttpRequest, state: &AppState) -> String {
    let configured = &state.settings.admin.public_url;
    if !configured.is_empty() {
        return configured.clone();
    }
    let info = req.connection_info();
    format!("{}://{}", info.scheme(), info.host())
}

// --- Sites ----------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSite {
    name: String,
    origins: Vec<String>,
}

/// `POST /api/v1/admin/sites` (operator).
pub async fn create_site(
    req: HttpRequest,
    body: JsonObject<CreateSite>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let who = caller(&req, &state).await?;
    if who != Principal::Operator {
        return Err(forbidden());
    }
    let JsonObject(body) = body;
    let created =
        crate::admin::create_site(state.admin.as_ref(), &body.name, &body.origins).await?;
    let site = &created.site;
    record(
        &state,
        &who,
        site,
        "create_site",
        None,
        site.key.clone(),
        json!({"name": site.name, "origins": site.allowed_origins}),
    )
    .await?;
    Ok(HttpResponse::Created().json(json!({
        "site": site_view(site),
        "admin_token": created.admin_token,
        "snippet": snippet(&public_url(&req, &state), &site.key),
    })))
}

/// `GET /api/v1/admin/sites`: every site for the operator, its own for a
/// site token; `role` says what the token may do (`operator`, `admin`,
/// `moderator`), so a page can show only what works.
pub async fn list_sites(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let who = caller(&req, &state).await?;
    let (sites, role) = match &who {
        Principal::Operator => (state.admin.list_sites().await?, "operator"),
        Principal::Site { site_id, role, .. } => (
            state
                .store
                .site_by_id(*site_id)
                .await?
                .into_iter()
                .collect(),
            role.as_str(),
        ),
    };
    let views: Vec<SiteView<'_>> = sites.iter().map(site_view).collect();
    Ok(HttpResponse::Ok().json(json!({ "sites": views, "role": role })))
}

/// `GET /api/v1/admin/sites/{key}`
pub async fn get_site(
    req: HttpRequest,
    key: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (_, site) = authorize(&req, &state, &key, TokenRole::Moderator).await?;
    Ok(HttpResponse::Ok().json(json!({ "site": site_view(&site) })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateSite {
    name: Option<String>,
    origins: Option<Vec<String>>,
    disabled: Option<bool>,
}

/// `PATCH /api/v1/admin/sites/{key}` (admin): name, origins, disabled.
pub async fn update_site(
    req: HttpRequest,
    key: web::Path<String>,
    body: JsonObject<UpdateSite>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (who, site) = authorize(&req, &state, &key, TokenRole::Admin).await?;
    let JsonObject(body) = body;
    let update = SiteUpdate {
        name: body
            .name
            .as_deref()
            .map(crate::admin::validate_site_name)
            .transpose()?,
        allowed_origins: body.origins.as_deref().map(normalize_origins).transpose()?,
        disabled: body.disabled,
        ..SiteUpdate::default()
    };
    let details = json!({
        "name": update.name,
        "origins": update.allowed_origins,
        "disabled": update.disabled,
    });
    change_site(&state, &who, &site, "update_site", update, details).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetModeration {
    slow_mode_secs: Option<u32>,
    word_filter: Option<WordFilter>,
}

/// `PUT /api/v1/admin/sites/{key}/moderation` (moderator): slow mode and word filter.
pub async fn set_moderation(
    req: HttpRequest,
    key: web::Path<String>,
    body: JsonObject<SetModeration>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (who, site) = authorize(&req, &state, &key, TokenRole::Moderator).await?;
    let JsonObject(body) = body;
    if body.slow_mode_secs.is_some_and(|s| s > SLOW_MODE_MAX_SECS) {
        return Err(invalid(format!(
            "slow_mode_secs: 0 (off) to {SLOW_MODE_MAX_SECS}"
        )));
    }
    let word_filter = body
        .word_filter
        .map(|filter| {
            filter
                .validated()
                .map_err(|e| invalid(format!("word_filter: {e}")))
        })
        .transpose()?;
    let details = json!({
        "slow_mode_secs": body.slow_mode_secs,
        "word_filter": word_filter.as_ref().map(|f| json!({"mode": f.mode, "words": f.words.len()})),
    });
    let update = SiteUpdate {
        slow_mode_secs: body.slow_mode_secs,
        word_filter,
        ..SiteUpdate::default()
    };
    change_site(&state, &who, &site, "set_moderation", update, details).await
}

// --- Tokens ----------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    role: TokenRole,
    label: String,
}

/// `POST /api/v1/admin/sites/{key}/tokens` (admin): the secret is in this answer only.
pub async fn create_token(
    req: HttpRequest,
    key: web::Path<String>,
    body: JsonObject<CreateToken>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (who, site) = authorize(&req, &state, &key, TokenRole::Admin).await?;
    let JsonObject(body) = body;
    let label = body.label.trim();
    if label.is_empty() || label.chars().count() > 100 || label.chars().any(char::is_control) {
        return Err(invalid("label: 1 to 100 characters, no control characters"));
    }
    let secret = new_secret(body.role);
    let token = state
        .admin
        .create_token(site.id, body.role, label, &hash_secret(&secret))
        .await?;
    record(
        &state,
        &who,
        &site,
        "create_token",
        None,
        format!("token {}", token.id),
        json!({"role": token.role, "label": token.label}),
    )
    .await?;
    Ok(HttpResponse::Created().json(json!({ "token": token_view(&token), "secret": secret })))
}

/// `GET /api/v1/admin/sites/{key}/tokens` (admin)
pub async fn list_tokens(
    req: HttpRequest,
    key: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (_, site) = authorize(&req, &state, &key, TokenRole::Admin).await?;
    let tokens = state.admin.list_tokens(site.id).await?;
    let views: Vec<_> = tokens.iter().map(token_view).collect();
    Ok(HttpResponse::Ok().json(json!({ "tokens": views })))
}

/// `DELETE /api/v1/admin/sites/{key}/tokens/{id}` (admin)
pub async fn revoke_token(
    req: HttpRequest,
    path: web::Path<(String, i64)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (key, token_id) = path.into_inner();
    let (who, site) = authorize(&req, &state, &key, TokenRole::Admin).await?;
    if !state.admin.revoke_token(site.id, token_id).await? {
        return Err(ApiError::client(
            ErrorCode::NotFound,
            "This site has no such token.",
        ));
    }
    record(
        &state,
        &who,
        &site,
        "revoke_token",
        None,
        format!("token {token_id}"),
        json!({}),
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

// --- Rooms and messages --------------------------------------------------------

/// `GET /api/v1/admin/sites/{key}/rooms` (moderator)
pub async fn list_rooms(
    req: HttpRequest,
    key: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (_, site) = authorize(&req, &state, &key, TokenRole::Moderator).await?;
    let rooms = state.admin.rooms_of_site(site.id).await?;
    let views: Vec<_> = rooms
        .iter()
        .map(|r| json!({"id": r.id, "page": r.page, "last_seq": r.last_seq}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "rooms": views })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    before: Option<u64>,
    limit: Option<u64>,
}

/// `GET /api/v1/admin/sites/{key}/rooms/{room_id}/messages?before=&limit=` (moderator)
pub async fn list_messages(
    req: HttpRequest,
    path: web::Path<(String, i64)>,
    page: web::Query<Page>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (key, room_id) = path.into_inner();
    let (_, site) = authorize(&req, &state, &key, TokenRole::Moderator).await?;
    site_room(&state, &site, room_id).await?;
    let limit = page.limit.unwrap_or(50).clamp(1, 500);
    let messages = state
        .admin
        .messages_for_moderation(room_id, page.before, limit)
        .await?;
    let views: Vec<_> = messages
        .iter()
        .map(|m| {
            let view = m.message.to_view();
            json!({
                "seq": view.seq,
                "guest_id": view.guest_id,
                "nickname": view.nickname,
                "body": view.body,
                "created_at": view.created_at,
                "ip_hash": m.ip_hash,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "messages": views })))
}

/// Stores a moderation event and hands it to every node.
async fn moderate(
    state: &AppState,
    room_id: i64,
    action: Moderation,
) -> Result<chatty_storage::PostOutcome, ApiError> {
    let outcome = state
        .admin
        .moderate(room_id, action)
        .await
        .map_err(|e| match e {
            StoreError::NotFound(_) => ApiError::client(
                ErrorCode::UnknownMessage,
                "This room has no such message (or it was already removed by a clear).",
            ),
            other => other.into(),
        })?;
    // As a send does: this node first, then every node. Publishing a
    // repeated delete again is harmless (receivers drop what they have).
    state.hub.apply_message(outcome.message.clone());
    state.bus.publish_message(&outcome.message).await?;
    Ok(outcome)
}

/// `DELETE /api/v1/admin/sites/{key}/rooms/{room_id}/messages/{seq}` (moderator)
pub async fn delete_message(
    req: HttpRequest,
    path: web::Path<(String, i64, u64)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (key, room_id, seq) = path.into_inner();
    let (who, site) = authorize(&req, &state, &key, TokenRole::Moderator).await?;
    site_room(&state, &site, room_id).await?;
    let outcome = moderate(&state, room_id, Moderation::Delete { seq }).await?;
    if outcome.created {
        record(
            &state,
            &who,
            &site,
            "delete_message",
            Some(room_id),
            format!("seq {seq}"),
            json!({"event_seq": outcome.message.seq}),
        )
        .await?;
    }
    Ok(HttpResponse::Ok().json(json!({"deleted_seq": seq, "event_seq": outcome.message.seq})))
}

/// `POST /api/v1/admin/sites/{key}/rooms/{room_id}/clear` (moderator)
pub async fn clear_room(
    req: HttpRequest,
    path: web::Path<(String, i64)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (key, room_id) = path.into_inner();
    let (who, site) = authorize(&req, &state, &key, TokenRole::Moderator).await?;
    site_room(&state, &site, room_id).await?;
    let outcome = moderate(&state, room_id, Moderation::Clear).await?;
    record(
        &state,
        &who,
        &site,
        "clear_room",
        Some(room_id),
        format!("room {room_id}"),
        json!({"event_seq": outcome.message.seq}),
    )
    .await?;
    Ok(HttpResponse::Ok().json(json!({"event_seq": outcome.message.seq})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    after: Option<u64>,
}

/// `GET /api/v1/admin/sites/{key}/rooms/{room_id}/export?after=` (admin):
/// the room's chat messages, oldest first, without IP hashes.
pub async fn export_room(
    req: HttpRequest,
    path: web::Path<(String, i64)>,
    query: web::Query<ExportQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (key, room_id) = path.into_inner();
    let (who, site) = authorize(&req, &state, &key, TokenRole::Admin).await?;
    let room = site_room(&state, &site, room_id).await?;
    let mut after = query.after.unwrap_or(0);
    let mut messages = Vec::new();
    let mut read = 0;
    let complete = loop {
        let batch = state.store.messages_after(room_id, after, 1000).await?;
        let Some(last) = batch.last() else {
            break true;
        };
        after = last.seq;
        read += batch.len() as u64;
        messages.extend(batch.into_iter().filter(|m| m.kind.is_chat()).map(|m| {
            let view = m.to_view();
            json!({
                "seq": view.seq,
                "guest_id": view.guest_id,
                "nickname": view.nickname,
                "body": view.body,
                "created_at": view.created_at,
            })
        }));
        if read >= EXPORT_MAX_MESSAGES {
            break false;
        }
    };
    record(
        &state,
        &who,
        &site,
        "export_room",
        Some(room_id),
        format!("room {room_id}"),
        json!({"messages": messages.len()}),
    )
    .await?;
    Ok(HttpResponse::Ok().json(json!({
        "site": site.key,
        "room": {"id": room.id, "page": room.page},
        "exported_at": time(Utc::now()),
        "messages": messages,
        "complete": complete,
        "next_after": if complete { None } else { Some(after) },
    })))
}

// --- Bans ---------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBan {
    guest_id: Option<String>,
    ip_hash: Option<String>,
    duration_secs: u64,
    reason: Option<String>,
}

/// Guest ids are made by the server: 32 lowercase hex digits.
fn is_guest_id(text: &str) -> bool {
    text.len() == 32
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `POST /api/v1/admin/sites/{key}/bans` (moderator)
pub async fn create_ban(
    req: HttpRequest,
    key: web::Path<String>,
    body: JsonObject<CreateBan>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (who, site) = authorize(&req, &state, &key, TokenRole::Moderator).await?;
    let JsonObject(body) = body;
    if body.guest_id.is_none() && body.ip_hash.is_none() {
        return Err(invalid("give guest_id, ip_hash or both"));
    }
    if body.guest_id.as_deref().is_some_and(|g| !is_guest_id(g)) {
        return Err(invalid(
            "guest_id: 32 lowercase hex digits, as the message list shows it",
        ));
    }
    if body.ip_hash.as_deref().is_some_and(|h| !is_ip_hash(h)) {
        return Err(invalid(
            "ip_hash: 32 lowercase hex digits, as the message list shows it",
        ));
    }
    if body.duration_secs == 0 || body.duration_secs > BAN_MAX_SECS {
        return Err(invalid(format!("duration_secs: 1 to {BAN_MAX_SECS}")));
    }
    let reason = body.reason.unwrap_or_default();
    if reason.chars().count() > 200 || reason.chars().any(char::is_control) {
        return Err(invalid(
            "reason: at most 200 characters, no control characters",
        ));
    }
    let expires_at = Utc::now()
        + chrono::Duration::seconds(i64::try_from(body.duration_secs).unwrap_or(i64::MAX));
    // Recorded first, so every ban in force has a row to lift it by; then
    // the guard, which holds it on every node from this call on (if that
    // fails, the moderator's retry adds it again, and node starts and bus
    // resyncs restore bans from the rows).
    let ban = state
        .admin
        .add_ban(NewBan {
            site_id: site.id,
            guest_id: body.guest_id,
            ip_hash: body.ip_hash,
            reason,
            created_by: who.actor(),
            expires_at,
        })
        .await?;
    state
        .guard
        .ban(
            site.id,
            ban.guest_id.as_deref(),
            ban.ip_hash.as_deref(),
            expires_at,
        )
        .await?;
    record(
        &state,
        &who,
        &site,
        "ban",
        None,
        format!("ban {}", ban.id),
        ban_view(&ban),
    )
    .await?;
    Ok(HttpResponse::Created().json(json!({ "ban": ban_view(&ban) })))
}

/// `GET /api/v1/admin/sites/{key}/bans` (moderator): bans in force.
pub async fn list_bans(
    req: HttpRequest,
    key: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (_, site) = authorize(&req, &state, &key, TokenRole::Moderator).await?;
    let bans = state.admin.active_bans(Some(site.id), Utc::now()).await?;
    let views: Vec<_> = bans.iter().map(ban_view).collect();
    Ok(HttpResponse::Ok().json(json!({ "bans": views })))
}

/// `DELETE /api/v1/admin/sites/{key}/bans/{id}` (moderator)
pub async fn lift_ban(
    req: HttpRequest,
    path: web::Path<(String, i64)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (key, ban_id) = path.into_inner();
    let (who, site) = authorize(&req, &state, &key, TokenRole::Moderator).await?;
    let Some(ban) = state.admin.lift_ban(site.id, ban_id).await? else {
        return Err(ApiError::client(
            ErrorCode::NotFound,
            "This site has no such ban.",
        ));
    };
    state
        .guard
        .unban(site.id, ban.guest_id.as_deref(), ban.ip_hash.as_deref())
        .await?;
    // Another ban of the same guest or address may still be in force.
    for other in state.admin.active_bans(Some(site.id), Utc::now()).await? {
        let same_guest = other.guest_id.is_some() && other.guest_id == ban.guest_id;
        let same_ip = other.ip_hash.is_some() && other.ip_hash == ban.ip_hash;
        if same_guest || same_ip {
            state
                .guard
                .ban(
                    site.id,
                    other.guest_id.as_deref().filter(|_| same_guest),
                    other.ip_hash.as_deref().filter(|_| same_ip),
                    other.expires_at,
                )
                .await?;
        }
    }
    record(
        &state,
        &who,
        &site,
        "unban",
        None,
        format!("ban {ban_id}"),
        ban_view(&ban),
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditPage {
    before: Option<i64>,
    limit: Option<u64>,
}

/// `GET /api/v1/admin/sites/{key}/audit?before=&limit=` (moderator)
pub async fn audit_log(
    req: HttpRequest,
    key: web::Path<String>,
    page: web::Query<AuditPage>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (_, site) = authorize(&req, &state, &key, TokenRole::Moderator).await?;
    let limit = page.limit.unwrap_or(50).clamp(1, 500);
    let entries = state.admin.audit_log(site.id, page.before, limit).await?;
    let views: Vec<_> = entries.iter().map(audit_view).collect();
    Ok(HttpResponse::Ok().json(json!({ "actions": views })))
}

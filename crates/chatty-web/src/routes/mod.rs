//! HTTP routes. Handlers are thin: parse and authenticate at the edge, then
//! call the hub, the directory or the store. One file per endpoint.

mod admin;
mod assets;
mod auth;
mod health;
mod join;
mod json_object;
mod leave;
mod poll;
mod push;
mod send;

use actix_web::error::{InternalError, JsonPayloadError, PathError, QueryPayloadError};
use actix_web::middleware::Compress;
use actix_web::{HttpRequest, HttpResponse, Resource, Route, web};
use chatty_protocol::ErrorCode;

use crate::error::error_response;

pub use assets::WidgetAsset;

/// Registers every route and the extractor error handlers.
pub fn configure(cfg: &mut web::ServiceConfig, max_request_bytes: usize) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(max_request_bytes)
            .error_handler(json_error),
    )
    .app_data(web::QueryConfig::default().error_handler(query_error))
    .app_data(web::PathConfig::default().error_handler(path_error))
    .service(endpoint("/api/v1/join", web::post().to(join::join)))
    .service(endpoint(
        "/api/v1/rooms/{room_id}/events",
        web::get().to(poll::poll),
    ))
    .service(endpoint(
        "/api/v1/rooms/{room_id}/ws",
        web::get().to(push::websocket),
    ))
    .service(endpoint(
        "/api/v1/rooms/{room_id}/sse",
        web::get().to(push::sse),
    ))
    .service(endpoint(
        "/api/v1/rooms/{room_id}/messages",
        web::post().to(send::send),
    ))
    .service(endpoint(
        "/api/v1/rooms/{room_id}/leave",
        web::post().to(leave::leave),
    ))
    .service(
        resource("/api/v1/admin/sites")
            .route(web::get().to(admin::list_sites))
            .route(web::post().to(admin::create_site)),
    )
    .service(
        resource("/api/v1/admin/sites/{key}")
            .route(web::get().to(admin::get_site))
            .route(web::patch().to(admin::update_site)),
    )
    .service(endpoint(
        "/api/v1/admin/sites/{key}/moderation",
        web::put().to(admin::set_moderation),
    ))
    .service(
        resource("/api/v1/admin/sites/{key}/tokens")
            .route(web::get().to(admin::list_tokens))
            .route(web::post().to(admin::create_token)),
    )
    .service(endpoint(
        "/api/v1/admin/sites/{key}/tokens/{id}",
        web::delete().to(admin::revoke_token),
    ))
    .service(endpoint(
        "/api/v1/admin/sites/{key}/rooms",
        web::get().to(admin::list_rooms),
    ))
    .service(endpoint(
        "/api/v1/admin/sites/{key}/rooms/{room_id}/messages",
        web::get().to(admin::list_messages),
    ))
    .service(endpoint(
        "/api/v1/admin/sites/{key}/rooms/{room_id}/messages/{seq}",
        web::delete().to(admin::delete_message),
    ))
    .service(endpoint(
        "/api/v1/admin/sites/{key}/rooms/{room_id}/clear",
        web::post().to(admin::clear_room),
    ))
    .service(endpoint(
        "/api/v1/admin/sites/{key}/rooms/{room_id}/export",
        web::get().to(admin::export_room),
    ))
    .service(
        resource("/api/v1/admin/sites/{key}/bans")
            .route(web::get().to(admin::list_bans))
            .route(web::post().to(admin::create_ban)),
    )
    .service(endpoint(
        "/api/v1/admin/sites/{key}/bans/{id}",
        web::delete().to(admin::lift_ban),
    ))
    .service(endpoint(
        "/api/v1/admin/sites/{key}/audit",
        web::get().to(admin::audit_log),
    ))
    .service(endpoint("/admin", web::get().to(assets::admin_page)))
    .service(endpoint("/admin.js", web::get().to(assets::admin_script)))
    .service(endpoint("/admin.css", web::get().to(assets::admin_style)))
    .service(endpoint("/widget.js", web::get().to(assets::widget)))
    .service(endpoint(
        "/widget-{hash:[0-9a-f]{16}}.js",
        web::get().to(assets::versioned_widget),
    ))
    .service(endpoint(
        "/widget.json",
        web::get().to(assets::widget_manifest),
    ))
    .service(endpoint("/", web::get().to(assets::demo_page)).wrap(Compress::default()))
    .service(endpoint("/healthz", web::get().to(health::healthz)))
    .service(endpoint("/readyz", web::get().to(health::readyz)))
    .service(endpoint("/metrics", web::get().to(health::metrics)))
    .default_service(web::to(not_found));
}

/// One endpoint: named after its pattern (the label in metrics and spans,
/// read without allocating), answering any other method with 405.
fn endpoint(path: &'static str, route: Route) -> Resource {
    web::resource(path)
        .name(path)
        .route(route)
        .default_service(web::to(method_not_allowed))
}

/// A resource with several methods; any other answers 405.
fn resource(path: &'static str) -> Resource {
    web::resource(path)
        .name(path)
        .default_service(web::to(method_not_allowed))
}

async fn not_found() -> HttpResponse {
    error_response(ErrorCode::NotFound, "No such endpoint.")
}

async fn method_not_allowed() -> HttpResponse {
    error_response(
        ErrorCode::MethodNotAllowed,
        "This endpoint does not accept that method.",
    )
}

fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let (code, message) = match &err {
        JsonPayloadError::OverflowKnownLength { limit, .. }
        | JsonPayloadError::Overflow { limit } => (
            ErrorCode::PayloadTooLarge,
            format!("The request body is larger than {limit} bytes."),
        ),
        JsonPayloadError::ContentType => (
            ErrorCode::UnsupportedMediaType,
            "Send the body as Content-Type: application/json.".to_owned(),
        ),
        JsonPayloadError::Deserialize(e) => (
            ErrorCode::MalformedJson,
            format!("Malformed JSON body: {e}."),
        ),
        _ => (
            ErrorCode::MalformedJson,
            "The request body could not be read as JSON.".to_owned(),
        ),
    };
    InternalError::from_response(err, error_response(code, &message)).into()
}

fn query_error(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let message = format!("Malformed query string: {err}.");
    InternalError::from_response(err, error_response(ErrorCode::InvalidQuery, &message)).into()
}

fn path_error(err: PathError, _req: &HttpRequest) -> actix_web::Error {
    InternalError::from_response(
        err,
        error_response(
            ErrorCode::InvalidPath,
            "Malformed path parameter: room, message, token and ban ids are numbers.",
        ),
    )
    .into()
}

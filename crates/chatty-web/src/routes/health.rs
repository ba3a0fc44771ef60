//! `/healthz` (the process is alive), `/readyz` (it can serve: the store
//! answers) and `/metrics` (Prometheus text format).

use actix_web::{HttpResponse, web};
use chatty_protocol::ErrorCode;

use crate::error::error_response;
use crate::state::AppState;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.store.ping().await {
        Ok(()) => HttpResponse::Ok().json(serde_json::json!({"status": "ready"})),
        Err(error) => {
            tracing::warn!(%error, "not ready: store unreachable");
            error_response(
                ErrorCode::StoreUnavailable,
                "The database is not reachable.",
            )
        }
    }
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render(state.hub.room_count()))
}

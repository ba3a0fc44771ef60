//! `/healthz` (the process is alive), `/readyz` (it can serve: the store
//! and the bus answer and it is not draining) and `/metrics` (Prometheus text format).

use actix_web::{HttpResponse, web};
use chatty_protocol::ErrorCode;

use crate::error::error_response;
use crate::state::AppState;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Ready when the database and the bus answer and this node's bus
/// subscription is up; a load balancer takes a not-ready node out.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.hub.is_draining() {
        return error_response(ErrorCode::Draining, "This node is shutting down.");
    }
    if let Err(error) = state.store.ping().await {
        tracing::warn!(%error, "not ready: store unreachable");
        return error_response(
            ErrorCode::StoreUnavailable,
            "The database is not reachable.",
        );
    }
    if let Err(error) = state.bus.ping().await {
        tracing::warn!(%error, "not ready: bus unreachable");
        return error_response(
            ErrorCode::BusUnavailable,
            "The message bus is not reachable.",
        );
    }
    if !state.bus.is_connected() {
        return error_response(
            ErrorCode::BusUnavailable,
            "This node's bus subscription is down.",
        );
    }
    HttpResponse::Ok().json(serde_json::json!({"status": "ready"}))
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render(crate::metrics::Snapshot {
            rooms_in_memory: state.hub.room_count(),
            db_pool: state.store.pool_status(),
            redis_pool: state.bus.pool_status(),
        }))
}

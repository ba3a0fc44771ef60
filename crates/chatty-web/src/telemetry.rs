//! Logging setup and the per-request span.
//!
//! Logs are human-readable by default and JSON when `log.format = "json"`.
//! Every request runs inside one `request` span carrying method, route
//! pattern and status; the per-request completion line is at `debug` level
//! (target `chatty_web::request`) so that a busy node does not write one
//! line per poll unless asked to.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;
use chatty_protocol::ErrorCode;
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

use crate::settings::{LogFormat, LogSettings};

const POLL_ROUTE: &str = "/api/v1/rooms/{room_id}/events";
/// The metrics and span label of a poll with `wait` above 0.
pub const LONG_POLL_ROUTE: &str = "/api/v1/rooms/{room_id}/events?wait";

/// Does the query ask for a long-poll (`wait` present and not 0)?
fn is_long_poll(query: &str) -> bool {
    query.split('&').any(|pair| {
        pair.strip_prefix("wait=")
            .is_some_and(|v| !v.is_empty() && v.bytes().any(|b| b != b'0'))
    })
}
use crate::state::AppState;

/// Installs the global tracing subscriber (once per process; later calls,
/// as in tests that start several nodes, are ignored).
pub fn init(settings: &LogSettings) -> Result<(), String> {
    let filter = EnvFilter::try_new(&settings.filter)
        .map_err(|e| format!("configuration error: key `log.filter`: {e}"))?;
    // Colours only on a terminal: in files and journald they are noise, and
    // formatting them is measurable on the per-request span.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_ansi(ansi);
    let _ = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    Ok(())
}

/// Middleware: one span per request, metrics by route pattern and status.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().clone();
    let span = tracing::info_span!(
        target: "chatty_web::request",
        "request",
        method = %method,
        route = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let response = next.call(req).instrument(span.clone()).await?;
    // Resources are named after their pattern: a label without allocating.
    let route = response.request().match_name().unwrap_or("unmatched");
    // A long-poll is held for up to push.long_poll_max_secs: its own label,
    // so the poll route's latency stays the answer time of a poll.
    let route = if route == POLL_ROUTE && is_long_poll(response.request().query_string()) {
        LONG_POLL_ROUTE
    } else {
        route
    };
    let status = response.status();
    span.record("route", route);
    span.record("status", status.as_u16());
    if let Some(state) = state {
        let elapsed = started.elapsed().as_secs_f64();
        state
            .metrics
            .http_requests
            .with_label_values(&[route, method.as_str(), status.as_str()])
            .inc();
        state
            .metrics
            .http_duration
            .with_label_values(&[route])
            .observe(elapsed);
        if let Some(code) = response.response().extensions().get::<ErrorCode>() {
            state.metrics.count_refusal(*code);
        }
    }
    span.in_scope(|| tracing::debug!(target: "chatty_web::request", elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "request completed"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::is_long_poll;

    #[test]
    fn a_poll_with_wait_above_zero_is_a_long_poll() {
        assert!(is_long_poll("cursor=1.ab.2&wait=25"));
        assert!(is_long_poll("wait=3&cursor=1.ab.2"));
        assert!(!is_long_poll("cursor=1.ab.2&wait=0"));
        assert!(!is_long_poll("cursor=1.ab.2&wait=00"));
        assert!(!is_long_poll("cursor=1.ab.2"));
        assert!(!is_long_poll("cursor=1.ab.2&touch=1"));
    }
}

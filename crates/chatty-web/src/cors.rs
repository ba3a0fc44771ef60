//! CORS for the widget, which calls the API from the host site's origin.
//!
//! Chatty authenticates with a bearer token, never with cookies, so the
//! API can be shared with any origin (`Access-Control-Allow-Origin: *`)
//! without CSRF exposure; which sites may use Chatty is decided by the
//! site's allowed origins at join and at every WebSocket or SSE handshake
//! (403 `origin_not_allowed`), not by CORS.
//! A constant `*` also means responses do not vary by origin (no `Vary`),
//! and requests without an `Origin` (same-origin, curl, load tests) are
//! left untouched.

use actix_web::HttpResponse;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;

const ANY: HeaderValue = HeaderValue::from_static("*");
const METHODS: HeaderValue = HeaderValue::from_static("GET, POST");
/// `Last-Event-ID` is not a CORS-safelisted header: a reconnecting
/// cross-origin `EventSource` may be preflighted for it.
const HEADERS: HeaderValue =
    HeaderValue::from_static("Authorization, Content-Type, If-None-Match, Last-Event-ID");
const EXPOSED: HeaderValue = HeaderValue::from_static("ETag, Retry-After");
/// Browsers cache a preflight this long (Chrome caps it at 2 hours).
const MAX_AGE: HeaderValue = HeaderValue::from_static("86400");

/// Middleware: answers preflights, marks cross-origin responses readable.
pub async fn cors(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if !req.headers().contains_key(header::ORIGIN) {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let response = HttpResponse::NoContent()
            .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, ANY))
            .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, METHODS))
            .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, HEADERS))
            .insert_header((header::ACCESS_CONTROL_MAX_AGE, MAX_AGE))
            .finish();
        return Ok(req.into_response(response).map_into_right_body());
    }
    let mut response = next.call(req).await?;
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, ANY);
    headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED);
    Ok(response.map_into_left_body())
}

//! The widget script and the demo host page, compiled into the binary.
//!
//! `widget.js` is served with a content-hash `ETag` (a browser revalidating
//! it gets a `304`), gzip when asked, and a short public cache lifetime.

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use actix_web::{HttpRequest, HttpResponse, web};
use sha2::{Digest, Sha256};

use crate::routes::not_found;
use crate::state::AppState;

const WIDGET_JS: &str = include_str!("../../assets/widget.js");
const DEMO_HTML: &str = include_str!("../../assets/demo.html");

/// The CSP of the demo page: as strict as a careful host's, to prove the
/// widget needs no `'unsafe-inline'` or `eval`.
pub const DEMO_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The widget script and its ETag, computed once at start.
#[derive(Debug, Clone)]
pub struct WidgetAsset {
    etag: String,
}

impl Default for WidgetAsset {
    fn default() -> Self {
        let digest = Sha256::digest(WIDGET_JS.as_bytes());
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        Self {
            etag: format!("\"{hex}\""),
        }
    }
}

pub async fn widget(req: HttpRequest, asset: web::Data<WidgetAsset>) -> HttpResponse {
    let fresh = req
        .headers()
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == asset.etag)
        });
    let mut response = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((ETAG, asset.etag.clone()))
        .insert_header((CACHE_CONTROL, "public, max-age=300"))
        .insert_header(("Cross-Origin-Resource-Policy", "cross-origin"))
        .insert_header(("X-Content-Type-Options", "nosniff"));
    if fresh {
        response.finish()
    } else {
        response
            .insert_header((CONTENT_TYPE, "text/javascript; charset=utf-8"))
            .body(WIDGET_JS)
    }
}

pub async fn demo_page(state: web::Data<AppState>) -> HttpResponse {
    if !state.settings.demo.enabled {
        return not_found().await;
    }
    let page = DEMO_HTML.replace(
        "data-site=\"demo\"",
        &format!("data-site=\"{}\"", state.settings.demo.site_key),
    );
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header(("Content-Security-Policy", DEMO_CSP))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .body(page)
}

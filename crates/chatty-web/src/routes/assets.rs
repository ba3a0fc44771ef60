//! The widget script and the demo host page, compiled into the binary.
//!
//! `widget.js` is served two ways, both with a content-hash `ETag` and a
//! gzip body compressed once at start (not per request). What is served is
//! the source without its indentation and whole-line `//` comments (a third
//! of its gzipped size); everything else, `/*! … */` licence header and
//! line breaks included, is kept as written, so the browser runs the same
//! statements on the same line structure:
//!
//! * `/widget.js`, the URL site owners paste, with a short public cache
//!   lifetime, so a release reaches every host page within minutes;
//! * `/widget-<hash>.js`, the versioned URL, cached for a year as
//!   `immutable`: it never changes, and can be pinned with Subresource
//!   Integrity. `/widget.json` says what the current one is. A request for
//!   another version (a node of an older or newer release answering during a
//!   rolling upgrade) is redirected to `/widget.js`, uncached.

use std::io::Write as _;

use actix_web::http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LOCATION,
    VARY,
};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};
use base64::Engine as _;
use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use serde::Serialize;
use sha2::{Digest, Sha256, Sha384};

use crate::routes::not_found;
use crate::state::AppState;

const WIDGET_JS: &str = include_str!("../../assets/widget.js");
const DEMO_HTML: &str = include_str!("../../assets/demo.html");

/// Cache lifetime of `/widget.js`: how long a release takes to reach pages.
const SHORT_CACHE: &str = "public, max-age=300";
/// Cache lifetime of `/widget-<hash>.js`: its content never changes.
const IMMUTABLE_CACHE: &str = "public, max-age=31536000, immutable";

/// The CSP of the demo page: as strict as a careful host's, to prove the
/// widget needs no `'unsafe-inline'` or `eval`.
pub const DEMO_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The widget script, its gzip encoding and its names, computed once at start.
#[derive(Debug, Clone)]
pub struct WidgetAsset {
    /// The script as served.
    script: Bytes,
    /// 16 hex digits of the SHA-256 of the script.
    hash: String,
    /// `"<hash>"`, quoted as an `ETag`.
    etag: String,
    /// `sha384-<base64>`, for a `<script integrity=…>`.
    integrity: String,
    gzip: Bytes,
}

impl Default for WidgetAsset {
    fn default() -> Self {
        Self::new(WIDGET_JS)
    }
}

impl WidgetAsset {
    fn new(source: &str) -> Self {
        let script = compact(source);
        let digest = Sha256::digest(script.as_bytes());
        let hash: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        let integrity = format!(
            "sha384-{}",
            base64::engine::general_purpose::STANDARD.encode(Sha384::digest(script.as_bytes()))
        );
        Self {
            etag: format!("\"{hash}\""),
            hash,
            integrity,
            gzip: Bytes::from(gzip(script.as_bytes())),
            script: Bytes::from(script),
        }
    }

    /// The versioned, immutable path of this script.
    pub fn versioned_path(&self) -> String {
        format!("/widget-{}.js", self.hash)
    }

    /// Bytes on the wire when served gzipped.
    pub fn gzip_len(&self) -> usize {
        self.gzip.len()
    }

    /// Answers a GET for the script: `304` when the client has it, else the
    /// script, gzipped when the client accepts it.
    fn respond(&self, req: &HttpRequest, cache_control: &'static str) -> HttpResponse {
        let fresh = req
            .headers()
            .get(IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|tags| {
                tags.split(',')
                    .any(|t| t.trim().trim_start_matches("W/") == self.etag)
            });
        let mut response = if fresh {
            HttpResponse::NotModified()
        } else {
            HttpResponse::Ok()
        };
        response
            .insert_header((ETAG, self.etag.clone()))
            .insert_header((CACHE_CONTROL, cache_control))
            .insert_header((VARY, "Accept-Encoding"));
        script_headers(&mut response);
        if fresh {
            return response.finish();
        }
        response.insert_header((CONTENT_TYPE, "text/javascript; charset=utf-8"));
        let gzip_ok = req
            .headers()
            .get(ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(accepts_gzip);
        if gzip_ok {
            response
                .insert_header((CONTENT_ENCODING, "gzip"))
                .body(self.gzip.clone())
        } else {
            response.body(self.script.clone())
        }
    }
}

fn script_headers(response: &mut HttpResponseBuilder) {
    response
        .insert_header(("Cross-Origin-Resource-Policy", "cross-origin"))
        .insert_header(("X-Content-Type-Options", "nosniff"));
}

/// The script without indentation and without lines that are only a `//`
/// comment. Safe for widget.js because no string or template literal in it
/// has a line starting with `//` or depending on its indentation (the CSS
/// template does not care); line breaks stay, so automatic semicolon
/// insertion sees the same lines.
fn compact(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    for line in source.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("//") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(data.len() / 2), Compression::best());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(data);
    encoder.finish().unwrap_or_default()
}

/// Does an `Accept-Encoding` value allow gzip? (`gzip` or `*`, without `q=0`.)
fn accepts_gzip(header: &str) -> bool {
    header.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let coding = parts.next().unwrap_or_default();
        let refused = parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
    })
}

/// `GET /widget.js`: the URL in the embed snippet.
pub async fn widget(req: HttpRequest, asset: web::Data<WidgetAsset>) -> HttpResponse {
    asset.respond(&req, SHORT_CACHE)
}

/// `GET /widget-{hash}.js`: the versioned URL.
pub async fn versioned_widget(
    req: HttpRequest,
    hash: web::Path<String>,
    asset: web::Data<WidgetAsset>,
) -> HttpResponse {
    if *hash == asset.hash {
        return asset.respond(&req, IMMUTABLE_CACHE);
    }
    let mut response = HttpResponse::Found();
    response
        .insert_header((LOCATION, "/widget.js"))
        .insert_header((CACHE_CONTROL, "no-store"));
    script_headers(&mut response);
    response.finish()
}

/// What `/widget.json` says about the script this node serves.
#[derive(Debug, Serialize)]
struct WidgetManifest<'a> {
    /// The versioned path, to append to the chat host.
    path: String,
    /// For `<script integrity=…>`.
    integrity: &'a str,
    /// The `ETag` of both URLs, unquoted.
    hash: &'a str,
    /// Size as served: plain and gzipped.
    bytes: usize,
    gzip_bytes: usize,
}

/// `GET /widget.json`: the versioned URL and its SRI hash, for site owners
/// who pin the script.
pub async fn widget_manifest(asset: web::Data<WidgetAsset>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-cache"))
        .json(WidgetManifest {
            path: asset.versioned_path(),
            integrity: &asset.integrity,
            hash: &asset.hash,
            bytes: asset.script.len(),
            gzip_bytes: asset.gzip_len(),
        })
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

const ADMIN_HTML: &str = include_str!("../../assets/admin.html");
const ADMIN_JS: &str = include_str!("../../assets/admin.js");
const ADMIN_CSS: &str = include_str!("../../assets/admin.css");
/// The moderation page runs only its own script and style, talks only to
/// this origin, and may not be framed (a framed admin page invites
/// clickjacking of its delete and ban buttons).
const ADMIN_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn admin_asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, content_type))
        .insert_header(("Content-Security-Policy", ADMIN_CSP))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .insert_header(("Cache-Control", "no-cache"))
        .body(body)
}

/// `GET /admin`: the moderation page (Chatty's own origin, never the widget).
pub async fn admin_page() -> HttpResponse {
    admin_asset("text/html; charset=utf-8", ADMIN_HTML)
}

/// `GET /admin.js`
pub async fn admin_script() -> HttpResponse {
    admin_asset("text/javascript; charset=utf-8", ADMIN_JS)
}

/// `GET /admin.css`
pub async fn admin_style() -> HttpResponse {
    admin_asset("text/css; charset=utf-8", ADMIN_CSS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The most the widget may weigh gzipped (the issue's budget: 15 KB).
    const WIDGET_GZIP_BUDGET: usize = 15 * 1024;

    #[test]
    fn the_widget_stays_within_its_gzip_budget() {
        let asset = WidgetAsset::default();
        assert!(
            asset.gzip_len() <= WIDGET_GZIP_BUDGET,
            "widget.js is {} bytes gzipped, over the budget of {WIDGET_GZIP_BUDGET}",
            asset.gzip_len()
        );
    }

    #[test]
    fn the_gzip_body_is_the_script() {
        use std::io::Read as _;
        let asset = WidgetAsset::default();
        let mut plain = String::new();
        flate2::read::GzDecoder::new(&asset.gzip[..])
            .read_to_string(&mut plain)
            .expect("valid gzip");
        assert_eq!(plain.as_bytes(), &asset.script[..]);
    }

    /// The widget runs on strangers' pages: no HTML sinks, no code from
    /// strings, no inline styles (a strict CSP blocks them). A source check
    /// is crude, but it catches the easy regressions before the browser
    /// tests do.
    #[test]
    fn the_widget_uses_no_html_sinks_eval_or_inline_styles() {
        for forbidden in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "setAttribute('style'",
            ".style.",
            "<style",
            "cssText",
        ] {
            assert!(
                !WIDGET_JS.contains(forbidden),
                "widget.js contains {forbidden:?}"
            );
        }
    }

    #[test]
    fn compaction_drops_indentation_and_comment_lines_only() {
        let source = "/*! header\n * keep */\n(() => {\n  // why\n  const a = 1; // kept\n\n  const css = `\n.x{a:b}\n`;\n})();\n";
        assert_eq!(
            compact(source),
            "/*! header\n* keep */\n(() => {\nconst a = 1; // kept\nconst css = `\n.x{a:b}\n`;\n})();\n"
        );
        // widget.js has one template literal, the CSS, and no line of it
        // starts with "//": compaction cannot change what the script means.
        // (Its comments use no backticks, so this count is exact.)
        assert_eq!(WIDGET_JS.matches('`').count(), 2);
        let css = WIDGET_JS.split('`').nth(1).unwrap_or_default();
        assert!(css.contains(":host{all:initial"));
        assert!(!css.lines().any(|l| l.trim_start().starts_with("//")));
    }

    #[test]
    fn accept_encoding_is_read_with_its_q_values() {
        assert!(accepts_gzip("gzip, deflate, br"));
        assert!(accepts_gzip("br;q=1.0, GZIP;q=0.5"));
        assert!(accepts_gzip("*"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("br, deflate"));
        assert!(!accepts_gzip("identity"));
    }

    #[test]
    fn the_versioned_path_and_integrity_follow_the_content() {
        let one = WidgetAsset::new("a");
        let two = WidgetAsset::new("b");
        assert_ne!(one.versioned_path(), two.versioned_path());
        assert_eq!(one.versioned_path(), WidgetAsset::new("a").versioned_path());
        assert!(one.integrity.starts_with("sha384-"));
        // SHA-384 is 48 bytes: 64 base64 characters.
        assert_eq!(one.integrity.len(), "sha384-".len() + 64);
    }
}

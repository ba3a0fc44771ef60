//! The widget script, the demo page and health endpoints.

use reqwest::StatusCode;

use chatty_protocol::ErrorCode;

use crate::helpers::{assert_error, header, spawn_app, spawn_app_with, spawn_node};

#[tokio::test]
async fn widget_js_is_served_with_an_etag_and_revalidates_to_304() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/widget.js"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = header(&response, "content-type");
    assert!(
        content_type.starts_with("text/javascript"),
        "{content_type}"
    );
    let etag = response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .expect("etag")
        .to_owned();
    let body = response.text().await.expect("body");
    assert!(body.contains("/api/v1/join"));
    let again = app
        .client
        .get(app.url("/widget.js"))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("get");
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn widget_js_is_gzipped_when_asked() {
    let app = spawn_app().await;
    let client = reqwest::Client::builder()
        .no_gzip()
        .build()
        .expect("client");
    let response = client
        .get(app.url("/widget.js"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("get");
    assert_eq!(
        response
            .headers()
            .get("content-encoding")
            .and_then(|v| v.to_str().ok()),
        Some("gzip")
    );
}

#[tokio::test]
async fn the_gzipped_widget_is_the_script_and_varies_by_encoding() {
    use std::io::Read as _;
    let app = spawn_app().await;
    let client = reqwest::Client::builder()
        .no_gzip()
        .build()
        .expect("client");
    let plain = client.get(app.url("/widget.js")).send().await.expect("get");
    assert_eq!(header(&plain, "vary"), "Accept-Encoding");
    assert!(plain.headers().get("content-encoding").is_none());
    let plain = plain.bytes().await.expect("body");
    let gzipped = client
        .get(app.url("/widget.js"))
        .header("accept-encoding", "br;q=1, gzip;q=0.8")
        .send()
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    assert!(
        gzipped.len() < plain.len() / 2,
        "{} vs {}",
        gzipped.len(),
        plain.len()
    );
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(&gzipped[..])
        .read_to_end(&mut decoded)
        .expect("valid gzip");
    assert_eq!(decoded, plain);
    let refused = client
        .get(app.url("/widget.js"))
        .header("accept-encoding", "gzip;q=0")
        .send()
        .await
        .expect("get");
    assert!(refused.headers().get("content-encoding").is_none());
}

#[tokio::test]
async fn the_versioned_widget_url_is_immutable_and_named_by_the_manifest() {
    let app = spawn_app().await;
    let manifest: serde_json::Value = app
        .client
        .get(app.url("/widget.json"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let path = manifest["path"].as_str().expect("path");
    let hash = manifest["hash"].as_str().expect("hash");
    assert_eq!(path, format!("/widget-{hash}.js"));
    assert!(
        manifest["integrity"]
            .as_str()
            .is_some_and(|i| i.starts_with("sha384-")),
        "{manifest}"
    );
    assert!(
        manifest["gzip_bytes"]
            .as_u64()
            .is_some_and(|n| n > 0 && n <= 15 * 1024)
    );

    let short = app
        .client
        .get(app.url("/widget.js"))
        .send()
        .await
        .expect("get");
    assert_eq!(header(&short, "cache-control"), "public, max-age=300");
    assert_eq!(header(&short, "etag"), format!("\"{hash}\""));
    let short_body = short.text().await.expect("body");

    let pinned = app.client.get(app.url(path)).send().await.expect("get");
    assert_eq!(pinned.status(), StatusCode::OK);
    assert_eq!(
        header(&pinned, "cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(header(&pinned, "etag"), format!("\"{hash}\""));
    assert_eq!(pinned.text().await.expect("body"), short_body);

    // Another release's URL (a rolling upgrade) goes to the current script.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let other = no_redirect
        .get(app.url("/widget-0123456789abcdef.js"))
        .send()
        .await
        .expect("get");
    assert_eq!(other.status(), StatusCode::FOUND);
    assert_eq!(header(&other, "location"), "/widget.js");
    assert_eq!(header(&other, "cache-control"), "no-store");
    let junk = app
        .client
        .get(app.url("/widget-zzz.js"))
        .send()
        .await
        .expect("get");
    assert_error(junk, 404, ErrorCode::NotFound).await;
}

#[tokio::test]
async fn the_demo_page_embeds_the_widget_under_a_strict_csp() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/")).send().await.expect("get");
    assert_eq!(response.status(), StatusCode::OK);
    let csp = header(&response, "content-security-policy");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    let body = response.text().await.expect("body");
    assert!(body.contains(r#"<script src="/widget.js" data-site="demo" async></script>"#));
}

#[tokio::test]
async fn without_the_demo_the_root_is_not_found() {
    let app = spawn_app_with(|s| s.demo.enabled = false).await;
    let response = app.client.get(app.url("/")).send().await.expect("get");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let join = app
        .join_raw(&serde_json::json!({"site_key": "demo", "nickname": "Ann"}))
        .await;
    assert_error(join, 404, ErrorCode::UnknownSite).await;
}

#[tokio::test]
async fn turning_the_demo_off_disables_its_existing_site() {
    let first = spawn_app().await;
    first.join("Ann").await;
    let restarted = spawn_node(std::sync::Arc::clone(&first.db), |s| s.demo.enabled = false).await;
    let join = restarted
        .join_raw(&serde_json::json!({"site_key": "demo", "nickname": "Ann"}))
        .await;
    assert_error(join, 403, ErrorCode::SiteDisabled).await;
}

#[tokio::test]
async fn demo_origins_follow_the_configuration_at_start() {
    let first = spawn_app().await;
    let restarted = spawn_node(std::sync::Arc::clone(&first.db), |s| {
        s.demo.allowed_origins = vec!["https://only.example".into()];
    })
    .await;
    let join = |origin: &'static str| {
        restarted
            .client
            .post(restarted.url("/api/v1/join"))
            .header("origin", origin)
            .json(&serde_json::json!({"site_key": "demo", "nickname": "Ann"}))
            .send()
    };
    assert_eq!(
        join("https://only.example").await.expect("sent").status(),
        StatusCode::OK
    );
    assert_error(
        join("https://other.example").await.expect("sent"),
        403,
        ErrorCode::OriginNotAllowed,
    )
    .await;
}

#[tokio::test]
async fn messages_survive_a_restart_and_numbering_continues() {
    let first = spawn_app().await;
    let ann = first.join("Ann").await;
    for i in 1..=3 {
        first.send(&ann, &format!("m-{i}"), "before restart").await;
    }
    let restarted = spawn_node(std::sync::Arc::clone(&first.db), |_| {}).await;
    let bob = restarted.join("Bob").await;
    assert_eq!(
        bob.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let sent: chatty_protocol::api::SendResponse = restarted
        .send(&bob, "m-4", "after")
        .await
        .json()
        .await
        .expect("send");
    assert_eq!(sent.message.seq, 4);
}

#[tokio::test]
async fn operational_endpoints_refuse_other_methods_with_405() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz", "/metrics", "/widget.js", "/"] {
        let response = app.client.post(app.url(path)).send().await.expect("post");
        assert_error(response, 405, ErrorCode::MethodNotAllowed).await;
    }
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let app = spawn_app().await;
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .expect("get")
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("get")
            .status(),
        StatusCode::OK
    );
    let ann = app.join("Ann").await;
    app.poll(&ann, &ann.cursor.to_string(), Some(&ann.cursor.etag()))
        .await;
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("chatty_polls_total{path=\"not_modified\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("route=\"/api/v1/rooms/{room_id}/events\""),
        "labels use the route pattern: {metrics}"
    );
    assert!(metrics.contains("chatty_db_queries_total"));
}

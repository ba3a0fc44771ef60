//! Every transport, the widget and the error answers, through nginx.

use std::time::Duration;

use chatty_protocol::Event;
use reqwest::StatusCode;

use crate::harness::{Edge, poll, send_once, websocket};
use crate::push_client::SseClient;

fn message_seqs(events: &[Event]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message { message } => Some(message.seq),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_message_reaches_websocket_sse_long_poll_and_poll_clients_through_nginx() {
    let edge = Edge::start(2).await;
    let base = edge.base();
    let ann = edge.join("Ann").await;
    let bob = edge.join("Bob").await;
    let cursor = bob.cursor.to_string();

    let mut ws = websocket(&base, &bob, &cursor).await;
    let mut sse = SseClient::connect(&base, &bob, &cursor, None)
        .await
        .expect("the SSE stream passes nginx");
    let long_poll = {
        let client = edge.client.clone();
        let url = format!(
            "{base}/api/v1/rooms/{}/events?cursor={cursor}&wait=20",
            bob.room.id
        );
        let token = bob.token.clone();
        tokio::spawn(async move {
            // Held by the app until Ann's message (not by nginx's cache).
            loop {
                let response = client
                    .get(&url)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .expect("long-poll");
                assert_eq!(response.status(), StatusCode::OK);
                let batch: chatty_protocol::api::PollResponse =
                    response.json().await.expect("long-poll body");
                if !message_seqs(&batch.events).is_empty() {
                    return message_seqs(&batch.events);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seq = send_once(
        &edge.client,
        &base,
        &ann,
        "through-nginx-1",
        "hello through nginx",
    )
    .await
    .expect("the send passes nginx");

    let mut from_ws = Vec::new();
    while !from_ws.contains(&seq) {
        from_ws.extend(message_seqs(&ws.next_batch().await.events));
    }
    let mut from_sse = Vec::new();
    while !from_sse.contains(&seq) {
        from_sse.extend(message_seqs(&sse.next_batch().await.events));
    }
    let from_long_poll = tokio::time::timeout(Duration::from_secs(15), long_poll)
        .await
        .expect("the long-poll is answered")
        .expect("long-poll task");
    let from_poll = poll(&edge.client, &base, &bob, &cursor)
        .await
        .expect("poll")
        .expect("news");
    for (transport, seen) in [
        ("websocket", from_ws),
        ("sse", from_sse),
        ("long-poll", from_long_poll),
        ("poll", message_seqs(&from_poll.events)),
    ] {
        assert_eq!(seen, vec![seq], "{transport} sees the message once");
    }
}

#[tokio::test]
async fn nginx_serves_the_widget_from_its_cache_and_revalidates_it() {
    let edge = Edge::start(1).await;
    let widget_route = [("route", "/widget.js")];
    let before = edge
        .metric_sum("chatty_http_requests_total", &widget_route)
        .await;
    let mut etag = String::new();
    for _ in 0..5 {
        let response = edge
            .client
            .get(format!("{}/widget.js", edge.base()))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .expect("widget");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response
                .headers()
                .get("content-encoding")
                .and_then(|v| v.to_str().ok()),
            Some("gzip")
        );
        etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .expect("etag")
            .to_owned();
    }
    let revalidated = edge
        .client
        .get(format!("{}/widget.js", edge.base()))
        .header("accept-encoding", "gzip")
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("widget");
    assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED);
    let after = edge
        .metric_sum("chatty_http_requests_total", &widget_route)
        .await;
    assert_eq!(
        after - before,
        1.0,
        "six fetches through nginx, one reached the app"
    );
}

#[tokio::test]
async fn nginx_refuses_with_chattys_json_errors_and_hides_metrics() {
    let edge = Edge::start(1).await;
    let base = edge.base();
    // Not the exempt 127.0.0.1: this client is limited like a visitor.
    let visitor = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");

    for path in ["/metrics", "/no/such/thing"] {
        let response = visitor
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("get");
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "not_found", "{path}");
    }

    // Joins: 1 a second with a burst of 10 per address.
    let mut limited = None;
    for i in 0..30 {
        let response = visitor
            .post(format!("{base}/api/v1/join"))
            .json(&serde_json::json!({"site_key": "demo", "nickname": format!("J{i}")}))
            .send()
            .await
            .expect("join");
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(response);
            break;
        }
        assert_eq!(response.status(), StatusCode::OK);
    }
    let limited = limited.expect("the join limit answers 429 within 30 joins");
    assert_eq!(
        limited
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: serde_json::Value = limited.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited");

    // A body over nginx's 16 KiB cap never reaches the app.
    let guest = edge.join("Big").await;
    let response = edge
        .client
        .post(format!("{base}/api/v1/rooms/{}/messages", guest.room.id))
        .bearer_auth(&guest.token)
        .header("content-type", "application/json")
        .body(vec![b'x'; 64 * 1024])
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "payload_too_large");
}

#[tokio::test]
async fn metrics_show_every_family_an_operator_watches() {
    let edge = Edge::start_with(
        1,
        vec![
            ("CHATTY__CHAT__SENDS_PER_MINUTE".into(), "1".into()),
            ("CHATTY__LIMITS__GUEST_BURST".into(), "1".into()),
        ],
    )
    .await;
    let base = edge.base();
    let ann = edge.join("Ann").await;
    let bob = edge.join("Bob").await;
    let cursor = bob.cursor.to_string();
    let mut ws = websocket(&base, &bob, &cursor).await;
    let seq = send_once(&edge.client, &base, &ann, "metrics-1", "counted")
        .await
        .expect("send");
    while !message_seqs(&ws.next_batch().await.events).contains(&seq) {}
    poll(&edge.client, &base, &bob, &cursor)
        .await
        .expect("poll")
        .expect("news");
    // The second send within a minute is refused by the send limit.
    let refused = send_once(&edge.client, &base, &ann, "metrics-2", "over the limit").await;
    assert!(refused.is_err_and(|e| e.contains("429")));
    // A second WebSocket that leaves: counted by reason.
    let mut leaving = websocket(&base, &ann, &cursor).await;
    let _ = futures_util::SinkExt::close(&mut leaving.stream).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let text = edge
        .client
        .get(format!("{}/metrics", edge.nodes[0].base()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let value =
        |name: &str, labels: &[(&str, &str)]| crate::harness::sum_metric(&text, name, labels);
    for (name, labels) in [
        (
            "chatty_http_requests_total",
            vec![("route", "/api/v1/join")],
        ),
        ("chatty_http_request_duration_seconds_count", vec![]),
        ("chatty_polls_total", vec![]),
        ("chatty_messages_received_total", vec![]),
        (
            "chatty_messages_delivered_total",
            vec![("transport", "poll")],
        ),
        (
            "chatty_messages_delivered_total",
            vec![("transport", "push")],
        ),
        ("chatty_push_connections", vec![("transport", "websocket")]),
        ("chatty_push_frames_queued_total", vec![]),
        ("chatty_fanout_lag_seconds_count", vec![]),
        ("chatty_db_query_duration_seconds_count", vec![]),
        ("chatty_db_queries_total", vec![]),
        ("chatty_redis_call_duration_seconds_count", vec![]),
        ("chatty_redis_calls_total", vec![]),
        ("chatty_db_pool_connections", vec![("state", "max")]),
        ("chatty_redis_pool_connections", vec![("state", "max")]),
        ("chatty_rate_limited_total", vec![("code", "rate_limited")]),
        ("chatty_process_resident_memory_bytes", vec![]),
    ] {
        assert!(
            value(name, &labels) > 0.0,
            "{name} {labels:?} is exported and counted:\n{text}"
        );
    }
    for family in [
        "chatty_http_request_duration_seconds_bucket",
        "chatty_push_disconnects_total",
        "chatty_push_slow_consumers_total",
        "chatty_db_query_errors_total",
        "chatty_redis_call_errors_total",
        "chatty_rooms_in_memory",
        // Whole seconds: 0 for a young process, but there.
        "chatty_process_cpu_seconds_total",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(family)),
            "{family} is exported"
        );
    }
}

/// Sends raw bytes to `port` and reads the whole answer (the peer closes).
async fn raw_exchange(port: u16, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn requests_that_are_not_well_formed_http_get_a_json_error_from_nginx() {
    let edge = Edge::start(1).await;
    let port = edge.nginx.port;
    let huge_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    // (A control byte in a header value is refused by nginx with an empty
    // 400 before any configuration applies: docs/moderation.md says so.)
    let cases: [(&str, Vec<u8>); 2] = [
        (
            "two Content-Lengths",
            b"POST /api/v1/join HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}".to_vec(),
        ),
        ("a header over the buffers", huge_header.into_bytes()),
    ];
    for (what, request) in cases {
        let answer = raw_exchange(port, &request).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{what}: {answer}");
        assert!(
            answer.contains("application/json") && answer.contains(r#""code":"bad_request""#),
            "{what}: {answer}"
        );
    }
    // Others are still served.
    let ok = edge
        .client
        .get(format!("{}/healthz", edge.base()))
        .send()
        .await
        .expect("healthz");
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_moderation_page_and_the_admin_api_work_through_nginx() {
    const OPERATOR: &str = "edge-operator-token-0123456789abcdef0123";
    let edge = Edge::start_with(
        2,
        vec![("CHATTY__ADMIN__OPERATOR_TOKEN".into(), OPERATOR.into())],
    )
    .await;
    let base = edge.base();
    for path in ["/admin", "/admin.js", "/admin.css"] {
        let page = edge
            .client
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("get");
        assert_eq!(page.status(), StatusCode::OK, "{path}");
        let csp = page
            .headers()
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
    }
    let created: serde_json::Value = edge
        .client
        .post(format!("{base}/api/v1/admin/sites"))
        .bearer_auth(OPERATOR)
        .json(&serde_json::json!({"name": "Shop", "origins": ["https://shop.example"]}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let key = created["site"]["key"].as_str().expect("key");
    assert!(
        created["snippet"]
            .as_str()
            .expect("snippet")
            .contains(&format!("data-site=\"{key}\"")),
        "{created}"
    );
    let listed = edge
        .client
        .get(format!("{base}/api/v1/admin/sites/{key}/bans"))
        .bearer_auth(created["admin_token"].as_str().expect("token"))
        .send()
        .await
        .expect("bans");
    assert_eq!(listed.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_access_log_keeps_no_whole_visitor_address() {
    let edge = Edge::start(1).await;
    let ok = edge
        .client
        .get(format!("{}/widget.json", edge.base()))
        .send()
        .await
        .expect("request");
    assert_eq!(ok.status(), StatusCode::OK);
    // nginx writes the line when the request ends; give it a moment.
    let mut log = String::new();
    for _ in 0..50 {
        log = edge.nginx.access_log();
        if log.contains("/widget.json") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let line = log
        .lines()
        .find(|l| l.contains("/widget.json"))
        .unwrap_or_else(|| panic!("no log line for the request: {log}"));
    assert!(line.starts_with("127.0.0.0 "), "{line}");
    assert!(
        !log.contains("127.0.0.1 "),
        "a whole address in the log: {log}"
    );
}

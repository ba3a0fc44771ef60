//! The push transports on one node: WebSocket, SSE and long-poll carry the
//! same events as the poll, resume from a cursor, and enforce their limits.

use std::time::Duration;

use chatty_protocol::api::{JoinResponse, PollResponse};
use chatty_protocol::event::ResetReason;
use chatty_protocol::{ErrorBody, ErrorCode, Event, RoomCursor};
use reqwest::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::helpers::{TestApp, assert_error, spawn_app, spawn_app_with};
use crate::push_client::{SseClient, WsClient, WsEvent, auth_message, ws_url, ws_url_bare};

/// Message seqs in a batch.
fn seqs(batch: &PollResponse) -> Vec<u64> {
    batch
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Message { message } => Some(message.seq),
            _ => None,
        })
        .collect()
}

fn reset_reason(batch: &PollResponse) -> Option<ResetReason> {
    batch.events.iter().find_map(|e| match e {
        Event::Reset { reason } => Some(*reason),
        _ => None,
    })
}

async fn send_n(app: &TestApp, guest: &JoinResponse, from: u64, to: u64) {
    for i in from..=to {
        let response = app
            .send(guest, &format!("m-{i}"), &format!("message {i}"))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED, "send {i}");
    }
}

/// Reads WebSocket batches until `n` message seqs were seen; returns them
/// and the last cursor.
async fn ws_collect(ws: &mut WsClient, n: usize) -> (Vec<u64>, RoomCursor) {
    let mut seen = Vec::new();
    let mut cursor = RoomCursor::default();
    while seen.len() < n {
        let batch = ws.next_batch().await;
        seen.extend(seqs(&batch));
        cursor = batch.cursor;
    }
    (seen, cursor)
}

/// The node's TCP port.
fn port_of(app: &TestApp) -> u16 {
    app.address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port")
}

/// A long-poll request: `wait` seconds, with `If-None-Match` when given.
fn long_poll(
    app: &TestApp,
    guest: &JoinResponse,
    cursor: &str,
    wait: &str,
    if_none_match: Option<String>,
) -> reqwest::RequestBuilder {
    let mut request = app
        .client
        .get(app.url(&format!("/api/v1/rooms/{}/events", guest.room.id)))
        .query(&[("cursor", cursor), ("wait", wait)])
        .bearer_auth(&guest.token);
    if let Some(tag) = if_none_match {
        request = request.header("If-None-Match", tag);
    }
    request
}

fn assert_error_body(body: &str, code: ErrorCode) {
    let parsed: ErrorBody =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("error body {body:?}: {e}"));
    assert_eq!(parsed.error.code, code, "{body}");
}

#[tokio::test]
async fn a_websocket_gets_its_catch_up_then_live_messages_in_order() {
    let app = spawn_app_with(|s| s.chat.sends_per_minute = 0).await;
    let ann = app.join("Ann").await;
    let bob = app.join("Bob").await;
    send_n(&app, &ann, 1, 2).await;
    // Bob connects from his join cursor: messages 1 and 2 are catch-up.
    let mut ws = WsClient::connect(&ws_url(&app.address, &bob, &bob.cursor.to_string()), None)
        .await
        .expect("upgraded");
    let (first, _) = ws_collect(&mut ws, 2).await;
    assert_eq!(first, vec![1, 2]);
    send_n(&app, &ann, 3, 5).await;
    let (live, cursor) = ws_collect(&mut ws, 3).await;
    assert_eq!(
        live,
        vec![3, 4, 5],
        "live messages follow the catch-up exactly"
    );
    assert_eq!(cursor.seq, 5);
    assert!(
        app.state
            .hub
            .fanout_stats()
            .frames_queued
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3,
        "live frames went through the room's fan-out"
    );
}

#[tokio::test]
async fn a_websocket_can_authenticate_in_its_first_message() {
    let app = spawn_app().await;
    let ann = app.join("Ann").await;
    let bob = app.join("Bob").await;
    // No token in the URL (it would end up in access logs).
    let mut ws = WsClient::connect(&ws_url_bare(&app.address, bob.room.id), None)
        .await
        .expect("upgraded before authentication");
    ws.send_text(auth_message(&bob.token, &bob.cursor.to_string()))
        .await;
    // Registered once authenticated: then a message reaches it.
    for _ in 0..200 {
        if app.state.hub.subscriber_count() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(app.state.hub.subscriber_count(), 1);
    assert_eq!(
        app.send(&ann, "fm-1", "hi").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(ws_collect(&mut ws, 1).await.0, vec![1]);
}

#[tokio::test]
async fn a_failed_first_message_closes_with_its_error_code() {
    let app = spawn_app_with(|s| s.push.handshake_timeout_ms = 500).await;
    let bob = app.join("Bob").await;
    let url = ws_url_bare(&app.address, bob.room.id);
    let cursor = bob.cursor.to_string();
    let forged = format!("{}x", bob.token);
    for (first, reason) in [
        (Some(auth_message(&forged, &cursor)), "invalid_token"),
        (Some(auth_message(&bob.token, "nonsense")), "invalid_cursor"),
        (Some("hello".to_owned()), "malformed_json"),
        (None, "auth_timeout"),
    ] {
        let mut ws = WsClient::connect(&url, None).await.expect("upgraded");
        if let Some(first) = first {
            ws.send_text(first).await;
        }
        match ws.next_event().await {
            WsEvent::Closed(Some(frame)) => {
                assert_eq!(frame.code, CloseCode::Policy, "{reason}");
                assert_eq!(frame.reason.as_str(), reason);
            }
            other => panic!("expected a close with {reason}, got {other:?}"),
        }
    }
    assert_eq!(app.state.hub.subscriber_count(), 0);
}

#[tokio::test]
async fn sse_delivers_and_resumes_from_last_event_id() {
    let app = spawn_app_with(|s| s.chat.sends_per_minute = 0).await;
    let ann = app.join("Ann").await;
    let bob = app.join("Bob").await;
    let mut sse = SseClient::connect(&app.address, &bob, &bob.cursor.to_string(), None)
        .await
        .expect("stream opened");
    send_n(&app, &ann, 1, 3).await;
    let mut seen = Vec::new();
    let mut last_id = String::new();
    while seen.len() < 3 {
        let batch = sse.next_batch().await;
        seen.extend(seqs(&batch));
        last_id = batch.cursor.to_string();
    }
    assert_eq!(seen, vec![1, 2, 3]);
    drop(sse);
    send_n(&app, &ann, 4, 5).await;
    // The stale ?cursor= is overridden by Last-Event-ID, as after a browser
    // reconnect.
    let mut sse = SseClient::connect(&app.address, &bob, &bob.cursor.to_string(), Some(&last_id))
        .await
        .expect("stream reopened");
    let mut resumed = Vec::new();
    while resumed.len() < 2 {
        resumed.extend(seqs(&sse.next_batch().await));
    }
    assert_eq!(resumed, vec![4, 5], "exactly the missed messages, once");
}

#[tokio::test]
async fn a_long_poll_is_held_until_a_message_arrives() {
    let app = spawn_app().await;
    let ann = app.join("Ann").await;
    let bob = app.join("Bob").await;
    // Bob's view after Ann's join event.
    let first = app.poll(&bob, &bob.cursor.to_string(), None).await;
    let first: PollResponse = first.json().await.expect("poll");
    let cursor = first.cursor;
    let request = long_poll(&app, &bob, &cursor.to_string(), "20", Some(cursor.etag())).send();
    let held = tokio::spawn(request);
    // Wait until the node holds it, then send.
    let gauge = app
        .state
        .metrics
        .push_connections
        .with_label_values(&["long_poll"]);
    for _ in 0..200 {
        if gauge.get() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(gauge.get(), 1, "the long-poll is held");
    assert_eq!(
        app.send(&ann, "lp-1", "wake up").await.status(),
        StatusCode::CREATED
    );
    let response = held.await.expect("task").expect("long-poll answered");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get("x-accel-buffering")
            .and_then(|v| v.to_str().ok()),
        Some("no"),
        "a held answer asks nginx not to buffer it"
    );
    let batch: PollResponse = response.json().await.expect("batch");
    assert_eq!(seqs(&batch), vec![1]);
    assert_eq!(gauge.get(), 0);
}

#[tokio::test]
async fn a_long_poll_with_nothing_new_ends_at_its_wait_with_304() {
    let app = spawn_app().await;
    let bob = app.join("Bob").await;
    let response = long_poll(
        &app,
        &bob,
        &bob.cursor.to_string(),
        "1",
        Some(bob.cursor.etag()),
    )
    .send()
    .await
    .expect("answered");
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn guests_held_in_long_polls_stay_present_longer_than_the_presence_timeout() {
    // Presence timeout: 3 × 500 ms. Both guests only long-poll, for 4 s.
    let app = spawn_app_with(|s| s.chat.poll_interval_ms = 500).await;
    let ann = app.join("Ann").await;
    let bob = app.join("Bob").await;
    let ann_now: PollResponse = app
        .poll(&ann, &ann.cursor.to_string(), None)
        .await
        .json()
        .await
        .expect("poll");
    let held = |guest: &JoinResponse, cursor: RoomCursor| {
        long_poll(&app, guest, &cursor.to_string(), "4", Some(cursor.etag())).send()
    };
    let (ann_answer, bob_answer) = tokio::join!(held(&ann, ann_now.cursor), held(&bob, bob.cursor));
    // Had either timed out, its leave would have changed the room and
    // answered both with a 200 carrying it.
    assert_eq!(
        ann_answer.expect("answered").status(),
        StatusCode::NOT_MODIFIED
    );
    assert_eq!(
        bob_answer.expect("answered").status(),
        StatusCode::NOT_MODIFIED
    );
}

#[tokio::test]
async fn an_oversize_websocket_frame_closes_with_1009_and_others_keep_going() {
    let app = spawn_app().await;
    let ann = app.join("Ann").await;
    let bob = app.join("Bob").await;
    let mut bad = WsClient::connect(&ws_url(&app.address, &ann, &ann.cursor.to_string()), None)
        .await
        .expect("upgraded");
    let mut good = WsClient::connect(&ws_url(&app.address, &bob, &bob.cursor.to_string()), None)
        .await
        .expect("upgraded");
    bad.send_text("x".repeat(10_000)).await;
    let close = loop {
        match bad.next_event().await {
            WsEvent::Closed(frame) => break frame,
            WsEvent::Batch(_) => continue,
        }
    };
    let close = close.expect("a close frame");
    assert_eq!(close.code, CloseCode::Size);
    assert_eq!(close.reason.as_str(), "frame_too_large");
    assert_eq!(
        app.send(&ann, "after", "still here").await.status(),
        StatusCode::CREATED
    );
    let mut got = Vec::new();
    while !got.contains(&1) {
        got.extend(seqs(&good.next_batch().await));
    }
}

#[tokio::test]
async fn a_websocket_from_a_foreign_origin_is_refused_before_the_upgrade() {
    let app =
        spawn_app_with(|s| s.demo.allowed_origins = vec!["https://good.example".into()]).await;
    let bob = app.join("Bob").await;
    let url = ws_url(&app.address, &bob, &bob.cursor.to_string());
    let (status, body) = WsClient::connect(&url, Some("https://evil.example"))
        .await
        .expect_err("refused");
    assert_eq!(status, 403);
    assert_error_body(&body, ErrorCode::OriginNotAllowed);
    // Without a token (first-message authentication) the room's site
    // decides, still before the upgrade.
    let (status, body) = WsClient::connect(
        &ws_url_bare(&app.address, bob.room.id),
        Some("https://evil.example"),
    )
    .await
    .expect_err("refused");
    assert_eq!(status, 403);
    assert_error_body(&body, ErrorCode::OriginNotAllowed);
    // A look-alike suffix is not the origin either.
    let (status, _) = WsClient::connect(&url, Some("https://evil-good.example"))
        .await
        .expect_err("refused");
    assert_eq!(status, 403);
    let _accepted = WsClient::connect(&url, Some("https://good.example"))
        .await
        .expect("the site's own origin is upgraded");
    assert_eq!(
        app.state.connections.total(),
        1,
        "refused ones hold no slot"
    );
}

#[tokio::test]
async fn a_plain_request_to_the_websocket_endpoint_is_a_json_400() {
    let app = spawn_app().await;
    let bob = app.join("Bob").await;
    let response = app
        .client
        .get(app.url(&format!("/api/v1/rooms/{}/ws", bob.room.id)))
        .query(&[
            ("token", bob.token.as_str()),
            ("cursor", &bob.cursor.to_string()),
        ])
        .send()
        .await
        .expect("answered");
    assert_error(response, 400, ErrorCode::NotWebsocket).await;
    // A WebSocket whose URL carries a bad token is a 401 before any
    // upgrade (one with no token at all authenticates in its first
    // message: see a_failed_first_message_closes_with_its_error_code).
    let url = ws_url(&app.address, &bob, &bob.cursor.to_string()).replace("token=", "token=x");
    let (status, body) = WsClient::connect(&url, None).await.expect_err("refused");
    assert_eq!(status, 401);
    assert_error_body(&body, ErrorCode::InvalidToken);
    // And one for a room that does not exist is a 404, token or not.
    let (status, body) = WsClient::connect(&ws_url_bare(&app.address, 999_999), None)
        .await
        .expect_err("refused");
    assert_eq!(status, 404);
    assert_error_body(&body, ErrorCode::UnknownRoom);
}

#[tokio::test]
async fn a_client_too_far_behind_gets_resume_failed_on_every_transport() {
    let app = spawn_app_with(|s| {
        s.chat.resume_max_messages = 3;
        s.chat.sends_per_minute = 0;
    })
    .await;
    let ann = app.join("Ann").await;
    let bob = app.join("Bob").await;
    send_n(&app, &ann, 1, 5).await;
    let old = bob.cursor.to_string();

    let poll: PollResponse = app.poll(&bob, &old, None).await.json().await.expect("poll");
    assert_eq!(reset_reason(&poll), Some(ResetReason::ResumeFailed));
    assert!(seqs(&poll).is_empty(), "nothing is replayed in part");

    let long_polled: PollResponse = long_poll(&app, &bob, &old, "20", None)
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("batch");
    assert_eq!(reset_reason(&long_polled), Some(ResetReason::ResumeFailed));

    let mut ws = WsClient::connect(&ws_url(&app.address, &bob, &old), None)
        .await
        .expect("upgraded");
    let batch = ws.next_batch().await;
    assert_eq!(reset_reason(&batch), Some(ResetReason::ResumeFailed));
    match ws.next_event().await {
        WsEvent::Closed(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::Normal);
            assert_eq!(frame.reason.as_str(), "reset");
        }
        other => panic!("expected a close after the reset, got {other:?}"),
    }

    let mut sse = SseClient::connect(&app.address, &bob, &old, None)
        .await
        .expect("stream");
    let batch = sse.next_batch().await;
    assert_eq!(reset_reason(&batch), Some(ResetReason::ResumeFailed));
    let close = sse.next_record().await.expect("close record");
    assert_eq!(close.event.as_deref(), Some("close"));
    assert!(close.data.contains("reset"));
    assert!(sse.next_record().await.is_none(), "the stream ends");

    // Within the limit, the same client resumes normally.
    let recent = RoomCursor {
        seq: 3,
        ..poll.cursor
    };
    let mut ws = WsClient::connect(&ws_url(&app.address, &bob, &recent.to_string()), None)
        .await
        .expect("upgraded");
    assert_eq!(ws_collect(&mut ws, 2).await.0, vec![4, 5]);
}

#[tokio::test]
async fn a_slow_consumer_is_disconnected_while_a_fast_one_keeps_receiving() {
    let app = spawn_app_with(|s| {
        s.push.queue_frames = 4;
        s.chat.sends_per_minute = 0;
        s.chat.max_body_chars = 20_000;
        s.server.max_request_bytes = 100_000;
    })
    .await;
    let ann = app.join("Ann").await;
    let fast = app.join("Fast").await;
    let slow = app.join("Slow").await;
    let port = port_of(&app);
    let mut slow_ws = WsClient::connect_small_buffer(
        &ws_url(&app.address, &slow, &slow.cursor.to_string()),
        port,
    )
    .await;
    let mut fast_ws =
        WsClient::connect(&ws_url(&app.address, &fast, &fast.cursor.to_string()), None)
            .await
            .expect("upgraded");
    // Enough large messages to fill the slow client's socket buffers (on
    // loopback the kernel grows a send buffer to 4 MiB) and its queue,
    // while the fast client reads everything as it comes.
    let total = 300u64;
    let body = "y".repeat(20_000);
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < total as usize {
            seen.extend(seqs(&fast_ws.next_batch().await));
        }
        seen
    });
    for i in 1..=total {
        let response = app.send(&ann, &format!("big-{i}"), &body).await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let fast_seen = reader.await.expect("fast reader");
    assert_eq!(
        fast_seen,
        (1..=total).collect::<Vec<_>>(),
        "the fast one got everything"
    );
    let stats = app.state.hub.fanout_stats();
    assert_eq!(
        stats
            .slow_consumers
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "exactly the slow one was let go"
    );
    // The slow one now reads: what was queued, in order, then the reason.
    let mut slow_seen = Vec::new();
    let mut last = slow.cursor;
    let close = loop {
        match slow_ws.next_event().await {
            WsEvent::Batch(batch) => {
                slow_seen.extend(seqs(&batch));
                last = batch.cursor;
            }
            WsEvent::Closed(frame) => break frame,
        }
    };
    let close = close.expect("a close frame with a reason");
    assert_eq!(close.code, CloseCode::Policy);
    assert_eq!(close.reason.as_str(), "slow_consumer");
    assert!((slow_seen.len() as u64) < total);
    assert_eq!(slow_seen, (1..=slow_seen.len() as u64).collect::<Vec<_>>());
    // It resumes from its last cursor and loses nothing.
    let mut again = WsClient::connect(&ws_url(&app.address, &slow, &last.to_string()), None)
        .await
        .expect("upgraded");
    let (rest, _) = ws_collect(&mut again, (total as usize) - slow_seen.len()).await;
    slow_seen.extend(rest);
    assert_eq!(slow_seen, (1..=total).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_push_client_behind_the_window_resumes_from_older_messages_then_live() {
    // A window of 4: a client 10 messages behind gets 1..=6 from the bus
    // history (shared mode) or the database, 7..=10 from memory, then live
    // frames, each seq once.
    let app = spawn_app_with(|s| {
        s.chat.window_messages = 4;
        s.chat.history_messages = 4;
        s.chat.max_events_per_poll = 3;
        s.chat.sends_per_minute = 0;
    })
    .await;
    let ann = app.join("Ann").await;
    let bob = app.join("Bob").await;
    send_n(&app, &ann, 1, 10).await;
    let mut ws = WsClient::connect(&ws_url(&app.address, &bob, &bob.cursor.to_string()), None)
        .await
        .expect("upgraded");
    let mut sse = SseClient::connect(&app.address, &bob, &bob.cursor.to_string(), None)
        .await
        .expect("stream");
    let (mut ws_seen, _) = ws_collect(&mut ws, 10).await;
    let mut sse_seen = Vec::new();
    while sse_seen.len() < 10 {
        sse_seen.extend(seqs(&sse.next_batch().await));
    }
    send_n(&app, &ann, 11, 12).await;
    ws_seen.extend(ws_collect(&mut ws, 2).await.0);
    while sse_seen.len() < 12 {
        sse_seen.extend(seqs(&sse.next_batch().await));
    }
    assert_eq!(ws_seen, (1..=12).collect::<Vec<_>>());
    assert_eq!(sse_seen, (1..=12).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_full_node_refuses_push_connections_with_503_node_full() {
    let app = spawn_app_with(|s| s.push.max_connections = 1).await;
    let bob = app.join("Bob").await;
    let url = ws_url(&app.address, &bob, &bob.cursor.to_string());
    let _only = WsClient::connect(&url, None).await.expect("the one slot");
    let (status, body) = WsClient::connect(&url, None).await.expect_err("refused");
    assert_eq!(status, 503);
    assert_error_body(&body, ErrorCode::NodeFull);
    // Plain polls are not push connections: still served.
    assert_eq!(
        app.poll(&bob, &bob.cursor.to_string(), None).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn push_connections_per_address_are_capped() {
    let app = spawn_app_with(|s| s.push.max_connections_per_ip = 2).await;
    let bob = app.join("Bob").await;
    let url = ws_url(&app.address, &bob, &bob.cursor.to_string());
    let first = WsClient::connect(&url, None).await.expect("first");
    let _second = SseClient::connect(&app.address, &bob, &bob.cursor.to_string(), None)
        .await
        .expect("second");
    let (status, body) = WsClient::connect(&url, None)
        .await
        .expect_err("third refused");
    assert_eq!(status, 429);
    assert_error_body(&body, ErrorCode::TooManyConnections);
    drop(first);
    // The slot comes back once the server notices the close.
    let mut admitted = false;
    for _ in 0..100 {
        if WsClient::connect(&url, None).await.is_ok() {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(admitted, "a freed slot is reusable");
}

#[tokio::test]
async fn a_silent_websocket_client_is_closed_after_the_idle_timeout() {
    let app = spawn_app_with(|s| {
        s.push.ping_interval_secs = 1;
        s.push.idle_timeout_secs = 2;
    })
    .await;
    let bob = app.join("Bob").await;
    let port = port_of(&app);
    let mut ws =
        WsClient::connect_small_buffer(&ws_url(&app.address, &bob, &bob.cursor.to_string()), port)
            .await;
    // Not reading means not answering pings.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let close = loop {
        match ws.next_event().await {
            WsEvent::Closed(frame) => break frame,
            WsEvent::Batch(_) => continue,
        }
    };
    let close = close.expect("a close frame");
    assert_eq!(close.code, CloseCode::Away);
    assert_eq!(close.reason.as_str(), "idle_timeout");
}

#[tokio::test]
async fn a_websocket_client_that_answers_pings_outlives_the_idle_timeout() {
    let app = spawn_app_with(|s| {
        s.push.ping_interval_secs = 1;
        s.push.idle_timeout_secs = 2;
    })
    .await;
    let bob = app.join("Bob").await;
    let mut ws = WsClient::connect(&ws_url(&app.address, &bob, &bob.cursor.to_string()), None)
        .await
        .expect("upgraded");
    // Reading lets tungstenite answer the server's pings with pongs.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(3500);
    let mut pings = 0;
    while let Ok(item) =
        tokio::time::timeout_at(deadline, futures_util::StreamExt::next(&mut ws.stream)).await
    {
        match item {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Ping(_))) => pings += 1,
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => {
                panic!("closed although it answered pings: {frame:?}")
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("connection failed: {e}"),
            None => panic!("connection ended"),
        }
    }
    assert!(pings >= 2, "the server pinged every second ({pings} pings)");
    assert_eq!(app.state.connections.total(), 1, "still connected");
}

#[tokio::test]
async fn sse_sends_keep_alive_comments() {
    let app = spawn_app_with(|s| s.push.sse_keepalive_secs = 1).await;
    let bob = app.join("Bob").await;
    let mut sse = SseClient::connect(&app.address, &bob, &bob.cursor.to_string(), None)
        .await
        .expect("stream");
    let comments = sse.comments_within(Duration::from_millis(2500)).await;
    assert!(
        comments >= 2,
        "a keep-alive comment every second ({comments})"
    );
}

#[tokio::test]
async fn a_connection_that_sends_no_request_head_is_dropped_after_the_handshake_timeout() {
    use tokio::io::AsyncReadExt;
    let app = spawn_app_with(|s| s.push.handshake_timeout_ms = 300).await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut silent = tokio::net::TcpStream::connect(&address).await.expect("tcp");
    let mut buffer = [0u8; 512];
    // The server closes it (possibly after a 408) after 0.3 s: reads end
    // well before this bound, which is below actix's default of 5 s.
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match silent.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the silent connection was closed");
}

#[tokio::test]
async fn draining_closes_websockets_with_1012_and_ends_sse_and_long_polls() {
    let mut app = spawn_app_with(|s| s.server.shutdown_timeout_secs = 20).await;
    let bob = app.join("Bob").await;
    let cursor = bob.cursor.to_string();
    let mut ws = WsClient::connect(&ws_url(&app.address, &bob, &cursor), None)
        .await
        .expect("upgraded");
    let mut sse = SseClient::connect(&app.address, &bob, &cursor, None)
        .await
        .expect("stream");
    // Both are registered (Bob's join cursor is current: no catch-up).
    for _ in 0..200 {
        if app.state.hub.subscriber_count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(app.state.hub.subscriber_count(), 2);
    let ws_cursor = bob.cursor;
    let held = tokio::spawn(
        long_poll(
            &app,
            &bob,
            &ws_cursor.to_string(),
            "25",
            Some(ws_cursor.etag()),
        )
        .send(),
    );
    let gauge = app
        .state
        .metrics
        .push_connections
        .with_label_values(&["long_poll"]);
    for _ in 0..200 {
        if gauge.get() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        gauge.get(),
        1,
        "the long-poll is held when the drain starts"
    );
    let started = std::time::Instant::now();
    let stopping = tokio::spawn(async move {
        app.stop().await;
    });
    match ws.next_event().await {
        WsEvent::Closed(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 1012);
            assert_eq!(frame.reason.as_str(), "draining");
        }
        other => panic!("expected close 1012, got {other:?}"),
    }
    let close = sse.next_record().await.expect("close record");
    assert_eq!(close.event.as_deref(), Some("close"));
    assert!(close.data.contains("draining"));
    assert!(sse.next_record().await.is_none(), "the stream ends");
    let answered = held.await.expect("task").expect("long-poll answered");
    assert_eq!(answered.status(), StatusCode::NOT_MODIFIED);
    stopping.await.expect("stopped");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the node exits once its connections are drained, not at the 20 s deadline"
    );
}

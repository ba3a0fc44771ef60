//! Join, send, poll, ETags and idempotency.

use std::collections::BTreeSet;

use chatty_protocol::api::{PollResponse, SendResponse};
use chatty_protocol::{ErrorCode, Event, ResetReason, RoomCursor};
use reqwest::StatusCode;

use crate::helpers::{assert_error, message_seqs, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_message_sent_by_one_guest_is_seen_in_the_other_guests_poll() {
    let app = spawn_app().await;
    let ann = app.join("Ann").await;
    let bob = app.join("Bob").await;

    let sent = app.send(&ann, "m-1", "hello Bob").await;
    assert_eq!(sent.status(), StatusCode::CREATED);
    let sent: SendResponse = sent.json().await.expect("send response");
    assert_eq!(sent.message.seq, 1);
    assert_eq!(sent.message.nickname, "Ann");
    assert!(sent.created);

    let poll = app
        .poll(&bob, &bob.cursor.to_string(), Some(&bob.cursor.etag()))
        .await;
    assert_eq!(poll.status(), StatusCode::OK);
    let etag = poll
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let poll: PollResponse = poll.json().await.expect("poll response");
    let messages: Vec<_> = poll
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Message { message } => Some(message.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].body, "hello Bob");
    assert_eq!(messages[0].guest_id, ann.guest.id);
    assert_eq!(
        etag.as_deref(),
        Some(poll.cursor.etag().as_str()),
        "ETag is the new cursor"
    );
    assert_eq!(poll.cursor.seq, 1);
}

/// Background work (presence ticks, reconciliation, heartbeats) is set to
/// run rarely, so that what the counters see is the request path.
fn quiet_background(s: &mut chatty_web::Settings) {
    s.chat.presence_flush_ms = 60_000;
    s.chat.reconcile_secs = 3600;
    s.redis.heartbeat_ms = 60_000;
}

#[tokio::test]
async fn an_unchanged_poll_is_answered_304_without_any_database_query_or_redis_call() {
    let app = spawn_app_with(quiet_background).await;
    let ann = app.join("Ann").await;
    app.send(&ann, "m-1", "one").await;
    // Bring the cursor up to date.
    let poll: PollResponse = app
        .poll(&ann, &ann.cursor.to_string(), None)
        .await
        .json()
        .await
        .expect("poll");
    let current = poll.cursor;
    // Let the background tasks' first (immediate) runs pass.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let (queries, redis_calls) = (app.queries(), app.redis_calls());
    for _ in 0..25 {
        let response = app
            .poll(&ann, &current.to_string(), Some(&current.etag()))
            .await;
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            response.headers().get("etag").and_then(|v| v.to_str().ok()),
            Some(current.etag().as_str())
        );
        assert!(
            response.bytes().await.expect("body").is_empty(),
            "a 304 has no body"
        );
    }
    assert_eq!(
        app.queries(),
        queries,
        "304 polls must not query the database"
    );
    assert_eq!(
        app.redis_calls(),
        redis_calls,
        "304 polls must not call Redis"
    );

    // The counters do count: a send is several statements (and, in the
    // shared mode, a Redis publish).
    app.send(&ann, "m-2", "two").await;
    assert!(
        app.queries() > queries,
        "the query counter must see the send"
    );
    if app.redis_stats.is_some() {
        assert!(
            app.redis_calls() > redis_calls,
            "the Redis counter must see the send"
        );
    }
}

#[tokio::test]
async fn a_poll_inside_the_window_touches_neither_database_nor_redis() {
    let app = spawn_app_with(quiet_background).await;
    let ann = app.join("Ann").await;
    for i in 0..5 {
        app.send(&ann, &format!("m-{i}"), "x").await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (queries, redis_calls) = (app.queries(), app.redis_calls());
    let poll: PollResponse = app
        .poll(&ann, &ann.cursor.to_string(), None)
        .await
        .json()
        .await
        .expect("poll");
    assert_eq!(message_seqs(&poll), vec![1, 2, 3, 4, 5]);
    assert_eq!(app.queries(), queries);
    assert_eq!(app.redis_calls(), redis_calls);
}

#[tokio::test]
async fn a_retried_send_returns_the_original_message_and_stores_no_duplicate() {
    let app = spawn_app().await;
    let ann = app.join("Ann").await;
    let first = app.send(&ann, "retry-me", "once").await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: SendResponse = first.json().await.expect("send");
    let retry = app.send(&ann, "retry-me", "once").await;
    assert_eq!(retry.status(), StatusCode::OK);
    let retry: SendResponse = retry.json().await.expect("send");
    assert!(!retry.created);
    assert_eq!(retry.message, first.message);

    let poll: PollResponse = app
        .poll(&ann, &ann.cursor.to_string(), None)
        .await
        .json()
        .await
        .expect("poll");
    assert_eq!(
        message_seqs(&poll),
        vec![1],
        "exactly one message delivered"
    );
}

#[tokio::test]
async fn join_returns_the_latest_messages_and_a_cursor_after_them() {
    let app = spawn_app_with(|s| s.chat.history_messages = 3).await;
    let ann = app.join("Ann").await;
    for i in 1..=5 {
        app.send(&ann, &format!("m-{i}"), &format!("message {i}"))
            .await;
    }
    let bob = app.join("Bob").await;
    assert_eq!(
        bob.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert_eq!(bob.cursor.seq, 5);
    assert_eq!(bob.poll_interval_ms, 2000);
    let names: BTreeSet<_> = bob.members.iter().map(|m| m.nickname.as_str()).collect();
    assert_eq!(names, BTreeSet::from(["Ann", "Bob"]));
}

#[tokio::test]
async fn a_client_behind_the_window_catches_up_from_the_store_in_order_exactly_once() {
    let app = spawn_app_with(|s| {
        s.chat.window_messages = 4;
        s.chat.history_messages = 2;
        s.chat.max_events_per_poll = 3;
    })
    .await;
    let ann = app.join("Ann").await;
    for i in 1..=10 {
        assert_eq!(
            app.send(&ann, &format!("m-{i}"), "x").await.status(),
            StatusCode::CREATED
        );
    }
    let mut cursor = ann.cursor;
    let mut seen = Vec::new();
    for _ in 0..10 {
        let poll: PollResponse = app
            .poll(&ann, &cursor.to_string(), None)
            .await
            .json()
            .await
            .expect("poll");
        seen.extend(message_seqs(&poll));
        cursor = poll.cursor;
        if !poll.more {
            break;
        }
    }
    assert_eq!(seen, (1..=10).collect::<Vec<u64>>());
    assert_eq!(cursor.seq, 10);
}

#[tokio::test]
async fn a_cursor_ahead_of_the_room_gets_a_reset_event() {
    let app = spawn_app().await;
    let ann = app.join("Ann").await;
    let ahead = RoomCursor {
        seq: 99,
        ..ann.cursor
    };
    let poll: PollResponse = app
        .poll(&ann, &ahead.to_string(), None)
        .await
        .json()
        .await
        .expect("poll");
    assert_eq!(
        poll.events,
        vec![Event::Reset {
            reason: ResetReason::CursorAhead
        }]
    );
}

#[tokio::test]
async fn a_token_for_another_room_is_refused() {
    let app = spawn_app().await;
    let ann = app.join("Ann").await;
    let page = app
        .join_raw(&serde_json::json!({"site_key": "demo", "nickname": "Ann", "page": "/other"}))
        .await
        .json::<chatty_protocol::api::JoinResponse>()
        .await
        .expect("join");
    assert_ne!(
        page.room.id, ann.room.id,
        "a page-scoped room is its own room"
    );
    let response = app
        .client
        .get(app.url(&format!("/api/v1/rooms/{}/events", ann.room.id)))
        .query(&[("cursor", ann.cursor.to_string())])
        .bearer_auth(&page.token)
        .send()
        .await
        .expect("poll");
    assert_error(response, 403, ErrorCode::WrongRoom).await;
}

#[tokio::test]
async fn joining_again_with_the_old_token_keeps_the_guest_id() {
    let app = spawn_app().await;
    let first = app.join("Ann").await;
    let again = app
        .join_raw(
            &serde_json::json!({"site_key": "demo", "nickname": "Annie", "token": first.token}),
        )
        .await
        .json::<chatty_protocol::api::JoinResponse>()
        .await
        .expect("join");
    assert_eq!(again.guest.id, first.guest.id);
    assert_eq!(again.guest.nickname, "Annie");
    assert_eq!(again.members.len(), 1, "one guest, renamed");
}

#[tokio::test]
async fn joining_again_with_an_expired_token_keeps_the_guest_id() {
    let app = spawn_app().await;
    let first = app.join("Ann").await;
    let claims = chatty_web::token::GuestClaims {
        site_id: 1,
        room_id: first.room.id,
        guest_id: first.guest.id.clone(),
        nickname: "Ann".into(),
        expires_at: chrono::Utc::now().timestamp() - 10,
    };
    let expired = chatty_web::token::TokenKey::new(crate::helpers::TEST_SECRET).sign(&claims);
    let poll = app
        .client
        .get(app.url(&format!("/api/v1/rooms/{}/events", first.room.id)))
        .query(&[("cursor", first.cursor.to_string())])
        .bearer_auth(&expired)
        .send()
        .await
        .expect("poll");
    assert_error(poll, 401, ErrorCode::TokenExpired).await;
    let again = app
        .join_raw(&serde_json::json!({"site_key": "demo", "nickname": "Ann", "token": expired}))
        .await
        .json::<chatty_protocol::api::JoinResponse>()
        .await
        .expect("join");
    assert_eq!(again.guest.id, first.guest.id);
}

#[tokio::test]
async fn sends_of_many_guests_get_contiguous_sequence_numbers() {
    let app = std::sync::Arc::new(spawn_app().await);
    let mut tasks = Vec::new();
    for g in 0..4 {
        let app = std::sync::Arc::clone(&app);
        tasks.push(tokio::spawn(async move {
            let guest = app.join(&format!("guest{g}")).await;
            let mut seqs = Vec::new();
            for i in 0..10 {
                let sent: SendResponse = app
                    .send(&guest, &format!("g{g}-{i}"), "hi")
                    .await
                    .json()
                    .await
                    .expect("send");
                seqs.push(sent.message.seq);
            }
            seqs
        }));
    }
    let mut all = BTreeSet::new();
    for t in tasks {
        for seq in t.await.expect("task") {
            assert!(all.insert(seq), "duplicate seq {seq}");
        }
    }
    assert_eq!(all, (1..=40).collect::<BTreeSet<u64>>());
    let reader = app.join("reader").await;
    let poll: PollResponse = app
        .poll(
            &reader,
            &RoomCursor {
                seq: 0,
                ..reader.cursor
            }
            .to_string(),
            None,
        )
        .await
        .json()
        .await
        .expect("poll");
    assert_eq!(message_seqs(&poll), (1..=40).collect::<Vec<u64>>());
}

#[tokio::test]
async fn sending_faster_than_the_limit_gets_429_with_retry_after_and_others_are_unaffected() {
    let app = spawn_app_with(|s| {
        s.chat.sends_per_minute = 3;
        s.limits.guest_burst = 3;
    })
    .await;
    let ann = app.join("Ann").await;
    let bob = app.join("Bob").await;
    for i in 0..3 {
        assert_eq!(
            app.send(&ann, &format!("a-{i}"), "hi").await.status(),
            StatusCode::CREATED
        );
    }
    let refused = app.send(&ann, "a-3", "one too many").await;
    let retry_after: u64 = refused
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_error(refused, 429, ErrorCode::RateLimited).await;
    assert_eq!(
        app.send(&bob, "b-0", "me too").await.status(),
        StatusCode::CREATED,
        "limits are per guest"
    );
    // Nothing refused was stored.
    let poll: PollResponse = app
        .poll(
            &bob,
            &RoomCursor {
                seq: 0,
                ..bob.cursor
            }
            .to_string(),
            None,
        )
        .await
        .json()
        .await
        .expect("poll");
    assert_eq!(message_seqs(&poll), vec![1, 2, 3, 4]);
}

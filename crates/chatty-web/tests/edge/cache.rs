//! The poll micro-cache: a crowd polling one room costs the app about one
//! request a second, and news still reaches everyone within a poll interval
//! plus the cache's one second.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Barrier;
use tokio::time::Instant;

use crate::harness::{Edge, poll, send_once};

const EVENTS_ROUTE: &str = "/api/v1/rooms/{room_id}/events";
const POLLERS: usize = 40;

/// Presence must not expire while polls are answered by nginx (they do
/// not reach the app): the documented setting for a micro-cached tier.
fn long_presence() -> Vec<(String, String)> {
    vec![
        ("CHATTY__CHAT__PRESENCE_TIMEOUT_POLLS".into(), "60".into()),
        ("CHATTY__CHAT__SENDS_PER_MINUTE".into(), "0".into()),
    ]
}

#[tokio::test]
async fn a_crowd_polling_an_unchanged_room_costs_the_app_about_one_poll_a_second() {
    let edge = Edge::start_with(3, long_presence()).await;
    let base = edge.base();
    let mut guests = Vec::new();
    for i in 0..POLLERS {
        guests.push(edge.join(&format!("P{i}")).await);
    }
    // Bring everyone to the room's current cursor (the joins changed it).
    let mut cursor = guests[0].cursor.to_string();
    while let Some(batch) = poll(&edge.client, &base, &guests[0], &cursor)
        .await
        .expect("poll")
    {
        cursor = batch.cursor.to_string();
    }

    let before = edge
        .metric_sum("chatty_http_requests_total", &[("route", EVENTS_ROUTE)])
        .await;
    let started = Instant::now();
    let window = Duration::from_secs(6);
    let mut tasks = Vec::new();
    for guest in guests {
        let client = edge.client.clone();
        let base = base.clone();
        let cursor = cursor.clone();
        tasks.push(tokio::spawn(async move {
            let mut answered = 0u32;
            while started.elapsed() < window {
                let news = poll(&client, &base, &guest, &cursor)
                    .await
                    .expect("poll through nginx");
                assert!(news.is_none(), "the room is unchanged: 304");
                answered += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            answered
        }));
    }
    let mut polls = 0;
    for task in tasks {
        polls += task.await.expect("poller");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = edge
        .metric_sum("chatty_http_requests_total", &[("route", EVENTS_ROUTE)])
        .await;
    let reached_app = after - before;
    eprintln!(
        "micro-cache: {polls} polls in {elapsed:.1} s through nginx, {reached_app} reached the app"
    );
    assert!(
        polls >= 400,
        "the crowd polled ({polls} polls in {elapsed:.1} s)"
    );
    // About one a second (each cache entry lives 1 s), plus one for the
    // window's edges: not one per poll.
    assert!(
        reached_app <= elapsed.ceil() + 2.0,
        "{polls} polls in {elapsed:.1} s cost the app {reached_app} polls"
    );
}

#[tokio::test]
async fn news_reaches_every_cached_poller_within_a_poll_interval_and_a_second() {
    let edge = Edge::start_with(2, long_presence()).await;
    let base = edge.base();
    let sender = edge.join("Sender").await;
    let mut guests = Vec::new();
    for i in 0..20 {
        guests.push(edge.join(&format!("R{i}")).await);
    }
    let mut cursor = guests[0].cursor.to_string();
    while let Some(batch) = poll(&edge.client, &base, &guests[0], &cursor)
        .await
        .expect("poll")
    {
        cursor = batch.cursor.to_string();
    }

    // Pollers on the widget's 2-second interval, spread over it.
    let interval = Duration::from_secs(2);
    let ready = Arc::new(Barrier::new(guests.len() + 1));
    let mut tasks = Vec::new();
    for (i, guest) in guests.iter().cloned().enumerate() {
        let client = edge.client.clone();
        let base = base.clone();
        let mut cursor = cursor.clone();
        let ready = Arc::clone(&ready);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(interval * i as u32 / 20).await;
            ready.wait().await;
            loop {
                if let Some(batch) = poll(&client, &base, &guest, &cursor)
                    .await
                    .expect("poll through nginx")
                {
                    let has_message = batch
                        .events
                        .iter()
                        .any(|e| matches!(e, chatty_protocol::Event::Message { .. }));
                    if has_message {
                        return Instant::now();
                    }
                    cursor = batch.cursor.to_string();
                }
                tokio::time::sleep(interval).await;
            }
        }));
    }
    ready.wait().await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    send_once(
        &edge.client,
        &base,
        &sender,
        "cached-news",
        "news for the crowd",
    )
    .await
    .expect("send");
    let acknowledged = Instant::now();
    // The bound is the issue's: one poll interval + the cache's 1 s, with
    // 1 s of slack for a loaded CI machine's scheduling.
    let bound = interval + Duration::from_secs(2);
    for task in tasks {
        let seen = tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .expect("every poller sees the message")
            .expect("poller");
        let delay = seen.saturating_duration_since(acknowledged);
        assert!(delay <= bound, "a poller saw the news after {delay:?}");
    }
}

#[tokio::test]
async fn a_poll_with_touch_always_reaches_the_app() {
    let edge = Edge::start_with(1, long_presence()).await;
    let base = edge.base();
    let guest = edge.join("Toucher").await;
    let mut cursor = guest.cursor.to_string();
    while let Some(batch) = poll(&edge.client, &base, &guest, &cursor)
        .await
        .expect("poll")
    {
        cursor = batch.cursor.to_string();
    }
    let count = || edge.metric_sum("chatty_http_requests_total", &[("route", EVENTS_ROUTE)]);
    let answered_304 = || edge.metric_sum("chatty_polls_total", &[("path", "not_modified")]);
    let before = count().await;
    let before_304 = answered_304().await;
    for _ in 0..5 {
        let response = edge
            .client
            .get(format!(
                "{base}/api/v1/rooms/{}/events?cursor={cursor}&touch=1",
                guest.room.id
            ))
            .bearer_auth(&guest.token)
            .header("if-none-match", format!("\"{cursor}\""))
            .send()
            .await
            .expect("touch poll");
        assert_eq!(response.status(), reqwest::StatusCode::NOT_MODIFIED);
        assert_eq!(
            response
                .headers()
                .get("x-chatty-cache")
                .and_then(|v| v.to_str().ok()),
            Some("BYPASS")
        );
    }
    assert_eq!(
        count().await - before,
        5.0,
        "every touch poll reached the app"
    );
    // With its If-None-Match: nginx drops it for polls it may cache, and
    // the app would answer each with a full 200 instead of its 304.
    assert_eq!(
        answered_304().await - before_304,
        5.0,
        "the app answered every touch poll 304 itself"
    );
}

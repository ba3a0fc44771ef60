//! Moderation across nodes: a ban, slow mode, a rate limit or a deletion
//! made through one node holds on every node at once.

use std::time::Duration;

use chatty_protocol::api::{JoinResponse, PollResponse};
use chatty_protocol::{ErrorCode, Event};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error};
use crate::push_client::{WsClient, WsEvent, ws_url};
use crate::{cluster_settings, helpers};

const ORIGIN: &str = "https://shop.example";

struct Site {
    key: String,
    admin: String,
    moderator: String,
}

async fn admin(
    node: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Value {
    let mut request = node
        .client
        .request(method, node.url(&format!("/api/v1/admin{path}")))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("admin call");
    let status = response.status();
    let text = response.text().await.expect("body");
    assert!(status.is_success(), "{path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

async fn create_site(node: &TestApp) -> Site {
    let created =
        chatty_web::admin::create_site(node.state.admin.as_ref(), "Shop", &[ORIGIN.into()])
            .await
            .expect("site");
    let key = created.site.key.clone();
    let moderator = admin(
        node,
        Method::POST,
        &format!("/sites/{key}/tokens"),
        &created.admin_token,
        Some(json!({"role": "moderator", "label": "Bea"})),
    )
    .await["secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    Site {
        key,
        admin: created.admin_token,
        moderator,
    }
}

async fn join(node: &TestApp, key: &str, nickname: &str, origin: &str) -> Response {
    node.client
        .post(node.url("/api/v1/join"))
        .header("Origin", origin)
        .json(&json!({"site_key": key, "nickname": nickname}))
        .send()
        .await
        .expect("join")
}

async fn joined(node: &TestApp, key: &str, nickname: &str) -> JoinResponse {
    let response = join(node, key, nickname, ORIGIN).await;
    assert_eq!(response.status(), StatusCode::OK, "join {nickname}");
    response.json().await.expect("join answer")
}

async fn send(node: &TestApp, guest: &JoinResponse, id: &str, body: &str) -> Response {
    node.client
        .post(node.url(&format!("/api/v1/rooms/{}/messages", guest.room.id)))
        .header("Origin", ORIGIN)
        .bearer_auth(&guest.token)
        .json(&json!({"client_message_id": id, "body": body}))
        .send()
        .await
        .expect("send")
}

async fn nodes(n: usize, customise: fn(&mut chatty_web::Settings)) -> Vec<TestApp> {
    let deployment = helpers::Deployment::new(true).await;
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(
            helpers::spawn_node(std::sync::Arc::clone(&deployment), |s| {
                cluster_settings(s);
                customise(s);
            })
            .await,
        );
    }
    nodes
}

#[tokio::test]
async fn a_banned_guest_cannot_send_on_any_node() {
    let nodes = nodes(3, |_| {}).await;
    let site = create_site(&nodes[0]).await;
    let troll = joined(&nodes[0], &site.key, "Troll").await;
    for (i, node) in nodes.iter().enumerate() {
        assert_eq!(
            send(node, &troll, &format!("before-{i}"), &format!("hi {i}"))
                .await
                .status(),
            StatusCode::CREATED
        );
    }
    admin(
        &nodes[1],
        Method::POST,
        &format!("/sites/{}/bans", site.key),
        &site.moderator,
        Some(json!({"guest_id": troll.guest.id, "duration_secs": 600, "reason": "spam"})),
    )
    .await;
    // No wait: the ban is in Redis before the moderator's answer.
    for (i, node) in nodes.iter().enumerate() {
        assert_error(
            send(node, &troll, &format!("after-{i}"), "spam").await,
            403,
            ErrorCode::Banned,
        )
        .await;
    }
    // A node started later (its guard rebuilt from MySQL) refuses too.
    let late = helpers::spawn_node(std::sync::Arc::clone(&nodes[0].db), cluster_settings).await;
    assert_error(
        send(&late, &troll, "late", "spam").await,
        403,
        ErrorCode::Banned,
    )
    .await;
}

#[tokio::test]
async fn slow_mode_and_site_changes_hold_on_every_node_at_once() {
    let nodes = nodes(3, |_| {}).await;
    let site = create_site(&nodes[0]).await;
    let ann = joined(&nodes[0], &site.key, "Ann").await;
    // Every node reads (and caches) the site first.
    for (i, node) in nodes.iter().enumerate() {
        assert_eq!(
            send(node, &ann, &format!("warm-{i}"), &format!("warm {i}"))
                .await
                .status(),
            StatusCode::CREATED
        );
    }
    admin(
        &nodes[0],
        Method::PUT,
        &format!("/sites/{}/moderation", site.key),
        &site.moderator,
        Some(json!({"slow_mode_secs": 30})),
    )
    .await;
    // The change is announced on the bus; allow it the time a publish takes.
    let mut refused_on_every_node = false;
    for _ in 0..50 {
        let first = send(&nodes[1], &ann, "slow-1", "one").await.status();
        assert!(
            first == StatusCode::CREATED || first == StatusCode::OK,
            "{first}"
        );
        let statuses = [
            send(&nodes[2], &ann, "slow-2", "two").await.status(),
            send(&nodes[0], &ann, "slow-3", "three").await.status(),
        ];
        if statuses.iter().all(|s| *s == StatusCode::TOO_MANY_REQUESTS) {
            refused_on_every_node = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        refused_on_every_node,
        "slow mode is enforced by the other nodes"
    );
    assert_error(
        send(&nodes[2], &ann, "slow-4", "four").await,
        429,
        ErrorCode::SlowMode,
    )
    .await;
    // A new origin list: the old origin is refused by every node.
    admin(
        &nodes[2],
        Method::PATCH,
        &format!("/sites/{}", site.key),
        &site.admin,
        Some(json!({"origins": ["https://new.example"]})),
    )
    .await;
    for (i, node) in nodes.iter().enumerate() {
        let nickname = format!("Zed{i}");
        let mut refused = false;
        for _ in 0..50 {
            if join(node, &site.key, &nickname, ORIGIN).await.status() == StatusCode::FORBIDDEN {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            refused,
            "node on {} still allows the old origin",
            node.address
        );
        assert_eq!(
            join(node, &site.key, &nickname, "https://new.example")
                .await
                .status(),
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn rate_limits_hold_across_nodes() {
    let nodes = nodes(3, |s| {
        s.chat.sends_per_minute = 1;
        s.limits.guest_burst = 4;
        s.limits.ip_sends_per_minute = 1;
        s.limits.ip_burst = 6;
    })
    .await;
    let site = create_site(&nodes[0]).await;
    let ann = joined(&nodes[0], &site.key, "Ann").await;
    let mut admitted = 0;
    for i in 0..9 {
        let response = send(&nodes[i % 3], &ann, &format!("r{i}"), &format!("text {i}")).await;
        match response.status() {
            StatusCode::CREATED => admitted += 1,
            _ => assert_error(response, 429, ErrorCode::RateLimited).await,
        }
    }
    assert_eq!(admitted, 4, "the guest's burst, shared by three nodes");
    // The address's bucket (6) is shared by its guests: Bob gets the rest.
    let bob = joined(&nodes[1], &site.key, "Bob").await;
    let mut admitted = 0;
    for i in 0..6 {
        if send(&nodes[i % 3], &bob, &format!("b{i}"), &format!("bob {i}"))
            .await
            .status()
            == StatusCode::CREATED
        {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 2, "6 per address, 4 taken by Ann");
}

#[tokio::test]
async fn a_deleted_message_vanishes_from_history_and_from_a_live_websocket_on_another_node() {
    let nodes = nodes(3, |_| {}).await;
    let site = create_site(&nodes[0]).await;
    let ann = joined(&nodes[0], &site.key, "Ann").await;
    let bob = joined(&nodes[1], &site.key, "Bob").await;
    let mut bob_ws = WsClient::connect(
        &ws_url(&nodes[1].address, &bob, &bob.cursor.to_string()),
        Some(ORIGIN),
    )
    .await
    .expect("WebSocket on node 2");
    assert_eq!(
        send(&nodes[0], &ann, "m1", "hello").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        send(&nodes[0], &ann, "m2", "something rude").await.status(),
        StatusCode::CREATED
    );
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(5), bob_ws.next_event())
            .await
            .expect("a frame")
        {
            WsEvent::Batch(batch) => seen.extend(
                batch
                    .events
                    .into_iter()
                    .filter(|e| matches!(e, Event::Message { .. })),
            ),
            WsEvent::Closed(frame) => panic!("closed: {frame:?}"),
        }
    }
    let deleted = admin(
        &nodes[2],
        Method::DELETE,
        &format!("/sites/{}/rooms/{}/messages/2", site.key, ann.room.id),
        &site.moderator,
        None,
    )
    .await;
    assert_eq!(deleted["event_seq"], 3);
    let told = loop {
        match tokio::time::timeout(Duration::from_secs(5), bob_ws.next_event())
            .await
            .expect("the delete event")
        {
            WsEvent::Batch(batch) => {
                if let Some(event) = batch.events.into_iter().find(|e| {
                    !matches!(
                        e,
                        Event::Join { .. } | Event::Members { .. } | Event::Leave { .. }
                    )
                }) {
                    break event;
                }
            }
            WsEvent::Closed(frame) => panic!("closed: {frame:?}"),
        }
    };
    assert_eq!(
        told,
        Event::Delete {
            seq: 3,
            deleted_seq: 2
        }
    );
    // Nor does Redis keep the text: the history row is emptied with the event.
    let history = nodes[0]
        .state
        .bus
        .history_after(ann.room.id, 0, 10)
        .await
        .expect("history")
        .expect("the history holds the room");
    let rows: Vec<(u64, chatty_storage::MessageKind, &str)> = history
        .iter()
        .map(|m| (m.seq, m.kind, m.body.as_str()))
        .collect();
    assert_eq!(
        rows,
        vec![
            (1, chatty_storage::MessageKind::Chat, "hello"),
            (2, chatty_storage::MessageKind::Removed, ""),
            (3, chatty_storage::MessageKind::Delete { target: 2 }, ""),
        ]
    );
    // History on every node: joins and late polls no longer have it.
    for (i, node) in nodes.iter().enumerate() {
        let joiner = joined(node, &site.key, &format!("Late{i}")).await;
        assert_eq!(
            joiner.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
            vec![1],
            "node {i}"
        );
        let from_start = chatty_protocol::RoomCursor {
            seq: 0,
            ..joiner.cursor
        };
        let poll: PollResponse = node
            .client
            .get(node.url(&format!("/api/v1/rooms/{}/events", joiner.room.id)))
            .query(&[("cursor", from_start.to_string())])
            .bearer_auth(&joiner.token)
            .send()
            .await
            .expect("poll")
            .json()
            .await
            .expect("poll answer");
        let text = serde_json::to_string(&poll.events).expect("json");
        assert!(
            !text.contains("rude"),
            "node {i} handed out the deleted text: {text}"
        );
    }
}

#[tokio::test]
async fn disabling_a_site_ends_its_open_websockets_on_every_node_and_slow_mode_does_not() {
    let nodes = nodes(3, |_| {}).await;
    let site = create_site(&nodes[0]).await;
    let ann = joined(&nodes[0], &site.key, "Ann").await;
    let bob = joined(&nodes[1], &site.key, "Bob").await;
    let url = ws_url(&nodes[1].address, &bob, &bob.cursor.to_string());
    let mut bob_ws = WsClient::connect(&url, Some(ORIGIN))
        .await
        .expect("WebSocket on node 2");
    // A moderation setting leaves open connections alone.
    admin(
        &nodes[0],
        Method::PUT,
        &format!("/sites/{}/moderation", site.key),
        &site.moderator,
        Some(json!({"slow_mode_secs": 5})),
    )
    .await;
    assert_eq!(
        send(&nodes[0], &ann, "m1", "still here").await.status(),
        StatusCode::CREATED
    );
    loop {
        match tokio::time::timeout(Duration::from_secs(5), bob_ws.next_event())
            .await
            .expect("a frame")
        {
            WsEvent::Batch(batch)
                if batch
                    .events
                    .iter()
                    .any(|e| matches!(e, Event::Message { .. })) =>
            {
                break;
            }
            WsEvent::Batch(_) => {}
            WsEvent::Closed(frame) => panic!("closed by a slow-mode change: {frame:?}"),
        }
    }
    // Disabling the site (through another node) ends it.
    admin(
        &nodes[2],
        Method::PATCH,
        &format!("/sites/{}", site.key),
        &site.admin,
        Some(json!({"disabled": true})),
    )
    .await;
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(5), bob_ws.next_event())
            .await
            .expect("the connection ends")
        {
            WsEvent::Batch(_) => {}
            WsEvent::Closed(frame) => break frame.expect("a close frame"),
        }
    };
    assert_eq!(u16::from(closed.code), 1012);
    assert_eq!(closed.reason.as_str(), "site_changed");
    // Its reconnection meets the new rule.
    match WsClient::connect(&url, Some(ORIGIN)).await {
        Err((status, body)) => {
            assert_eq!(status, 403);
            assert!(body.contains("site_disabled"), "{body}");
        }
        Ok(_) => panic!("a disabled site's WebSocket opened"),
    }
}

//! Messages, presence, ETags and idempotency across nodes.

use std::collections::BTreeSet;
use std::sync::Arc;

use chatty_protocol::api::SendResponse;
use chatty_protocol::{Event, RoomCursor};
use reqwest::StatusCode;

use crate::helpers::spawn_node;
use crate::{SeqChecker, cluster, cluster_settings, poll_until};

#[tokio::test]
async fn a_message_sent_on_node_1_appears_in_a_poll_on_node_3() {
    let (_deployment, nodes) = cluster(3).await;
    let ann = nodes[0].join("Ann").await;
    let cleo = nodes[2].join("Cleo").await;
    assert_eq!(
        nodes[0]
            .send(&ann, "m-1", "hello from node 1")
            .await
            .status(),
        StatusCode::CREATED
    );
    let mut cursor = cleo.cursor;
    let mut checker = SeqChecker::default();
    poll_until(&nodes[2], &cleo, &mut cursor, &mut checker, 1, 40).await;
    checker.assert_exactly(1);
}

#[tokio::test]
async fn presence_is_seen_from_every_node() {
    let (_deployment, nodes) = cluster(3).await;
    let ann = nodes[0].join("Ann").await;
    let bob = nodes[1].join("Bob").await;
    let names: BTreeSet<_> = bob.members.iter().map(|m| m.nickname.clone()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["Ann".to_owned(), "Bob".to_owned()]),
        "node 2 sees node 1's guest at join"
    );
    // Node 3 has never seen the room: its first join loads presence from Redis.
    let cleo = nodes[2].join("Cleo").await;
    assert_eq!(cleo.members.len(), 3);
    // And node 1's guest gets join events for both.
    let mut joined = BTreeSet::new();
    let mut cursor = ann.cursor;
    for _ in 0..40 {
        let response = nodes[0]
            .poll(&ann, &cursor.to_string(), Some(&cursor.etag()))
            .await;
        if response.status() == StatusCode::OK {
            let poll: chatty_protocol::api::PollResponse = response.json().await.expect("poll");
            for event in &poll.events {
                match event {
                    Event::Join { member, .. } => {
                        joined.insert(member.nickname.clone());
                    }
                    Event::Members { members, .. } => {
                        joined.extend(members.iter().map(|m| m.nickname.clone()))
                    }
                    _ => {}
                }
            }
            cursor = poll.cursor;
        }
        if joined.contains("Bob") && joined.contains("Cleo") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        joined.contains("Bob") && joined.contains("Cleo"),
        "{joined:?}"
    );
}

#[tokio::test]
async fn an_etag_from_node_1_is_honoured_by_node_2() {
    let (_deployment, nodes) = cluster(2).await;
    let ann = nodes[0].join("Ann").await;
    let bob = nodes[1].join("Bob").await;
    nodes[0].send(&ann, "m-1", "x").await;
    // Both nodes converge on one room version; then node 1's ETag is a 304 on node 2.
    let mut last_status = StatusCode::OK;
    for _ in 0..40 {
        let on_one = nodes[0].poll(&ann, "0.0.0", None).await;
        let etag = on_one
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .expect("etag")
            .to_owned();
        let cursor: RoomCursor = etag.trim_matches('"').parse().expect("cursor");
        let on_two = nodes[1].poll(&bob, &cursor.to_string(), Some(&etag)).await;
        last_status = on_two.status();
        if last_status == StatusCode::NOT_MODIFIED {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(last_status, StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn an_idempotent_retry_on_another_node_returns_the_original() {
    let (_deployment, nodes) = cluster(2).await;
    let ann = nodes[0].join("Ann").await;
    let first: SendResponse = nodes[0]
        .send(&ann, "retry-1", "once")
        .await
        .json()
        .await
        .expect("send");
    let retry = nodes[1].send(&ann, "retry-1", "once").await;
    assert_eq!(
        retry.status(),
        StatusCode::OK,
        "a guest token is valid on every node"
    );
    let retry: SendResponse = retry.json().await.expect("send");
    assert!(!retry.created);
    assert_eq!(retry.message, first.message);
    let mut checker = SeqChecker::default();
    let mut cursor = RoomCursor {
        seq: 0,
        ..ann.cursor
    };
    poll_until(&nodes[1], &ann, &mut cursor, &mut checker, 1, 10).await;
    checker.assert_exactly(1);
}

#[tokio::test]
async fn concurrent_sends_from_all_nodes_get_contiguous_numbers_and_every_node_delivers_each_once()
{
    let (_deployment, nodes) = cluster(3).await;
    let nodes = Arc::new(nodes);
    let readers: Vec<_> = {
        let mut readers = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            readers.push(node.join(&format!("reader{i}")).await);
        }
        readers
    };
    let mut tasks = Vec::new();
    for n in 0..3 {
        for g in 0..3 {
            let nodes = Arc::clone(&nodes);
            tasks.push(tokio::spawn(async move {
                let guest = nodes[n].join(&format!("n{n}g{g}")).await;
                let mut seqs = Vec::new();
                for i in 0..8 {
                    let sent: SendResponse = nodes[n]
                        .send(&guest, &format!("n{n}-g{g}-{i}"), "hi")
                        .await
                        .json()
                        .await
                        .expect("send");
                    seqs.push(sent.message.seq);
                }
                seqs
            }));
        }
    }
    let mut all = BTreeSet::new();
    for task in tasks {
        for seq in task.await.expect("sender") {
            assert!(all.insert(seq), "duplicate seq {seq}");
        }
    }
    let total = 3 * 3 * 8;
    assert_eq!(
        all,
        (1..=total).collect::<BTreeSet<u64>>(),
        "no gap, no duplicate"
    );
    for (node, reader) in nodes.iter().zip(&readers) {
        let mut cursor = reader.cursor;
        let mut checker = SeqChecker::default();
        poll_until(node, reader, &mut cursor, &mut checker, total, 100).await;
        checker.assert_exactly(total);
    }
}

#[tokio::test]
async fn a_node_stopped_mid_traffic_loses_nothing_for_its_visitors() {
    let (deployment, mut nodes) = cluster(2).await;
    let ann = nodes[0].join("Ann").await;
    let bob = nodes[1].join("Bob").await;
    let mut cursor = bob.cursor;
    let mut checker = SeqChecker::default();
    for i in 1..=3 {
        nodes[0].send(&ann, &format!("before-{i}"), "x").await;
    }
    poll_until(&nodes[1], &bob, &mut cursor, &mut checker, 3, 40).await;
    // Bob's node goes away; Bob carries on at a node that never saw him.
    nodes[1].stop().await;
    let replacement = spawn_node(Arc::clone(&deployment), cluster_settings).await;
    for i in 1..=3 {
        nodes[0].send(&ann, &format!("after-{i}"), "x").await;
    }
    poll_until(&replacement, &bob, &mut cursor, &mut checker, 6, 40).await;
    checker.assert_exactly(6);
}

/// Background work runs rarely, so counters see only what the test does.
fn quiet(s: &mut chatty_web::Settings) {
    cluster_settings(s);
    s.chat.presence_flush_ms = 60_000;
    s.chat.reconcile_secs = 3600;
    s.redis.heartbeat_ms = 60_000;
}

#[tokio::test]
async fn presence_refreshes_from_polls_cost_one_redis_call_per_tick_whatever_the_number_of_pollers()
{
    let deployment = crate::helpers::Deployment::new(true).await;
    let node = spawn_node(Arc::clone(&deployment), quiet).await;
    let mut guests = Vec::new();
    for i in 0..6 {
        let page = if i % 2 == 0 { None } else { Some("/other") };
        let body =
            serde_json::json!({"site_key": "demo", "nickname": format!("g{i}"), "page": page});
        let guest: chatty_protocol::api::JoinResponse =
            node.join_raw(&body).await.json().await.expect("join");
        guests.push(guest);
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let before = node.redis_calls();
    for _ in 0..5 {
        for guest in &guests {
            node.poll(guest, &guest.cursor.to_string(), Some(&guest.cursor.etag()))
                .await;
        }
    }
    assert_eq!(node.redis_calls(), before, "30 polls, no Redis call");
    node.state.hub.presence_tick().await.expect("tick");
    assert_eq!(
        node.redis_calls(),
        before + 1,
        "one tick, one call, for 6 guests in 2 rooms"
    );
}

#[tokio::test]
async fn joins_on_a_warm_node_and_room_loads_from_the_redis_history_do_not_query_mysql() {
    let deployment = crate::helpers::Deployment::new(true).await;
    let first = spawn_node(Arc::clone(&deployment), quiet).await;
    let ann = first.join("Ann").await;
    for i in 1..=5 {
        first.send(&ann, &format!("m-{i}"), "x").await;
    }
    // A node that never saw the room loads it from Redis: no SQL.
    let second = spawn_node(Arc::clone(&deployment), quiet).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let before = second.queries();
    let room = second
        .state
        .hub
        .room(ann.room.id)
        .await
        .expect("room loads");
    drop(room);
    assert_eq!(
        second.queries(),
        before,
        "room state came from the Redis history"
    );
    // Its first join resolves the site and room once (then cached); later joins are SQL-free.
    let bob = second.join("Bob").await;
    assert_eq!(
        bob.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    let warm = second.queries();
    for i in 0..5 {
        second.join(&format!("guest{i}")).await;
    }
    assert_eq!(
        second.queries(),
        warm,
        "joins on a warm node do not query MySQL"
    );
}

/// Stores a message in the database only, as a send does before it
/// publishes the message on the bus.
async fn commit_unannounced(
    node: &crate::helpers::TestApp,
    room_id: i64,
    client_message_id: &str,
) -> chatty_storage::StoredMessage {
    let message = chatty_storage::NewMessage {
        room_id,
        guest_id: "ghost".into(),
        nickname: chatty_protocol::validate::Nickname::parse("Ghost").expect("nickname"),
        body: chatty_protocol::validate::MessageBody::parse("unannounced", 2000).expect("body"),
        client_message_id: chatty_protocol::validate::ClientMessageId::parse(client_message_id)
            .expect("id"),
        created_at: chrono::Utc::now(),
        ip_hash: String::new(),
    };
    let outcome = node
        .state
        .store
        .post_message(message)
        .await
        .expect("stored");
    outcome.message
}

#[tokio::test]
async fn a_message_committed_but_never_announced_is_recovered_by_reconciliation() {
    let deployment = crate::helpers::Deployment::new(true).await;
    let node = spawn_node(Arc::clone(&deployment), |s| {
        cluster_settings(s);
        s.chat.reconcile_secs = 1;
    })
    .await;
    let ann = node.join("Ann").await;
    // A node died between commit and publish: the message is in MySQL only.
    commit_unannounced(&node, ann.room.id, "lost-1").await;
    let mut cursor = ann.cursor;
    let mut checker = SeqChecker::default();
    poll_until(&node, &ann, &mut cursor, &mut checker, 1, 60).await;
    checker.assert_exactly(1);
}

/// The sending node applies a message, then publishes it: in between, a
/// client it answered may poll another node with a cursor that node's bus
/// history does not reach yet. The store has the message: no reset.
#[tokio::test]
async fn a_cursor_ahead_of_the_bus_history_is_caught_up_from_the_store_not_reset() {
    let deployment = crate::helpers::Deployment::new(true).await;
    let node = spawn_node(Arc::clone(&deployment), |s| {
        cluster_settings(s);
        s.chat.reconcile_secs = 3600;
    })
    .await;
    let ann = node.join("Ann").await;
    // One published message: the room's history exists on the bus.
    assert_eq!(
        node.send(&ann, "m-published", "hello").await.status(),
        StatusCode::CREATED
    );
    // Committed but not yet published, as between the two steps of a send.
    let stored = commit_unannounced(&node, ann.room.id, "in-flight-1").await;
    let shown_elsewhere = RoomCursor {
        seq: stored.seq,
        ..ann.cursor
    };
    let response = node.poll(&ann, &shown_elsewhere.to_string(), None).await;
    let status = response.status();
    if status == StatusCode::OK {
        let poll: chatty_protocol::api::PollResponse = response.json().await.expect("poll");
        assert!(
            !poll.events.iter().any(|e| matches!(e, Event::Reset { .. })),
            "no reset: {:?}",
            poll.events
        );
        assert_eq!(poll.cursor.seq, stored.seq);
    } else {
        assert_eq!(status, StatusCode::NOT_MODIFIED);
    }
}

#[tokio::test]
async fn the_send_limit_holds_across_nodes() {
    let deployment = crate::helpers::Deployment::new(true).await;
    let limited = |s: &mut chatty_web::Settings| {
        cluster_settings(s);
        s.chat.sends_per_minute = 4;
        s.limits.guest_burst = 4;
    };
    let one = spawn_node(Arc::clone(&deployment), limited).await;
    let two = spawn_node(Arc::clone(&deployment), limited).await;
    let ann = one.join("Ann").await;
    for i in 0..4 {
        let node = if i % 2 == 0 { &one } else { &two };
        assert_eq!(
            node.send(&ann, &format!("m-{i}"), "x").await.status(),
            StatusCode::CREATED
        );
    }
    for node in [&one, &two] {
        crate::helpers::assert_error(
            node.send(&ann, "m-extra", "x").await,
            429,
            chatty_protocol::ErrorCode::RateLimited,
        )
        .await;
    }
}

//! Push across nodes: any transport on any node sees every message exactly
//! once, in order, and a client resumes on another node from its cursor —
//! after a disconnect or while its node drains.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chatty_protocol::api::{JoinResponse, PollResponse};
use reqwest::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::helpers::TestApp;
use crate::push_client::{SseClient, WsClient, WsEvent, ws_url};
use crate::{SeqChecker, cluster};

/// A cluster whose send limit is off: these tests send faster than a
/// person would.
async fn cluster_without_rate_limit(n: usize) -> Vec<TestApp> {
    let deployment = crate::helpers::Deployment::new(true).await;
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(
            crate::helpers::spawn_node(Arc::clone(&deployment), |s| {
                crate::cluster_settings(s);
                s.chat.sends_per_minute = 0;
            })
            .await,
        );
    }
    nodes
}

/// Sends `count` messages through `node` in the background, a few ms apart.
fn sender(
    node_url: String,
    guest: JoinResponse,
    count: u64,
    sent: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        for i in 1..=count {
            // A send that fails (its node draining) is retried with the same
            // id, as the widget does: stored once either way.
            loop {
                let response = client
                    .post(format!("{node_url}/api/v1/rooms/{}/messages", guest.room.id))
                    .bearer_auth(&guest.token)
                    .json(&serde_json::json!({"client_message_id": format!("bg-{i}"), "body": format!("message {i}")}))
                    .send()
                    .await;
                if let Ok(response) = response
                    && response.status().is_success()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            sent.store(i, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    })
}

#[tokio::test]
async fn a_websocket_on_node_1_and_sse_on_node_2_receive_a_message_sent_on_node_3() {
    let (_deployment, nodes) = cluster(3).await;
    let ann = nodes[2].join("Ann").await;
    let ws_guest = nodes[0].join("Wes").await;
    let sse_guest = nodes[1].join("Sue").await;
    let mut ws = WsClient::connect(
        &ws_url(&nodes[0].address, &ws_guest, &ws_guest.cursor.to_string()),
        None,
    )
    .await
    .expect("upgraded");
    let mut sse = SseClient::connect(
        &nodes[1].address,
        &sse_guest,
        &sse_guest.cursor.to_string(),
        None,
    )
    .await
    .expect("stream");
    assert_eq!(
        nodes[2].send(&ann, "x-1", "hello everyone").await.status(),
        StatusCode::CREATED
    );
    let mut ws_seen = SeqChecker::default();
    while ws_seen.seen.is_empty() {
        ws_seen.record(&ws.next_batch().await);
    }
    let mut sse_seen = SeqChecker::default();
    while sse_seen.seen.is_empty() {
        sse_seen.record(&sse.next_batch().await);
    }
    ws_seen.assert_exactly(1);
    sse_seen.assert_exactly(1);
}

#[tokio::test]
async fn a_client_resumes_on_another_node_with_no_gap_and_no_duplicate() {
    let nodes = cluster_without_rate_limit(3).await;
    let ann = nodes[2].join("Ann").await;
    let bob = nodes[0].join("Bob").await;
    let total = 40;
    let sent = Arc::new(AtomicU64::new(0));
    let sending = sender(nodes[2].address.clone(), ann, total, Arc::clone(&sent));
    let mut checker = SeqChecker::default();
    let mut cursor = bob.cursor;
    // Hop between nodes and transports while messages keep coming:
    // WebSocket on node 1, SSE on node 2, WebSocket on node 3, SSE on node 1…
    let mut hop = 0usize;
    while (checker.seen.len() as u64) < total {
        let node = &nodes[hop % 3];
        let goal = (checker.seen.len() as u64 + 7).min(total);
        if hop.is_multiple_of(2) {
            let mut ws = WsClient::connect(&ws_url(&node.address, &bob, &cursor.to_string()), None)
                .await
                .expect("upgraded");
            while (checker.seen.len() as u64) < goal {
                let batch = ws.next_batch().await;
                checker.record(&batch);
                cursor = batch.cursor;
            }
        } else {
            let mut sse = SseClient::connect(&node.address, &bob, &cursor.to_string(), None)
                .await
                .expect("stream");
            while (checker.seen.len() as u64) < goal {
                let batch = sse.next_batch().await;
                checker.record(&batch);
                cursor = batch.cursor;
            }
        }
        hop += 1;
    }
    sending.await.expect("sender");
    assert!(hop >= 5, "the client moved between nodes {hop} times");
    checker.assert_exactly(total);
}

#[tokio::test]
async fn stopping_a_node_mid_traffic_its_push_clients_resume_elsewhere_losing_nothing() {
    let mut nodes = cluster_without_rate_limit(3).await;
    let ann = nodes[2].join("Ann").await;
    let wes = nodes[0].join("Wes").await;
    let sue = nodes[0].join("Sue").await;
    let total = 40;
    let sent = Arc::new(AtomicU64::new(0));
    let mut ws = WsClient::connect(
        &ws_url(&nodes[0].address, &wes, &wes.cursor.to_string()),
        None,
    )
    .await
    .expect("upgraded");
    let mut sse = SseClient::connect(&nodes[0].address, &sue, &sue.cursor.to_string(), None)
        .await
        .expect("stream");
    let sending = sender(nodes[2].address.clone(), ann, total, Arc::clone(&sent));

    // The WebSocket client reads until its node tells it to go elsewhere.
    let mut ws_seen = SeqChecker::default();
    let mut ws_cursor = wes.cursor;
    let mut sse_seen = SeqChecker::default();
    let mut sse_id: Option<String> = None;
    // Some traffic first, then node 1 drains under it.
    while ws_seen.seen.len() < 10 {
        let batch = ws.next_batch().await;
        ws_seen.record(&batch);
        ws_cursor = batch.cursor;
    }
    let mut node_1 = nodes.remove(0);
    let stopping = tokio::spawn(async move { node_1.stop().await });
    let close = loop {
        match ws.next_event().await {
            WsEvent::Batch(batch) => {
                ws_seen.record(&batch);
                ws_cursor = batch.cursor;
            }
            WsEvent::Closed(frame) => break frame,
        }
    };
    assert_eq!(
        close.map(|f| f.code),
        Some(CloseCode::Restart),
        "told to reconnect elsewhere (1012)"
    );
    loop {
        match sse.next_record().await {
            Some(record) if record.event.is_none() => {
                let batch: PollResponse = serde_json::from_str(&record.data).expect("batch");
                sse_seen.record(&batch);
                sse_id = record.id;
            }
            Some(record) => {
                assert_eq!(record.event.as_deref(), Some("close"));
                assert!(record.data.contains("draining"));
            }
            None => break,
        }
    }
    stopping.await.expect("node 1 stopped");

    // Both reconnect to node 2 from where they were.
    let mut ws = WsClient::connect(
        &ws_url(&nodes[0].address, &wes, &ws_cursor.to_string()),
        None,
    )
    .await
    .expect("upgraded on node 2");
    while (ws_seen.seen.len() as u64) < total {
        let batch = ws.next_batch().await;
        ws_seen.record(&batch);
    }
    let resume_from = sse_id.unwrap_or_else(|| sue.cursor.to_string());
    let mut sse = SseClient::connect(
        &nodes[0].address,
        &sue,
        &sue.cursor.to_string(),
        Some(&resume_from),
    )
    .await
    .expect("stream on node 2");
    while (sse_seen.seen.len() as u64) < total {
        let batch = sse.next_batch().await;
        sse_seen.record(&batch);
    }
    sending.await.expect("sender");
    ws_seen.assert_exactly(total);
    sse_seen.assert_exactly(total);
}

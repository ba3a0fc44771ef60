//! Redis and MariaDB failing underneath a node, and the node recovering by itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chatty_protocol::ErrorCode;
use chatty_protocol::api::PollResponse;
use reqwest::StatusCode;

use crate::helpers::{Deployment, assert_error, spawn_node};
use crate::proxy::FaultProxy;
use crate::{SeqChecker, cluster, cluster_settings, poll_until};

async fn redis_proxy() -> FaultProxy {
    let url = Deployment::redis_url();
    let target = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:6379")
        .to_owned();
    FaultProxy::start(&target).await
}

fn mysql_through(url: &str, port: u16) -> String {
    // mysql://user@host:port/db → mysql://user@127.0.0.1:<port>/db
    let (head, db) = url.rsplit_once('/').expect("database url");
    let (credentials, _) = head.rsplit_once('@').expect("credentials");
    format!("{credentials}@127.0.0.1:{port}/{db}")
}

#[tokio::test]
async fn when_redis_stops_answering_sends_get_503_polls_keep_answering_and_the_node_recovers() {
    let deployment = Deployment::new(true).await;
    let proxy = redis_proxy().await;
    let proxy_url = format!("redis://127.0.0.1:{}", proxy.port);
    let healthy = spawn_node(Arc::clone(&deployment), cluster_settings).await;
    let node = spawn_node(Arc::clone(&deployment), |s| {
        cluster_settings(s);
        s.redis.url = proxy_url.clone();
    })
    .await;
    let ann = node.join("Ann").await;
    let bob = healthy.join("Bob").await;
    node.send(&ann, "m-1", "before").await;
    let mut cursor = ann.cursor;
    let mut checker = SeqChecker::default();
    poll_until(&node, &ann, &mut cursor, &mut checker, 1, 40).await;

    proxy.freeze();
    // The node notices (missed heartbeats) and refuses sends with a stable code.
    let mut refused = None;
    for _ in 0..40 {
        let started = Instant::now();
        let response = node.send(&ann, "m-during", "during").await;
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            refused = Some(started.elapsed());
            assert_error(response, 503, ErrorCode::BusUnavailable).await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = refused.expect("a send is refused while Redis is frozen");
    assert!(
        refused < Duration::from_secs(5),
        "answered within the configured timeout, took {refused:?}"
    );
    // Polls of a room the node holds keep answering, from memory.
    let poll = node
        .poll(&ann, &cursor.to_string(), Some(&cursor.etag()))
        .await;
    assert!(
        poll.status() == StatusCode::NOT_MODIFIED || poll.status() == StatusCode::OK,
        "{}",
        poll.status()
    );
    // Not ready: the load balancer takes it out.
    let ready = node
        .client
        .get(node.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Meanwhile another node keeps taking messages.
    for i in 2..=3 {
        assert_eq!(
            healthy
                .send(&bob, &format!("m-{i}"), "elsewhere")
                .await
                .status(),
            StatusCode::CREATED
        );
    }

    proxy.thaw();
    // The client retries its refused send with the same id, as the widget
    // does: whether the refusal came before or after the commit, it ends up
    // stored exactly once.
    let status = send_until_accepted(&node, &ann, "m-during", 100).await;
    assert!(status.is_success(), "the node recovers by itself: {status}");
    // It resubscribed and caught up on what it missed while cut off.
    poll_until(&node, &ann, &mut cursor, &mut checker, 4, 100).await;
    checker.assert_exactly(4);
    let ready = node
        .client
        .get(node.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), StatusCode::OK);
}

#[tokio::test]
async fn when_mysql_stops_answering_sends_get_503_within_the_timeout_and_polls_keep_serving() {
    let deployment = Deployment::new(true).await;
    let target = chatty_storage::testing::mysql_server_url();
    let target = target
        .rsplit_once('@')
        .map_or("127.0.0.1:3306", |(_, host)| host)
        .trim_end_matches('/')
        .to_owned();
    let proxy = FaultProxy::start(&target).await;
    let db_url = mysql_through(&deployment.db.url, proxy.port);
    let node = spawn_node(Arc::clone(&deployment), |s| {
        cluster_settings(s);
        s.database.url = db_url.clone();
        s.database.query_timeout_ms = 700;
        s.database.connect_timeout_ms = 700;
    })
    .await;
    let ann = node.join("Ann").await;
    node.send(&ann, "m-1", "before").await;
    let poll: PollResponse = node
        .poll(&ann, &ann.cursor.to_string(), None)
        .await
        .json()
        .await
        .expect("poll");

    proxy.freeze();
    let started = Instant::now();
    let response = node.send(&ann, "m-2", "during").await;
    let took = started.elapsed();
    assert_error(response, 503, ErrorCode::StoreUnavailable).await;
    assert!(
        took < Duration::from_secs(5),
        "answered within the configured timeout, took {took:?}"
    );
    // Nothing was acknowledged, and polls still answer from memory.
    let still = node
        .poll(&ann, &poll.cursor.to_string(), Some(&poll.cursor.etag()))
        .await;
    assert_eq!(still.status(), StatusCode::NOT_MODIFIED);
    let ready = node
        .client
        .get(node.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);

    proxy.thaw();
    proxy.cut(); // the frozen connections are dead: the pool opens new ones
    // The retry (same client id) succeeds once MariaDB answers again; it is stored once.
    let status = send_until_accepted(&node, &ann, "m-2", 50).await;
    assert!(status.is_success(), "{status}");
    let mut cursor = poll.cursor;
    let mut checker = SeqChecker { seen: vec![1] };
    poll_until(&node, &ann, &mut cursor, &mut checker, 2, 40).await;
    checker.assert_exactly(2);
}

#[tokio::test]
async fn redis_losing_its_data_mid_test_loses_and_duplicates_nothing() {
    let (deployment, nodes) = cluster(2).await;
    let ann = nodes[0].join("Ann").await;
    let bob = nodes[1].join("Bob").await;
    for i in 1..=5 {
        nodes[0].send(&ann, &format!("m-{i}"), "x").await;
    }
    // Redis restarts empty (for this deployment's keys only: other tests share the server).
    flush_prefix(deployment.redis_prefix.as_deref().expect("shared mode")).await;
    for i in 6..=10 {
        assert_eq!(
            nodes[1].send(&bob, &format!("m-{i}"), "y").await.status(),
            StatusCode::CREATED
        );
    }
    // A third node loads the room after the loss: from MySQL, then refills Redis.
    let late = spawn_node(Arc::clone(&deployment), cluster_settings).await;
    let cleo = late.join("Cleo").await;
    assert_eq!(
        cleo.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<u64>>()
    );
    for (node, guest) in [(&nodes[0], &ann), (&nodes[1], &bob)] {
        let mut cursor = guest.cursor;
        let mut checker = SeqChecker::default();
        poll_until(node, guest, &mut cursor, &mut checker, 10, 60).await;
        checker.assert_exactly(10);
    }
    let sent: chatty_protocol::api::SendResponse = late
        .send(&cleo, "m-11", "z")
        .await
        .json()
        .await
        .expect("send");
    assert_eq!(sent.message.seq, 11, "numbering continues from MySQL");
}

async fn flush_prefix(prefix: &str) {
    let client = redis::Client::open(Deployment::redis_url()).expect("redis url");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut connection)
        .await
        .expect("keys");
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut connection)
            .await
            .expect("del");
    }
}

/// Retries a send with the same client id every 100 ms, as the widget does,
/// until it is accepted or `attempts` run out; returns the last status.
async fn send_until_accepted(
    node: &crate::helpers::TestApp,
    guest: &chatty_protocol::api::JoinResponse,
    id: &str,
    attempts: usize,
) -> StatusCode {
    let mut status = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..attempts {
        status = node.send(guest, id, "retried").await.status();
        if status.is_success() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    status
}

//! Nodes dying, joining and losing Redis under traffic, behind nginx.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;

use crate::harness::{Edge, free_port};
use crate::traffic::Traffic;

const MESSAGES: u64 = 60;

/// Polls `url` every 100 ms for up to 15 s until it answers `status`;
/// the answer's body (JSON) when it does.
async fn wait_for_status(
    client: &reqwest::Client,
    url: &str,
    status: StatusCode,
) -> Option<serde_json::Value> {
    for _ in 0..150 {
        if let Ok(response) = client.get(url).send().await
            && response.status() == status
        {
            return Some(response.json().await.unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

fn no_send_limit() -> Vec<(String, String)> {
    vec![("CHATTY__CHAT__SENDS_PER_MINUTE".into(), "0".into())]
}

#[tokio::test]
async fn a_node_killed_under_traffic_loses_and_duplicates_nothing() {
    let mut edge = Edge::start_with(3, no_send_limit()).await;
    let traffic = Traffic::start(&edge, MESSAGES).await;
    traffic.wait_sent(MESSAGES / 3).await;
    edge.nodes[0].kill_9();
    let report = traffic.finish().await;
    report.assert_exactly_once(MESSAGES);
    // nginx retries what the dead node dropped: no client request fails.
    report.assert_no_failures(&edge.nginx.error_log());
}

#[tokio::test]
async fn a_node_added_under_traffic_with_a_reload_fails_no_request() {
    let mut edge = Edge::start_with(3, no_send_limit()).await;
    let traffic = Traffic::start(&edge, MESSAGES).await;
    traffic.wait_sent(MESSAGES / 4).await;
    let added = edge.add_node().await;
    let ports: Vec<u16> = edge.nodes.iter().map(|n| n.port).collect();
    edge.nginx.set_upstreams(&ports);
    let report = traffic.finish().await;
    report.assert_exactly_once(MESSAGES);
    report.assert_no_failures(&edge.nginx.error_log());
    // The new node took its share (least connections: the pollers' requests).
    let text = edge
        .client
        .get(format!("{}/metrics", edge.nodes[added].base()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let served = crate::harness::sum_metric(
        &text,
        "chatty_http_requests_total",
        &[("route", "/api/v1/rooms/{room_id}/events")],
    ) + crate::harness::sum_metric(
        &text,
        "chatty_http_requests_total",
        &[("route", "/api/v1/rooms/{room_id}/messages")],
    );
    assert!(served > 0.0, "the added node served visitors");
}

#[tokio::test]
async fn a_node_drained_out_of_nginx_under_traffic_fails_no_request() {
    let mut edge = Edge::start_with(3, no_send_limit()).await;
    let traffic = Traffic::start(&edge, MESSAGES).await;
    traffic.wait_sent(MESSAGES / 4).await;
    // The runbook: take it out of the upstream, reload, then SIGTERM.
    let ports: Vec<u16> = edge.nodes[1..].iter().map(|n| n.port).collect();
    edge.nginx.set_upstreams(&ports);
    edge.nodes[0].terminate();
    assert!(
        edge.nodes[0].wait_exit(Duration::from_secs(15)),
        "the drained node exits"
    );
    let report = traffic.finish().await;
    report.assert_exactly_once(MESSAGES);
    report.assert_no_failures(&edge.nginx.error_log());
}

/// A Redis server of the test's own, to stop without disturbing others.
struct PrivateRedis(Child);

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn readyz_turns_false_when_the_nodes_redis_stops() {
    let edge = Edge::start(1).await;
    let port = free_port();
    let redis = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    let mut redis = PrivateRedis(redis);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let node = edge
        .spawn_extra_node(&[
            ("CHATTY__REDIS__URL", format!("redis://127.0.0.1:{port}")),
            ("CHATTY__REDIS__HEARTBEAT_MS", "200".into()),
            ("CHATTY__REDIS__TIMEOUT_MS", "500".into()),
        ])
        .await;
    let readyz = format!("{}/readyz", node.base());
    wait_for_status(&edge.client, &readyz, StatusCode::OK)
        .await
        .expect("the node is ready with its Redis up");

    let _ = redis.0.kill();
    let _ = redis.0.wait();
    let body = wait_for_status(&edge.client, &readyz, StatusCode::SERVICE_UNAVAILABLE)
        .await
        .expect("/readyz says 503 once Redis is gone");
    assert_eq!(body["error"]["code"], "bus_unavailable", "{body}");
    let alive = edge
        .client
        .get(format!("{}/healthz", node.base()))
        .send()
        .await
        .expect("healthz");
    assert_eq!(
        alive.status(),
        StatusCode::OK,
        "still alive, just not ready"
    );
}

#[tokio::test]
async fn a_node_that_loses_redis_is_passed_over_and_no_send_or_join_fails() {
    let mut edge = Edge::start_with(1, no_send_limit()).await;
    let redis = crate::helpers::Deployment::redis_url();
    let redis_address = redis
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    let cut_off = crate::proxy::FaultProxy::start(&redis_address).await;
    let node = edge
        .spawn_extra_node(&[
            (
                "CHATTY__REDIS__URL",
                format!("redis://127.0.0.1:{}", cut_off.port),
            ),
            ("CHATTY__REDIS__TIMEOUT_MS", "500".into()),
            ("CHATTY__REDIS__HEARTBEAT_MS", "200".into()),
        ])
        .await;
    let readyz = format!("{}/readyz", node.base());
    edge.nodes.push(node);
    wait_for_status(&edge.client, &readyz, StatusCode::OK)
        .await
        .expect("the second node starts");
    let ports: Vec<u16> = edge.nodes.iter().map(|n| n.port).collect();
    edge.nginx.set_upstreams(&ports);
    let sender = edge.join("Sender").await;

    cut_off.freeze();
    wait_for_status(&edge.client, &readyz, StatusCode::SERVICE_UNAVAILABLE)
        .await
        .expect("the node without Redis says so on /readyz");

    // Half of these reach the node without Redis first; it refuses them
    // (503, nothing stored) and nginx passes them on to the other node.
    let base = edge.base();
    let mut seqs = Vec::new();
    for i in 0..20 {
        let seq = crate::harness::send_once(
            &edge.client,
            &base,
            &sender,
            &format!("passed-over-{i}"),
            "sent while a node has no Redis",
        )
        .await
        .unwrap_or_else(|e| panic!("send {i} failed through nginx: {e}"));
        seqs.push(seq);
        edge.join(&format!("Late{i}")).await;
    }
    assert_eq!(
        seqs,
        (1..=20).collect::<Vec<u64>>(),
        "each stored once, in order"
    );
}

#[tokio::test]
async fn nginx_caps_event_streams_per_address() {
    let edge = Edge::start(1).await;
    let guest = edge.join("Many tabs").await;
    let visitor = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 3]))
        .build()
        .expect("client");
    let url = format!(
        "{}/api/v1/rooms/{}/sse?token={}&cursor={}",
        edge.base(),
        guest.room.id,
        guest.token,
        guest.cursor
    );
    let mut open = Vec::new();
    for _ in 0..64 {
        let stream = visitor.get(&url).send().await.expect("sse");
        assert_eq!(stream.status(), StatusCode::OK);
        open.push(stream);
    }
    let refused = visitor.get(&url).send().await.expect("sse");
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: serde_json::Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited");
    drop(open);
}

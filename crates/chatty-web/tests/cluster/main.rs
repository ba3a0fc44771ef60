//! Several nodes in one test process, sharing one MariaDB database and one
//! Redis key prefix (unique per test): the shared mode end to end, and its
//! faults. Needs MariaDB (`CHATTY_TEST_MYSQL_URL`) and Redis
//! (`CHATTY_TEST_REDIS_URL`). Run: `cargo test -p chatty-web --test cluster`.

#[path = "../api/helpers.rs"]
#[allow(dead_code)]
mod helpers;
#[path = "../common/proxy.rs"]
#[allow(dead_code)]
mod proxy;

mod faults;
mod hostile;
mod moderation;
mod nodes;
mod push;
#[path = "../common/push.rs"]
#[allow(dead_code)]
mod push_client;

use std::sync::Arc;

use chatty_protocol::api::{JoinResponse, PollResponse};
use chatty_protocol::{Event, RoomCursor};
use chatty_web::Settings;
use helpers::{Deployment, TestApp, spawn_node};

/// Test settings for a cluster node: quick presence and gap handling.
pub fn cluster_settings(s: &mut Settings) {
    s.chat.poll_interval_ms = 500;
    s.redis.heartbeat_ms = 200;
    s.redis.timeout_ms = 500;
    s.database.query_timeout_ms = 1000;
}

/// Starts `n` nodes of one fresh shared deployment.
pub async fn cluster(n: usize) -> (Arc<Deployment>, Vec<TestApp>) {
    let deployment = Deployment::new(true).await;
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(spawn_node(Arc::clone(&deployment), cluster_settings).await);
    }
    (deployment, nodes)
}

/// Every message seq a client sees, with its position: checks exactly-once, in order.
#[derive(Debug, Default)]
pub struct SeqChecker {
    pub seen: Vec<u64>,
}

impl SeqChecker {
    pub fn record(&mut self, poll: &PollResponse) {
        for event in &poll.events {
            if let Event::Message { message } = event {
                self.seen.push(message.seq);
            }
        }
    }

    /// Asserts the client saw exactly 1..=n, in order, each once.
    pub fn assert_exactly(&self, n: u64) {
        assert_eq!(
            self.seen,
            (1..=n).collect::<Vec<u64>>(),
            "every message exactly once, in order"
        );
    }
}

/// Polls `node` as `guest` until it has seen `n` messages or `attempts` polls passed.
pub async fn poll_until(
    node: &TestApp,
    guest: &JoinResponse,
    cursor: &mut RoomCursor,
    checker: &mut SeqChecker,
    n: u64,
    attempts: usize,
) {
    for _ in 0..attempts {
        let response = node
            .poll(guest, &cursor.to_string(), Some(&cursor.etag()))
            .await;
        if response.status() == reqwest::StatusCode::OK {
            let poll: PollResponse = response.json().await.expect("poll");
            checker.record(&poll);
            *cursor = poll.cursor;
            if poll.more {
                continue;
            }
        }
        if checker.seen.len() as u64 >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

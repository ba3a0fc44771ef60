//! Steady visitor traffic through nginx while a test breaks or grows the
//! tier: a sender, plain pollers and WebSocket readers. It records every
//! request that failed (as the client saw it) and every message seq each
//! reader received, to check "nothing lost, nothing twice".

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatty_protocol::Event;
use chatty_protocol::api::{JoinResponse, PollResponse};
use futures_util::StreamExt;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{Edge, poll, send_once};
use crate::push_client::{WsClient, auth_message, ws_url_bare};

const POLLERS: usize = 3;
const WS_READERS: usize = 3;
/// A reader gives up this long after the last message was sent.
const DRAIN_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Traffic {
    sent: Arc<AtomicU64>,
    all_sent: Arc<AtomicBool>,
    failures: Arc<Mutex<Vec<String>>>,
    reconnects: Arc<AtomicU64>,
    sender: JoinHandle<Vec<u64>>,
    readers: Vec<JoinHandle<Vec<u64>>>,
}

#[derive(Debug)]
pub struct Report {
    /// Seqs acknowledged to the sender, in order.
    pub acknowledged: Vec<u64>,
    /// Message seqs each reader received, in order of arrival.
    pub seen: Vec<Vec<u64>>,
    /// Requests that failed as the client saw them.
    pub failures: Vec<String>,
    /// WebSocket reconnections (expected when a node goes away).
    pub reconnects: u64,
}

impl Report {
    /// No client request failed; `nginx_log` explains it if one did.
    pub fn assert_no_failures(&self, nginx_log: &str) {
        assert!(
            self.failures.is_empty(),
            "no request failed: {:?} ({} WebSocket reconnects)\nnginx error log:\n{nginx_log}",
            self.failures,
            self.reconnects,
        );
    }

    /// Every acknowledged message reached every reader once, in order.
    pub fn assert_exactly_once(&self, total: u64) {
        let expected: Vec<u64> = (1..=total).collect();
        assert_eq!(self.acknowledged, expected, "each send stored once");
        for (i, seen) in self.seen.iter().enumerate() {
            assert_eq!(
                seen, &expected,
                "reader {i} got every message once, in order"
            );
        }
    }
}

fn seqs(batch: &PollResponse) -> impl Iterator<Item = u64> + '_ {
    batch.events.iter().filter_map(|e| match e {
        Event::Message { message } => Some(message.seq),
        _ => None,
    })
}

impl Traffic {
    /// Starts `total` sends (100 ms apart) and the readers, all through nginx.
    pub async fn start(edge: &Edge, total: u64) -> Self {
        let base = edge.base();
        let sent = Arc::new(AtomicU64::new(0));
        let all_sent = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let reconnects = Arc::new(AtomicU64::new(0));
        let mut readers = Vec::new();
        for i in 0..POLLERS {
            let guest = edge.join(&format!("Poller{i}")).await;
            readers.push(tokio::spawn(poller(
                edge.client.clone(),
                base.clone(),
                guest,
                total,
                Arc::clone(&all_sent),
                Arc::clone(&failures),
            )));
        }
        for i in 0..WS_READERS {
            let guest = edge.join(&format!("Reader{i}")).await;
            readers.push(tokio::spawn(ws_reader(
                base.clone(),
                guest,
                total,
                Arc::clone(&all_sent),
                Arc::clone(&failures),
                Arc::clone(&reconnects),
            )));
        }
        let guest = edge.join("Sender").await;
        let sender = tokio::spawn(sender(
            edge.client.clone(),
            base,
            guest,
            total,
            Arc::clone(&sent),
            Arc::clone(&all_sent),
            Arc::clone(&failures),
        ));
        Self {
            sent,
            all_sent,
            failures,
            reconnects,
            sender,
            readers,
        }
    }

    /// Waits until `n` messages were acknowledged.
    pub async fn wait_sent(&self, n: u64) {
        while self.sent.load(Ordering::SeqCst) < n {
            assert!(!self.all_sent.load(Ordering::SeqCst));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn finish(self) -> Report {
        let acknowledged = self.sender.await.expect("sender");
        let mut seen = Vec::new();
        for reader in self.readers {
            seen.push(reader.await.expect("reader"));
        }
        let failures = self.failures.lock().map(|f| f.clone()).unwrap_or_default();
        Report {
            acknowledged,
            seen,
            failures,
            reconnects: self.reconnects.load(Ordering::SeqCst),
        }
    }
}

fn record(failures: &Mutex<Vec<String>>, what: String) {
    if let Ok(mut f) = failures.lock() {
        f.push(what);
    }
}

/// Sends `total` messages; a failed attempt is recorded and retried with
/// the same client id (as the widget does), so it is stored once anyway.
async fn sender(
    client: reqwest::Client,
    base: String,
    guest: JoinResponse,
    total: u64,
    sent: Arc<AtomicU64>,
    all_sent: Arc<AtomicBool>,
    failures: Arc<Mutex<Vec<String>>>,
) -> Vec<u64> {
    let mut acknowledged = Vec::new();
    for i in 1..=total {
        let id = format!("traffic-{i}");
        let mut attempts = 0;
        loop {
            match send_once(&client, &base, &guest, &id, &format!("message {i}")).await {
                Ok(seq) => {
                    acknowledged.push(seq);
                    break;
                }
                Err(e) => {
                    record(&failures, e);
                    attempts += 1;
                    assert!(attempts < 50, "send {i} never went through");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        sent.store(i, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    all_sent.store(true, Ordering::SeqCst);
    acknowledged
}

/// Polls every 100 ms until it has seen `total` messages.
async fn poller(
    client: reqwest::Client,
    base: String,
    guest: JoinResponse,
    total: u64,
    all_sent: Arc<AtomicBool>,
    failures: Arc<Mutex<Vec<String>>>,
) -> Vec<u64> {
    let mut cursor = guest.cursor.to_string();
    let mut seen = Vec::new();
    let mut deadline = None;
    while (seen.len() as u64) < total {
        match poll(&client, &base, &guest, &cursor).await {
            Ok(Some(batch)) => {
                seen.extend(seqs(&batch));
                cursor = batch.cursor.to_string();
                if batch.more {
                    continue;
                }
            }
            Ok(None) => {}
            Err(e) => record(&failures, e),
        }
        if all_sent.load(Ordering::SeqCst) {
            let deadline =
                *deadline.get_or_insert_with(|| tokio::time::Instant::now() + DRAIN_WAIT);
            if tokio::time::Instant::now() > deadline {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}

/// A WebSocket reader that reconnects through nginx with its last cursor
/// whenever its connection ends (its node died, or drained).
async fn ws_reader(
    base: String,
    guest: JoinResponse,
    total: u64,
    all_sent: Arc<AtomicBool>,
    failures: Arc<Mutex<Vec<String>>>,
    reconnects: Arc<AtomicU64>,
) -> Vec<u64> {
    let mut cursor = guest.cursor.to_string();
    let mut seen = Vec::new();
    let mut deadline = None;
    let mut first = true;
    'connections: while (seen.len() as u64) < total {
        if !first {
            reconnects.fetch_add(1, Ordering::SeqCst);
        }
        first = false;
        let mut ws = match WsClient::connect(&ws_url_bare(&base, guest.room.id), None).await {
            Ok(ws) => ws,
            Err((status, body)) => {
                record(&failures, format!("websocket upgrade: {status} {body}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        ws.send_text(auth_message(&guest.token, &cursor)).await;
        while (seen.len() as u64) < total {
            if all_sent.load(Ordering::SeqCst) {
                let deadline =
                    *deadline.get_or_insert_with(|| tokio::time::Instant::now() + DRAIN_WAIT);
                if tokio::time::Instant::now() > deadline {
                    break 'connections;
                }
            }
            let frame = tokio::time::timeout(Duration::from_secs(1), ws.stream.next()).await;
            match frame {
                Err(_) => continue, // quiet: look at the deadline again
                Ok(Some(Ok(Message::Text(text)))) => {
                    let batch: PollResponse = match serde_json::from_str(text.as_str()) {
                        Ok(batch) => batch,
                        Err(e) => panic!("frame {text:?}: {e}"),
                    };
                    seen.extend(seqs(&batch));
                    cursor = batch.cursor.to_string();
                }
                Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) => {
                    continue 'connections;
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }
    seen
}

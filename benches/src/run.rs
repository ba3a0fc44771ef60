//! `chatty-bench run SCENARIO`: simulated widget visitors against a URL.
//!
//! Each visitor arrives during the ramp-up, downloads the widget, joins
//! (initial sync), then listens on its transport until the end; senders
//! among them post at random times at the scenario's rate. Everything a
//! visitor sees is counted:
//!
//! * **latency**: join/sync, each poll, each send, and delivery (from the
//!   start of a send to its arrival at each receiver; the send time rides
//!   in the `client_message_id`, so no clock but this process's is used);
//! * **exactly once**: every receiver expects every message of its room
//!   after its join's cursor up to the room's last acknowledged seq. Seqs
//!   arrive in order on every transport, so a seq at or below the last
//!   one is a duplicate and a jump is a loss; messages still missing at
//!   the end are lost too.
//!
//! The run is bounded: ramp-up + duration + drain, then every task stops.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use std::borrow::Cow;

use chatty_protocol::RoomCursor;
use chatty_protocol::api::JoinResponse;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::scenario::{Scenario, Transport};

/// How long a long-poll is held by the server (the widget's value).
const LONG_POLL_SECS: u64 = 25;
/// Bound on every request but a long-poll.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Options of one run, besides the scenario.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Entry URLs (one node, or nginx); visitor `i` uses `urls[i % len]`.
    pub urls: Vec<String>,
    /// Nodes' `/metrics` URLs, read before and after (server-side figures).
    pub metrics_urls: Vec<String>,
    /// Show a live progress bar.
    pub progress: bool,
}

/// Counters shared by every task.
#[derive(Debug, Default)]
struct Counters {
    joined: AtomicU64,
    polls: AtomicU64,
    sent: AtomicU64,
    delivered: AtomicU64,
    duplicated: AtomicU64,
    gap_lost: AtomicU64,
    reconnects: AtomicU64,
}

/// Latencies in microseconds.
#[derive(Debug)]
struct Latencies {
    join: Histogram<u64>,
    poll: Histogram<u64>,
    /// Polls that started after the ramp-up: the load held, without the
    /// crowd's arrival.
    poll_held: Histogram<u64>,
    send: Histogram<u64>,
    delivery: Histogram<u64>,
    /// How late the client's own 10 ms timer fired: see `watch_client_lag`.
    client_lag: Histogram<u64>,
}

impl Latencies {
    fn new() -> Result<Self> {
        let h = || Histogram::<u64>::new_with_bounds(1, 600_000_000, 3);
        Ok(Self {
            join: h()?,
            poll: h()?,
            poll_held: h()?,
            send: h()?,
            delivery: h()?,
            client_lag: h()?,
        })
    }
}

/// One second of the run: poll and delivery latencies (for the report's
/// charts of latency over time).
struct Second {
    poll: Histogram<u64>,
    delivery: Histogram<u64>,
    client_lag: Histogram<u64>,
}

impl Second {
    fn new() -> Option<Self> {
        // Two significant figures: a few KB per second of run.
        let h = || Histogram::<u64>::new_with_bounds(1, 600_000_000, 2).ok();
        Some(Self {
            poll: h()?,
            delivery: h()?,
            client_lag: h()?,
        })
    }
}

/// A point of the latency-over-time charts.
#[derive(Debug, Clone, Serialize)]
pub struct TimelinePoint {
    pub second: usize,
    pub polls: u64,
    pub poll_p50_ms: f64,
    pub poll_p99_ms: f64,
    pub deliveries: u64,
    pub delivery_p50_ms: f64,
    pub delivery_p99_ms: f64,
    /// The most the client's own timer was late in this second.
    pub client_lag_max_ms: f64,
}

/// A bar of a latency histogram: how many fell at or below `upper_ms`
/// (and above the previous bar).
#[derive(Debug, Clone, Serialize)]
pub struct Bar {
    pub upper_ms: f64,
    pub count: u64,
}

fn bars(h: &Histogram<u64>) -> Vec<Bar> {
    if h.is_empty() {
        return Vec::new();
    }
    h.iter_log(100, 2.0)
        .map(|v| Bar {
            upper_ms: v.value_iterated_to() as f64 / 1000.0,
            count: v.count_since_last_iteration(),
        })
        .collect()
}

/// What one receiver saw, checked against the room at the end.
#[derive(Debug, Clone, Copy)]
struct ReceiverTally {
    room_id: i64,
    from_seq: u64,
    delivered: u64,
}

struct Shared {
    scenario: Scenario,
    options: RunOptions,
    clients: Vec<reqwest::Client>,
    sources: Vec<IpAddr>,
    started: Instant,
    /// When the last visitor is due to have arrived.
    ramped_up: Instant,
    counters: Counters,
    latencies: Mutex<Latencies>,
    timeline: Mutex<Vec<Option<Second>>>,
    errors: Mutex<BTreeMap<String, u64>>,
    /// Highest acknowledged seq per room.
    room_last_seq: Mutex<HashMap<i64, u64>>,
    tallies: Mutex<Vec<ReceiverTally>>,
    /// Sending stops when this turns true; receiving when `stop_rx` does.
    sending_over: watch::Receiver<bool>,
    /// Short requests (widget, join, send, poll) in flight at once: see
    /// `Scenario::max_connections`.
    request_slots: tokio::sync::Semaphore,
}

impl Shared {
    fn error(&self, kind: impl Into<String>) {
        if let Ok(mut errors) = self.errors.lock() {
            *errors.entry(kind.into()).or_default() += 1;
        }
    }

    fn micros(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn record(&self, which: fn(&mut Latencies) -> &mut Histogram<u64>, micros: u64) {
        if let Ok(mut latencies) = self.latencies.lock() {
            let _ = which(&mut latencies).record(micros.max(1));
        }
    }

    /// Also files a poll or delivery latency under the current second.
    fn record_in_time(&self, which: fn(&mut Second) -> &mut Histogram<u64>, micros: u64) {
        let second = usize::try_from(self.started.elapsed().as_secs()).unwrap_or(usize::MAX);
        if let Ok(mut timeline) = self.timeline.lock() {
            if timeline.len() <= second {
                timeline.resize_with(second + 1, || None);
            }
            if timeline[second].is_none() {
                timeline[second] = Second::new();
            }
            if let Some(bucket) = timeline[second].as_mut() {
                let _ = which(bucket).record(micros.max(1));
            }
        }
    }
}

/// Percentiles of one latency, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Self {
            count: h.len(),
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: h.max() as f64 / 1000.0,
        }
    }
}

/// The result of a run: printed as a table and written as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: Scenario,
    pub urls: Vec<String>,
    pub visitors_joined: u64,
    pub polls: u64,
    pub sent: u64,
    pub delivered: u64,
    pub expected: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reconnects: u64,
    pub errors: BTreeMap<String, u64>,
    pub join: LatencySummary,
    pub poll: LatencySummary,
    /// Polls started after the ramp-up: every visitor has arrived.
    pub poll_held: LatencySummary,
    pub send: LatencySummary,
    pub delivery: LatencySummary,
    /// How late the client's own runtime ran a 10 ms timer: when this is
    /// near the poll latency, the load generator, not the server, made it.
    pub client_lag: LatencySummary,
    pub server: Option<crate::server::ServerSide>,
    /// Cores the bench client itself kept busy (it shares the machine).
    pub client_cores: Option<f64>,
    pub elapsed_secs: f64,
    /// Latency over time, one point per second.
    pub timeline: Vec<TimelinePoint>,
    /// Latency histograms (log-scale bars).
    pub poll_histogram: Vec<Bar>,
    pub delivery_histogram: Vec<Bar>,
}

/// Runs `scenario` and returns its report.
pub async fn run(scenario: Scenario, options: RunOptions) -> Result<Report> {
    scenario.validate()?;
    if options.urls.is_empty() {
        bail!("no URL to visit");
    }
    // Every visitor holds a socket or two; raise what we may open.
    // Pollers share pooled keep-alive connections (as they would behind
    // nginx); each SSE or WebSocket visitor holds its own socket.
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    let streams = (scenario.visitors as f64 * scenario.streaming_share()).ceil() as u64;
    let needed = streams + 1024;
    if limit < needed {
        eprintln!(
            "warning: this process may open {limit} files; {streams} SSE and WebSocket visitors need about {needed}"
        );
    }
    let sources: Vec<IpAddr> = (0..scenario.source_addresses)
        .map(|k| IpAddr::V4(Ipv4Addr::new(127, 0, 0, k.saturating_add(1))))
        .collect();
    let clients = sources
        .iter()
        .map(|source| {
            reqwest::Client::builder()
                .local_address(*source)
                .pool_max_idle_per_host(usize::MAX)
                // Below the node's keep-alive (75 s) and nginx's (60 s):
                // the client, not the server, closes idle connections, so
                // no poll is written on one the server is closing.
                .pool_idle_timeout(Duration::from_secs(30))
                .connect_timeout(REQUEST_TIMEOUT)
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let before = crate::server::sample(&clients[0], &options.metrics_urls).await;
    let client_cpu_before = crate::server::own_cpu_seconds();

    let (sending_over_tx, sending_over_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        scenario: scenario.clone(),
        options: options.clone(),
        clients,
        sources,
        started: Instant::now(),
        ramped_up: Instant::now() + Duration::from_secs(scenario.ramp_up_secs),
        counters: Counters::default(),
        latencies: Mutex::new(Latencies::new()?),
        timeline: Mutex::new(Vec::new()),
        errors: Mutex::new(BTreeMap::new()),
        room_last_seq: Mutex::new(HashMap::new()),
        tallies: Mutex::new(Vec::new()),
        sending_over: sending_over_rx,
        request_slots: tokio::sync::Semaphore::new(scenario.max_connections),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let progress = options.progress.then(|| progress_bar(Arc::clone(&shared)));
    let lag_watch = tokio::spawn(watch_client_lag(Arc::clone(&shared)));

    let mut tasks = Vec::with_capacity(scenario.visitors);
    for i in 0..scenario.visitors {
        tasks.push(tokio::spawn(visitor(
            Arc::clone(&shared),
            i,
            stop_rx.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_secs(scenario.duration_secs)).await;
    let _ = sending_over_tx.send(true);
    // Gauges (connections, memory) at full load, before visitors leave.
    let at_full_load = crate::server::sample(&shared.clients[0], &options.metrics_urls).await;
    tokio::time::sleep(Duration::from_secs(scenario.drain_secs)).await;
    let _ = stop_tx.send(true);
    for task in tasks {
        if task.await.is_err() {
            shared.error("visitor task panicked");
        }
    }
    lag_watch.abort();
    if let Some((bar, ticker)) = progress {
        ticker.abort();
        bar.finish_and_clear();
    }
    let after = crate::server::sample(&shared.clients[0], &options.metrics_urls).await;
    let elapsed_secs = shared.started.elapsed().as_secs_f64();
    let client_cores = client_cpu_before
        .zip(crate::server::own_cpu_seconds())
        .map(|(before, after)| (after - before) / elapsed_secs.max(1e-9));

    // Exactly once: each receiver against its room's last acknowledged seq.
    let room_last = shared
        .room_last_seq
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    let tallies = shared.tallies.lock().map(|t| t.clone()).unwrap_or_default();
    let mut expected = 0;
    let mut delivered = 0;
    for tally in &tallies {
        let last = room_last.get(&tally.room_id).copied().unwrap_or(0);
        expected += last.saturating_sub(tally.from_seq);
        delivered += tally.delivered.min(last.saturating_sub(tally.from_seq));
    }
    let latencies = shared
        .latencies
        .lock()
        .map_err(|_| anyhow::anyhow!("latency lock poisoned"))?;
    let c = &shared.counters;
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let timeline = shared
        .timeline
        .lock()
        .map(|t| {
            t.iter()
                .enumerate()
                .map(|(second, bucket)| match bucket {
                    Some(b) => TimelinePoint {
                        second,
                        polls: b.poll.len(),
                        poll_p50_ms: ms(&b.poll, 0.5),
                        poll_p99_ms: ms(&b.poll, 0.99),
                        deliveries: b.delivery.len(),
                        delivery_p50_ms: ms(&b.delivery, 0.5),
                        delivery_p99_ms: ms(&b.delivery, 0.99),
                        client_lag_max_ms: b.client_lag.max() as f64 / 1000.0,
                    },
                    None => TimelinePoint {
                        second,
                        polls: 0,
                        poll_p50_ms: 0.0,
                        poll_p99_ms: 0.0,
                        deliveries: 0,
                        delivery_p50_ms: 0.0,
                        delivery_p99_ms: 0.0,
                        client_lag_max_ms: 0.0,
                    },
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Report {
        scenario,
        urls: options.urls.clone(),
        visitors_joined: c.joined.load(Ordering::Relaxed),
        polls: c.polls.load(Ordering::Relaxed),
        sent: c.sent.load(Ordering::Relaxed),
        delivered,
        expected,
        lost: expected - delivered,
        duplicated: c.duplicated.load(Ordering::Relaxed),
        reconnects: c.reconnects.load(Ordering::Relaxed),
        errors: shared.errors.lock().map(|e| e.clone()).unwrap_or_default(),
        join: LatencySummary::of(&latencies.join),
        poll: LatencySummary::of(&latencies.poll),
        poll_held: LatencySummary::of(&latencies.poll_held),
        send: LatencySummary::of(&latencies.send),
        delivery: LatencySummary::of(&latencies.delivery),
        client_lag: LatencySummary::of(&latencies.client_lag),
        server: crate::server::compare(before, at_full_load, after, elapsed_secs),
        client_cores,
        elapsed_secs,
        timeline,
        poll_histogram: bars(&latencies.poll),
        delivery_histogram: bars(&latencies.delivery),
    })
}

fn progress_bar(shared: Arc<Shared>) -> (indicatif::ProgressBar, tokio::task::JoinHandle<()>) {
    let total = shared.scenario.duration_secs + shared.scenario.drain_secs;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} s  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let ticker = {
        let bar = bar.clone();
        tokio::spawn(async move {
            let mut last = (0u64, 0u64, 0u64);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let c = &shared.counters;
                let now = (
                    c.polls.load(Ordering::Relaxed),
                    c.sent.load(Ordering::Relaxed),
                    c.delivered.load(Ordering::Relaxed),
                );
                bar.set_position(shared.started.elapsed().as_secs());
                bar.set_message(format!(
                    "visitors {}  polls/s {}  sent/s {}  delivered/s {}",
                    c.joined.load(Ordering::Relaxed),
                    now.0 - last.0,
                    now.1 - last.1,
                    now.2 - last.2
                ));
                last = now;
            }
        })
    };
    (bar, ticker)
}

/// One visitor, from arrival to the end of the run.
async fn visitor(shared: Arc<Shared>, i: usize, stop: watch::Receiver<bool>) {
    let scenario = &shared.scenario;
    let arrive = Duration::from_secs_f64(
        scenario.ramp_up_secs as f64 * i as f64 / scenario.visitors.max(1) as f64,
    );
    tokio::time::sleep(arrive).await;
    let url = shared.options.urls[i % shared.options.urls.len()].clone();
    let client = shared.clients[i % shared.clients.len()].clone();
    let source = shared.sources[i % shared.sources.len()];
    let page = scenario.page_of(i);

    let started = Instant::now();
    let slot = shared.request_slots.acquire().await.ok();
    if scenario.download_widget {
        match client
            .get(format!("{url}/widget.js"))
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {
                let _ = r.bytes().await;
            }
            Ok(r) => shared.error(format!("widget: {}", r.status().as_u16())),
            Err(e) => shared.error(format!("widget: {}", kind(&e))),
        }
    }
    // Only what the visitor needs from here on: the join's member list and
    // last messages would cost tens of KB per visitor in a big run.
    let guest = match join(&client, &url, &scenario.site_key, i, &page).await {
        Ok(joined) => Guest::from(joined),
        Err(e) => {
            shared.error(format!("join: {e}"));
            return;
        }
    };
    drop(slot);
    shared.record(|l| &mut l.join, started.elapsed().as_micros() as u64);
    shared.counters.joined.fetch_add(1, Ordering::Relaxed);
    let mut receiver = Receiver {
        shared: Arc::clone(&shared),
        last_seq: guest.cursor.seq,
        delivered: 0,
    };
    let from_seq = guest.cursor.seq;

    let sender = scenario.is_sender(i).then(|| {
        tokio::spawn(send_loop(
            Arc::clone(&shared),
            client.clone(),
            url.clone(),
            guest.clone(),
            i,
        ))
    });
    match scenario.transport_of(i) {
        Transport::Poll => poll_loop(&mut receiver, &client, &url, &guest, 0, stop).await,
        Transport::LongPoll => {
            poll_loop(&mut receiver, &client, &url, &guest, LONG_POLL_SECS, stop).await;
        }
        Transport::Sse => sse_loop(&mut receiver, &client, &url, &guest, stop).await,
        Transport::Websocket => ws_loop(&mut receiver, &url, &guest, source, stop).await,
    }
    if let Some(sender) = sender {
        let _ = sender.await;
    }
    if let Ok(mut tallies) = shared.tallies.lock() {
        tallies.push(ReceiverTally {
            room_id: guest.room_id,
            from_seq,
            delivered: receiver.delivered,
        });
    }
}

/// Measures the load generator itself: a task that asks to wake every
/// 10 ms and records how late it was woken. The bench shares the machine
/// with the nodes; when its runtime falls behind, every latency it
/// measures grows by that much although no server was slow. A run whose
/// client lag is close to its poll latency measured the client.
async fn watch_client_lag(shared: Arc<Shared>) {
    const TICK: Duration = Duration::from_millis(10);
    loop {
        let asked = Instant::now();
        tokio::time::sleep(TICK).await;
        let late = asked.elapsed().saturating_sub(TICK).as_micros() as u64;
        shared.record(|l| &mut l.client_lag, late);
        shared.record_in_time(|s| &mut s.client_lag, late);
    }
}

/// Has the run ended? (The guard is dropped here, not held across awaits.)
fn stopped(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow()
}

fn kind(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else {
        "network"
    }
}

async fn join(
    client: &reqwest::Client,
    url: &str,
    site_key: &str,
    i: usize,
    page: &str,
) -> Result<JoinResponse> {
    let response = client
        .post(format!("{url}/api/v1/join"))
        .timeout(REQUEST_TIMEOUT)
        .json(&serde_json::json!({"site_key": site_key, "nickname": format!("v{i}"), "page": page}))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!(kind(&e)))?;
    if !response.status().is_success() {
        bail!("{}", response.status().as_u16());
    }
    Ok(response.json().await?)
}

/// What a visitor keeps of its join.
#[derive(Debug, Clone)]
struct Guest {
    token: String,
    room_id: i64,
    cursor: RoomCursor,
    presence_timeout_ms: u64,
}

impl From<JoinResponse> for Guest {
    fn from(joined: JoinResponse) -> Self {
        Self {
            token: joined.token,
            room_id: joined.room.id,
            cursor: joined.cursor,
            presence_timeout_ms: joined.presence_timeout_ms,
        }
    }
}

/// The send time (µs since the run started) rides in the client id.
fn client_message_id(sent_micros: u64, visitor: usize, n: u64) -> String {
    format!("b{sent_micros}-{visitor}-{n}")
}

fn sent_micros(client_message_id: &str) -> Option<u64> {
    client_message_id
        .strip_prefix('b')?
        .split('-')
        .next()?
        .parse()
        .ok()
}

async fn send_loop(
    shared: Arc<Shared>,
    client: reqwest::Client,
    url: String,
    guest: Guest,
    i: usize,
) {
    let rate = shared.scenario.senders.messages_per_minute / 60.0;
    if rate <= 0.0 {
        return;
    }
    let mut over = shared.sending_over.clone();
    for n in 0u64.. {
        // Exponential gaps: a Poisson process at `rate` per second.
        let gap = -(1.0 - rand::random::<f64>()).ln() / rate;
        let ended = tokio::select! {
            () = tokio::time::sleep(Duration::from_secs_f64(gap.min(3600.0))) => false,
            _ = over.wait_for(|o| *o) => true,
        };
        if ended || stopped(&over) {
            return;
        }
        let start = shared.micros();
        let _slot = shared.request_slots.acquire().await.ok();
        let id = client_message_id(start, i, n);
        let request = client
            .post(format!("{url}/api/v1/rooms/{}/messages", guest.room_id))
            .timeout(REQUEST_TIMEOUT)
            .bearer_auth(&guest.token)
            .json(&serde_json::json!({"client_message_id": id, "body": format!("message {n} from v{i}")}));
        match request.send().await {
            Ok(response) if response.status().is_success() => {
                let Ok(sent) = response.json::<chatty_protocol::api::SendResponse>().await else {
                    shared.error("send: body");
                    continue;
                };
                shared.record(|l| &mut l.send, shared.micros() - start);
                shared.counters.sent.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut rooms) = shared.room_last_seq.lock() {
                    let last = rooms.entry(guest.room_id).or_default();
                    *last = (*last).max(sent.message.seq);
                }
            }
            Ok(response) => shared.error(format!("send: {}", response.status().as_u16())),
            Err(e) => shared.error(format!("send: {}", kind(&e))),
        }
    }
}

/// Checks and counts what a visitor receives.
struct Receiver {
    shared: Arc<Shared>,
    last_seq: u64,
    delivered: u64,
}

impl Receiver {
    /// Applies one batch; false on a `reset` (the visitor stops: counted).
    fn batch(&mut self, batch: &Batch<'_>) -> bool {
        let now = self.shared.micros();
        for event in &batch.events {
            match event.kind.as_ref() {
                "message" => {
                    let Some(message) = &event.message else {
                        self.shared.error("event: message without message");
                        continue;
                    };
                    let c = &self.shared.counters;
                    if message.seq <= self.last_seq {
                        c.duplicated.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if message.seq > self.last_seq + 1 {
                        c.gap_lost
                            .fetch_add(message.seq - self.last_seq - 1, Ordering::Relaxed);
                    }
                    self.last_seq = message.seq;
                    self.delivered += 1;
                    c.delivered.fetch_add(1, Ordering::Relaxed);
                    if let Some(sent) = sent_micros(&message.client_message_id) {
                        let micros = now.saturating_sub(sent);
                        self.shared.record(|l| &mut l.delivery, micros);
                        self.shared.record_in_time(|s| &mut s.delivery, micros);
                    }
                }
                "reset" => {
                    self.shared.error("reset");
                    return false;
                }
                _ => {}
            }
        }
        true
    }

    /// Applies one pushed batch (an SSE record's data or a WebSocket text
    /// frame) and moves `cursor` past it; false on a `reset`. A frame that
    /// is not a batch (none is sent today) is skipped.
    fn pushed(&mut self, text: &str, cursor: &mut String) -> bool {
        let Ok(batch) = serde_json::from_str::<Batch<'_>>(text) else {
            return true;
        };
        if !self.batch(&batch) {
            return false;
        }
        *cursor = batch.cursor.into_owned();
        true
    }
}

/// What a visitor reads of a poll answer, an SSE record or a WebSocket
/// frame: the protocol's `PollResponse` reduced to the fields the counts
/// need, borrowed from the body. A busy room makes the bench parse tens of
/// thousands of batches a second on the same cores as the node; skipping
/// nicknames, bodies and member lists without allocating them keeps the
/// load generator from becoming the bottleneck it is meant to find.
#[derive(Debug, Deserialize)]
struct Batch<'a> {
    #[serde(borrow)]
    events: Vec<BatchEvent<'a>>,
    #[serde(borrow)]
    cursor: Cow<'a, str>,
    #[serde(default)]
    more: bool,
}

#[derive(Debug, Deserialize)]
struct BatchEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    message: Option<BatchMessage<'a>>,
}

#[derive(Debug, Deserialize)]
struct BatchMessage<'a> {
    seq: u64,
    #[serde(borrow)]
    client_message_id: Cow<'a, str>,
}

async fn poll_loop(
    receiver: &mut Receiver,
    client: &reqwest::Client,
    url: &str,
    guest: &Guest,
    wait: u64,
    mut stop: watch::Receiver<bool>,
) {
    let shared = Arc::clone(&receiver.shared);
    let interval = Duration::from_millis(shared.scenario.poll_interval_ms);
    // Made once: a poll only changes its cursor (which is URL-safe).
    let events_url = format!("{url}/api/v1/rooms/{}/events?cursor=", guest.room_id);
    let authorization = format!("Bearer {}", guest.token);
    let (suffix, timeout) = if wait > 0 {
        (
            format!("&wait={wait}"),
            Duration::from_secs(wait) + REQUEST_TIMEOUT,
        )
    } else {
        (String::new(), REQUEST_TIMEOUT)
    };
    let mut cursor = guest.cursor.to_string();
    // Behind nginx's poll cache, as the widget does: a poll that would reach
    // a node later than half the presence timeout after the last one that
    // did carries `touch=1` (see docs/protocol.md, `touch`).
    let presence = Duration::from_millis(guest.presence_timeout_ms);
    let mut behind_cache = false;
    let mut touched = Instant::now();
    loop {
        let started = Instant::now();
        let touch = wait == 0 && behind_cache && touched.elapsed() + interval >= presence / 2;
        let request = client
            .get(format!(
                "{events_url}{cursor}{suffix}{}",
                if touch { "&touch=1" } else { "" }
            ))
            .header("Authorization", authorization.as_str())
            .header("If-None-Match", format!("\"{cursor}\""))
            .timeout(timeout);
        // A long-poll holds its connection for its whole wait; only short
        // polls take a slot (measured from before the wait for it).
        let slot = if wait == 0 {
            tokio::select! {
                slot = shared.request_slots.acquire() => slot.ok(),
                _ = stop.wait_for(|s| *s) => return,
            }
        } else {
            None
        };
        let answer = tokio::select! {
            answer = request.send() => answer,
            _ = stop.wait_for(|s| *s) => return,
        };
        let mut more = false;
        match answer {
            Ok(response) => {
                let status = response.status().as_u16();
                if wait == 0 {
                    let micros = started.elapsed().as_micros() as u64;
                    shared.record(|l| &mut l.poll, micros);
                    if started >= shared.ramped_up {
                        shared.record(|l| &mut l.poll_held, micros);
                    }
                    shared.record_in_time(|s| &mut s.poll, micros);
                }
                shared.counters.polls.fetch_add(1, Ordering::Relaxed);
                match response
                    .headers()
                    .get("X-Chatty-Cache")
                    .map(|v| v.as_bytes())
                {
                    None => touched = Instant::now(),
                    Some(b"MISS" | b"EXPIRED" | b"BYPASS") => {
                        behind_cache = true;
                        touched = Instant::now();
                    }
                    Some(_) => behind_cache = true,
                }
                match status {
                    304 => {}
                    200 => match response.bytes().await {
                        Ok(body) => match serde_json::from_slice::<Batch<'_>>(&body) {
                            Ok(batch) => {
                                if !receiver.batch(&batch) {
                                    return;
                                }
                                cursor = batch.cursor.into_owned();
                                more = batch.more;
                            }
                            Err(_) => shared.error("poll: body"),
                        },
                        Err(e) => shared.error(format!("poll: {}", kind(&e))),
                    },
                    other => shared.error(format!("poll: {other}")),
                }
            }
            Err(e) => shared.error(format!("poll: {}", kind(&e))),
        }
        drop(slot);
        if wait == 0 && !more {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        if stopped(&stop) {
            return;
        }
    }
}

/// Before each connection but the first: count a reconnect and wait a
/// little, so a refused stream is not retried in a tight loop.
async fn reconnect_pause(shared: &Shared, attempts: &mut u64) {
    if *attempts > 0 {
        shared.counters.reconnects.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    *attempts += 1;
}

async fn sse_loop(
    receiver: &mut Receiver,
    client: &reqwest::Client,
    url: &str,
    guest: &Guest,
    mut stop: watch::Receiver<bool>,
) {
    let shared = Arc::clone(&receiver.shared);
    let mut cursor = guest.cursor.to_string();
    let mut attempts = 0u64;
    while !stopped(&stop) {
        reconnect_pause(&shared, &mut attempts).await;
        let request = client
            .get(format!("{url}/api/v1/rooms/{}/sse", guest.room_id))
            .query(&[("token", guest.token.as_str()), ("cursor", cursor.as_str())]);
        let response = tokio::select! {
            r = request.send() => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        let mut response = match response {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                shared.error(format!("sse: {}", r.status().as_u16()));
                continue;
            }
            Err(e) => {
                shared.error(format!("sse: {}", kind(&e)));
                continue;
            }
        };
        let mut buffer = String::new();
        loop {
            // The server sends a keep-alive every 15 s: a minute of
            // silence is a dead stream.
            let chunk = tokio::select! {
                c = tokio::time::timeout(Duration::from_secs(60), response.chunk()) => c,
                _ = stop.wait_for(|s| *s) => return,
            };
            let Ok(Ok(Some(chunk))) = chunk else {
                shared.error("sse: stream ended");
                break;
            };
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let record: String = buffer.drain(..end + 2).collect();
                for line in record.lines() {
                    if let Some(data) = line.strip_prefix("data: ")
                        && !receiver.pushed(data, &mut cursor)
                    {
                        return;
                    }
                }
            }
        }
    }
}

async fn ws_loop(
    receiver: &mut Receiver,
    url: &str,
    guest: &Guest,
    source: IpAddr,
    mut stop: watch::Receiver<bool>,
) {
    let shared = Arc::clone(&receiver.shared);
    let mut cursor = guest.cursor.to_string();
    let mut attempts = 0u64;
    while !stopped(&stop) {
        reconnect_pause(&shared, &mut attempts).await;
        let mut ws = match connect_ws(url, guest.room_id, source).await {
            Ok(ws) => ws,
            Err(e) => {
                shared.error(format!("websocket: {e}"));
                continue;
            }
        };
        let auth = serde_json::json!({"type": "auth", "token": guest.token, "cursor": cursor});
        if ws.send(Message::text(auth.to_string())).await.is_err() {
            shared.error("websocket: auth");
            continue;
        }
        loop {
            let frame = tokio::select! {
                f = ws.next() => Some(f),
                _ = stop.wait_for(|s| *s) => None,
            };
            let Some(frame) = frame else {
                let _ = ws.close(None).await;
                return;
            };
            match frame {
                Some(Ok(Message::Text(text))) => {
                    if !receiver.pushed(text.as_str(), &mut cursor) {
                        return;
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                    shared.error(format!("websocket closed: {reason}"));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    shared.error("websocket: broken");
                    break;
                }
            }
        }
    }
}

async fn connect_ws(
    url: &str,
    room_id: i64,
    source: IpAddr,
) -> Result<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>> {
    let http = reqwest::Url::parse(url)?;
    let host = http.host_str().context("host")?;
    let port = http.port_or_known_default().context("port")?;
    let server: SocketAddr = tokio::net::lookup_host((host, port))
        .await?
        .next()
        .context("address")?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let tcp = tokio::time::timeout(REQUEST_TIMEOUT, socket.connect(server))
        .await
        .context("connect timed out")??;
    let ws_url = format!(
        "{}/api/v1/rooms/{room_id}/ws",
        url.replacen("http://", "ws://", 1)
    );
    let request = ws_url.into_client_request()?;
    let (ws, _) = tokio::time::timeout(
        REQUEST_TIMEOUT,
        tokio_tungstenite::client_async(request, tcp),
    )
    .await
    .context("handshake timed out")??;
    Ok(ws)
}

/// The report as a terminal table.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let s = &report.scenario;
    out.push_str(&format!(
        "scenario {} — {} visitors, {} s (+{} s ramp within, +{} s drain), {}\n\n",
        s.name,
        s.visitors,
        s.duration_secs,
        s.ramp_up_secs,
        s.drain_secs,
        report.urls.join(", ")
    ));
    out.push_str(&format!(
        "visitors joined {:>10}   polls {:>12}   reconnects {:>8}\n",
        report.visitors_joined, report.polls, report.reconnects
    ));
    out.push_str(&format!(
        "messages sent   {:>10}   delivered {:>8} of {:>8} expected   lost {}   duplicated {}\n\n",
        report.sent, report.delivered, report.expected, report.lost, report.duplicated
    ));
    out.push_str("latency (ms)          count      p50      p90      p99    p99.9      max\n");
    for (name, l) in [
        ("join + sync", &report.join),
        ("poll", &report.poll),
        ("poll after ramp", &report.poll_held),
        ("send", &report.send),
        ("delivery", &report.delivery),
        ("client lag", &report.client_lag),
    ] {
        out.push_str(&format!(
            "{name:<16} {:>10} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1}\n",
            l.count, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
        ));
    }
    if report.errors.is_empty() {
        out.push_str("\nerrors: none\n");
    } else {
        out.push_str("\nerrors:\n");
        for (kind, count) in &report.errors {
            out.push_str(&format!("  {count:>8}  {kind}\n"));
        }
    }
    if let Some(server) = &report.server {
        out.push('\n');
        out.push_str(&crate::server::summary(server, report));
    }
    out
}

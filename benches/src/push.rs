//! `chatty-bench push`: WebSocket visitors against one node.
//!
//! 1. **join** `--visitors` guests (HTTP), `--room-size` per room
//!    (page-scoped rooms `/bench/room-N`; 0 = all in one room), ramped at
//!    `--ramp-per-sec` with `--join-concurrency` in flight;
//! 2. **connect** each visitor's WebSocket right after its join, as a
//!    widget would, from one of `--source-ips` loopback addresses
//!    (127.0.0.2, .3, …) so that tens of thousands of sockets do not run
//!    out of ephemeral ports;
//! 3. **settle** for `--settle-secs` with everyone idle, then read the
//!    server's resident memory (`/proc/PID/status`, with `--server-pid`);
//! 4. **measure** for `--duration-secs`: `--rate` messages per second in
//!    total (open loop, Poisson-free even pacing) are sent by random
//!    visitors over HTTP; every receiver records the delivery latency
//!    (from just before the send request to the frame's arrival; the send
//!    time travels in the `client_message_id`) and checks that message
//!    seqs arrive contiguously (gaps = lost, repeats = duplicated);
//! 5. **drain** for a few seconds, then report: connections held, server
//!    RSS per connection, deliveries expected/received/lost/duplicated,
//!    latency percentiles, server resident memory per visitor (its join
//!    state and its connection: RSS after settling minus RSS before the
//!    first join, over the visitors), and server CPU (`/proc/PID/stat`): CPU-seconds
//!    per 1000 visitor-minutes and deliveries per CPU-second.
//!
//! Traffic goes only to the URL given (loopback in our benchmarks), and
//! every phase is bounded in time.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chatty_protocol::api::JoinResponse;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// Base URL of the node (http://127.0.0.1:PORT).
    #[arg(long)]
    url: String,
    /// Site key to join.
    #[arg(long, default_value = "demo")]
    site: String,
    /// WebSocket visitors.
    #[arg(long, default_value_t = 1000)]
    visitors: usize,
    /// Visitors per room; 0 puts everyone in one room.
    #[arg(long, default_value_t = 10)]
    room_size: usize,
    /// Messages per second in total during the measured window (0: idle).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Measured window, in seconds.
    #[arg(long, default_value_t = 30)]
    duration_secs: u64,
    /// Idle time after connecting, before measuring.
    #[arg(long, default_value_t = 5)]
    settle_secs: u64,
    /// New WebSocket connections per second while ramping up.
    #[arg(long, default_value_t = 2000)]
    ramp_per_sec: u64,
    /// Joins in flight at once.
    #[arg(long, default_value_t = 32)]
    join_concurrency: usize,
    /// Loopback source addresses to spread connections over (127.0.0.2, …).
    #[arg(long, default_value_t = 8)]
    source_ips: u8,
    /// The node's process id, to read its memory and CPU from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
}

/// Just the parts of a push frame the receiver needs.
#[derive(Deserialize)]
struct BatchLite<'a> {
    #[serde(borrow)]
    events: Vec<EventLite<'a>>,
}

#[derive(Deserialize)]
struct EventLite<'a> {
    #[serde(borrow, default)]
    message: Option<MessageLite<'a>>,
}

#[derive(Deserialize)]
struct MessageLite<'a> {
    seq: u64,
    #[serde(borrow)]
    client_message_id: &'a str,
}

/// Shared counters of all receivers.
#[derive(Debug)]
struct Totals {
    latency_us: Mutex<Histogram<u64>>,
    delivered: AtomicU64,
    duplicated: AtomicU64,
    gaps: AtomicU64,
    closed_early: AtomicU64,
}

/// Server process figures from /proc.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
struct ProcSample {
    rss_kib: u64,
    cpu_ticks: u64,
}

fn proc_sample(pid: Option<u32>) -> Option<ProcSample> {
    let pid = pid?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces).
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(ProcSample {
        rss_kib,
        cpu_ticks: utime + stime,
    })
}

/// Clock ticks per second of /proc's CPU times (100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

async fn join_one(
    client: &reqwest::Client,
    url: &str,
    site: &str,
    i: usize,
    room: usize,
) -> Result<JoinResponse> {
    let response = client
        .post(format!("{url}/api/v1/join"))
        .json(&serde_json::json!({
            "site_key": site,
            "nickname": format!("v{i}"),
            "page": format!("/bench/room-{room}"),
        }))
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("join {i}: {} {}", response.status(), response.text().await?);
    }
    Ok(response.json().await?)
}

/// Parses the send time (µs since the run's start) out of a bench
/// `client_message_id` (`b-<n>-<micros>`).
fn sent_at_micros(client_message_id: &str) -> Option<u64> {
    client_message_id
        .strip_prefix("b-")?
        .split_once('-')?
        .1
        .parse()
        .ok()
}

/// One receiver: reads frames until the connection ends, checking seqs
/// and recording latencies. Returns the bench messages it received.
async fn receive(
    mut ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    start: Instant,
    totals: Arc<Totals>,
    stop: tokio_util_stop::Stop,
) -> u64 {
    let mut last_seq: Option<u64> = None;
    let mut received = 0u64;
    loop {
        let next = tokio::select! {
            next = ws.next() => next,
            () = stop.wait() => break,
        };
        let text = match next {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => {
                totals.closed_early.fetch_add(1, Ordering::Relaxed);
                break;
            }
        };
        let now_us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        // The client shares the cores with the server: live frames (one
        // message each) are read without a JSON parser.
        let single = fast_single_message(text.as_str());
        let parsed;
        let messages: Vec<(u64, &str)> = match single {
            Some(one) => vec![one],
            None => {
                let Ok(batch) = serde_json::from_str::<BatchLite<'_>>(text.as_str()) else {
                    continue;
                };
                parsed = batch;
                parsed
                    .events
                    .iter()
                    .filter_map(|e| e.message.as_ref())
                    .map(|m| (m.seq, m.client_message_id))
                    .collect()
            }
        };
        for (seq, client_message_id) in messages {
            let message = MessageLite {
                seq,
                client_message_id,
            };
            let message = &message;
            match last_seq {
                Some(last) if message.seq <= last => {
                    totals.duplicated.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Some(last) if message.seq > last + 1 => {
                    totals
                        .gaps
                        .fetch_add(message.seq - last - 1, Ordering::Relaxed);
                }
                _ => {}
            }
            last_seq = Some(message.seq);
            if let Some(sent) = sent_at_micros(message.client_message_id) {
                received += 1;
                totals.delivered.fetch_add(1, Ordering::Relaxed);
                let latency = now_us.saturating_sub(sent).max(1);
                if let Ok(mut histogram) = totals.latency_us.lock() {
                    let _ = histogram.record(latency);
                }
            }
        }
    }
    received
}

/// `(seq, client_message_id)` of a frame that holds exactly one event, a
/// message (every live frame of this benchmark); `None` for anything else,
/// which then goes through the JSON parser.
fn fast_single_message(frame: &str) -> Option<(u64, &str)> {
    const TYPE: &str = "\"type\":\"message\"";
    if frame.matches("\"type\":").count() != 1 || !frame.contains(TYPE) {
        return None;
    }
    let after_seq = &frame[frame.find("\"seq\":")? + 6..];
    let seq_end = after_seq.find(|c: char| !c.is_ascii_digit())?;
    let seq = after_seq[..seq_end].parse().ok()?;
    let key = "\"client_message_id\":\"";
    let after_id = &frame[frame.find(key)? + key.len()..];
    let id = &after_id[..after_id.find('"')?];
    Some((seq, id))
}

/// A tiny broadcast "stop" signal (a watch channel).
mod tokio_util_stop {
    #[derive(Debug, Clone)]
    pub struct Stop(tokio::sync::watch::Receiver<bool>);

    impl Stop {
        pub fn new() -> (tokio::sync::watch::Sender<bool>, Self) {
            let (tx, rx) = tokio::sync::watch::channel(false);
            (tx, Self(rx))
        }

        pub async fn wait(&self) {
            let mut rx = self.0.clone();
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    }
}

async fn connect_ws(
    url: &str,
    guest: &JoinResponse,
    source: IpAddr,
    server: SocketAddr,
) -> Result<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>> {
    let ws_url = format!(
        "{}/api/v1/rooms/{}/ws?token={}&cursor={}",
        url.replacen("http://", "ws://", 1),
        guest.room.id,
        guest.token,
        guest.cursor
    );
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let tcp = tokio::time::timeout(Duration::from_secs(10), socket.connect(server))
        .await
        .context("connect timed out")??;
    let request = ws_url.into_client_request()?;
    // Small client buffers: the bench holds tens of thousands of these.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async_with_config(request, tcp, Some(config)),
    )
    .await
    .context("handshake timed out")??;
    Ok(ws)
}

fn percentile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

pub async fn run(args: PushArgs) -> Result<()> {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    if (limit as usize) < args.visitors + 64 {
        bail!(
            "this process may open {limit} files; {} visitors need more (ulimit -n)",
            args.visitors
        );
    }
    let server: SocketAddr = args
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .context("--url must be http://IP:PORT")?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(args.join_concurrency.max(8))
        .build()?;
    let before = proc_sample(args.server_pid);

    // 1–2. Each visitor joins, then opens its WebSocket at once (as the
    // widget does), ramped at --ramp-per-sec with --join-concurrency in
    // flight.
    let room_size = if args.room_size == 0 {
        args.visitors
    } else {
        args.room_size
    };
    let run_start = Instant::now();
    let totals = Arc::new(Totals {
        latency_us: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        delivered: AtomicU64::new(0),
        duplicated: AtomicU64::new(0),
        gaps: AtomicU64::new(0),
        closed_early: AtomicU64::new(0),
    });
    let (stop_tx, stop) = tokio_util_stop::Stop::new();
    let ramp_gap = Duration::from_secs_f64(1.0 / args.ramp_per_sec.max(1) as f64);
    let connect_started = Instant::now();
    let source_ips = usize::from(args.source_ips.max(1));
    let outcomes: Vec<Result<(JoinResponse, tokio::task::JoinHandle<u64>)>> =
        futures_util::stream::iter(0..args.visitors)
            .map(|i| {
                let client = client.clone();
                let url = args.url.clone();
                let site = args.site.clone();
                let totals = Arc::clone(&totals);
                let stop = stop.clone();
                async move {
                    let due = connect_started + ramp_gap * u32::try_from(i).unwrap_or(u32::MAX);
                    tokio::time::sleep_until(due.into()).await;
                    let guest = join_one(&client, &url, &site, i, i / room_size).await?;
                    let source = IpAddr::V4(Ipv4Addr::new(
                        127,
                        0,
                        0,
                        2 + u8::try_from(i % source_ips).unwrap_or(0),
                    ));
                    let ws = connect_ws(&url, &guest, source, server).await?;
                    let receiver = tokio::spawn(receive(ws, run_start, totals, stop));
                    Ok((guest, receiver))
                }
            })
            .buffer_unordered(args.join_concurrency)
            .collect()
            .await;
    let mut guests = Vec::with_capacity(outcomes.len());
    let mut receivers = Vec::with_capacity(outcomes.len());
    let mut connect_errors: HashMap<String, u64> = HashMap::new();
    for outcome in outcomes {
        match outcome {
            Ok((guest, receiver)) => {
                receivers.push((guest.room.id, receiver));
                guests.push(guest);
            }
            Err(e) => *connect_errors.entry(e.to_string()).or_default() += 1,
        }
    }
    if guests.is_empty() {
        bail!("no visitor could connect: {connect_errors:?}");
    }
    let connected = receivers.len();
    eprintln!(
        "joined and connected {connected} WebSocket visitors in {:.1} s ({} failed)",
        connect_started.elapsed().as_secs_f64(),
        connect_errors.values().sum::<u64>()
    );

    // 3. Settle.
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let idle = proc_sample(args.server_pid);
    let held = scrape_gauge(
        &client,
        &args.url,
        "chatty_push_connections{transport=\"websocket\"}",
    )
    .await
    .unwrap_or(f64::NAN);

    // 4. Measured window.
    let sent_per_room: Arc<Mutex<HashMap<i64, u64>>> = Arc::default();
    let send_errors = Arc::new(AtomicU64::new(0));
    let window_start = Instant::now();
    let cpu_start = proc_sample(args.server_pid);
    if args.rate > 0.0 {
        let gap = Duration::from_secs_f64(1.0 / args.rate);
        let total = (args.rate * args.duration_secs as f64) as u64;
        let mut sends = tokio::task::JoinSet::new();
        for n in 0..total {
            let due = window_start + gap.mul_f64(n as f64);
            tokio::time::sleep_until(due.into()).await;
            let sender = &guests[rand::random_range(0..guests.len())];
            let micros = u64::try_from(run_start.elapsed().as_micros()).unwrap_or(0);
            let body = serde_json::json!({
                "client_message_id": format!("b-{n}-{micros}"),
                "body": format!("bench message {n}"),
            });
            let request = client
                .post(format!(
                    "{}/api/v1/rooms/{}/messages",
                    args.url, sender.room.id
                ))
                .bearer_auth(&sender.token)
                .json(&body);
            let room = sender.room.id;
            let sent_per_room = Arc::clone(&sent_per_room);
            let send_errors = Arc::clone(&send_errors);
            sends.spawn(async move {
                match request.send().await {
                    Ok(r) if r.status().is_success() => {
                        if let Ok(mut map) = sent_per_room.lock() {
                            *map.entry(room).or_default() += 1;
                        }
                    }
                    _ => {
                        send_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            while sends.try_join_next().is_some() {}
        }
        while sends.join_next().await.is_some() {}
    } else {
        tokio::time::sleep(Duration::from_secs(args.duration_secs)).await;
    }
    let window = window_start.elapsed();
    let cpu_end = proc_sample(args.server_pid);
    // 5. Let the last deliveries arrive, then stop the receivers.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = stop_tx.send(true);
    let mut expected = 0u64;
    let mut received = 0u64;
    let sent_per_room = sent_per_room.lock().map(|m| m.clone()).unwrap_or_default();
    for (room, receiver) in receivers {
        received += receiver.await.unwrap_or(0);
        expected += sent_per_room.get(&room).copied().unwrap_or(0);
    }
    let sent: u64 = sent_per_room.values().sum();
    let histogram = totals.latency_us.lock().map(|h| h.clone()).ok();

    let visitor_minutes = connected as f64 * window.as_secs_f64() / 60.0;
    let cpu_secs = match (cpu_start, cpu_end) {
        (Some(a), Some(b)) => Some((b.cpu_ticks - a.cpu_ticks) as f64 / TICKS_PER_SEC),
        _ => None,
    };
    let rss_per_visitor = match (before, idle) {
        (Some(a), Some(b)) if connected > 0 => {
            Some((b.rss_kib as f64 - a.rss_kib as f64) * 1024.0 / connected as f64)
        }
        _ => None,
    };
    let mut report = serde_json::json!({
        "visitors": args.visitors,
        "room_size": room_size,
        "connected": connected,
        "connections_held_by_server": held,
        "connect_errors": connect_errors,
        "server_rss_kib": {
            "before": before.map(|s| s.rss_kib),
            "idle_connected": idle.map(|s| s.rss_kib),
        },
        "rss_bytes_per_visitor": rss_per_visitor,
        "rate": args.rate,
        "window_secs": window.as_secs_f64(),
        "sent": sent,
        "send_errors": send_errors.load(Ordering::Relaxed),
        "deliveries_expected": expected,
        "deliveries_received": received,
        "lost": expected.saturating_sub(received),
        "duplicated": totals.duplicated.load(Ordering::Relaxed),
        "seq_gaps": totals.gaps.load(Ordering::Relaxed),
        "closed_early": totals.closed_early.load(Ordering::Relaxed),
        "server_cpu_secs": cpu_secs,
        "cpu_secs_per_1000_visitor_minutes": cpu_secs.map(|c| c / visitor_minutes * 1000.0),
        "deliveries_per_cpu_second": cpu_secs.map(|c| received as f64 / c),
        "deliveries_per_second": received as f64 / window.as_secs_f64(),
    });
    if let Some(h) = &histogram
        && !h.is_empty()
    {
        report["latency_ms"] = serde_json::json!({
            "p50": percentile_ms(h, 0.5),
            "p90": percentile_ms(h, 0.9),
            "p99": percentile_ms(h, 0.99),
            "p99.9": percentile_ms(h, 0.999),
            "max": h.max() as f64 / 1000.0,
        });
    }
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    if let Some(path) = args.json_out {
        std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// One sample's value from the node's `/metrics`.
async fn scrape_gauge(client: &reqwest::Client, url: &str, series: &str) -> Option<f64> {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_frame_is_read_without_the_parser_and_agrees_with_it() {
        let frame = r#"{"events":[{"type":"message","message":{"seq":42,"room_id":3,"guest_id":"g","nickname":"N","body":"x \"seq\":1","created_at":"t","client_message_id":"b-7-99"}}],"cursor":"42.a.1","more":false}"#;
        assert_eq!(fast_single_message(frame), Some((42, "b-7-99")));
        let parsed: BatchLite<'_> = serde_json::from_str(frame).expect("json");
        let m = parsed.events[0].message.as_ref().expect("message");
        assert_eq!((m.seq, m.client_message_id), (42, "b-7-99"));
        let two =
            r#"{"events":[{"type":"join"},{"type":"message"}],"cursor":"1.a.1","more":false}"#;
        assert_eq!(fast_single_message(two), None);
    }

    #[test]
    fn the_send_time_travels_in_the_client_message_id() {
        assert_eq!(sent_at_micros("b-17-123456"), Some(123_456));
        assert_eq!(sent_at_micros("m-1"), None);
        assert_eq!(sent_at_micros("b-x"), None);
    }
}

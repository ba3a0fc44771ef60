//! `chatty-bench`: load tools that talk to real Chatty nodes over HTTP.
//!
//! `chatty-bench run SCENARIO` simulates widget visitors as a scenario
//! file in `benches/scenarios/` describes them (see `chatty_bench::run`):
//! a live progress line, a final table, and a JSON file.
//!
//! `chatty-bench cluster` measures a shared-mode deployment (any number of
//! nodes behind the same MySQL and Redis):
//!
//! * **senders** join round-robin over the nodes and send as fast as their
//!   acknowledgements come back (closed loop): committed sends per second;
//! * **pollers** join round-robin and poll every `--poll-interval-ms` with
//!   `If-None-Match`, like widgets: the realistic poll mix;
//! * one **probe** per node polls every `--probe-interval-ms` and notes when
//!   each message first shows there: delivery latency from the start of the
//!   send to its first sighting on a *different* node than the sender's.
//!
//! At the end it reads each node's `/metrics` and reports which path
//! answered the polls (304 from memory, the in-memory window, the store).
//! Traffic goes only to the URLs given (loopback in our benchmarks) and the
//! run is bounded by `--duration-secs`.
//!
//! `chatty-bench bare-304 --port PORT` is the reference for the 304 poll
//! benchmark (`benches/wrk/compare-304.sh`): a bare actix-web server, one
//! worker on 127.0.0.1, with Chatty's poll route and path extractor and
//! nothing else (no middleware, no logging, no state), answering every
//! `GET /api/v1/rooms/{room_id}/events` with a constant `304` and `ETag`.
//! It runs until killed.

mod push;

/// jemalloc, as in the node: tens of thousands of visitor tasks allocate
/// request and response buffers on both runtime threads, and glibc's
/// arena locks were a sixth of the client's profile (`perf record` of a
/// 20,000-visitor case-study run).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::header::{ETAG, HeaderValue};
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::{Context, Result, bail};
use chatty_protocol::api::{JoinResponse, PollResponse, SendResponse};
use chatty_protocol::{Event, RoomCursor};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;

#[derive(Debug, Parser)]
#[command(about = "Load tools for Chatty")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Simulated widget visitors as a scenario describes (benches/scenarios/NAME.toml, or a path).
    Run(RunArgs),
    /// Raises a scenario's visitors step by step until p99 latency or the error rate passes a threshold; reports the largest load held.
    Capacity(CapacityArgs),
    /// Sends through several nodes; measures committed sends/s, cross-node delivery latency and the poll mix.
    Cluster(ClusterArgs),
    /// Bare actix-web server (1 worker, 127.0.0.1) answering Chatty's poll route with a constant 304; runs until killed.
    #[command(name = "bare-304")]
    Bare304(Bare304Args),
    /// WebSocket visitors on one node: connections held, memory per connection, delivery latency, CPU per visitor-minute.
    Push(push::PushArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// A scenario name (benches/scenarios/NAME.toml) or a path to one.
    scenario: String,
    /// Where visitors go: one node, or nginx in front of many. Repeat to
    /// spread visitors over several entries.
    #[arg(long = "url", default_value = "http://127.0.0.1:8080")]
    urls: Vec<String>,
    /// Each node's /metrics URL, read before and after the run (CPU,
    /// memory, MySQL and Redis time per request). Repeat per node.
    #[arg(long = "metrics")]
    metrics: Vec<String>,
    /// Override the scenario's number of visitors.
    #[arg(long)]
    visitors: Option<usize>,
    /// Override the scenario's duration.
    #[arg(long)]
    duration_secs: Option<u64>,
    /// Override the scenario's ramp-up.
    #[arg(long)]
    ramp_up_secs: Option<u64>,
    /// Where to write the JSON report (default: target/bench/NAME.json).
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// No live progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, clap::Args)]
struct CapacityArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Visitors of the first step.
    #[arg(long, default_value_t = 1000)]
    start: usize,
    /// Visitors added at each step.
    #[arg(long, default_value_t = 1000)]
    step: usize,
    /// Stop after this many visitors.
    #[arg(long, default_value_t = 100_000)]
    max: usize,
    /// A step holds while its p99 poll latency (or, for push scenarios,
    /// delivery latency) stays at or below this.
    #[arg(long, default_value_t = 200.0)]
    p99_ms: f64,
    /// ... and its errors (plus lost messages) per visitor stay at or below this.
    #[arg(long, default_value_t = 0.01)]
    max_error_rate: f64,
}

#[derive(Debug, clap::Args)]
struct Bare304Args {
    /// Port to listen on (127.0.0.1 only).
    #[arg(long)]
    port: u16,
}

#[derive(Debug, clap::Args)]
struct ClusterArgs {
    /// Base URL of a node (repeat for each node).
    #[arg(long = "node", required = true)]
    nodes: Vec<String>,
    /// Site key to join.
    #[arg(long, default_value = "demo")]
    site: String,
    /// Concurrent senders (closed loop, spread over the nodes).
    #[arg(long, default_value_t = 24)]
    senders: usize,
    /// Widget-like pollers (spread over the nodes).
    #[arg(long, default_value_t = 300)]
    pollers: usize,
    /// Poll interval of the widget-like pollers, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    poll_interval_ms: u64,
    /// Poll interval of the per-node latency probes, in milliseconds.
    #[arg(long, default_value_t = 5)]
    probe_interval_ms: u64,
    /// Total messages per second over all senders (paced, open loop). Unset:
    /// every sender sends again as soon as its send is acknowledged.
    #[arg(long)]
    rate: Option<f64>,
    /// Length of the measured run, in seconds.
    #[arg(long, default_value_t = 20)]
    duration_secs: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Run(args) => run_scenario(args).await,
        Command::Capacity(args) => capacity(args).await,
        Command::Cluster(args) => cluster(args).await,
        Command::Bare304(args) => bare_304(args).await,
        Command::Push(args) => push::run(args).await,
    }
}

/// The scenario of a run, with the command line's overrides.
fn scenario_of(args: &RunArgs) -> Result<chatty_bench::scenario::Scenario> {
    let mut scenario = chatty_bench::scenario::Scenario::load(&args.scenario)?;
    if let Some(visitors) = args.visitors {
        scenario.visitors = visitors;
    }
    if let Some(duration) = args.duration_secs {
        scenario.duration_secs = duration;
    }
    if let Some(ramp) = args.ramp_up_secs {
        scenario.ramp_up_secs = ramp;
    }
    Ok(scenario)
}

fn options_of(args: &RunArgs) -> chatty_bench::run::RunOptions {
    chatty_bench::run::RunOptions {
        urls: args
            .urls
            .iter()
            .map(|u| u.trim_end_matches('/').to_owned())
            .collect(),
        metrics_urls: args.metrics.clone(),
        progress: !args.quiet,
    }
}

/// Runs the scenario at `start`, `start + step`, … visitors until a step
/// fails its thresholds; prints each step and the largest load held.
async fn capacity(args: CapacityArgs) -> Result<()> {
    let base = scenario_of(&args.run)?;
    let mut held: Option<chatty_bench::run::Report> = None;
    let mut steps = Vec::new();
    let mut visitors = args.start.max(1);
    while visitors <= args.max {
        let mut scenario = base.clone();
        scenario.visitors = visitors;
        let report = chatty_bench::run::run(scenario, options_of(&args.run)).await?;
        let errors: u64 = report.errors.values().sum::<u64>() + report.lost;
        let error_rate = errors as f64 / visitors as f64;
        // The load held: polls after every visitor has arrived.
        let p99 = if report.poll_held.count > 0 {
            report.poll_held.p99_ms
        } else if report.poll.count > 0 {
            report.poll.p99_ms
        } else {
            report.delivery.p99_ms
        };
        let ok = p99 <= args.p99_ms
            && error_rate <= args.max_error_rate
            && report.visitors_joined as usize == visitors;
        println!(
            "{visitors:>8} visitors: p99 {p99:>8.1} ms, errors+lost {errors:>6} ({:.2}%), joined {} -> {}",
            error_rate * 100.0,
            report.visitors_joined,
            if ok { "held" } else { "NOT held" }
        );
        steps.push(
            serde_json::json!({"visitors": visitors, "p99_ms": p99, "errors": errors, "held": ok}),
        );
        if !ok {
            break;
        }
        held = Some(report);
        visitors += args.step.max(1);
    }
    let path = args.run.json.clone().unwrap_or_else(|| {
        std::path::Path::new("target/bench").join(format!("{}-capacity.json", base.name))
    });
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&serde_json::json!({"steps": steps, "largest_held": held}))?,
    )?;
    match &held {
        Some(report) => {
            println!(
                "\nlargest load held: {} visitors (p99 ≤ {} ms, errors ≤ {:.1}%)\n",
                report.scenario.visitors,
                args.p99_ms,
                args.max_error_rate * 100.0
            );
            print!("{}", chatty_bench::run::table(report));
        }
        None => println!("\nno step held: lower --start"),
    }
    println!("\nreport: {}", path.display());
    Ok(())
}

async fn run_scenario(args: RunArgs) -> Result<()> {
    let scenario = scenario_of(&args)?;
    let options = options_of(&args);
    let report = chatty_bench::run::run(scenario, options).await?;
    print!("{}", chatty_bench::run::table(&report));
    let path = args.json.unwrap_or_else(|| {
        std::path::Path::new("target/bench").join(format!("{}.json", report.scenario.name))
    });
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
    let html = path.with_extension("html");
    std::fs::write(&html, chatty_bench::chart::html(&report))?;
    println!("\nreport: {} and {}", path.display(), html.display());
    Ok(())
}

/// The constant validator of the bare server (the shape of a Chatty cursor).
const BARE_ETAG: HeaderValue = HeaderValue::from_static("\"0.00000000.0\"");

/// The bare server's only handler: the same path extractor as Chatty's poll,
/// then a constant `304 Not Modified` with an `ETag`.
async fn bare_poll(room_id: web::Path<i64>) -> HttpResponse {
    let _room_id = room_id.into_inner();
    HttpResponse::NotModified()
        .insert_header((ETAG, BARE_ETAG))
        .finish()
}

/// A bare actix-web server with one worker and Chatty's poll route (a named
/// resource, `GET` only, `web::Path<i64>`): the framework's ceiling for the
/// 304 poll on this machine. No signal handling of its own, so `SIGTERM`
/// ends it at once.
async fn bare_304(args: Bare304Args) -> Result<()> {
    let server = HttpServer::new(|| {
        App::new().service(
            web::resource("/api/v1/rooms/{room_id}/events")
                .name("/api/v1/rooms/{room_id}/events")
                .route(web::get().to(bare_poll)),
        )
    })
    .workers(1)
    .disable_signals()
    .bind(("127.0.0.1", args.port))
    .with_context(|| format!("cannot listen on 127.0.0.1:{}", args.port))?;
    eprintln!("bare-304: listening on 127.0.0.1:{} (1 worker)", args.port);
    server.run().await.context("bare-304 server failed")
}

/// When each message was sent (start of the request) and from which node.
type SendLog = Arc<Mutex<HashMap<u64, (Instant, usize)>>>;
/// When each message was first seen on each node.
type SeenLog = Arc<Mutex<HashMap<(usize, u64), Instant>>>;

async fn join(
    client: &reqwest::Client,
    node: &str,
    site: &str,
    nickname: &str,
) -> Result<JoinResponse> {
    let response = client
        .post(format!("{node}/api/v1/join"))
        .json(&serde_json::json!({"site_key": site, "nickname": nickname}))
        .send()
        .await?;
    if !response.status().is_success() {
        bail!(
            "join on {node} failed: {} {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    Ok(response.json().await?)
}

/// One poll; returns the new cursor and the message seqs it carried.
async fn poll(
    client: &reqwest::Client,
    node: &str,
    guest: &JoinResponse,
    cursor: RoomCursor,
) -> Result<(RoomCursor, Vec<u64>)> {
    let response = client
        .get(format!("{node}/api/v1/rooms/{}/events", guest.room.id))
        .query(&[("cursor", cursor.to_string())])
        .bearer_auth(&guest.token)
        .header("If-None-Match", cursor.etag())
        .send()
        .await?;
    match response.status().as_u16() {
        304 => Ok((cursor, Vec::new())),
        200 => {
            let body: PollResponse = response.json().await?;
            let seqs = body
                .events
                .iter()
                .filter_map(|e| match e {
                    Event::Message { message } => Some(message.seq),
                    _ => None,
                })
                .collect();
            Ok((body.cursor, seqs))
        }
        status => bail!("poll answered {status}"),
    }
}

async fn cluster(args: ClusterArgs) -> Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(1024)
        .build()?;
    let nodes: Arc<Vec<String>> = Arc::new(
        args.nodes
            .iter()
            .map(|n| n.trim_end_matches('/').to_owned())
            .collect(),
    );
    let deadline = Instant::now() + Duration::from_secs(args.duration_secs);
    let sent: SendLog = Arc::default();
    let seen: SeenLog = Arc::default();
    let before = scrape_all(&client, &nodes).await?;

    let mut tasks = Vec::new();
    // Probes: one per node, polling fast, noting first sightings.
    for (index, node) in nodes.iter().enumerate() {
        let guest = join(&client, node, &args.site, &format!("probe{index}")).await?;
        let (client, node, seen) = (client.clone(), node.clone(), Arc::clone(&seen));
        let interval = Duration::from_millis(args.probe_interval_ms);
        tasks.push(tokio::spawn(async move {
            let mut cursor = guest.cursor;
            let mut errors = 0u64;
            while Instant::now() < deadline + Duration::from_secs(2) {
                match poll(&client, &node, &guest, cursor).await {
                    Ok((next, seqs)) => {
                        let now = Instant::now();
                        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                        for seq in seqs {
                            seen.entry((index, seq)).or_insert(now);
                        }
                        cursor = next;
                    }
                    Err(_) => errors += 1,
                }
                tokio::time::sleep(interval).await;
            }
            (0u64, errors)
        }));
    }
    // Widget-like pollers.
    for p in 0..args.pollers {
        let node_index = p % nodes.len();
        let node = nodes[node_index].clone();
        let guest = join(&client, &node, &args.site, &format!("poller{p}")).await?;
        let client = client.clone();
        let interval = Duration::from_millis(args.poll_interval_ms);
        // Spread the first polls over one interval, as real visitors arrive.
        let offset = interval.mul_f64(p as f64 / args.pollers.max(1) as f64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let mut cursor = guest.cursor;
            let (mut polls, mut errors) = (0u64, 0u64);
            while Instant::now() < deadline {
                match poll(&client, &node, &guest, cursor).await {
                    Ok((next, _)) => {
                        cursor = next;
                        polls += 1;
                    }
                    Err(_) => errors += 1,
                }
                tokio::time::sleep(interval).await;
            }
            (polls, errors)
        }));
    }
    // Senders, closed loop.
    let started = Instant::now();
    let mut senders = Vec::new();
    for s in 0..args.senders {
        let node_index = s % nodes.len();
        let node = nodes[node_index].clone();
        let guest = join(&client, &node, &args.site, &format!("sender{s}")).await?;
        let (client, sent) = (client.clone(), Arc::clone(&sent));
        let pace = args
            .rate
            .map(|rate| Duration::from_secs_f64(args.senders as f64 / rate.max(0.001)));
        senders.push(tokio::spawn(async move {
            let (mut ok, mut errors) = (0u64, 0u64);
            let mut latency =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?;
            let mut ticker = pace.map(|p| {
                let mut t = tokio::time::interval_at(
                    tokio::time::Instant::now() + p.mul_f64(s as f64 / 8.0),
                    p,
                );
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            while Instant::now() < deadline {
                if let Some(ticker) = ticker.as_mut() {
                    ticker.tick().await;
                }
                let id = uuid::Uuid::new_v4().simple().to_string();
                let begun = Instant::now();
                let response = client
                    .post(format!("{node}/api/v1/rooms/{}/messages", guest.room.id))
                    .bearer_auth(&guest.token)
                    .json(&serde_json::json!({"client_message_id": id, "body": format!("bench {id}")}))
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status().is_success() => {
                        let body: SendResponse = r.json().await?;
                        latency.saturating_record(begun.elapsed().as_micros() as u64);
                        sent.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(body.message.seq, (begun, node_index));
                        ok += 1;
                    }
                    _ => errors += 1,
                }
            }
            Ok::<_, anyhow::Error>((ok, errors, latency))
        }));
    }
    let mut committed = 0u64;
    let mut send_errors = 0u64;
    let mut ack = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for sender in senders {
        let (ok, errors, latency) = sender.await??;
        committed += ok;
        send_errors += errors;
        ack.add(latency)?;
    }
    let elapsed = started.elapsed();
    let mut polls = 0u64;
    let mut poll_errors = 0u64;
    for task in tasks {
        let (p, e) = task.await?;
        polls += p;
        poll_errors += e;
    }
    let after = scrape_all(&client, &nodes).await?;

    // Cross-node delivery latency: send start → first sighting on another node.
    let mut delivery = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut missing = 0u64;
    {
        let sent = sent.lock().unwrap_or_else(|p| p.into_inner());
        let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        for (seq, (begun, from)) in sent.iter() {
            for node in (0..nodes.len()).filter(|n| n != from) {
                match seen.get(&(node, *seq)) {
                    Some(at) => delivery
                        .saturating_record(at.saturating_duration_since(*begun).as_micros() as u64),
                    None => missing += 1,
                }
            }
        }
    }

    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let rate = args.rate.map_or("as fast as acknowledged".to_owned(), |r| {
        format!("{r} msg/s in total")
    });
    println!(
        "chatty-bench cluster: {} nodes, {} senders ({rate}), {} pollers every {} ms, {:.1} s",
        nodes.len(),
        args.senders,
        args.pollers,
        args.poll_interval_ms,
        elapsed.as_secs_f64()
    );
    println!();
    println!(
        "sends committed      {committed} ({:.0}/s), errors {send_errors}",
        committed as f64 / elapsed.as_secs_f64()
    );
    println!(
        "send ack latency     p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        ms(&ack, 0.5),
        ms(&ack, 0.9),
        ms(&ack, 0.99),
        ack.max() as f64 / 1000.0
    );
    println!(
        "cross-node delivery  p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (probe every {} ms; {} samples, {} never seen)",
        ms(&delivery, 0.5),
        ms(&delivery, 0.9),
        ms(&delivery, 0.99),
        delivery.max() as f64 / 1000.0,
        args.probe_interval_ms,
        delivery.len(),
        missing
    );
    println!("widget polls         {polls}, errors {poll_errors}");
    println!();
    println!(
        "{:<28} {:>12} {:>10} {:>10} {:>8} {:>12} {:>12}",
        "node", "not_modified", "window", "store", "reset", "db_queries", "redis_calls"
    );
    let mut totals = [0f64; 6];
    for (node, (b, a)) in nodes.iter().zip(before.iter().zip(after.iter())) {
        let d = |k: &str| a.get(k).copied().unwrap_or(0.0) - b.get(k).copied().unwrap_or(0.0);
        let row = [
            d("chatty_polls_total{path=\"not_modified\"}"),
            d("chatty_polls_total{path=\"window\"}"),
            d("chatty_polls_total{path=\"store\"}"),
            d("chatty_polls_total{path=\"reset\"}"),
            d("chatty_db_queries_total"),
            d("chatty_redis_calls_total"),
        ];
        for (t, v) in totals.iter_mut().zip(row) {
            *t += v;
        }
        println!(
            "{:<28} {:>12} {:>10} {:>10} {:>8} {:>12} {:>12}",
            node, row[0], row[1], row[2], row[3], row[4], row[5]
        );
    }
    let all_polls = totals[0] + totals[1] + totals[2] + totals[3];
    if all_polls > 0.0 {
        println!();
        println!(
            "polls answered from memory (304 or window, no Redis, no MySQL): {:.2}% of {}",
            100.0 * (totals[0] + totals[1]) / all_polls,
            all_polls
        );
    }
    Ok(())
}

/// Reads each node's `/metrics` into `name{labels} → value`.
async fn scrape_all(
    client: &reqwest::Client,
    nodes: &[String],
) -> Result<Vec<HashMap<String, f64>>> {
    let mut all = Vec::new();
    for node in nodes {
        let text = client
            .get(format!("{node}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        let metrics = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect();
        all.push(metrics);
    }
    Ok(all)
}

//! The server side of a run: each node's `/metrics` read before and after,
//! and the differences that say where the time went.

use serde::Serialize;

/// Sums of the counters and gauges this report uses, over every node.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Sample {
    pub cpu_seconds: f64,
    pub resident_bytes: f64,
    pub push_connections: f64,
    pub http_requests: f64,
    pub db_queries: f64,
    pub db_seconds: f64,
    pub redis_calls: f64,
    pub redis_seconds: f64,
    pub polls_not_modified: f64,
    pub polls_total: f64,
    pub nodes: usize,
}

/// What the nodes spent during the run.
#[derive(Debug, Clone, Serialize)]
pub struct ServerSide {
    pub nodes: usize,
    /// Cores busy on average (CPU seconds / wall seconds), all nodes.
    pub cpu_cores: f64,
    /// Resident memory at full load, all nodes.
    pub resident_mib: f64,
    pub push_connections: f64,
    pub http_requests: f64,
    /// Per HTTP request that reached a node, in milliseconds.
    pub cpu_ms_per_request: f64,
    pub db_ms_per_request: f64,
    pub redis_ms_per_request: f64,
    pub db_queries_per_request: f64,
    pub redis_calls_per_request: f64,
    /// Share of polls answered 304 from memory.
    pub not_modified_share: f64,
}

fn sum(text: &str, name: &str, label: Option<(&str, &str)>) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, labels) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            if let Some((k, v)) = label
                && !labels.split(',').any(|pair| pair == format!("{k}=\"{v}\""))
            {
                return None;
            }
            value.parse::<f64>().ok()
        })
        .sum()
}

/// Reads every node's metrics; `None` when none is given or none answers.
pub async fn sample(client: &reqwest::Client, urls: &[String]) -> Option<Sample> {
    let mut total = Sample::default();
    for url in urls {
        let Ok(response) = client
            .get(url)
            .timeout(std::time::Duration::from_secs(5))
            .send()
            .await
        else {
            continue;
        };
        let Ok(text) = response.text().await else {
            continue;
        };
        total.nodes += 1;
        total.cpu_seconds += sum(&text, "chatty_process_cpu_seconds_total", None);
        total.resident_bytes += sum(&text, "chatty_process_resident_memory_bytes", None);
        total.push_connections += sum(&text, "chatty_push_connections", None);
        total.http_requests += sum(&text, "chatty_http_requests_total", None);
        total.db_queries += sum(&text, "chatty_db_queries_total", None);
        total.db_seconds += sum(&text, "chatty_db_query_seconds_total", None);
        total.redis_calls += sum(&text, "chatty_redis_calls_total", None);
        total.redis_seconds += sum(&text, "chatty_redis_call_seconds_total", None);
        total.polls_total += sum(&text, "chatty_polls_total", None);
        total.polls_not_modified +=
            sum(&text, "chatty_polls_total", Some(("path", "not_modified")));
    }
    (total.nodes > 0).then_some(total)
}

/// Counters from `before` to `after`; gauges from `at_full_load` (taken when
/// the last send went out, before visitors left).
pub fn compare(
    before: Option<Sample>,
    at_full_load: Option<Sample>,
    after: Option<Sample>,
    wall_secs: f64,
) -> Option<ServerSide> {
    let (b, a) = (before?, after?);
    let full = at_full_load.unwrap_or(a);
    let requests = (a.http_requests - b.http_requests).max(1.0);
    let polls = (a.polls_total - b.polls_total).max(1.0);
    Some(ServerSide {
        nodes: a.nodes,
        cpu_cores: (a.cpu_seconds - b.cpu_seconds) / wall_secs.max(1e-9),
        resident_mib: full.resident_bytes / (1024.0 * 1024.0),
        push_connections: full.push_connections,
        http_requests: a.http_requests - b.http_requests,
        cpu_ms_per_request: (a.cpu_seconds - b.cpu_seconds) * 1e3 / requests,
        db_ms_per_request: (a.db_seconds - b.db_seconds) * 1e3 / requests,
        redis_ms_per_request: (a.redis_seconds - b.redis_seconds) * 1e3 / requests,
        db_queries_per_request: (a.db_queries - b.db_queries) / requests,
        redis_calls_per_request: (a.redis_calls - b.redis_calls) / requests,
        not_modified_share: (a.polls_not_modified - b.polls_not_modified) / polls,
    })
}

/// CPU seconds this process (the bench client) has used so far: utime +
/// stime from `/proc/self/stat`, in clock ticks of 1/100 s. `None` off Linux.
pub fn own_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces): utime and
    // stime are the 14th and 15th of the line, the 12th and 13th here.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Delivery latency a healthy run stays under: a second, plus the poll
/// interval when some visitors poll (they see news at their next poll).
fn delivery_bound_ms(report: &crate::run::Report) -> f64 {
    let t = &report.scenario.transports;
    let polling = t.poll > 0.0;
    1000.0
        + if polling {
            report.scenario.poll_interval_ms as f64
        } else {
            0.0
        }
}

/// "Where the time went": the server's figures, and the first thing to
/// look at, the case study's lesson.
pub fn summary(server: &ServerSide, report: &crate::run::Report) -> String {
    let mut out = format!(
        "server ({} node(s)): {:.2} cores busy, {:.0} MiB resident, {:.0} push connections, {:.0} requests\n\
         per request: {:.3} ms CPU, {:.3} ms in MySQL ({:.3} queries), {:.3} ms in Redis ({:.3} calls); \
         {:.0}% of polls answered 304 from memory\n",
        server.nodes,
        server.cpu_cores,
        server.resident_mib,
        server.push_connections,
        server.http_requests,
        server.cpu_ms_per_request,
        server.db_ms_per_request,
        server.db_queries_per_request,
        server.redis_ms_per_request,
        server.redis_calls_per_request,
        server.not_modified_share * 100.0
    );
    let cores = std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64);
    let client = report.client_cores.unwrap_or(0.0);
    if let Some(client_cores) = report.client_cores {
        out.push_str(&format!(
            "bench client: {client_cores:.2} cores busy (this machine has {cores:.0})\n"
        ));
    }
    // The resource a request waits on most: what gives first as load grows.
    let busiest = if server.db_ms_per_request > server.cpu_ms_per_request
        && server.db_ms_per_request >= server.redis_ms_per_request
    {
        "MySQL: requests spend more time in the database than on the CPU"
    } else if server.redis_ms_per_request > server.cpu_ms_per_request {
        "Redis: requests spend more time in Redis than on the CPU"
    } else {
        "CPU: requests spend more time on the CPU than in MySQL or Redis"
    };
    let slow = report.poll.p99_ms > 200.0 || report.delivery.p99_ms > delivery_bound_ms(report);
    let verdict = if client + server.cpu_cores > 0.8 * cores && client > 0.3 * cores {
        "this machine: the bench client and the nodes together use most of its cores, \
         so latency and errors here are the machine's, not the nodes' alone \
         (run the client elsewhere, or lower the load)"
            .to_owned()
    } else if report.lost > 0 || !report.errors.is_empty() {
        "errors or losses first: see the error list; a node refusing (429/503) or timing out is at a limit"
            .to_owned()
    } else if !slow {
        format!(
            "no bottleneck reached at this load: raise the visitors (the first to watch: {busiest})"
        )
    } else if report.client_lag.p99_ms * 2.0 >= report.poll.p99_ms {
        format!(
            "the bench client: its own runtime ran {:.0} ms late at p99, so the poll p99 of {:.0} ms \
             is mostly the load generator's (run it elsewhere, or lower the load)",
            report.client_lag.p99_ms, report.poll.p99_ms
        )
    } else if server.cpu_cores > 0.8 * cores {
        "CPU-bound: the nodes use most of the machine's cores (add nodes, or cores)".to_owned()
    } else if server.db_ms_per_request > server.cpu_ms_per_request
        || server.redis_ms_per_request > server.cpu_ms_per_request
    {
        busiest.to_owned()
    } else {
        "queueing: latency is high while no resource is saturated (the client machine, or connection limits)"
            .to_owned()
    };
    out.push_str(&format!("where the time went: {verdict}\n"));
    out
}

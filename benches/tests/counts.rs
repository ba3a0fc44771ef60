//! The bench tool counts right: a tiny scenario against a real node
//! (embedded mode, in this process) reports every message sent as
//! delivered to every receiver of its room, none lost, none twice, on all
//! four transports. Timing figures are never asserted.

use std::time::Duration;

use chatty_bench::run::{RunOptions, run};
use chatty_bench::scenario::Scenario;
use chatty_web::settings::Secret;
use chatty_web::{Application, Settings};

const TINY: &str = r#"
name = "tiny"
visitors = 24
duration_secs = 6
ramp_up_secs = 2
drain_secs = 4
poll_interval_ms = 300
source_addresses = 2

[transports]
poll = 1.0
long_poll = 1.0
sse = 1.0
websocket = 1.0

[rooms]
hot_share = 0.5
long_tail_rooms = 2

[senders]
share = 0.25
messages_per_minute = 40.0
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_scenario_is_counted_exactly() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut settings = Settings::default();
    settings.server.port = 0;
    settings.server.workers = 1;
    settings.database.url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("chatty.db").display()
    );
    settings.auth.token_secret = Secret::new("bench-test-secret-0123456789abcdef0123456789");
    settings.chat.sends_per_minute = 0;
    // Every simulated visitor comes from 127.0.0.1: the per-IP and per-site
    // buckets would measure themselves, not the node.
    settings.limits.exempt_ips = vec!["127.0.0.0/8".into()];
    settings.limits.site_sends_per_minute = 0;
    let app = Application::build(settings).await.expect("node builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));

    let scenario = Scenario::parse(TINY).expect("scenario");
    let report = run(
        scenario,
        RunOptions {
            urls: vec![base.clone()],
            metrics_urls: vec![format!("{base}/metrics")],
            progress: false,
        },
    )
    .await
    .expect("the run completes");

    assert_eq!(report.visitors_joined, 24, "{:?}", report.errors);
    assert!(report.errors.is_empty(), "errors: {:?}", report.errors);
    assert!(report.sent > 0, "senders sent");
    assert!(
        report.expected >= report.sent,
        "every message has receivers"
    );
    assert_eq!(report.lost, 0, "nothing lost");
    assert_eq!(report.duplicated, 0, "nothing twice");
    assert_eq!(report.delivered, report.expected);
    assert_eq!(
        report.delivery.count, report.delivered,
        "a latency per delivery"
    );
    assert_eq!(report.send.count, report.sent);
    assert_eq!(report.join.count, 24);
    // Polls after the ramp are a subset of all polls, and there are some.
    assert!(
        report.poll_held.count > 0 && report.poll_held.count < report.poll.count,
        "held {} of {} polls",
        report.poll_held.count,
        report.poll.count
    );
    let server = report.server.expect("server side read from /metrics");
    assert!(server.http_requests > 0.0);
    #[cfg(target_os = "linux")]
    assert!(
        report.client_cores.is_some_and(|c| c >= 0.0),
        "the client's own CPU is reported"
    );

    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(15), serving).await;
}

//! `chatty`: run a node. All behaviour lives in the library; this reads the
//! configuration, sets up logging and waits for Ctrl-C or SIGTERM.

use anyhow::Context;
use chatty_web::cli::{Cli, Command};
use chatty_web::{Application, Settings, telemetry};

/// jemalloc instead of the system allocator: a node holds tens of
/// thousands of idle connections, each with two 8 KiB buffers of actix-http
/// that are mostly never written. jemalloc keeps such allocations
/// page-aligned, so their untouched pages stay out of resident memory
/// (12.8 against 13.7 KiB per idle WebSocket measured here; mimalloc: 24;
/// see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = <Cli as clap::Parser>::parse();
    let settings = Settings::load()?;
    if let Some(Command::Site(command)) = cli.command {
        let output = chatty_web::cli::run_site(&settings, command)
            .await
            .context("chatty site")?;
        print!("{output}");
        return Ok(());
    }
    telemetry::init(&settings.log).map_err(anyhow::Error::msg)?;
    tracing::info!(database = %chatty_web::settings::redact_url_password(&settings.database.url), "starting");
    raise_open_file_limit(settings.push.max_connections);
    let app = Application::build(settings)
        .await
        .context("starting Chatty")?;
    tracing::info!(
        port = app.port(),
        "Chatty is listening; open http://{}:{}/",
        app.state().settings.server.host,
        app.port()
    );
    app.run_until(shutdown_signal()).await.context("serving")?;
    Ok(())
}

/// Every push connection is a file descriptor: raise the soft open-file
/// limit to the hard one (as Go and nginx do), and say so when it is still
/// below `push.max_connections`.
fn raise_open_file_limit(max_connections: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            let wanted = u64::try_from(max_connections).unwrap_or(u64::MAX) + 256;
            if limit < wanted {
                tracing::warn!(
                    open_files = limit,
                    push_max_connections = max_connections,
                    "the open-file limit caps this node below push.max_connections; raise LimitNOFILE (systemd) or ulimit -Hn"
                );
            } else {
                tracing::info!(open_files = limit, "open-file limit");
            }
        }
        Err(error) => tracing::warn!(%error, "cannot read or raise the open-file limit"),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

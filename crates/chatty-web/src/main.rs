//! `chatty`: run a node. All behaviour lives in the library; this reads the
//! configuration, sets up logging and waits for Ctrl-C or SIGTERM.

use anyhow::Context;
use chatty_web::{Application, Settings, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load()?;
    telemetry::init(&settings.log).map_err(anyhow::Error::msg)?;
    tracing::info!(database = %chatty_web::settings::redact_url_password(&settings.database.url), "starting");
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

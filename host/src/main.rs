use mesastream::Server;
use mesastream::config::Config;
use tracing_subscriber::EnvFilter;

const DEFAULT_LOG: &str = "info,h2=off,hyper=off,tower=off,symphonia=warn,openmls=warn,davey=warn";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG)))
        .init();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mesastream: configuration error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let server = match Server::start(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mesastream: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tracing::info!(addr = %server.addr, "mesastream started");
    wait_for_signal().await;
    tracing::info!("shutting down");
    server.shut_down().await;
    std::process::ExitCode::SUCCESS
}

/// SIGINT or SIGTERM (what `docker stop` sends).
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

use mesastream::Server;
use mesastream::config::Config;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mesastream: configuration error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let _tracing = match mesastream::telemetry::tracing::init(&config.otlp) {
        Ok(guard) => guard,
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
    tracing::info!(addr = %server.addr, version = env!("CARGO_PKG_VERSION"), "mesastream started");
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

use clap::Parser;
use mesastream::Server;
use mesastream::cli::{Cli, Command};
use mesastream::config::Config;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Inspecting plugins serves nothing, so it needs no token.
    let offline = cli.command.is_some();
    let config = Config::from_lookup(|key| {
        std::env::var(key).ok().or_else(|| (offline && key == "AUTH_TOKEN").then(|| "unused".to_string()))
    });
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mesastream: configuration error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match cli.command {
        Some(Command::Plugins(command)) => mesastream::cli::run_plugins(command, &config),
        None => serve(config),
    }
}

#[tokio::main]
async fn serve(config: Config) -> std::process::ExitCode {
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

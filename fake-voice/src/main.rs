//! Runs the fake voice server on its own, for benchmarks and manual runs: prints the gateway
//! URL, then serves until Ctrl-C. `--tls` serves wss:// (the CA is written next to the
//! working directory as `fake-voice-ca.pem`); `--no-dave` turns DAVE off.

use fake_voice::{FakeVoiceConfig, FakeVoiceServer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = FakeVoiceConfig {
        tls: args.iter().any(|a| a == "--tls"),
        dave: !args.iter().any(|a| a == "--no-dave"),
        keep_pcm: false,
        ..Default::default()
    };
    let server = FakeVoiceServer::start(config).await?;
    if let Some(pem) = server.ca_pem() {
        std::fs::write("fake-voice-ca.pem", pem)?;
        println!("ca: fake-voice-ca.pem");
    }
    println!("gateway_url: {}", server.gateway_url());
    println!("endpoint: {}", server.endpoint());
    tokio::signal::ctrl_c().await?;
    Ok(())
}

//! The Discord voice transport. The player only sees [`VoiceConnection`]: connect with the
//! bot's credentials, hand frames to its [`PacketSender`] on the clock, and receive
//! [`VoiceEvent`]s. Everything protocol-shaped (gateway v8, UDP, AEAD, DAVE) stays in here.

mod close_codes;
mod crypto;
mod dave;
mod gateway;
mod gateway_socket;
mod ip_discovery;
pub mod scheduler;
mod send_gate;
mod sender;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub use close_codes::describe as describe_close_code;
pub use crypto::{AES256_GCM, XCHACHA20};
pub use scheduler::{Scheduler, TickOutcome, Tickable};
pub use send_gate::SendGate;
pub use sender::{OPUS_SILENCE, PacketSender, SendOutcome};

/// Credentials from the bot's VOICE_STATE_UPDATE / VOICE_SERVER_UPDATE.
#[derive(Debug, Clone)]
pub struct VoiceParams {
    pub server_id: String,
    pub user_id: u64,
    pub channel_id: u64,
    pub session_id: String,
    pub token: String,
    /// Dialled exactly as given.
    pub gateway_url: String,
}

/// Operator settings for voice connections.
#[derive(Clone)]
pub struct VoiceOptions {
    pub tls: Arc<rustls::ClientConfig>,
    pub preferred_mode: Option<String>,
    /// Limit for each handshake step (connect, Hello, Ready, discovery, Session Description).
    pub step_timeout: Duration,
    /// How long the handshake waits for the DAVE group before reporting the connection ready.
    pub dave_ready_timeout: Duration,
    pub resume_attempts: u32,
    /// In a cluster: audio goes out only while the node's leases are fresh.
    pub gate: Option<Arc<SendGate>>,
}

/// Something that happened to a live connection.
#[derive(Debug, Clone, PartialEq)]
pub enum VoiceEvent {
    /// The session ended for good; `reason` carries the close code and its meaning.
    Disconnected { code: Option<u16>, reason: String },
    /// The WebSocket dropped and was resumed; audio never stopped.
    Resumed,
}

#[derive(Debug, thiserror::Error)]
pub enum VoiceError {
    #[error("voice gateway unreachable: {0}")]
    Connect(String),
    #[error("voice gateway closed before {stage}: {}", closed_detail(*code, reason))]
    Closed { stage: &'static str, code: Option<u16>, reason: String },
    #[error("voice handshake timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("voice protocol error: {0}")]
    Protocol(String),
    #[error("voice UDP: {0}")]
    Udp(std::io::Error),
}

fn closed_detail(code: Option<u16>, reason: &str) -> String {
    match code {
        Some(c) if reason.is_empty() => format!("code {c} ({})", describe_close_code(c)),
        Some(c) => format!("code {c} ({}): {reason}", describe_close_code(c)),
        None => format!("no close code: {reason}"),
    }
}

/// A live voice connection. Dropping it closes the WebSocket.
pub struct VoiceConnection {
    sender: Arc<PacketSender>,
}

impl VoiceConnection {
    /// Connects, runs the handshake (DAVE included) and returns once audio can flow, or once
    /// the DAVE wait runs out (audio is then held until the group forms). The connection's
    /// task runs on the current runtime.
    pub async fn connect(
        params: VoiceParams,
        options: VoiceOptions,
        events: mpsc::UnboundedSender<VoiceEvent>,
    ) -> Result<Self, VoiceError> {
        let (ready_tx, ready_rx) = oneshot::channel();
        tokio::spawn(gateway::run(params, options, events, ready_tx));
        let established = ready_rx.await.map_err(|_| VoiceError::Protocol("voice task ended".into()))??;
        if !established.dave_ready {
            tracing::info!("voice connected; audio is held until the DAVE group forms");
        }
        Ok(Self { sender: established.sender })
    }

    pub fn sender(&self) -> Arc<PacketSender> {
        self.sender.clone()
    }

    pub fn is_connected(&self) -> bool {
        self.sender.is_alive()
    }

    /// The voice gateway's heartbeat round trip, once one was acknowledged.
    pub fn ping(&self) -> Option<std::time::Duration> {
        self.sender.heartbeat_rtt()
    }
}

impl Drop for VoiceConnection {
    fn drop(&mut self) {
        self.sender.close();
    }
}

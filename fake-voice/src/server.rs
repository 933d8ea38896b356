//! The fake server: a WebSocket voice gateway (plain or TLS) and one UDP socket shared by every
//! session, routing RTP by SSRC.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::FakeError;
use crate::rtp::{self, MODE_AES256_GCM, MODE_XCHACHA20};
use crate::session::{Committer, DaveDriver, DaveEvent, Outgoing, Session};
use crate::tls::TestCa;

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeVoiceConfig {
    /// Serve `wss://` with a generated CA instead of `ws://`.
    pub tls: bool,
    /// Announce DAVE protocol version 1 in Session Description (and require it at Identify).
    pub dave: bool,
    /// Transport modes offered in Ready, in order.
    pub modes: Vec<String>,
    pub committer: Committer,
    /// How late the simulated members apply commits and welcomes.
    pub member_delay: Duration,
    pub heartbeat_interval_ms: u64,
    /// Keep decoded PCM for frequency analysis (off for load runs).
    pub keep_pcm: bool,
    /// User id of the simulated listener.
    pub listener_id: u64,
    /// Load mode: only one session in this many has its audio DAVE-decrypted and decoded
    /// (every packet of it); the others are checked at the transport layer and timed only, so
    /// one listener can time thousands of sessions. 1 checks every session.
    pub verify_one_in: u32,
    /// Load mode: whoever waits on a session's counters is woken once every this many
    /// packets (and on each silence frame) instead of on every packet, so timing thousands
    /// of sessions does not cost the listener a task wake-up per packet. 1 wakes on each.
    pub wake_every_packets: u64,
}

impl Default for FakeVoiceConfig {
    fn default() -> Self {
        Self {
            tls: false,
            dave: true,
            modes: vec![MODE_AES256_GCM.to_string(), MODE_XCHACHA20.to_string()],
            committer: Committer::Client,
            member_delay: Duration::ZERO,
            heartbeat_interval_ms: 5_000,
            keep_pcm: true,
            listener_id: 900_000_000_000_000_001,
            verify_one_in: 1,
            wake_every_packets: 1,
        }
    }
}

struct Shared {
    config: FakeVoiceConfig,
    udp_addr: SocketAddr,
    next_ssrc: AtomicU32,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    by_ssrc: Mutex<HashMap<u32, Arc<Session>>>,
    channels: Mutex<HashMap<String, u64>>,
    rejected_tokens: Mutex<HashSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running fake voice server. Dropping it leaves its tasks running until the runtime ends.
pub struct FakeVoiceServer {
    shared: Arc<Shared>,
    ws_addr: SocketAddr,
    ca_pem: Option<String>,
}

/// Bytes the listener's UDP socket may hold unread.
const UDP_RECEIVE_BUFFER: usize = 8 << 20;

impl FakeVoiceServer {
    pub async fn start(config: FakeVoiceConfig) -> Result<Self, FakeError> {
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        // Many senders catching up at once after a stall must not overflow the socket: a
        // dropped packet would read as the server's loss. The kernel caps this at rmem_max.
        let _ = socket2::SockRef::from(&udp).set_recv_buffer_size(UDP_RECEIVE_BUFFER);
        crate::arrival::enable_timestamps(&udp);
        let udp_addr = udp.local_addr()?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let ws_addr = listener.local_addr()?;
        let ca = if config.tls { Some(TestCa::generate()?) } else { None };
        let ca_pem = ca.as_ref().map(|c| c.ca_pem.clone());
        let shared = Arc::new(Shared {
            config,
            udp_addr,
            next_ssrc: AtomicU32::new(1000),
            sessions: Mutex::default(),
            by_ssrc: Mutex::default(),
            channels: Mutex::default(),
            rejected_tokens: Mutex::default(),
        });
        let udp_shared = shared.clone();
        std::thread::Builder::new().name("fake-voice-udp".into()).spawn(move || udp_loop(udp, udp_shared))?;
        let acceptor = ca.map(|c| c.acceptor);
        let accept_shared = shared.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let shared = accept_shared.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(tcp).await
                                && let Ok(ws) = tokio_tungstenite::accept_async(tls).await
                            {
                                serve_connection(shared, ws).await;
                            }
                        }
                        None => {
                            if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                                serve_connection(shared, ws).await;
                            }
                        }
                    }
                });
            }
        });
        Ok(Self { shared, ws_addr, ca_pem })
    }

    /// `host:port` as Discord's VOICE_SERVER_UPDATE would give it.
    pub fn endpoint(&self) -> String {
        if self.ca_pem.is_some() { format!("localhost:{}", self.ws_addr.port()) } else { self.ws_addr.to_string() }
    }

    /// The URL a client should dial, as a bot builds it (`?v=8&encoding=json`).
    pub fn gateway_url(&self) -> String {
        let scheme = if self.ca_pem.is_some() { "wss" } else { "ws" };
        format!("{scheme}://{}/?v=8&encoding=json", self.endpoint())
    }

    /// The test CA in PEM, when serving TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Tells the fake which channel a guild's call is in (the DAVE group id).
    pub fn register_call(&self, guild_id: &str, channel_id: u64) {
        lock(&self.shared.channels).insert(guild_id.to_string(), channel_id);
    }

    /// Identifies with this token are closed with 4006, as Discord does for stale sessions.
    pub fn reject_token(&self, token: &str) {
        lock(&self.shared.rejected_tokens).insert(token.to_string());
    }

    /// The newest session for a guild, if one identified.
    pub fn session(&self, guild_id: &str) -> Option<Arc<Session>> {
        lock(&self.shared.sessions).values().filter(|s| s.guild_id == guild_id).max_by_key(|s| s.ssrc).cloned()
    }

    /// All sessions a guild ever had, oldest first.
    pub fn sessions(&self, guild_id: &str) -> Vec<Arc<Session>> {
        let mut all: Vec<_> =
            lock(&self.shared.sessions).values().filter(|s| s.guild_id == guild_id).cloned().collect();
        all.sort_by_key(|s| s.ssrc);
        all
    }
}

fn udp_loop(socket: UdpSocket, shared: Arc<Shared>) {
    let mut buf = [0u8; 2048];
    loop {
        let Ok((len, from, arrival)) = crate::arrival::recv_from(&socket, &mut buf) else { continue };
        let packet = &buf[..len];
        if rtp::is_discovery_request(packet) {
            let ssrc = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
            if let Some(session) = lock(&shared.by_ssrc).get(&ssrc).cloned() {
                session.set_client_udp(from);
            }
            let reply = rtp::discovery_response(ssrc, &from.ip().to_string(), from.port());
            let _ = socket.send_to(&reply, from);
            continue;
        }
        let Some(ssrc) = rtp::peek_ssrc(packet) else { continue };
        let session = lock(&shared.by_ssrc).get(&ssrc).cloned();
        if let Some(session) = session {
            session.on_rtp(arrival, packet);
        }
    }
}

fn close_message(code: u16) -> Message {
    Message::Close(Some(CloseFrame { code: CloseCode::from(code), reason: "closed by fake voice server".into() }))
}

async fn serve_connection<S>(shared: Arc<Shared>, mut ws: WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
    let hello = json!({"op": 8, "d": {"heartbeat_interval": shared.config.heartbeat_interval_ms, "v": 8}});
    if ws.send(Message::text(hello.to_string())).await.is_err() {
        return;
    }
    let mut session: Option<Arc<Session>> = None;
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(Outgoing::Message(m)) => {
                    if ws.send(m).await.is_err() { break; }
                }
                Some(Outgoing::Close(code)) => {
                    let _ = ws.send(close_message(code)).await;
                    break;
                }
                None => break,
            },
            incoming = ws.next() => {
                let Some(Ok(message)) = incoming else { break };
                let outcome = match message {
                    Message::Text(text) => on_text(&shared, &mut session, &tx, text.as_str()),
                    Message::Binary(data) => { on_binary(session.as_deref(), &data); Ok(()) }
                    Message::Close(_) => break,
                    _ => Ok(()),
                };
                if let Err(code) = outcome {
                    let _ = ws.send(close_message(code)).await;
                    break;
                }
            }
        }
    }
    if let Some(session) = session {
        session.detach(&tx);
    }
}

/// Handles a JSON opcode; `Err(code)` closes the socket with that code.
fn on_text(
    shared: &Arc<Shared>,
    current: &mut Option<Arc<Session>>,
    conn: &mpsc::UnboundedSender<Outgoing>,
    text: &str,
) -> Result<(), u16> {
    let Ok(value) = serde_json::from_str::<Value>(text) else { return Err(4002) };
    let Some(op) = value.get("op").and_then(Value::as_u64) else { return Err(4002) };
    let d = value.get("d").cloned().unwrap_or(Value::Null);
    let str_field = |key: &str| d.get(key).and_then(Value::as_str).map(str::to_string);
    if let Some(session) = current.as_ref() {
        session.record_op(op as u8);
    }
    match op {
        0 => {
            if current.is_some() {
                return Err(4005);
            }
            let (Some(guild), Some(user), Some(session_id), Some(token)) =
                (str_field("server_id"), str_field("user_id"), str_field("session_id"), str_field("token"))
            else {
                return Err(4002);
            };
            if lock(&shared.rejected_tokens).contains(&token) {
                return Err(4006);
            }
            let max_dave = d.get("max_dave_protocol_version").and_then(Value::as_u64).unwrap_or(0);
            if shared.config.dave && max_dave < 1 {
                return Err(4017);
            }
            let user_id: u64 = user.parse().map_err(|_| 4002u16)?;
            let channel_id = lock(&shared.channels).get(&guild).copied().unwrap_or_else(|| guild.parse().unwrap_or(1));
            let ssrc = shared.next_ssrc.fetch_add(1, Ordering::Relaxed);
            let session = Arc::new(Session::new(
                guild,
                user_id,
                channel_id,
                session_id.clone(),
                token,
                ssrc,
                shared.config.dave,
                shared.config.keep_pcm,
                ssrc.is_multiple_of(shared.config.verify_one_in.max(1)),
                shared.config.wake_every_packets.max(1),
            ));
            session.record_op(0);
            lock(&shared.sessions).insert(session_id, session.clone());
            lock(&shared.by_ssrc).insert(ssrc, session.clone());
            session.attach(conn.clone(), None);
            session.send_json(
                2,
                json!({
                    "ssrc": ssrc,
                    "ip": shared.udp_addr.ip().to_string(),
                    "port": shared.udp_addr.port(),
                    "modes": shared.config.modes,
                    "heartbeat_interval": 1,
                }),
            );
            *current = Some(session);
        }
        7 => {
            let (Some(session_id), Some(token)) = (str_field("session_id"), str_field("token")) else {
                return Err(4002);
            };
            let found = lock(&shared.sessions).get(&session_id).cloned();
            let Some(session) = found.filter(|s| s.token == token) else { return Err(4006) };
            session.record_op(7);
            let seq_ack = d.get("seq_ack").and_then(Value::as_i64).unwrap_or(-1);
            let _ = conn.send(Outgoing::Message(Message::text(json!({"op": 9, "d": null}).to_string())));
            session.attach(conn.clone(), Some(seq_ack));
            *current = Some(session);
        }
        3 => {
            let t = d.get("t").cloned().unwrap_or(d.clone());
            let _ = conn.send(Outgoing::Message(Message::text(json!({"op": 6, "d": {"t": t}}).to_string())));
        }
        1 => {
            let Some(session) = current.as_ref() else { return Err(4003) };
            let data = d.get("data").cloned().unwrap_or(Value::Null);
            let Some(mode) = data.get("mode").and_then(Value::as_str) else { return Err(4002) };
            if !shared.config.modes.iter().any(|m| m == mode) || !session.set_transport(mode, None) {
                return Err(4016);
            }
            let version = if shared.config.dave { crate::dave::PROTOCOL_VERSION } else { 0 };
            session.send_json(
                4,
                json!({"mode": mode, "secret_key": session.secret_key.to_vec(), "dave_protocol_version": version}),
            );
            if shared.config.dave {
                let started = DaveDriver::start(
                    session.clone(),
                    shared.config.listener_id,
                    shared.config.committer,
                    shared.config.member_delay,
                );
                if started.is_err() {
                    return Err(4020);
                }
            }
        }
        5 => {
            if let Some(session) = current.as_ref() {
                session.set_speaking(d.get("speaking").and_then(Value::as_u64).unwrap_or(0) != 0);
            }
        }
        23 => {
            if let Some(session) = current.as_ref() {
                let tid = d.get("transition_id").and_then(Value::as_u64).unwrap_or(0) as u16;
                session.dave_event(DaveEvent::ClientReady(tid));
            }
        }
        31 => {
            if let Some(session) = current.as_ref() {
                let tid = d.get("transition_id").and_then(Value::as_u64).unwrap_or(0) as u16;
                session.dave_event(DaveEvent::ClientInvalid(tid));
            }
        }
        _ => {}
    }
    Ok(())
}

fn on_binary(session: Option<&Session>, data: &[u8]) {
    let (Some(session), Some((&op, payload))) = (session, data.split_first()) else { return };
    session.record_op(op);
    match op {
        26 => session.dave_event(DaveEvent::ClientKeyPackage(payload.to_vec())),
        28 => session.dave_event(DaveEvent::ClientCommitWelcome(payload.to_vec())),
        _ => {}
    }
}

//! The voice gateway session (v8): handshake, heartbeats with `seq_ack`, buffered resume with
//! opcode 7, speaking, and the DAVE opcodes. One task per connection owns the WebSocket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::close_codes::{can_resume, describe};
use super::crypto::{TransportCipher, choose_mode};
use super::dave::{DaveReply, DaveState};
use super::sender::{GatewayCommand, PacketSender};
use super::{VoiceError, VoiceEvent, VoiceOptions, VoiceParams};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One message from the gateway.
enum Incoming {
    Json { op: u8, d: Value },
    Binary { op: u8, body: Vec<u8> },
    Closed { code: Option<u16>, reason: String },
}

/// A voice gateway sends a few small JSON messages a minute and, at a DAVE group change, a
/// commit or welcome of some kilobytes: tungstenite's 128 KiB read buffer per connection
/// was most of an idle player's memory. Messages larger than the buffer still arrive whole.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(4 << 20))
        .max_frame_size(Some(4 << 20))
}

/// The WebSocket plus what v8 needs to resume it.
struct Link {
    ws: Ws,
    seq_ack: Option<i64>,
}

impl Link {
    async fn dial(url: &str, options: &VoiceOptions) -> Result<Self, VoiceError> {
        let connector = Connector::Rustls(options.tls.clone());
        let dial = tokio_tungstenite::connect_async_tls_with_config(url, Some(ws_config()), true, Some(connector));
        let (ws, _) = timeout(options.step_timeout, dial)
            .await
            .map_err(|_| VoiceError::Timeout("connecting to the voice gateway"))?
            .map_err(|e| VoiceError::Connect(e.to_string()))?;
        Ok(Self { ws, seq_ack: None })
    }

    async fn send_json(&mut self, op: u8, d: Value) -> Result<(), VoiceError> {
        let text = json!({"op": op, "d": d}).to_string();
        self.ws.send(Message::text(text)).await.map_err(|e| VoiceError::Connect(e.to_string()))
    }

    async fn send_binary(&mut self, op: u8, payload: &[u8]) -> Result<(), VoiceError> {
        let mut frame = Vec::with_capacity(payload.len() + 1);
        frame.push(op);
        frame.extend_from_slice(payload);
        self.ws.send(Message::binary(frame)).await.map_err(|e| VoiceError::Connect(e.to_string()))
    }

    async fn send_reply(&mut self, reply: DaveReply) -> Result<(), VoiceError> {
        match reply {
            DaveReply::Json(op, d) => self.send_json(op, d).await,
            DaveReply::Binary(op, payload) => self.send_binary(op, &payload).await,
        }
    }

    async fn heartbeat(&mut self) -> Result<(), VoiceError> {
        let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let mut d = json!({"t": t});
        if let Some(ack) = self.seq_ack {
            d["seq_ack"] = json!(ack);
        }
        self.send_json(3, d).await
    }

    fn note_seq(&mut self, seq: i64) {
        self.seq_ack = Some(self.seq_ack.map_or(seq, |s| s.max(seq)));
    }

    /// Reads the next gateway message, tracking `seq` for `seq_ack`.
    async fn next(&mut self) -> Incoming {
        loop {
            let message = match self.ws.next().await {
                None => return Incoming::Closed { code: None, reason: "connection ended".into() },
                Some(Err(e)) => return Incoming::Closed { code: None, reason: e.to_string() },
                Some(Ok(m)) => m,
            };
            match message {
                Message::Text(text) => {
                    let Some((seq, op, d)) = parse_text(text.as_str()) else { continue };
                    if let Some(seq) = seq {
                        self.note_seq(seq);
                    }
                    return Incoming::Json { op, d };
                }
                Message::Binary(data) => {
                    let Some((seq, op, body)) = parse_binary(&data) else { continue };
                    self.note_seq(i64::from(seq));
                    return Incoming::Binary { op, body: body.to_vec() };
                }
                Message::Close(frame) => {
                    let (code, reason) =
                        frame.map(|f| (Some(u16::from(f.code)), f.reason.to_string())).unwrap_or((None, String::new()));
                    return Incoming::Closed { code, reason };
                }
                _ => continue,
            }
        }
    }

    /// Waits for a specific JSON opcode, answering DAVE and bookkeeping messages on the way.
    async fn expect(
        &mut self,
        wanted: u8,
        what: &'static str,
        limit: Duration,
        mut on_other: impl FnMut(Incoming),
    ) -> Result<Value, VoiceError> {
        let deadline = Instant::now() + limit;
        loop {
            let incoming =
                tokio::time::timeout_at(deadline, self.next()).await.map_err(|_| VoiceError::Timeout(what))?;
            match incoming {
                Incoming::Json { op, d } if op == wanted => return Ok(d),
                Incoming::Closed { code, reason } => {
                    return Err(VoiceError::Closed { stage: what, code, reason });
                }
                other => on_other(other),
            }
        }
    }
}

/// A JSON gateway message: its `seq` when it has one, its opcode and its `d`. Anything else
/// (not JSON, no opcode, an opcode no voice gateway uses) is skipped.
fn parse_text(text: &str) -> Option<(Option<i64>, u8, Value)> {
    let mut value = serde_json::from_str::<Value>(text).ok()?;
    let seq = value.get("seq").and_then(Value::as_i64);
    let op = u8::try_from(value.get("op")?.as_u64()?).ok()?;
    let d = value.get_mut("d").map(Value::take).unwrap_or(Value::Null);
    Some((seq, op, d))
}

/// A binary gateway message: sequence number, opcode and body.
fn parse_binary(data: &[u8]) -> Option<(u16, u8, &[u8])> {
    let (&[seq_high, seq_low, op], body) = data.split_first_chunk::<3>()?;
    Some((u16::from_be_bytes([seq_high, seq_low]), op, body))
}

/// An IP discovery response: the address and port the voice server saw us at.
fn parse_discovery(response: &[u8]) -> Option<(String, u16)> {
    if response.len() < 74 || response[0..2] != [0, 2] {
        return None;
    }
    let ip_bytes = &response[8..72];
    let end = ip_bytes.iter().position(|b| *b == 0).unwrap_or(ip_bytes.len());
    let ip = String::from_utf8_lossy(&ip_bytes[..end]).to_string();
    Some((ip, u16::from_be_bytes([response[72], response[73]])))
}

fn heartbeat_interval(hello: &Value) -> Duration {
    let ms = hello.get("heartbeat_interval").and_then(Value::as_f64).unwrap_or(13_750.0);
    Duration::from_millis(ms.clamp(250.0, 60_000.0) as u64)
}

/// IP discovery on the socket that will carry RTP.
async fn discover(udp: &UdpSocket, ssrc: u32, limit: Duration) -> Result<(String, u16), VoiceError> {
    let mut request = [0u8; 74];
    request[0..2].copy_from_slice(&1u16.to_be_bytes());
    request[2..4].copy_from_slice(&70u16.to_be_bytes());
    request[4..8].copy_from_slice(&ssrc.to_be_bytes());
    let mut response = [0u8; 128];
    for _ in 0..3 {
        udp.send(&request).await.map_err(VoiceError::Udp)?;
        if let Ok(Ok(n)) = timeout(limit / 3, udp.recv(&mut response)).await
            && let Some(found) = parse_discovery(&response[..n])
        {
            return Ok(found);
        }
    }
    Err(VoiceError::Timeout("IP discovery"))
}

/// What the handshake hands to the caller.
pub(crate) struct Established {
    pub sender: Arc<PacketSender>,
    pub dave_ready: bool,
}

/// Runs the whole life of a voice connection. The handshake result goes to `ready`; the task
/// then keeps the session alive, resuming it when the close code allows.
pub(crate) async fn run(
    params: VoiceParams,
    options: VoiceOptions,
    events: mpsc::UnboundedSender<VoiceEvent>,
    ready: oneshot::Sender<Result<Established, VoiceError>>,
) {
    let (commands_tx, mut commands) = mpsc::unbounded_channel();
    let handshake = handshake(&params, &options, commands_tx).await;
    let (mut link, mut interval, sender, mut dave) = match handshake {
        Ok(parts) => parts,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    // Let the DAVE group form before reporting the connection ready, within a bound: a bot
    // alone in a call may wait for listeners, and audio is held (never sent in the clear).
    let dave_ready = match dave.as_mut() {
        None => true,
        Some(state) => {
            let deadline = Instant::now() + options.dave_ready_timeout;
            loop {
                if state.can_encrypt() {
                    break true;
                }
                match tokio::time::timeout_at(deadline, link.next()).await {
                    Err(_) => break false,
                    Ok(Incoming::Closed { code, reason }) => {
                        let _ = ready.send(Err(VoiceError::Closed { stage: "DAVE setup", code, reason }));
                        return;
                    }
                    Ok(incoming) => {
                        if let Err(e) = handle(&mut link, Some(state), incoming, &mut interval, &mut false).await {
                            let _ = ready.send(Err(e));
                            return;
                        }
                    }
                }
            }
        }
    };
    if ready.send(Ok(Established { sender: sender.clone(), dave_ready })).is_err() {
        return;
    }

    let mut awaiting_ack = false;
    let mut beat_sent = Instant::now();
    let mut beat = tokio::time::interval_at(Instant::now() + interval, interval);
    loop {
        let close: Option<(Option<u16>, String)> = tokio::select! {
            _ = beat.tick() => {
                if awaiting_ack {
                    Some((None, "heartbeat not acknowledged".to_string()))
                } else {
                    awaiting_ack = true;
                    beat_sent = Instant::now();
                    link.heartbeat().await.err().map(|e| (None, e.to_string()))
                }
            }
            command = commands.recv() => match command {
                Some(GatewayCommand::Speaking(on)) => {
                    let d = json!({"speaking": u8::from(on), "delay": 0, "ssrc": sender.ssrc()});
                    link.send_json(5, d).await.err().map(|e| (None, e.to_string()))
                }
                Some(GatewayCommand::Close) | None => {
                    let _ = link.ws.close(Some(CloseFrame { code: 1000.into(), reason: "".into() })).await;
                    return;
                }
            },
            incoming = link.next() => match incoming {
                Incoming::Closed { code, reason } => Some((code, reason)),
                other => {
                    let (before, was_awaiting) = (interval, awaiting_ack);
                    let outcome = handle(&mut link, dave.as_mut(), other, &mut interval, &mut awaiting_ack).await;
                    if was_awaiting && !awaiting_ack {
                        sender.set_heartbeat_rtt(beat_sent.elapsed());
                    }
                    if interval != before {
                        beat = tokio::time::interval_at(Instant::now() + interval, interval);
                    }
                    outcome.err().map(|e| (None, e.to_string()))
                }
            },
        };
        let Some((code, reason)) = close else { continue };
        tracing::info!(guild = %params.server_id, ?code, %reason, "voice gateway connection lost");
        match resume(&params, &options, &link, &mut interval, dave.as_mut(), code).await {
            Ok(new_link) => {
                link = new_link;
                awaiting_ack = false;
                beat = tokio::time::interval_at(Instant::now() + interval, interval);
                let _ = events.send(VoiceEvent::Resumed);
            }
            Err((code, reason)) => {
                sender.mark_dead();
                let reason = match code {
                    Some(c) => format!(
                        "voice gateway closed: code {c} ({}){}",
                        describe(c),
                        if reason.is_empty() { String::new() } else { format!(": {reason}") }
                    ),
                    None => format!("voice gateway lost: {reason}"),
                };
                let _ = events.send(VoiceEvent::Disconnected { code, reason });
                return;
            }
        }
    }
}

type HandshakeParts = (Link, Duration, Arc<PacketSender>, Option<DaveState>);

async fn handshake(
    params: &VoiceParams,
    options: &VoiceOptions,
    commands: mpsc::UnboundedSender<GatewayCommand>,
) -> Result<HandshakeParts, VoiceError> {
    let mut link = Link::dial(&params.gateway_url, options).await?;
    let hello = link.expect(8, "Hello", options.step_timeout, |_| {}).await?;
    let interval = heartbeat_interval(&hello);
    link.send_json(
        0,
        json!({
            "server_id": params.server_id,
            "user_id": params.user_id.to_string(),
            "session_id": params.session_id,
            "token": params.token,
            "max_dave_protocol_version": davey::DAVE_PROTOCOL_VERSION,
        }),
    )
    .await?;
    let ready = link.expect(2, "Ready", options.step_timeout, |_| {}).await?;
    let ssrc =
        ready.get("ssrc").and_then(Value::as_u64).ok_or_else(|| VoiceError::Protocol("Ready without ssrc".into()))?
            as u32;
    let ip = ready.get("ip").and_then(Value::as_str).unwrap_or_default().to_string();
    let port = ready.get("port").and_then(Value::as_u64).unwrap_or(0) as u16;
    let modes: Vec<String> = ready
        .get("modes")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|m| m.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let mode = choose_mode(&modes, options.preferred_mode.as_deref())
        .ok_or_else(|| VoiceError::Protocol(format!("no supported encryption mode among {modes:?}")))?
        .to_string();

    let server: SocketAddr = tokio::net::lookup_host((ip.as_str(), port))
        .await
        .map_err(VoiceError::Udp)?
        .next()
        .ok_or_else(|| VoiceError::Protocol(format!("voice server address {ip}:{port} does not resolve")))?;
    let bind = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let udp = UdpSocket::bind(bind).await.map_err(VoiceError::Udp)?;
    udp.connect(server).await.map_err(VoiceError::Udp)?;
    let (external_ip, external_port) = discover(&udp, ssrc, options.step_timeout.min(Duration::from_secs(5))).await?;
    // After discovery nothing reads this socket (the host sends, it does not listen): the
    // smallest receive buffer keeps others' audio from piling up in the kernel per player.
    if let Err(e) = socket2::SockRef::from(&udp).set_recv_buffer_size(4096) {
        tracing::debug!(error = %e, "cannot shrink the voice socket's receive buffer");
    }

    link.send_json(
        1,
        json!({"protocol": "udp", "data": {"address": external_ip, "port": external_port, "mode": mode}}),
    )
    .await?;
    let mut early = Vec::new();
    let description = link.expect(4, "Session Description", options.step_timeout, |other| early.push(other)).await?;
    let key: [u8; 32] = description
        .get("secret_key")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|b| b.as_u64().map(|b| b as u8)).collect::<Vec<u8>>())
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| VoiceError::Protocol("Session Description without a 32-byte key".into()))?;
    let cipher = TransportCipher::new(&mode, &key).ok_or_else(|| VoiceError::Protocol(format!("mode {mode}")))?;
    let dave_version = description.get("dave_protocol_version").and_then(Value::as_u64).unwrap_or(0) as u16;

    let mut dave = None;
    if dave_version > 0 {
        let (state, key_package) = DaveState::start(dave_version, params.user_id, params.channel_id)
            .map_err(|e| VoiceError::Protocol(e.to_string()))?;
        link.send_reply(key_package).await?;
        dave = Some(state);
    }
    let mut interval = interval;
    for incoming in early {
        handle(&mut link, dave.as_mut(), incoming, &mut interval, &mut false).await?;
    }
    let std_udp = udp.into_std().map_err(VoiceError::Udp)?;
    let session = dave.as_ref().map(|d| d.session.clone());
    let sender = Arc::new(PacketSender::new(std_udp, ssrc, cipher, session, commands, options.gate.clone()));
    Ok((link, interval, sender, dave))
}

/// Handles one message after (or during) the handshake.
async fn handle(
    link: &mut Link,
    dave: Option<&mut DaveState>,
    incoming: Incoming,
    interval: &mut Duration,
    awaiting_ack: &mut bool,
) -> Result<(), VoiceError> {
    let replies = match (incoming, dave) {
        (Incoming::Json { op: 6, .. }, _) => {
            *awaiting_ack = false;
            vec![]
        }
        (Incoming::Json { op: 8, d }, _) => {
            *interval = heartbeat_interval(&d);
            vec![]
        }
        (Incoming::Json { op: 11, d }, Some(state)) => {
            state.clients_connected(&d);
            vec![]
        }
        (Incoming::Json { op: 13, d }, Some(state)) => {
            state.client_disconnected(&d);
            vec![]
        }
        (Incoming::Json { op: op @ (21 | 22 | 24), d }, Some(state)) => state.on_json(op, &d),
        (Incoming::Binary { op, body }, Some(state)) => state.on_binary(op, &body),
        _ => vec![],
    };
    for reply in replies {
        link.send_reply(reply).await?;
    }
    Ok(())
}

/// Re-establishes the session with opcode 7 after a recoverable close. The gateway replays
/// what we missed after `seq_ack`; those messages are handled as usual.
async fn resume(
    params: &VoiceParams,
    options: &VoiceOptions,
    old: &Link,
    interval: &mut Duration,
    mut dave: Option<&mut DaveState>,
    code: Option<u16>,
) -> Result<Link, (Option<u16>, String)> {
    if !can_resume(code) {
        return Err((code, String::new()));
    }
    let mut last = (code, String::from("resume failed"));
    for attempt in 0..options.resume_attempts {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(250 << attempt.min(5))).await;
        }
        let mut link = match Link::dial(&params.gateway_url, options).await {
            Ok(link) => link,
            Err(e) => {
                last = (code, e.to_string());
                continue;
            }
        };
        link.seq_ack = old.seq_ack;
        let attempt_result: Result<Vec<Incoming>, VoiceError> = async {
            let hello = link.expect(8, "Hello", options.step_timeout, |_| {}).await?;
            *interval = heartbeat_interval(&hello);
            link.send_json(
                7,
                json!({
                    "server_id": params.server_id,
                    "session_id": params.session_id,
                    "token": params.token,
                    "seq_ack": link.seq_ack.unwrap_or(-1),
                }),
            )
            .await?;
            let mut replayed = Vec::new();
            link.expect(9, "Resumed", options.step_timeout, |other| replayed.push(other)).await?;
            Ok(replayed)
        }
        .await;
        match attempt_result {
            Ok(replayed) => {
                for incoming in replayed {
                    let mut ack = false;
                    if handle(&mut link, dave.as_deref_mut(), incoming, interval, &mut ack).await.is_err() {
                        break;
                    }
                }
                return Ok(link);
            }
            Err(VoiceError::Closed { code: Some(c), reason, .. }) if !can_resume(Some(c)) => {
                return Err((Some(c), reason));
            }
            Err(e) => last = (code, e.to_string()),
        }
    }
    Err(last)
}

/// The gateway's messages and the discovery answer come from the network: whatever they
/// hold, parsing never panics, and well-formed ones read back exactly.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_text_or_bytes_parse_without_panicking(text in ".{0,400}", bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_text(&text);
            let _ = parse_binary(&bytes);
            let _ = parse_discovery(&bytes);
            let _ = heartbeat_interval(&serde_json::from_str(&text).unwrap_or(Value::Null));
        }

        #[test]
        fn gateway_json_reads_back(op in any::<u64>(), seq in proptest::option::of(any::<i64>()), d in ".{0,40}") {
            let mut message = json!({"op": op, "d": {"x": d}});
            if let Some(seq) = seq {
                message["seq"] = json!(seq);
            }
            let parsed = parse_text(&message.to_string());
            match u8::try_from(op) {
                Ok(op) => prop_assert_eq!(parsed, Some((seq, op, json!({"x": d})))),
                // An opcode past 255 is not read as a smaller one.
                Err(_) => prop_assert_eq!(parsed, None),
            }
        }

        #[test]
        fn binary_frames_read_back(seq in any::<u16>(), op in any::<u8>(), body in prop::collection::vec(any::<u8>(), 0..200)) {
            let mut frame = seq.to_be_bytes().to_vec();
            frame.push(op);
            frame.extend(&body);
            prop_assert_eq!(parse_binary(&frame), Some((seq, op, &body[..])));
        }

        #[test]
        fn discovery_answers_read_back(ip in "[0-9a-f:.]{1,63}", port in any::<u16>(), noise in any::<[u8; 4]>()) {
            let mut answer = vec![0u8; 74];
            answer[0..2].copy_from_slice(&[0, 2]);
            answer[4..8].copy_from_slice(&noise);
            answer[8..8 + ip.len()].copy_from_slice(ip.as_bytes());
            answer[72..74].copy_from_slice(&port.to_be_bytes());
            prop_assert_eq!(parse_discovery(&answer), Some((ip, port)));
        }
    }
}

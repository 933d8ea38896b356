//! The voice gateway session (v8): handshake, heartbeats with `seq_ack`, buffered resume with
//! opcode 7, speaking, and the DAVE opcodes. One task per connection owns the WebSocket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use super::close_codes::{can_resume, describe};
use super::crypto::{TransportCipher, choose_mode};
use super::dave::DaveState;
use super::gateway_socket::{Incoming, Link, heartbeat_interval};
use super::ip_discovery::discover;
use super::sender::{GatewayCommand, PacketSender};
use super::{VoiceError, VoiceEvent, VoiceOptions, VoiceParams};

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

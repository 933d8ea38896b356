//! The voice gateway's WebSocket: dialling it, framing JSON and binary (DAVE) messages, the
//! `seq` a v8 resume needs, and heartbeats.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::dave::DaveReply;
use super::{VoiceError, VoiceOptions};

pub(super) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One message from the gateway.
pub(super) enum Incoming {
    Json { op: u8, d: Value },
    Binary { op: u8, body: Vec<u8> },
    Closed { code: Option<u16>, reason: String },
}

/// A voice gateway sends a few small JSON messages a minute and, at a DAVE group change, a
/// commit or welcome of some kilobytes: tungstenite's 128 KiB read buffer per connection
/// was most of an idle player's memory. Messages larger than the buffer still arrive whole.
pub(super) fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(4 << 20))
        .max_frame_size(Some(4 << 20))
}

/// The WebSocket plus what v8 needs to resume it.
pub(super) struct Link {
    pub(super) ws: Ws,
    pub(super) seq_ack: Option<i64>,
}

impl Link {
    pub(super) async fn dial(url: &str, options: &VoiceOptions) -> Result<Self, VoiceError> {
        let connector = Connector::Rustls(options.tls.clone());
        let dial = tokio_tungstenite::connect_async_tls_with_config(url, Some(ws_config()), true, Some(connector));
        let (ws, _) = timeout(options.step_timeout, dial)
            .await
            .map_err(|_| VoiceError::Timeout("connecting to the voice gateway"))?
            .map_err(|e| VoiceError::Connect(e.to_string()))?;
        Ok(Self { ws, seq_ack: None })
    }

    pub(super) async fn send_json(&mut self, op: u8, d: Value) -> Result<(), VoiceError> {
        let text = json!({"op": op, "d": d}).to_string();
        self.ws.send(Message::text(text)).await.map_err(|e| VoiceError::Connect(e.to_string()))
    }

    pub(super) async fn send_binary(&mut self, op: u8, payload: &[u8]) -> Result<(), VoiceError> {
        let mut frame = Vec::with_capacity(payload.len() + 1);
        frame.push(op);
        frame.extend_from_slice(payload);
        self.ws.send(Message::binary(frame)).await.map_err(|e| VoiceError::Connect(e.to_string()))
    }

    pub(super) async fn send_reply(&mut self, reply: DaveReply) -> Result<(), VoiceError> {
        match reply {
            DaveReply::Json(op, d) => self.send_json(op, d).await,
            DaveReply::Binary(op, payload) => self.send_binary(op, &payload).await,
        }
    }

    pub(super) async fn heartbeat(&mut self) -> Result<(), VoiceError> {
        let t = crate::wall_clock::unix_ms();
        let mut d = json!({"t": t});
        if let Some(ack) = self.seq_ack {
            d["seq_ack"] = json!(ack);
        }
        self.send_json(3, d).await
    }

    pub(super) fn note_seq(&mut self, seq: i64) {
        self.seq_ack = Some(self.seq_ack.map_or(seq, |s| s.max(seq)));
    }

    /// Reads the next gateway message, tracking `seq` for `seq_ack`.
    pub(super) async fn next(&mut self) -> Incoming {
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
    pub(super) async fn expect(
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
pub(super) fn parse_text(text: &str) -> Option<(Option<i64>, u8, Value)> {
    let mut value = serde_json::from_str::<Value>(text).ok()?;
    let seq = value.get("seq").and_then(Value::as_i64);
    let op = u8::try_from(value.get("op")?.as_u64()?).ok()?;
    let d = value.get_mut("d").map(Value::take).unwrap_or(Value::Null);
    Some((seq, op, d))
}

/// A binary gateway message: sequence number, opcode and body.
pub(super) fn parse_binary(data: &[u8]) -> Option<(u16, u8, &[u8])> {
    let (&[seq_high, seq_low, op], body) = data.split_first_chunk::<3>()?;
    Some((u16::from_be_bytes([seq_high, seq_low]), op, body))
}

pub(super) fn heartbeat_interval(hello: &Value) -> Duration {
    let ms = hello.get("heartbeat_interval").and_then(Value::as_f64).unwrap_or(13_750.0);
    Duration::from_millis(ms.clamp(250.0, 60_000.0) as u64)
}

/// The gateway's messages come from the network: whatever they hold, parsing never panics,
/// and well-formed ones read back exactly.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_text_or_bytes_parse_without_panicking(text in ".{0,400}", bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_text(&text);
            let _ = parse_binary(&bytes);
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
    }
}

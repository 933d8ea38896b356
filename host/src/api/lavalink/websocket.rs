//! `GET /v4/websocket`: a client's session. `ready` first, then `stats` at once and every
//! minute (some clients close a socket that goes 65 s without one); the session's frames as
//! they come. Client messages are ignored, as Lavalink ignores them; pings are answered.
//! When the server shuts down the socket closes with 1001 (going away).

use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::LavalinkState;
use super::info::node_stats;
use super::sessions::Attached;
use crate::events::Event;

const STATS_EVERY: Duration = Duration::from_secs(60);

/// Lavalink's frame statistics for one session: per playing player on average since the
/// last `stats` frame, the frames sent, the frames owed that were not ready (`nulled`) and
/// those neither sent nor owed (`deficit`: 50 a second, less the other two). Null when no
/// player played through the whole interval.
#[derive(Default)]
struct FrameStats {
    last: Option<(std::time::Instant, Counts)>,
}

impl FrameStats {
    async fn since_last(&mut self, players: &[std::sync::Arc<super::player::LavalinkPlayer>]) -> serde_json::Value {
        let now = std::time::Instant::now();
        let mut counts = Counts::new();
        for p in players {
            if p.player.is_playing().await {
                counts.insert(p.guild_id, p.player.output.frame_counts());
            }
        }
        let previous = self.last.replace((now, counts.clone()));
        let Some((at, before)) = previous else { return serde_json::Value::Null };
        averages(&before, &counts, now.duration_since(at))
    }
}

type Counts = std::collections::HashMap<crate::model::Id, (u64, u64)>;

/// Frame statistics from each player's (sent, owed and missing) counts at two moments
/// `elapsed` apart, over the players present at both.
fn averages(before: &Counts, after: &Counts, elapsed: Duration) -> serde_json::Value {
    let deltas: Vec<(i64, i64)> = after
        .iter()
        .filter_map(|(guild, (sent, missed))| {
            let (s0, m0) = before.get(guild)?;
            Some((sent.saturating_sub(*s0) as i64, missed.saturating_sub(*m0) as i64))
        })
        .collect();
    if deltas.is_empty() {
        return serde_json::Value::Null;
    }
    let n = deltas.len() as i64;
    let sent = deltas.iter().map(|d| d.0).sum::<i64>() / n;
    let nulled = deltas.iter().map(|d| d.1).sum::<i64>() / n;
    let expected = (elapsed.as_millis() / 20) as i64;
    json!({"sent": sent, "nulled": nulled, "deficit": (expected - sent - nulled).max(0)})
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

pub async fn connect(State(state): State<LavalinkState>, headers: HeaderMap, upgrade: WebSocketUpgrade) -> Response {
    // Lavalink answers a missing or zero bot id with a bare 400; a non-numeric one fails
    // after the upgrade there, and is refused up front here.
    let user_id = match header(&headers, "User-Id").map(str::parse::<u64>) {
        Some(Ok(id)) if id != 0 => id,
        _ => return StatusCode::BAD_REQUEST.into_response(),
    };
    let client = header(&headers, "Client-Name").unwrap_or("unknown").to_string();
    let attached = state.node.sessions.attach(user_id, header(&headers, "Session-Id"));
    let resumed = attached.resumed;
    tracing::info!(session = %attached.session.id, %client, resumed, "lavalink client connected");
    let mut response = upgrade.on_upgrade(move |socket| serve(socket, state, attached));
    let resumed = HeaderValue::from_static(if resumed { "true" } else { "false" });
    response.headers_mut().insert("Session-Resumed", resumed);
    response
}

async fn serve(mut socket: WebSocket, state: LavalinkState, mut attached: Attached) {
    let mut events = state.app.events.subscribe();
    let ready = json!({"op": "ready", "resumed": attached.resumed, "sessionId": attached.session.id});
    if socket.send(Message::text(ready.to_string())).await.is_err() {
        if let Some(ended) = state.node.sessions.detach(&attached) {
            ended.close_players().await;
        }
        return;
    }
    if attached.resumed {
        // As Lavalink: after the frames kept while the client was away (already in the
        // outbox), where each player is.
        for player in attached.session.players() {
            if let Some(frame) = player.update_frame(true).await {
                attached.session.send(frame, true);
            }
        }
    }
    let mut stats = tokio::time::interval(STATS_EVERY);
    let mut frames = FrameStats::default();
    loop {
        tokio::select! {
            _ = stats.tick() => {
                let mut frame = serde_json::to_value(node_stats(&state).await).unwrap_or_default();
                frame["op"] = json!("stats");
                frame["frameStats"] = frames.since_last(&attached.session.players()).await;
                if socket.send(Message::text(frame.to_string())).await.is_err() { break; }
            }
            frame = attached.outbox.recv() => match frame {
                Some(frame) => if socket.send(Message::text(frame)).await.is_err() { break; },
                None => break,
            },
            event = events.recv() => match event {
                Ok(Event::Goodbye) => {
                    let close = CloseFrame { code: close_code::AWAY, reason: "server shutting down".into() };
                    let _ = socket.send(Message::Close(Some(close))).await;
                    break;
                }
                Err(RecvError::Closed) => break,
                Ok(_) | Err(RecvError::Lagged(_)) => {}
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                // Pings are answered by the socket itself; v4 clients send nothing else.
                Some(Ok(_)) => {}
            },
        }
    }
    // Completes the closing handshake (answers the client's close frame).
    let _ = socket.close().await;
    if let Some(ended) = state.node.sessions.detach(&attached) {
        tracing::info!(session = %ended.id, "lavalink session ended with its socket");
        ended.close_players().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Id;

    #[test]
    fn frame_statistics_average_the_players_present_through_the_minute() {
        let before: Counts = [(Id(1), (100, 0)), (Id(2), (0, 0))].into();
        let after: Counts = [(Id(1), (3_100, 0)), (Id(2), (2_900, 40)), (Id(3), (50, 0))].into();
        let stats = averages(&before, &after, Duration::from_secs(60));
        assert_eq!(stats, json!({"sent": 2_950, "nulled": 20, "deficit": 30}), "player 3 joined late");
        assert_eq!(averages(&Counts::new(), &after, Duration::from_secs(60)), serde_json::Value::Null);
    }
}

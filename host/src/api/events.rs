//! `GET /ws`: every event as one JSON text frame, a ping every 30 s.

use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use tokio::sync::broadcast::error::RecvError;

use super::AppState;

const PING_EVERY: Duration = Duration::from_secs(30);

pub async fn stream(State(app): State<AppState>, upgrade: WebSocketUpgrade) -> Response {
    let events = app.events.subscribe();
    upgrade.on_upgrade(move |socket| forward(socket, events))
}

async fn forward(mut socket: WebSocket, mut events: tokio::sync::broadcast::Receiver<crate::events::Event>) {
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) => {
                    let Ok(text) = serde_json::to_string(&event) else { continue };
                    if socket.send(Message::text(text)).await.is_err() { return; }
                }
                Err(RecvError::Lagged(n)) => tracing::warn!(dropped = n, "ws client lagged; events dropped"),
                Err(RecvError::Closed) => return,
            },
            _ = ping.tick() => {
                if socket.send(Message::Ping(Default::default())).await.is_err() { return; }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

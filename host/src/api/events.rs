//! `GET /ws`: every event as one JSON text frame, a ping every 30 s. A client presenting the
//! API token (bearer, `?token=` or an operator-page session) is authenticated even while
//! `WS_AUTH` is off, and is never turned away by anonymous clients.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::response::IntoResponse;
use axum::response::Response;
use tokio::sync::broadcast::error::RecvError;

use super::{ApiError, AppState};

const PING_EVERY: Duration = Duration::from_secs(30);

#[derive(serde::Deserialize)]
pub struct WsQuery {
    token: Option<String>,
}

pub async fn stream(
    State(app): State<AppState>,
    Query(query): Query<WsQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let header = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let presented = header.map(str::to_string).or(query.token);
    let token_ok = presented.as_deref().is_some_and(|t| super::same(t.trim().as_bytes(), app.auth_token.as_bytes()));
    let authenticated =
        token_ok || super::listen::ui::session_ok(&headers, &app.auth_token, &app.registry.ctx.store).await;
    if app.ws_auth && !authenticated {
        return match presented {
            None => ApiError::unauthorized().into_response(),
            Some(_) => ApiError::forbidden().into_response(),
        };
    }
    let slot = match app.limits.event_client(authenticated) {
        Ok(slot) => slot,
        Err(e) => return e.into_response(),
    };
    let events = app.events.subscribe();
    let relayed = app.events.subscribe_relayed();
    let dropped = app.registry.ctx.metrics.events_dropped.clone();
    upgrade.on_upgrade(move |socket| async move {
        let mut slot = slot;
        forward(socket, events, relayed, dropped, &mut slot.evicted).await;
    })
}

async fn forward(
    mut socket: WebSocket,
    mut events: tokio::sync::broadcast::Receiver<crate::events::Event>,
    mut relayed: tokio::sync::broadcast::Receiver<std::sync::Arc<str>>,
    dropped: prometheus_client::metrics::counter::Counter,
    evicted: &mut tokio::sync::oneshot::Receiver<()>,
) {
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) => {
                    let Ok(text) = serde_json::to_string(&event) else { continue };
                    if socket.send(Message::text(text)).await.is_err() { return; }
                    if event == crate::events::Event::Goodbye {
                        // The server is going away: end the stream so shutdown need not wait.
                        let _ = socket.send(Message::Close(None)).await;
                        return;
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    dropped.inc_by(n);
                    tracing::warn!(dropped = n, "ws client lagged; events dropped");
                }
                Err(RecvError::Closed) => return,
            },
            // Other nodes' events, in a cluster.
            event = relayed.recv() => match event {
                Ok(text) => {
                    if socket.send(Message::text(text.as_ref())).await.is_err() { return; }
                }
                Err(RecvError::Lagged(n)) => {
                    dropped.inc_by(n);
                    tracing::warn!(dropped = n, "ws client lagged; relayed events dropped");
                }
                Err(RecvError::Closed) => return,
            },
            // An authenticated client needed this anonymous client's place.
            Ok(()) = &mut *evicted => {
                let close = CloseFrame { code: close_code::AGAIN, reason: "the node's event-stream clients are full".into() };
                let _ = socket.send(Message::Close(Some(close))).await;
                return;
            }
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

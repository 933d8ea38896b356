//! The bounds the API enforces itself: resolves in flight per guild and per node,
//! event-stream clients, and (optionally) requests per minute from one client address. Each
//! answers the contract's error body with 429 when reached; a slot is given back when its
//! guard is dropped, however the request ends.
//!
//! Event-stream clients that presented the API token are never turned away by anonymous
//! ones (allowed while `WS_AUTH` is off): when the node is full, the oldest anonymous
//! client is closed to make room for an authenticated one.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use parking_lot::Mutex;

use super::{ApiError, AppState};
use crate::config::Limits;
use crate::model::Id;

/// What the API counts against the node's limits.
pub struct ApiLimits {
    pub limits: Limits,
    resolves: Arc<Mutex<Resolves>>,
    event_clients: Arc<Mutex<EventClients>>,
    rate: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

/// The event-stream clients connected: authenticated ones counted, anonymous ones listed
/// oldest first with the means to close them.
#[derive(Default)]
struct EventClients {
    authenticated: usize,
    anonymous: VecDeque<(u64, tokio::sync::oneshot::Sender<()>)>,
    next_id: u64,
}

impl EventClients {
    fn total(&self) -> usize {
        self.authenticated + self.anonymous.len()
    }
}

#[derive(Default)]
struct Resolves {
    node: usize,
    per_guild: HashMap<Id, usize>,
}

impl ApiLimits {
    pub fn new(limits: Limits) -> Self {
        let rate =
            limits.requests_per_minute.and_then(NonZeroU32::new).map(|n| RateLimiter::keyed(Quota::per_minute(n)));
        Self { limits, resolves: Arc::default(), event_clients: Arc::default(), rate }
    }

    /// A slot for resolving an enqueue for `guild`.
    pub fn resolve_slot(&self, guild: Id) -> Result<ResolveSlot, ApiError> {
        let mut resolves = self.resolves.lock();
        if resolves.node >= self.limits.resolves_per_node {
            return Err(ApiError::limit(format!(
                "this node is resolving {} queries at once (RESOLVES_PER_NODE); try again shortly",
                self.limits.resolves_per_node
            )));
        }
        let for_guild = resolves.per_guild.get(&guild).copied().unwrap_or(0);
        if for_guild >= self.limits.resolves_per_guild {
            return Err(ApiError::limit(format!(
                "this guild already has {for_guild} queries being resolved (RESOLVES_PER_GUILD); wait for them"
            )));
        }
        resolves.node += 1;
        *resolves.per_guild.entry(guild).or_insert(0) += 1;
        Ok(ResolveSlot { guild, resolves: self.resolves.clone() })
    }

    /// A slot for one event-stream client; `authenticated` when it presented the API token.
    pub fn event_client(&self, authenticated: bool) -> Result<EventClientSlot, ApiError> {
        let mut clients = self.event_clients.lock();
        if clients.total() >= self.limits.event_clients {
            // The oldest anonymous client makes room; its stream is closed.
            let evicted = if authenticated { clients.anonymous.pop_front() } else { None };
            match evicted {
                Some((_, close)) => {
                    let _ = close.send(());
                }
                None => {
                    return Err(ApiError::limit(format!(
                        "{} event-stream clients are connected (MAX_EVENT_CLIENTS){}",
                        self.limits.event_clients,
                        if authenticated { "" } else { "; clients presenting the API token are still let in" }
                    )));
                }
            }
        }
        let (close, evicted) = tokio::sync::oneshot::channel();
        let id = clients.next_id;
        clients.next_id += 1;
        if authenticated {
            clients.authenticated += 1;
        } else {
            clients.anonymous.push_back((id, close));
        }
        Ok(EventClientSlot { id, authenticated, evicted, clients: self.event_clients.clone() })
    }

    /// Whether `client` may make another request now; else the error and the seconds until
    /// it may.
    fn admit(&self, client: IpAddr) -> Result<(), (ApiError, u64)> {
        let Some(rate) = &self.rate else { return Ok(()) };
        rate.check_key(&client).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let error = ApiError::limit(format!(
                "more than {} requests a minute from {client} (RATE_LIMIT_PER_MINUTE)",
                self.limits.requests_per_minute.unwrap_or_default()
            ));
            (error, wait.as_secs() + 1)
        })?;
        // Forget addresses whose bucket is full again, so the map does not grow without end.
        if rate.len() > 10_000 {
            rate.retain_recent();
        }
        Ok(())
    }
}

pub struct ResolveSlot {
    guild: Id,
    resolves: Arc<Mutex<Resolves>>,
}

impl Drop for ResolveSlot {
    fn drop(&mut self) {
        let mut resolves = self.resolves.lock();
        resolves.node = resolves.node.saturating_sub(1);
        if let Some(n) = resolves.per_guild.get_mut(&self.guild) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                resolves.per_guild.remove(&self.guild);
            }
        }
    }
}

pub struct EventClientSlot {
    id: u64,
    authenticated: bool,
    /// Resolves when an authenticated client took this anonymous client's place.
    pub evicted: tokio::sync::oneshot::Receiver<()>,
    clients: Arc<Mutex<EventClients>>,
}

impl Drop for EventClientSlot {
    fn drop(&mut self) {
        let mut clients = self.clients.lock();
        if self.authenticated {
            clients.authenticated = clients.authenticated.saturating_sub(1);
        } else {
            // An evicted client's place was already handed over.
            clients.anonymous.retain(|(id, _)| *id != self.id);
        }
    }
}

/// Middleware: the per-address request rate, when configured.
pub async fn rate_limit(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let client = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    if let Some(client) = client
        && let Err((error, seconds)) = app.limits.admit(client)
    {
        let mut response = error.into_response();
        response.headers_mut().insert("retry-after", HeaderValue::from(seconds));
        return response;
    }
    next.run(request).await
}

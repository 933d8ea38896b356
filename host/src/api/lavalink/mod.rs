//! The Lavalink v4 protocol beside the mesastream routes, on the same players: a client
//! library written for Lavalink connects here by changing its host name. On only when
//! `LAVALINK_PASSWORD` is set.
//!
//! Every route takes the password as the whole `Authorization` header (no scheme): missing
//! answers 401, wrong 403, both with an empty body, as Lavalink does. Every response carries
//! `Lavalink-Api-Version: 4`. Failures use Lavalink's error body (see [`error`]).

pub mod encoded_track;
mod error;
mod extract;
mod info;
mod persist;
mod player;
mod player_update;
mod players;
mod sessions;
mod tracks;
mod websocket;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, patch, post};

pub use error::LavalinkError;
pub use sessions::Sessions;

use super::AppState;
use crate::telemetry::process::CpuShare;

/// What the Lavalink routes share.
#[derive(Clone)]
pub struct LavalinkState {
    pub app: AppState,
    pub node: Arc<Node>,
}

/// This server as a Lavalink node.
pub struct Node {
    password: String,
    pub sessions: Arc<Sessions>,
    started: Instant,
    /// The process's CPU share, read at most every 10 s (Lavalink caches its own 30 s).
    cpu: CpuShare,
}

impl Node {
    pub fn new(password: String) -> Arc<Self> {
        Arc::new(Self {
            password,
            sessions: Arc::default(),
            started: Instant::now(),
            cpu: CpuShare::new(std::time::Duration::from_secs(10)),
        })
    }
}

/// The Lavalink routes; none when no password is configured.
pub fn router(app: AppState, password: Option<String>) -> Router {
    let Some(password) = password else { return Router::new() };
    let state = LavalinkState { app, node: Node::new(password) };
    tokio::spawn(persist::run(state.clone()));
    Router::new()
        // Lavalink answers these with an empty 200, so a v3 client fails at the upgrade.
        .route("/", get(empty))
        .route("/v3/websocket", get(empty))
        .route("/version", get(info::version))
        .route("/v4/info", get(info::info))
        .route("/v4/stats", get(info::stats))
        .route("/v4/loadtracks", get(tracks::load))
        .route("/v4/decodetrack", get(tracks::decode_one))
        .route("/v4/decodetracks", post(tracks::decode_many))
        .route("/v4/websocket", get(websocket::connect))
        .route("/v4/sessions/{session}", patch(sessions::update))
        .route("/v4/sessions/{session}/players", get(players::list))
        .route(
            "/v4/sessions/{session}/players/{guild}",
            get(players::get).patch(players::update).delete(players::destroy),
        )
        .route("/v4/routeplanner/status", get(info::route_planner_status))
        .route("/v4/routeplanner/free/address", post(info::route_planner_disabled))
        .route("/v4/routeplanner/free/all", post(info::route_planner_disabled))
        .route("/v4/{*rest}", any(not_found))
        .layer(middleware::from_fn(error::with_error_body))
        .layer(middleware::from_fn_with_state(state.clone(), require_password))
        .layer(middleware::map_response(api_version))
        .with_state(state)
}

async fn empty() -> StatusCode {
    StatusCode::OK
}

async fn not_found(request: Request) -> LavalinkError {
    LavalinkError::not_found(format!("no route for {} {}", request.method(), request.uri().path()))
}

async fn require_password(State(state): State<LavalinkState>, request: Request, next: Next) -> Response {
    let presented = request.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
    match presented {
        None => StatusCode::UNAUTHORIZED.into_response(),
        Some(p) if !super::same(p, state.node.password.as_bytes()) => StatusCode::FORBIDDEN.into_response(),
        Some(_) => next.run(request).await,
    }
}

async fn api_version(mut response: Response) -> Response {
    response.headers_mut().insert("Lavalink-Api-Version", HeaderValue::from_static("4"));
    response
}

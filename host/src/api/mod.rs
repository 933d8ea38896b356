//! HTTP and WebSocket surface: the mesastream-compatible routes, bearer auth and the event
//! stream.

pub mod cluster;
mod error;
mod events;
mod extract;
mod filters;
pub mod ingest;
pub mod lavalink;
pub mod limits;
pub mod listen;
mod players;
pub mod serve;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};

pub use error::ApiError;

use crate::events::EventBus;
use crate::player::Registry;

/// Largest accepted request body, as the original (actix's default).
pub const BODY_LIMIT: usize = 2 * 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub events: EventBus,
    pub auth_token: Arc<str>,
    /// Whether `/ws` requires the token too.
    pub ws_auth: bool,
    pub limits: Arc<limits::ApiLimits>,
    pub listening: Arc<listen::Listening>,
    /// Source clients' logins and uploads.
    pub ingest: Arc<ingest::source::Ingest>,
    /// The other nodes, in a cluster.
    pub peers: Option<Arc<cluster::Peers>>,
}

/// Every route: the mesastream contract's, and Lavalink's when `lavalink_password` is set.
pub fn router(state: AppState, lavalink_password: Option<String>) -> Router {
    let lavalink = lavalink::router(state.clone(), lavalink_password);
    let players = Router::new()
        .route("/health", get(health))
        .route("/players", get(players::list).post(players::create))
        .route("/players/{id}", get(players::get).delete(players::destroy))
        .route("/players/{id}/status", get(players::get))
        .route("/players/{id}/connection", put(players::update_connection))
        .route("/players/{id}/queue", get(players::get_queue).post(players::enqueue).delete(players::clear_queue))
        .route("/players/{id}/play", post(players::play))
        .route("/players/{id}/pause", post(players::pause))
        .route("/players/{id}/resume", post(players::resume))
        .route("/players/{id}/skip", post(players::skip))
        .route("/players/{id}/stop", post(players::stop))
        .route("/players/{id}/seek", post(players::seek))
        .route("/players/{id}/volume", post(players::volume))
        .route("/players/{id}/equalizer", post(filters::equalizer))
        .route("/players/{id}/filters", get(filters::get_filters).put(filters::put_filters))
        .route("/plugins", get(filters::plugins))
        .route("/players/{id}/current", get(players::current))
        .route("/players/{id}/playlists/{name}", post(players::save_playlist))
        .route("/players/{id}/playlists/{name}/enqueue", post(players::enqueue_playlist))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/nodes", get(cluster::nodes))
        .route("/nodes/{node}/drain", post(cluster::drain))
        .route("/players/{id}/migrate", post(cluster::migrate))
        .route("/cluster/players/{id}/take", post(cluster::take))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), cluster::forward_to_owner))
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    let mesastream = Router::new().route("/ws", get(events::stream)).merge(players).with_state(state.clone());
    Router::new()
        .merge(lavalink)
        .merge(
            listen::router(state.clone())
                .layer(middleware::from_fn_with_state(state.clone(), cluster::forward_to_owner)),
        )
        .merge(ingest::router(state.clone()))
        .merge(mesastream)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(state.clone(), limits::rate_limit))
        .layer(middleware::from_fn_with_state(state, time_request))
        .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(crate::telemetry::tracing::request_span))
}

async fn health() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// 200 `{"status":"ready"}` when the state store answers, else 503 `{"status":"degraded"}`.
async fn ready(State(state): State<AppState>) -> Response {
    match state.registry.ctx.store.ping().await {
        Ok(()) => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (axum::http::StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"status": "degraded"})))
                .into_response()
        }
    }
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(format!("no route for {} {}", request.method(), request.uri().path()))
}

/// The Prometheus text exposition.
async fn metrics(State(state): State<AppState>) -> Response {
    let ctx = &state.registry.ctx;
    let players = state.registry.all();
    let playing = crate::player::count_playing(&players).await;
    ctx.metrics.players.set(players.len() as i64);
    ctx.metrics.playing.set(playing as i64);
    ctx.metrics.rewind_bytes.set(ctx.rewind_budget.held() as i64);
    (
        [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        ctx.metrics.encode(),
    )
        .into_response()
}

/// Records each request's latency under its route pattern (not the raw path, which would
/// explode the label set).
async fn time_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(request).await;
    let labels = crate::telemetry::metrics::RequestLabels { method, route, status: response.status().as_u16() };
    state.registry.ctx.metrics.requests.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    response
}

/// Whether a presented token is the configured one, in constant time and without telling
/// its length: the digests (always 32 bytes) are compared with `subtle`.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}

/// Whether the request carries the bearer token.
pub(crate) fn bearer_ok(headers: &axum::http::HeaderMap, auth_token: &str) -> bool {
    bearer(headers).is_some_and(|t| same(t.trim().as_bytes(), auth_token.as_bytes()))
}

fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
}

/// The bearer token, or the operator page's session for what the page does: reading, and
/// asking for listen tokens.
async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let page_may = request.method() == axum::http::Method::GET || request.uri().path() == "/listen-tokens";
    match bearer(request.headers()) {
        None if page_may
            && listen::ui::session_ok(request.headers(), &state.auth_token, &state.registry.ctx.store).await =>
        {
            next.run(request).await
        }
        None => ApiError::unauthorized().into_response(),
        Some(token) if !same(token.trim().as_bytes(), state.auth_token.as_bytes()) => {
            ApiError::forbidden().into_response()
        }
        Some(_) => next.run(request).await,
    }
}

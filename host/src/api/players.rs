//! The player routes of the mesastream contract.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, PlayerId};
use crate::audio::fetch;
use crate::model::{EnqueueRequest, PlayerSnapshot, Track, VoiceBridgePayload};
use crate::player::track;

type ApiResult<T> = Result<T, ApiError>;

pub async fn create(
    State(app): State<AppState>,
    JsonBody(payload): JsonBody<VoiceBridgePayload>,
) -> ApiResult<impl IntoResponse> {
    if payload.gateway_url.trim().is_empty() {
        return Err(ApiError::bad_request("gateway_url must not be empty"));
    }
    let snapshot = app.registry.create(payload).await?;
    Ok((StatusCode::CREATED, Json(snapshot)))
}

pub async fn list(State(app): State<AppState>) -> Json<Vec<PlayerSnapshot>> {
    let mut all = Vec::new();
    for player in app.registry.list() {
        all.push(player.snapshot().await);
    }
    Json(all)
}

pub async fn get(State(app): State<AppState>, PlayerId(id): PlayerId) -> ApiResult<Json<PlayerSnapshot>> {
    Ok(Json(app.registry.get(id)?.snapshot().await))
}

pub async fn destroy(State(app): State<AppState>, PlayerId(id): PlayerId) -> ApiResult<StatusCode> {
    app.registry.destroy(id, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn enqueue(
    State(app): State<AppState>,
    PlayerId(id): PlayerId,
    JsonBody(request): JsonBody<EnqueueRequest>,
) -> ApiResult<Json<PlayerSnapshot>> {
    // As in the original, URL problems are reported before the player lookup.
    let url = track::parse_url(&request.url).map_err(ApiError::source_unavailable)?;
    let player = app.registry.get(id)?;
    let client = app.registry.ctx.http.clone();
    let target = url.to_string();
    let checked = app.registry.ctx.media.spawn(async move { fetch::check(&client, &target).await });
    checked.await.map_err(ApiError::internal)?.map_err(|e| ApiError::source_unavailable(format!("{url}: {e}")))?;
    let track: Track = track::direct_track(&url, &request.url);
    let mut state = player.state.lock().await;
    tracing::info!(player = %id, track = %track.id, url = %track.source_url, "track_enqueued");
    player.enqueue(&mut state, track);
    Ok(Json(player.snapshot_of(&state)))
}

pub async fn get_queue(State(app): State<AppState>, PlayerId(id): PlayerId) -> ApiResult<Json<Vec<Track>>> {
    let player = app.registry.get(id)?;
    let state = player.state.lock().await;
    Ok(Json(state.queue.iter().cloned().collect()))
}

pub async fn play(State(app): State<AppState>, PlayerId(id): PlayerId) -> ApiResult<Json<PlayerSnapshot>> {
    let player = app.registry.get(id)?;
    let mut state = player.state.lock().await;
    player.play(&mut state);
    Ok(Json(player.snapshot_of(&state)))
}

pub async fn stop(State(app): State<AppState>, PlayerId(id): PlayerId) -> ApiResult<Json<PlayerSnapshot>> {
    let player = app.registry.get(id)?;
    let mut state = player.state.lock().await;
    player.stop(&mut state);
    Ok(Json(player.snapshot_of(&state)))
}

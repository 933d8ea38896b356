//! Plugins and per-player filter chains: `GET /plugins`, `GET`/`PUT /players/{id}/filters`
//! and the contract's `/players/{id}/equalizer`, which drives the 3-band equalizer filter.

use axum::Json;
use axum::extract::State;

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, PlayerId};
use crate::model::{Equalizer, FilterEntry, PlayerSnapshot};
use crate::player::filter_check::FilterCheckError;
use crate::plugins::PluginInfo;

type ApiResult<T> = Result<T, ApiError>;

/// Longest chain a player may have.
const MAX_CHAIN: usize = 16;

pub async fn plugins(State(app): State<AppState>) -> Json<Vec<PluginInfo>> {
    Json(app.registry.ctx.pipeline.plugins.as_ref().map(|h| h.info()).unwrap_or_default())
}

pub async fn get_filters(State(app): State<AppState>, PlayerId(id): PlayerId) -> ApiResult<Json<Vec<FilterEntry>>> {
    let player = app.registry.get(id)?;
    Ok(Json(player.lock().await.filters().to_vec()))
}

pub async fn put_filters(
    State(app): State<AppState>,
    PlayerId(id): PlayerId,
    JsonBody(chain): JsonBody<Vec<FilterEntry>>,
) -> ApiResult<Json<Vec<FilterEntry>>> {
    if chain.len() > MAX_CHAIN {
        return Err(ApiError::bad_request(format!("a chain holds at most {MAX_CHAIN} filters")));
    }
    let player = app.registry.get(id)?;
    validate(&app, &chain).await?;
    let mut guard = player.lock().await;
    guard.set_filters(chain);
    Ok(Json(guard.commit().filters))
}

pub async fn equalizer(
    State(app): State<AppState>,
    PlayerId(id): PlayerId,
    JsonBody(request): JsonBody<Equalizer>,
) -> ApiResult<Json<PlayerSnapshot>> {
    if ![request.bass, request.mid, request.treble].iter().all(|b| (0.0..=2.0).contains(b)) {
        return Err(ApiError::bad_request("equalizer bands must be between 0.0 and 2.0"));
    }
    let player = app.registry.get(id)?;
    if !request.is_flat() {
        validate(&app, &[request.entry()]).await?;
    }
    let mut guard = player.lock().await;
    guard.set_equalizer(request);
    Ok(Json(guard.commit()))
}

/// The chain checked by the plugins themselves, in the contract's errors.
async fn validate(app: &AppState, chain: &[FilterEntry]) -> ApiResult<()> {
    app.registry.check_filters(chain).await.map_err(|e| match e {
        FilterCheckError::NoPlugins | FilterCheckError::Unavailable { .. } => ApiError::service_unavailable(e),
        FilterCheckError::Unknown { .. } | FilterCheckError::Refused { .. } => ApiError::bad_request(e),
    })
}

//! Plugins and per-player filter chains: `GET /plugins`, `GET`/`PUT /players/{id}/filters`
//! and the contract's `/players/{id}/equalizer`, which drives the 3-band equalizer filter.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, PlayerId};
use crate::model::{Equalizer, FilterEntry, PlayerSnapshot};
use crate::plugins::filter::{CreateError, FilterInstance};
use crate::plugins::{PluginHost, PluginInfo};

type ApiResult<T> = Result<T, ApiError>;

/// Longest chain a player may have.
const MAX_CHAIN: usize = 16;

pub async fn plugins(State(app): State<AppState>) -> Json<Vec<PluginInfo>> {
    Json(app.registry.ctx.pipeline.plugins.as_ref().map(|h| h.info()).unwrap_or_default())
}

pub async fn get_filters(State(app): State<AppState>, PlayerId(id): PlayerId) -> ApiResult<Json<Vec<FilterEntry>>> {
    let player = app.registry.get(id)?;
    Ok(Json(player.state.lock().await.filters.clone()))
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
    let mut state = player.state.lock().await;
    player.set_filters(&mut state, chain);
    player.persist(&state);
    Ok(Json(state.filters.clone()))
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
    let mut state = player.state.lock().await;
    player.set_equalizer(&mut state, request);
    player.persist(&state);
    Ok(Json(player.snapshot_of(&state)))
}

/// Every filter must come from a loaded plugin and accept its config, which the plugin
/// itself checks (an instance is created and dropped, off the API's threads).
async fn validate(app: &AppState, chain: &[FilterEntry]) -> ApiResult<()> {
    if chain.is_empty() {
        return Ok(());
    }
    let Some(host) = app.registry.ctx.pipeline.plugins.clone() else {
        return Err(ApiError::service_unavailable("no filter plugins are loaded (PLUGINS_DIR is not set)"));
    };
    let chain = chain.to_vec();
    let checked = app.registry.ctx.media.spawn_blocking(move || check_chain(&host, &chain));
    checked.await.map_err(ApiError::internal)?
}

fn check_chain(host: &Arc<PluginHost>, chain: &[FilterEntry]) -> ApiResult<()> {
    for entry in chain {
        let Some(plugin) = host.filter(&entry.name) else {
            let known: Vec<String> =
                host.plugins().iter().flat_map(|p| p.manifest.filters.iter().map(|f| f.name.clone())).collect();
            return Err(ApiError::bad_request(format!(
                "unknown filter {:?} (loaded: {})",
                entry.name,
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            )));
        };
        match FilterInstance::create(&plugin, &entry.name, &entry.config.to_string()) {
            Ok(_) => {}
            Err(CreateError::Refused(why)) => {
                return Err(ApiError::bad_request(format!("filter {}: {why}", entry.name)));
            }
            Err(e) => return Err(ApiError::service_unavailable(format!("filter {}: {e}", entry.name))),
        }
    }
    Ok(())
}

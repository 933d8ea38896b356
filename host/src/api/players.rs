//! The player routes of the mesastream contract.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::cluster;
use super::error::ApiError;
use super::extract::{JsonBody, PlayerId};
use crate::audio::pipeline;
use crate::model::{
    CurrentTrackResponse, EnqueueRequest, PlayerSnapshot, PlaylistSnapshot, SeekRequest, Track, VoiceBridgePayload,
    VolumeRequest,
};
use crate::player::KnownSource;
use crate::player::lookup::DirectError;
use crate::player::{PlayerGuard, format_ms, track};
use crate::plugins::resolver::{ResolveFailure, Resolved};

type ApiResult<T> = Result<T, ApiError>;

/// Tracks to enqueue, with the stream locators already known for some of them (by track id).
type QueueEntries = (Vec<Track>, Vec<(String, KnownSource)>);

/// `POST /players[?node=ID]`: in a cluster, `node` pins the player to that node.
pub async fn create(
    State(app): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    JsonBody(payload): JsonBody<VoiceBridgePayload>,
) -> ApiResult<Response> {
    check_gateway_url(&payload.gateway_url)?;
    let pinned = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(name, _)| name == "node")
        .map(|(_, node)| node.into_owned());
    if let Some(node) = cluster::placement(&app, &headers, payload.player_id, pinned.as_deref()).await? {
        return Ok(cluster::create_on(&app, &node, &headers, &payload).await);
    }
    let snapshot = app.registry.create(payload).await?;
    Ok((StatusCode::CREATED, Json(snapshot)).into_response())
}

/// Every player (in a cluster, every node's), by id.
pub async fn list(State(app): State<AppState>, headers: HeaderMap) -> Json<Vec<PlayerSnapshot>> {
    let mut all = Vec::new();
    for player in app.registry.list() {
        all.push(player.snapshot().await);
    }
    all.extend(cluster::players_elsewhere(&app, &headers).await);
    all.sort_by_key(|p| p.player_id);
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
    let query = request.url.trim().to_string();
    let (player, (tracks, locators)) = match track::live_mount(&query) {
        Some(mount) => {
            // As with links, what the query names is checked before the player.
            let track = live_track(&app, mount)?;
            (app.registry.get(id)?, (vec![track], Vec::new()))
        }
        None => {
            let resolvers = app.registry.ctx.pipeline.plugins.clone().filter(|h| h.has_resolvers());
            // As in the original, URL problems are reported before the player lookup.
            let resolvable = resolvers.as_ref().is_some_and(|h| h.claims(&query));
            if !resolvable {
                track::parse_url(&query).map_err(ApiError::source_unavailable)?;
            }
            let player = app.registry.get(id)?;
            let _slot = app.limits.resolve_slot(player.guild_id)?;
            let entries = match resolvers {
                Some(host) => resolve(&app, host, query, player.guild_id).await?,
                None => (vec![direct(&app, &query).await?], Vec::new()),
            };
            (player, entries)
        }
    };
    let mut guard = player.lock().await;
    for track in &tracks {
        tracing::info!(player = %id, track = %track.id, url = %track.source_url, "track_enqueued");
    }
    guard.enqueue(tracks, locators).map_err(ApiError::limit)?;
    Ok(Json(guard.commit()))
}

/// What `query` names, found as an enqueue finds it (for routes that take a query but play
/// nothing).
pub(super) async fn find(app: &AppState, query: &str) -> ApiResult<QueueEntries> {
    match app.registry.resolvers_for(query) {
        Some(host) => {
            let resolved = app.registry.resolve(host, query, None).await.map_err(ApiError::internal)?;
            queue_entries(resolved.map_err(failure_error)?, query, app.limits.limits.playlist_tracks)
        }
        None => Ok((vec![direct(app, query).await?], Vec::new())),
    }
}

/// A track following live mount `mount` (`live:{mount}`), which must exist.
fn live_track(app: &AppState, mount: &str) -> ApiResult<Track> {
    let found = app.registry.ctx.live.get(mount);
    let found = found.ok_or_else(|| ApiError::source_unavailable(format!("no live mount named {mount:?}")))?;
    Ok(track::live_track(mount, found.title().as_deref()))
}

/// A direct media link, checked natively (no resolver plugins loaded).
async fn direct(app: &AppState, raw: &str) -> ApiResult<Track> {
    app.registry.direct_track(raw).await.map_err(|e| match e {
        DirectError::Url(e) => ApiError::source_unavailable(e),
        DirectError::Unavailable { .. } => ApiError::source_unavailable(e),
        DirectError::Internal(e) => ApiError::internal(e),
    })
}

/// Resolves through the plugins, off the API's threads. A search enqueues its first
/// result; a playlist every entry.
async fn resolve(
    app: &AppState,
    host: std::sync::Arc<crate::plugins::PluginHost>,
    query: String,
    guild: crate::model::Id,
) -> ApiResult<QueueEntries> {
    let resolved = app.registry.resolve(host, &query, Some(guild)).await.map_err(ApiError::internal)?;
    queue_entries(resolved.map_err(failure_error)?, &query, app.limits.limits.playlist_tracks)
}

/// The contract's error for a resolver failure.
fn failure_error(e: ResolveFailure) -> ApiError {
    match e {
        ResolveFailure::Unsupported | ResolveFailure::Unavailable(_) => ApiError::source_unavailable(e),
        ResolveFailure::Parse(_) => ApiError::metadata_parse(e),
        ResolveFailure::Busy(_) | ResolveFailure::Failed { .. } => ApiError::service_unavailable(e),
    }
}

/// Queue entries for what `query` resolved to, with the locators already known. A playlist
/// longer than `max_tracks` is refused whole.
fn queue_entries(resolved: Resolved, query: &str, max_tracks: usize) -> ApiResult<QueueEntries> {
    let single = matches!(resolved, Resolved::Track(_));
    let search = matches!(resolved, Resolved::Search(_));
    let mut found = resolved.into_tracks();
    if search {
        found.truncate(1);
    }
    if found.is_empty() {
        return Err(ApiError::source_unavailable(format!("nothing found for {query}")));
    }
    if found.len() > max_tracks {
        return Err(ApiError::payload_too_large(format!(
            "{query} has {} tracks; at most {max_tracks} can be enqueued at once (MAX_PLAYLIST_TRACKS)",
            found.len()
        )));
    }
    let mut tracks = Vec::with_capacity(found.len());
    let mut locators = Vec::new();
    for r in found {
        let source_url = if single { query.to_string() } else { r.uri.clone() };
        let known = r.locator.clone().map(|locator| KnownSource { locator, cache_key: pipeline::cache_key(&r) });
        let track = track::resolved_track(r, source_url);
        locators.extend(known.map(|k| (track.id.clone(), k)));
        tracks.push(track);
    }
    Ok((tracks, locators))
}

pub async fn get_queue(State(app): State<AppState>, PlayerId(id): PlayerId) -> ApiResult<Json<Vec<Track>>> {
    let player = app.registry.get(id)?;
    Ok(Json(player.lock().await.queue().cloned().collect()))
}

pub async fn play(State(app): State<AppState>, PlayerId(id): PlayerId) -> ApiResult<Json<PlayerSnapshot>> {
    let player = app.registry.get(id)?;
    app.registry.ensure_voice(&player).await?;
    let mut guard = player.lock().await;
    guard.play();
    Ok(Json(guard.commit()))
}

pub async fn stop(State(app): State<AppState>, PlayerId(id): PlayerId) -> ApiResult<Json<PlayerSnapshot>> {
    control(&app, id, |p| p.stop()).await
}

/// Runs a control that cannot fail on the player's state and answers with the snapshot.
async fn control(
    app: &AppState,
    id: crate::model::Id,
    act: impl FnOnce(&mut PlayerGuard<'_>),
) -> ApiResult<Json<PlayerSnapshot>> {
    let player = app.registry.get(id)?;
    let mut guard = player.lock().await;
    act(&mut guard);
    Ok(Json(guard.commit()))
}

pub async fn clear_queue(State(app): State<AppState>, PlayerId(id): PlayerId) -> ApiResult<Json<PlayerSnapshot>> {
    control(&app, id, |p| p.clear_queue()).await
}

pub async fn pause(State(app): State<AppState>, PlayerId(id): PlayerId) -> ApiResult<Json<PlayerSnapshot>> {
    control(&app, id, |p| p.set_paused(true)).await
}

pub async fn resume(State(app): State<AppState>, PlayerId(id): PlayerId) -> ApiResult<Json<PlayerSnapshot>> {
    control(&app, id, |p| p.set_paused(false)).await
}

pub async fn skip(State(app): State<AppState>, PlayerId(id): PlayerId) -> ApiResult<Json<PlayerSnapshot>> {
    let player = app.registry.get(id)?;
    let mut guard = player.lock().await;
    // As in the original, the answer shows the player before the skip.
    let before = guard.snapshot();
    let advance = guard.skip();
    drop(guard);
    app.registry.after(&player, advance).await;
    Ok(Json(before))
}

pub async fn seek(
    State(app): State<AppState>,
    PlayerId(id): PlayerId,
    JsonBody(request): JsonBody<SeekRequest>,
) -> ApiResult<Json<PlayerSnapshot>> {
    let player = app.registry.get(id)?;
    let mut guard = player.lock().await;
    let Some(current) = guard.current() else {
        return Err(ApiError::bad_request("no track is playing"));
    };
    let duration = current.metadata.duration_ms;
    if duration > 0 && request.position_ms > duration {
        return Err(ApiError::bad_request(format!(
            "seek position {} exceeds track duration {}",
            format_ms(request.position_ms),
            format_ms(duration)
        )));
    }
    tracing::info!(player = %id, position_ms = request.position_ms, "seek_started");
    guard.seek(request.position_ms);
    Ok(Json(guard.commit()))
}

pub async fn volume(
    State(app): State<AppState>,
    PlayerId(id): PlayerId,
    JsonBody(request): JsonBody<VolumeRequest>,
) -> ApiResult<Json<PlayerSnapshot>> {
    if !(0.0..=2.0).contains(&request.volume) {
        return Err(ApiError::bad_request("volume must be between 0.0 and 2.0"));
    }
    control(&app, id, |p| p.set_volume(request.volume)).await
}

pub async fn current(
    State(app): State<AppState>,
    PlayerId(id): PlayerId,
) -> ApiResult<Json<Option<CurrentTrackResponse>>> {
    let player = app.registry.get(id)?;
    let guard = player.lock().await;
    let Some(track) = guard.current().cloned() else { return Ok(Json(None)) };
    let position_ms = guard.position_ms();
    let duration_ms = track.metadata.duration_ms;
    Ok(Json(Some(CurrentTrackResponse {
        track,
        position_ms,
        duration_ms,
        position: format_ms(position_ms),
        duration: format_ms(duration_ms),
        remaining: format_ms(duration_ms.saturating_sub(position_ms)),
    })))
}

pub async fn update_connection(
    State(app): State<AppState>,
    PlayerId(id): PlayerId,
    JsonBody(payload): JsonBody<VoiceBridgePayload>,
) -> ApiResult<Json<PlayerSnapshot>> {
    check_gateway_url(&payload.gateway_url)?;
    Ok(Json(app.registry.update_connection(id, payload).await?))
}

/// The voice gateway is dialled verbatim, so it must be a WebSocket URL: anything else is
/// the caller's mistake (400), not an unreachable gateway (503).
fn check_gateway_url(raw: &str) -> ApiResult<()> {
    if raw.trim().is_empty() {
        return Err(ApiError::bad_request("gateway_url must not be empty"));
    }
    // Checked as the WebSocket client will read it (an HTTP URI), not only as a URL.
    let dialable = raw.parse::<axum::http::Uri>().is_ok();
    match url::Url::parse(raw) {
        Ok(url) if dialable && matches!(url.scheme(), "ws" | "wss") && url.host_str().is_some() => Ok(()),
        _ => Err(ApiError::bad_request("gateway_url must be a ws:// or wss:// URL")),
    }
}

/// A playlist name from the path: what the original accepts, within reason.
fn playlist_name(raw: &str) -> ApiResult<String> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request("playlist names are 1 to 100 printable characters"));
    }
    Ok(name.to_string())
}

pub async fn save_playlist(
    State(app): State<AppState>,
    PlayerId(id): PlayerId,
    axum::extract::Path((_, raw)): axum::extract::Path<(String, String)>,
) -> ApiResult<Json<PlaylistSnapshot>> {
    let name = playlist_name(&raw)?;
    let player = app.registry.get(id)?;
    let tracks: Vec<Track> = player.lock().await.queue().cloned().collect();
    let limit = app.limits.limits.playlist_tracks;
    if tracks.len() > limit {
        return Err(ApiError::payload_too_large(format!(
            "the queue has {} tracks; a playlist holds at most {limit} (MAX_PLAYLIST_TRACKS)",
            tracks.len()
        )));
    }
    let playlist = PlaylistSnapshot { player_id: id, name, tracks };
    app.registry.ctx.store.save_playlist(player.guild_id, &playlist).await.map_err(ApiError::store_unavailable)?;
    Ok(Json(playlist))
}

pub async fn enqueue_playlist(
    State(app): State<AppState>,
    PlayerId(id): PlayerId,
    axum::extract::Path((_, raw)): axum::extract::Path<(String, String)>,
) -> ApiResult<Json<PlayerSnapshot>> {
    let name = playlist_name(&raw)?;
    let player = app.registry.get(id)?;
    // The saved tracks themselves, with the ids they were saved with (as the original);
    // each is resolved again when it starts.
    let stored = app.registry.ctx.store.playlist(player.guild_id, &name).await;
    let playlist = stored
        .map_err(ApiError::store_unavailable)?
        .ok_or_else(|| ApiError::not_found(format!("playlist {name} not found")))?;
    let mut guard = player.lock().await;
    guard.enqueue(playlist.tracks, Vec::new()).map_err(ApiError::limit)?;
    Ok(Json(guard.commit()))
}

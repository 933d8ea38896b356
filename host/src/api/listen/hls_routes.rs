//! HLS of a player and of a cached track: playlists, init segments and media segments, each
//! let in by its listen token.

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::response::Response;
use serde::Deserialize;

use super::tokens::{Format, Grant, Subject};
use super::{
    ApiResult, DEFAULT_TTL_SECS, PREPARE_TIMEOUT, TokenQuery, count, hls, mp4_response, playlist_response,
    segment_number, token_suffix,
};
use crate::api::extract::PlayerId;
use crate::api::{ApiError, AppState};
use crate::model::Id;

/// An HLS request for a player, let in: the player, and the token it came with (carried into
/// a playlist's URIs).
pub(super) struct PlayerHls {
    id: Id,
    token: Option<String>,
}

/// The same for a cached track, by its id.
pub(super) struct TrackHls {
    id: String,
    token: Option<String>,
}

/// Lets an HLS request for `subject` in (see [`Listening::admit`]); the token it came with.
pub(super) async fn admit_hls(parts: &mut Parts, app: &AppState, subject: &Subject) -> ApiResult<Option<String>> {
    let Query(query) =
        Query::<TokenQuery>::from_request_parts(parts, app).await.map_err(|e| ApiError::bad_request(e.body_text()))?;
    app.listening.admit(app, &parts.headers, query.token.as_deref(), subject, Format::Hls)?;
    Ok(query.token)
}

impl FromRequestParts<AppState> for PlayerHls {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> ApiResult<Self> {
        let PlayerId(id) = PlayerId::from_request_parts(parts, app).await?;
        Ok(Self { id, token: admit_hls(parts, app, &Subject::Player(id)).await? })
    }
}

impl FromRequestParts<AppState> for TrackHls {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> ApiResult<Self> {
        let Path(params) = Path::<std::collections::HashMap<String, String>>::from_request_parts(parts, app)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        let id = params.get("track").cloned().unwrap_or_default();
        let token = admit_hls(parts, app, &Subject::Track(id.clone())).await?;
        Ok(Self { id, token })
    }
}

/// The segment a path names (`<n>.m4s`).
pub(super) fn segment_of(parts: &Path<std::collections::HashMap<String, String>>) -> ApiResult<u64> {
    segment_number(parts.get("segment").map_or("", String::as_str))
}

pub(super) async fn player_playlist(State(app): State<AppState>, hls: PlayerHls) -> ApiResult<Response> {
    let player = app.registry.get(hls.id)?;
    count(&app, "playlist", "player");
    let now = app.listening.scheduler.now_tick();
    let text = hls::live_playlist(player.output.recording(), now, &token_suffix(hls.token.as_deref()));
    Ok(playlist_response(text))
}

pub(super) async fn player_init(State(app): State<AppState>, hls: PlayerHls) -> ApiResult<Response> {
    app.registry.get(hls.id)?;
    init_response(&app, "player")
}

/// The init segment: the same for every player and track (stereo Opus at 48 kHz).
pub(super) fn init_response(app: &AppState, source: &'static str) -> ApiResult<Response> {
    count(app, "init", source);
    Ok(mp4_response(super::fmp4::init_segment().map_err(ApiError::internal)?, "max-age=3600"))
}

pub(super) fn segment_error(e: hls::HlsError) -> ApiError {
    match e {
        hls::HlsError::Gone(_) => ApiError::not_found(e),
        other => ApiError::internal(other),
    }
}

pub(super) async fn player_segment(
    State(app): State<AppState>,
    hls: PlayerHls,
    path: Path<std::collections::HashMap<String, String>>,
) -> ApiResult<Response> {
    let n = segment_of(&path)?;
    let player = app.registry.get(hls.id)?;
    count(&app, "segment", "player");
    let now = app.listening.scheduler.now_tick();
    let bytes = hls::live_segment(player.output.recording(), now, n).map_err(segment_error)?;
    Ok(mp4_response(bytes, "max-age=600"))
}

#[derive(Deserialize)]
pub(super) struct TrackQuery {
    query: Option<String>,
    token: Option<String>,
}

/// On-demand HLS by query: the track is found as an enqueue finds it, cached (filled now if
/// it is not), and its playlist points at the track's id form with a token for that id.
pub(super) async fn query_playlist(
    State(app): State<AppState>,
    Query(query): Query<TrackQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let text = query.query.as_deref().map(str::trim).filter(|q| !q.is_empty());
    let text = text.ok_or_else(|| ApiError::bad_request("query is required (a link or a search)"))?;
    let grant = app.listening.admit(&app, &headers, query.token.as_deref(), &Subject::query(text), Format::Hls)?;
    let (tracks, mut known) = crate::api::players::find(&app, text).await?;
    let track =
        tracks.into_iter().next().ok_or_else(|| ApiError::source_unavailable(format!("{text} names no track")))?;
    let source = known.iter().position(|(id, _)| *id == track.id).map(|at| known.swap_remove(at).1);
    // The fill goes on if this request gives up waiting: asking again finds it further on.
    let registry = app.registry.clone();
    let preparing = tokio::spawn(async move { registry.prepare(&track, source).await });
    let id = match tokio::time::timeout(PREPARE_TIMEOUT, preparing).await {
        Ok(Ok(Ok(id))) => id,
        Ok(Ok(Err(e))) => return Err(ApiError::source_unavailable(e)),
        Ok(Err(e)) => return Err(ApiError::internal(e)),
        Err(_) => return Err(ApiError::service_unavailable("the track is still being cached; ask again")),
    };
    // Segments are reached by the track's id, with a token for it that ends with this one
    // (or in an hour, for a request let in by the bearer token).
    let suffix = if app.listening.public {
        String::new()
    } else {
        let expires = grant.map_or_else(|| crate::wall_clock::unix_secs() + DEFAULT_TTL_SECS, |g| g.expires);
        let token =
            app.listening.signer.sign(&Grant { subject: Subject::Track(id.clone()), format: Format::Hls, expires });
        token_suffix(Some(&token))
    };
    track_playlist_text(&app, &id, &format!("/tracks/{id}/hls/"), &suffix).await
}

pub(super) async fn track_playlist_text(app: &AppState, id: &str, prefix: &str, suffix: &str) -> ApiResult<Response> {
    let cached = open_cached(app, id).await?;
    count(app, "playlist", "track");
    Ok(playlist_response(hls::track_playlist(&cached.index, prefix, suffix)))
}

pub(super) async fn open_cached(app: &AppState, id: &str) -> ApiResult<crate::cache::store::CachedTrack> {
    let cache = app.registry.ctx.pipeline.cache.clone().ok_or_else(|| ApiError::not_found("the audio cache is off"))?;
    let owned = id.to_string();
    tokio::task::spawn_blocking(move || cache.open_by_id(&owned))
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("track {id} is not cached")))
}

pub(super) async fn track_playlist(State(app): State<AppState>, hls: TrackHls) -> ApiResult<Response> {
    track_playlist_text(&app, &hls.id, "", &token_suffix(hls.token.as_deref())).await
}

pub(super) async fn track_init(State(app): State<AppState>, hls: TrackHls) -> ApiResult<Response> {
    open_cached(&app, &hls.id).await?;
    init_response(&app, "track")
}

pub(super) async fn track_segment(
    State(app): State<AppState>,
    hls: TrackHls,
    path: Path<std::collections::HashMap<String, String>>,
) -> ApiResult<Response> {
    let n = segment_of(&path)?;
    let mut cached = open_cached(&app, &hls.id).await?;
    count(&app, "segment", "track");
    let bytes = tokio::task::spawn_blocking(move || hls::track_segment(&cached.index, &mut cached.reader, n))
        .await
        .map_err(ApiError::internal)?
        .map_err(segment_error)?;
    Ok(mp4_response(bytes, "max-age=86400"))
}

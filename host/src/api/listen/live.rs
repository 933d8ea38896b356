//! Listening to a live mount: the same Icecast-style stream and live HLS as a player's, over
//! the mount's own recording (`/live/{mount}/listen`, `/live/{mount}/hls/…`).

use std::collections::HashMap;
use std::sync::Arc;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::response::Response;

use super::hls_routes::admit_hls;
use super::hub::{Audience, Who};
use super::tokens::Subject;
use super::{ApiResult, ListenQuery, count, hls, listen_params, mp4_response, playlist_response};
use crate::api::{ApiError, AppState};
use crate::live::Mount;

fn mount(app: &AppState, name: &str) -> ApiResult<Arc<Mount>> {
    app.registry.ctx.live.get(name).ok_or_else(|| ApiError::not_found(format!("no live mount named {name:?}")))
}

pub(super) async fn listen(
    State(app): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<ListenQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (format, rewind_secs) = listen_params(&query)?;
    app.listening.admit(&app, &headers, query.token.as_deref(), &Subject::Mount(name.clone()), format)?;
    let mount = mount(&app, &name)?;
    let recording = mount.recording().clone();
    let audience = Audience::Mount(mount.name.clone());
    app.listening.open_stream(
        &app,
        recording,
        audience,
        format,
        rewind_secs,
        Who::new(query.token.as_deref(), Some(peer.ip())),
        &headers,
        &format!("mesastream live {name}"),
    )
}

/// An HLS request for a mount, let in.
pub(super) struct MountHls {
    mount: Arc<Mount>,
    token: Option<String>,
}

impl FromRequestParts<AppState> for MountHls {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> ApiResult<Self> {
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, app)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        let name = params.get("mount").cloned().unwrap_or_default();
        let token = admit_hls(parts, app, &Subject::Mount(name.clone())).await?;
        Ok(Self { mount: mount(app, &name)?, token })
    }
}

pub(super) async fn playlist(State(app): State<AppState>, hls: MountHls) -> ApiResult<Response> {
    count(&app, "playlist", "mount");
    let now = app.listening.scheduler.now_tick();
    let suffix = super::token_suffix(hls.token.as_deref());
    Ok(playlist_response(hls::live_playlist(hls.mount.recording(), now, &suffix)))
}

pub(super) async fn init(State(app): State<AppState>, _hls: MountHls) -> ApiResult<Response> {
    super::hls_routes::init_response(&app, "mount")
}

pub(super) async fn segment(
    State(app): State<AppState>,
    hls: MountHls,
    path: Path<HashMap<String, String>>,
) -> ApiResult<Response> {
    let n = super::hls_routes::segment_of(&path)?;
    count(&app, "segment", "mount");
    let now = app.listening.scheduler.now_tick();
    let bytes = hls::live_segment(hls.mount.recording(), now, n).map_err(super::hls_routes::segment_error)?;
    Ok(mp4_response(bytes, "max-age=600"))
}

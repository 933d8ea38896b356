//! Live sources: mounts managed through the API (`/live/mounts`, bearer token), source
//! clients taken Icecast-style (`source`), on the API port or `INGEST_PORT` (`split`), and
//! Icecast's `/admin/metadata` for titles.

mod connection;
pub mod source;
pub mod split;
mod stages;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::extract::JsonBody;
use super::{ApiError, AppState};
use crate::events::Event;
use crate::live::{LiveError, Mount, NewMount};

type ApiResult<T> = Result<T, ApiError>;

/// The longest title taken.
const MAX_TITLE: usize = 512;

impl From<LiveError> for ApiError {
    fn from(e: LiveError) -> Self {
        match e {
            LiveError::NotFound(_) => ApiError::not_found(e),
            LiveError::Exists(_) => ApiError::conflict(e),
            LiveError::Invalid(_) => ApiError::bad_request(e),
            LiveError::Store(e) => ApiError::store_unavailable(e),
            LiveError::Stage(e) => e.into(),
            LiveError::NotLoaded => ApiError::service_unavailable(e),
        }
    }
}

/// Mount management (bearer token) and `/admin/metadata` (a mount's key, or the token).
pub fn router(state: AppState) -> Router {
    let managed = Router::new()
        .route("/live/mounts", get(list).post(create))
        .route("/live/mounts/{name}", get(show).delete(remove))
        .route("/live/mounts/{name}/key", post(rotate_key))
        .route("/live/mounts/{name}/metadata", post(set_metadata))
        .merge(stages::routes())
        .layer(axum::middleware::from_fn_with_state(state.clone(), super::require_token));
    let reused = Router::new().route("/live/{mount}", axum::routing::put(upload_on_reused_connection));
    Router::new().merge(managed).merge(metadata_router()).merge(reused).with_state(state)
}

/// A `PUT` that reached the HTTP server: it came on a connection that already carried another
/// request (uploads are told apart by a connection's first bytes). The login is checked all
/// the same, so a wrong key still hears 401.
async fn upload_on_reused_connection(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiError {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match app.ingest.login(&name, authorization, peer.ip()) {
        Err(e) => e,
        Ok(_) => {
            ApiError::bad_request("send the stream as the first request of a new connection, as source clients do")
        }
    }
}

/// What `INGEST_PORT` serves besides uploads.
pub fn metadata_router() -> Router<AppState> {
    Router::new().route("/admin/metadata", get(admin_metadata))
}

async fn list(State(app): State<AppState>) -> Json<Vec<crate::live::MountView>> {
    Json(app.registry.ctx.live.list())
}

/// `POST /live/mounts`: 201 with the mount and its key (shown this once).
async fn create(State(app): State<AppState>, JsonBody(new): JsonBody<NewMount>) -> ApiResult<Response> {
    let (view, key) = app.registry.ctx.live.create(new).await?;
    let mut body = serde_json::to_value(&view).map_err(ApiError::internal)?;
    body["key"] = key.into();
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

fn mount(app: &AppState, name: &str) -> ApiResult<std::sync::Arc<Mount>> {
    app.registry.ctx.live.get(name).ok_or_else(|| LiveError::NotFound(name.into()).into())
}

async fn show(State(app): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<crate::live::MountView>> {
    Ok(Json(mount(&app, &name)?.view()))
}

async fn remove(State(app): State<AppState>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    app.registry.ctx.live.remove(&name).await?;
    app.events.emit(Event::LiveSourceDisconnected { mount: name, reason: "removed".into() });
    Ok(StatusCode::NO_CONTENT)
}

async fn rotate_key(State(app): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<serde_json::Value>> {
    let key = app.registry.ctx.live.rotate_key(&name).await?;
    Ok(Json(serde_json::json!({ "name": name, "key": key })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TitleRequest {
    title: String,
}

async fn set_metadata(
    State(app): State<AppState>,
    Path(name): Path<String>,
    JsonBody(request): JsonBody<TitleRequest>,
) -> ApiResult<Json<crate::live::MountView>> {
    let mount = mount(&app, &name)?;
    retitle(&app, &mount, &request.title)?;
    Ok(Json(mount.view()))
}

fn retitle(app: &AppState, mount: &Mount, title: &str) -> ApiResult<()> {
    let title = title.trim();
    if title.len() > MAX_TITLE || title.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!("a title is at most {MAX_TITLE} bytes, without control characters")));
    }
    mount.set_title(title);
    app.events.emit(Event::LiveTitle { mount: mount.name.to_string(), title: title.to_string() });
    Ok(())
}

#[derive(Deserialize)]
struct AdminMetadata {
    mount: Option<String>,
    mode: Option<String>,
    song: Option<String>,
}

/// Icecast's `GET /admin/metadata?mount=/studio&mode=updinfo&song=…`, as source clients send
/// it: authorized by the mount's source login (or the bearer token).
async fn admin_metadata(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<AdminMetadata>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let raw = query.mount.as_deref().unwrap_or("");
    let name = raw.strip_prefix("/live/").or_else(|| raw.strip_prefix('/')).unwrap_or(raw);
    if query.mode.as_deref() != Some("updinfo") {
        return Err(ApiError::bad_request("mode must be updinfo"));
    }
    let song = query.song.ok_or_else(|| ApiError::bad_request("song is required"))?;
    let mount = if super::bearer_ok(&headers, &app.auth_token) {
        mount(&app, name)?
    } else {
        let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        app.ingest.login(name, authorization, peer.ip())?.mount()
    };
    retitle(&app, &mount, &song)?;
    let xml = "<?xml version=\"1.0\"?>\n<iceresponse><message>Metadata update successful</message><return>1</return></iceresponse>\n";
    Ok(([(header::CONTENT_TYPE, "text/xml")], xml).into_response())
}

//! The stage routes (bearer token): make a stage, add DJs (each with a key of their own), see
//! who is on air and who waits, and run it: the slot timer, skip, kick, the block toggle.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::ApiResult;
use crate::api::extract::JsonBody;
use crate::api::{ApiError, AppState};
use crate::live::{LiveError, NewStage, Stage, StageError, StageView};

impl From<StageError> for ApiError {
    fn from(e: StageError) -> Self {
        match e {
            StageError::Exists(_) => ApiError::conflict(e),
            StageError::NoDj(_) | StageError::NobodyOnAir => ApiError::not_found(e),
            StageError::BadKey | StageError::Blocked { .. } | StageError::Invalid(_) => ApiError::bad_request(e),
        }
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/stages", post(create))
        .route("/stages/{name}", get(show).delete(remove))
        .route("/stages/{name}/djs", post(add_dj))
        .route("/stages/{name}/timer", post(timer))
        .route("/stages/{name}/skip", post(skip))
        .route("/stages/{name}/kick", post(kick))
        .route("/stages/{name}/block", post(block))
}

fn stage(app: &AppState, name: &str) -> ApiResult<std::sync::Arc<Stage>> {
    app.registry.ctx.live.stage(name).ok_or_else(|| ApiError::not_found(format!("no stage named {name:?}")))
}

/// `POST /stages`: 201 with the stage; players play it as `live:{name}`.
async fn create(State(app): State<AppState>, JsonBody(new): JsonBody<NewStage>) -> ApiResult<Response> {
    let view = app.registry.ctx.live.create_stage(new).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn show(State(app): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<StageView>> {
    Ok(Json(stage(&app, &name)?.view()))
}

async fn remove(State(app): State<AppState>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    stage(&app, &name)?;
    app.registry.ctx.live.remove(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewDj {
    name: String,
}

/// `POST /stages/{name}/djs`: 201 with the DJ's key (shown this once).
async fn add_dj(
    State(app): State<AppState>,
    Path(name): Path<String>,
    JsonBody(dj): JsonBody<NewDj>,
) -> ApiResult<Response> {
    let key = stage(&app, &name)?.add_dj(&dj.name).await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "name": dj.name, "key": key }))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Timer {
    slot_secs: u64,
    #[serde(default)]
    reset: bool,
}

/// Sets the slot length for the current and later DJs; `reset` restarts the current slot.
async fn timer(
    State(app): State<AppState>,
    Path(name): Path<String>,
    JsonBody(timer): JsonBody<Timer>,
) -> ApiResult<Json<StageView>> {
    if timer.slot_secs == 0 {
        return Err(LiveError::Invalid("slot_secs must be at least 1".into()).into());
    }
    let stage = stage(&app, &name)?;
    stage.set_timer(timer.slot_secs, timer.reset);
    Ok(Json(stage.view()))
}

async fn skip(State(app): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<StageView>> {
    let stage = stage(&app, &name)?;
    stage.end_turn(None, false)?;
    Ok(Json(stage.view()))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Kick {
    /// The DJ to take off (default: the one on air).
    dj: Option<String>,
}

/// Takes a DJ off the stage (on air or waiting); blocked for the cooldown when the toggle is on.
async fn kick(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<StageView>> {
    // No body, or `null`: the DJ on air.
    let kick: Option<Kick> =
        if body.is_empty() { None } else { serde_json::from_slice(&body).map_err(ApiError::bad_request)? };
    let kick = kick.unwrap_or_default();
    let stage = stage(&app, &name)?;
    stage.end_turn(kick.dj.as_deref(), true)?;
    Ok(Json(stage.view()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Block {
    enabled: bool,
    cooldown_secs: Option<u64>,
}

async fn block(
    State(app): State<AppState>,
    Path(name): Path<String>,
    JsonBody(block): JsonBody<Block>,
) -> ApiResult<Json<StageView>> {
    let stage = stage(&app, &name)?;
    stage.set_block(block.enabled, block.cooldown_secs);
    Ok(Json(stage.view()))
}

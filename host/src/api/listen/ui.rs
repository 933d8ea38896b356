//! `GET /ui`: the operator page. A browser cannot send the bearer token with `<audio>` or a
//! WebSocket, so the page signs in once (`POST /ui/session` with the token) and gets a session
//! cookie: a random id whose digest the state store keeps for [`SESSION_SECS`], bound to a
//! digest of the bearer token. A session is checked on every request; signing out deletes it,
//! and changing `AUTH_TOKEN` ends every session. The cookie is `HttpOnly` and
//! `SameSite=Strict`, and is accepted for reading routes, `/ws` and `POST /listen-tokens` only.

use std::time::Duration;

use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::super::{ApiError, AppState};
use crate::store::StateStore;

pub const COOKIE: &str = "mesastream_ui";
const SESSION_SECS: u64 = 12 * 3600;
const PAGE: &str = include_str!("ui.html");
const SIGN_IN: &str = include_str!("ui_sign_in.html");

/// What the store keeps for a session: which bearer token made it, and until when.
#[derive(Serialize, Deserialize)]
struct Session {
    token: String,
    expires: u64,
}

fn digest(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The session id the request's cookie carries.
fn cookie_id(headers: &HeaderMap) -> Option<String> {
    let cookies = headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok());
    cookies
        .flat_map(|c| c.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == COOKIE && !value.is_empty())
        .map(|(_, value)| value.to_string())
}

/// Whether the request carries a live session made with `auth_token`. A store that does not
/// answer lets no session in.
pub async fn session_ok(headers: &HeaderMap, auth_token: &str, store: &StateStore) -> bool {
    let Some(id) = cookie_id(headers) else { return false };
    match store.ui_session::<Session>(&digest(&id)).await {
        Ok(Some(session)) => session.token == digest(auth_token) && session.expires > crate::wall_clock::unix_secs(),
        _ => false,
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(page))
        .route("/ui/session", post(sign_in).delete(sign_out))
        .route("/ui/state", get(ui_state))
}

async fn page(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let signed_in = super::super::bearer_ok(&headers, &app.auth_token)
        || session_ok(&headers, &app.auth_token, &app.registry.ctx.store).await;
    let html = if signed_in { PAGE } else { SIGN_IN };
    ([(header::CACHE_CONTROL, "no-store")], Html(html)).into_response()
}

#[derive(serde::Deserialize)]
struct SignIn {
    token: String,
}

async fn sign_in(State(app): State<AppState>, Form(form): Form<SignIn>) -> Response {
    if !super::super::same(form.token.trim().as_bytes(), app.auth_token.as_bytes()) {
        return ApiError::forbidden().into_response();
    }
    let id = B64.encode(rand::random::<[u8; 32]>());
    let session = Session { token: digest(&app.auth_token), expires: crate::wall_clock::unix_secs() + SESSION_SECS };
    let store = &app.registry.ctx.store;
    if let Err(e) = store.save_ui_session(&digest(&id), &session, Duration::from_secs(SESSION_SECS)).await {
        return ApiError::service_unavailable(format!("the session cannot be kept: {e}")).into_response();
    }
    let cookie = format!("{COOKIE}={id}; Path=/; Max-Age={SESSION_SECS}; HttpOnly; SameSite=Strict");
    let mut response = Redirect::to("/ui").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn sign_out(State(app): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie_id(&headers) {
        app.registry.ctx.store.remove_ui_session(&digest(&id)).await;
    }
    let cookie = format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict");
    (StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response()
}

/// What the page shows: every player with its listeners, and the rewind the node keeps.
async fn ui_state(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let store = &app.registry.ctx.store;
    if !super::super::bearer_ok(&headers, &app.auth_token) && !session_ok(&headers, &app.auth_token, store).await {
        return ApiError::unauthorized().into_response();
    }
    let counts = app.listening.hub.counts();
    let mut players = Vec::new();
    for player in app.registry.all() {
        let snapshot = player.snapshot().await;
        let mut value = serde_json::to_value(&snapshot).unwrap_or_default();
        value["guild_id"] = serde_json::json!(player.guild_id.to_string());
        value["listeners"] = serde_json::json!(counts.get(&player.id).copied().unwrap_or(0));
        players.push(value);
    }
    let rewind = app.registry.ctx.rewind_ticks / 50;
    axum::Json(serde_json::json!({ "players": players, "rewind_seconds": rewind })).into_response()
}

//! `GET /ui`: the operator page. A browser cannot send the bearer token with `<audio>` or a
//! WebSocket, so the page signs in once (`POST /ui/session` with the token) and gets a session
//! cookie made from it: HMAC-signed with the bearer token itself (changing `AUTH_TOKEN` ends
//! every session), expiring after [`SESSION_SECS`], `HttpOnly` and `SameSite=Strict`. The
//! cookie is accepted for reading routes, `/ws` and `POST /listen-tokens` only.

use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::super::{ApiError, AppState};
use super::unix_now;

pub const COOKIE: &str = "mesastream_ui";
const SESSION_SECS: u64 = 12 * 3600;
const PAGE: &str = include_str!("ui.html");
const SIGN_IN: &str = include_str!("ui_sign_in.html");

fn mac(auth_token: &str, text: &str) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(auth_token.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(b"mesastream-ui-session|");
    mac.update(text.as_bytes());
    mac
}

fn session_value(auth_token: &str, expires: u64) -> String {
    let text = expires.to_string();
    format!("{text}.{}", B64.encode(mac(auth_token, &text).finalize().into_bytes()))
}

/// Whether the request carries a live session cookie made from `auth_token`.
pub fn session_ok(headers: &HeaderMap, auth_token: &str) -> bool {
    let cookies = headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok());
    let value = cookies
        .flat_map(|c| c.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string());
    let Some((expires, tag)) = value.as_deref().and_then(|v| v.split_once('.')) else { return false };
    let Ok(tag) = B64.decode(tag) else { return false };
    let genuine = mac(auth_token, expires).verify_slice(&tag).is_ok();
    genuine && expires.parse::<u64>().is_ok_and(|e| e > unix_now())
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(page))
        .route("/ui/session", post(sign_in).delete(sign_out))
        .route("/ui/state", get(ui_state))
}

async fn page(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let signed_in = session_ok(&headers, &app.auth_token) || super::super::bearer_ok(&headers, &app.auth_token);
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
    let cookie = format!(
        "{COOKIE}={}; Path=/; Max-Age={SESSION_SECS}; HttpOnly; SameSite=Strict",
        session_value(&app.auth_token, unix_now() + SESSION_SECS)
    );
    let mut response = Redirect::to("/ui").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn sign_out() -> Response {
    let cookie = format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict");
    (StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response()
}

/// What the page shows: every player with its listeners, and the rewind the node keeps.
async fn ui_state(State(app): State<AppState>, headers: HeaderMap) -> Response {
    if !session_ok(&headers, &app.auth_token) && !super::super::bearer_ok(&headers, &app.auth_token) {
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

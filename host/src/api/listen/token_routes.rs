//! Listen tokens: `POST /listen-tokens` signs a batch of items, `/listen-tokens/unlock`
//! one player's or mount's own token.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::tokens::{Batch, Format, Grant, Signer, Subject, TokenError};
use super::{ApiResult, DEFAULT_TTL_SECS, MAX_BATCH_ITEMS, MAX_TTL_SECS};
use crate::api::extract::JsonBody;
use crate::api::{ApiError, AppState};
use crate::model::Id;

/// What a token is for, as requests name it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub player_id: Option<Id>,
    /// A cached track's id (from an on-demand playlist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_id: Option<String>,
    /// A link or search, as `/tracks/hls/index.m3u8?query=` takes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<String>,
    /// A live mount's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    #[serde(default = "any_format")]
    pub format: Format,
}

pub(super) fn any_format() -> Format {
    Format::Any
}

impl TokenItem {
    fn subject(&self) -> ApiResult<Subject> {
        let for_track = self.track_id.is_some() || self.track.is_some();
        if for_track && !matches!(self.format, Format::Hls | Format::Any) {
            return Err(ApiError::bad_request("a track is listened to as hls"));
        }
        match (&self.player_id, &self.track_id, &self.track, &self.mount) {
            (Some(id), None, None, None) => Ok(Subject::Player(*id)),
            (None, Some(id), None, None) if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Ok(Subject::Track(id.to_ascii_lowercase()))
            }
            (None, Some(id), None, None) => Err(ApiError::bad_request(format!("track_id {id:?} is not a track id"))),
            (None, None, Some(query), None) if !query.trim().is_empty() => Ok(Subject::query(query.trim())),
            (None, None, None, Some(name)) => match crate::live::check_name(name) {
                Ok(()) => Ok(Subject::Mount(name.clone())),
                Err(e) => Err(ApiError::bad_request(e.to_string())),
            },
            _ => Err(ApiError::bad_request("name exactly one of player_id, track_id, track or mount")),
        }
    }

    /// Where the token is used, with the token in place.
    fn url(&self, token: &str) -> String {
        let enc = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
        let stream = |base: String| match self.format {
            Format::Hls => format!("{base}/hls/index.m3u8?token={token}"),
            Format::Mp3 => format!("{base}/listen?format=mp3&token={token}"),
            _ => format!("{base}/listen?token={token}"),
        };
        match (&self.player_id, &self.track_id, &self.track, &self.mount) {
            (Some(id), _, _, _) => stream(format!("/players/{id}")),
            (_, Some(id), _, _) => format!("/tracks/{id}/hls/index.m3u8?token={token}"),
            (_, _, Some(query), _) => format!("/tracks/hls/index.m3u8?query={}&token={token}", enc(query.trim())),
            (_, _, _, Some(name)) => stream(format!("/live/{}", enc(name))),
            _ => String::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct IssueRequest {
    player_id: Option<Id>,
    track_id: Option<String>,
    track: Option<String>,
    mount: Option<String>,
    format: Option<Format>,
    items: Option<Vec<TokenItem>>,
    /// Each token's life in seconds.
    expires_in: Option<u64>,
    /// A batch's life: its tokens, issued now or unlocked later, never outlive it.
    batch_expires_in: Option<u64>,
}

#[derive(Debug, Serialize)]
pub(super) struct IssuedToken {
    token: String,
    expires_at: u64,
    url: String,
    #[serde(flatten)]
    item: TokenItem,
}

pub(super) fn ttl(raw: Option<u64>, what: &str) -> ApiResult<u64> {
    match raw.unwrap_or(DEFAULT_TTL_SECS) {
        0 => Err(ApiError::bad_request(format!("{what} must be at least 1 second"))),
        s if s > MAX_TTL_SECS => Err(ApiError::bad_request(format!("{what} is at most {MAX_TTL_SECS} seconds"))),
        s => Ok(s),
    }
}

pub(super) fn issue_one(signer: &Signer, item: TokenItem, expires: u64) -> ApiResult<IssuedToken> {
    let token = signer.sign(&Grant { subject: item.subject()?, format: item.format, expires });
    Ok(IssuedToken { url: item.url(&token), token, expires_at: expires, item })
}

/// `POST /listen-tokens`: one item (`player_id`, `track_id`, `track` or `mount`, and `format`), or a
/// batch (`items`, `batch_expires_in`).
pub(super) async fn issue(State(app): State<AppState>, body: axum::body::Bytes) -> ApiResult<Response> {
    let request: IssueRequest = serde_json::from_slice(&body).map_err(ApiError::bad_request)?;
    let now = crate::wall_clock::unix_secs();
    let token_ttl = ttl(request.expires_in, "expires_in")?;
    let signer = &app.listening.signer;
    let named =
        request.player_id.is_some() || request.track_id.is_some() || request.track.is_some() || request.mount.is_some();
    let item = named.then(|| TokenItem {
        player_id: request.player_id,
        track_id: request.track_id,
        track: request.track,
        mount: request.mount,
        format: request.format.unwrap_or(Format::Any),
    });
    if request.format.is_some() && !named {
        return Err(ApiError::bad_request("format goes with player_id, track_id, track or mount (or inside items)"));
    }
    match (item, request.items) {
        (Some(item), None) => {
            if request.batch_expires_in.is_some() {
                return Err(ApiError::bad_request("batch_expires_in goes with items"));
            }
            let issued = issue_one(signer, item, now + token_ttl)?;
            Ok((StatusCode::CREATED, axum::Json(issued)).into_response())
        }
        (None, Some(items)) => {
            if items.is_empty() || items.len() > MAX_BATCH_ITEMS {
                return Err(ApiError::bad_request(format!("a batch names 1 to {MAX_BATCH_ITEMS} items")));
            }
            let batch_expires = now + ttl(request.batch_expires_in, "batch_expires_in")?;
            let subjects = items.iter().map(|i| Ok((i.subject()?, i.format))).collect::<ApiResult<Vec<_>>>()?;
            let batch = signer.sign_batch(&Batch { items: subjects, expires: batch_expires, ttl: token_ttl });
            let expires = (now + token_ttl).min(batch_expires);
            let issued = items.into_iter().map(|i| issue_one(signer, i, expires)).collect::<ApiResult<Vec<_>>>()?;
            let body = serde_json::json!({ "batch": batch, "batch_expires_at": batch_expires, "items": issued });
            Ok((StatusCode::CREATED, axum::Json(body)).into_response())
        }
        _ => Err(ApiError::bad_request("give one item (player_id, track_id, track or mount) or items")),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UnlockRequest {
    batch: String,
    /// The item's position in the batch.
    item: usize,
}

/// `POST /listen-tokens/unlock`: a fresh token for one item of a batch while the batch lives
/// (it never outlives the batch); 410 once the batch expired.
pub(super) async fn unlock(
    State(app): State<AppState>,
    JsonBody(request): JsonBody<UnlockRequest>,
) -> ApiResult<Response> {
    let now = crate::wall_clock::unix_secs();
    let batch = match app.listening.signer.verify_batch(&request.batch, now) {
        Ok(batch) => batch,
        Err(TokenError::Expired) => return Err(ApiError::gone("the batch expired")),
        Err(e) => return Err(ApiError::forbidden_with(e)),
    };
    let (subject, format) = batch
        .items
        .get(request.item)
        .cloned()
        .ok_or_else(|| ApiError::bad_request(format!("the batch has {} items", batch.items.len())))?;
    let expires = (now + batch.ttl).min(batch.expires);
    let token = app.listening.signer.sign(&Grant { subject, format, expires });
    Ok((StatusCode::CREATED, axum::Json(serde_json::json!({ "token": token, "expires_at": expires }))).into_response())
}

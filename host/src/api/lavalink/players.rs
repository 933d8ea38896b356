//! A session's players: `GET`/`PATCH`/`DELETE /v4/sessions/{session}/players/{guild}`.
//! PATCH applies its fields in Lavalink's order: everything is checked before anything
//! changes, the player is made if needed, then voice, pause, volume, position, filters and
//! last the track.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::LavalinkState;
use super::error::{LavalinkError, LavalinkResult};
use super::extract::{JsonBody, Query};
use super::player::VoiceState;
use super::player_update::{CheckedUpdate, NewTrack, filter_chain, from_blob};
use super::sessions::Session;
use super::tracks;
use crate::model::Id;

fn session_of(state: &LavalinkState, id: &str) -> LavalinkResult<Arc<Session>> {
    state.node.sessions.get(id).ok_or_else(|| LavalinkError::not_found("Session not found"))
}

fn guild_of(raw: &str) -> LavalinkResult<Id> {
    raw.parse::<u64>().map(Id).map_err(|_| LavalinkError::bad_request(format!("guild id {raw:?} is not a number")))
}

pub async fn list(State(state): State<LavalinkState>, Path(session): Path<String>) -> LavalinkResult<Json<Vec<Value>>> {
    let session = session_of(&state, &session)?;
    let mut all = Vec::new();
    for player in session.players() {
        all.push(player.view().await);
    }
    Ok(Json(all))
}

pub async fn get(
    State(state): State<LavalinkState>,
    Path((session, guild)): Path<(String, String)>,
) -> LavalinkResult<Json<Value>> {
    let guild = guild_of(&guild)?;
    let session = session_of(&state, &session)?;
    let player = session.player(guild).ok_or_else(|| LavalinkError::not_found("Player not found"))?;
    Ok(Json(player.view().await))
}

/// `DELETE`: 204 whether or not the player existed; a playing track ends as stopped.
pub async fn destroy(
    State(state): State<LavalinkState>,
    Path((session, guild)): Path<(String, String)>,
) -> LavalinkResult<StatusCode> {
    let guild = guild_of(&guild)?;
    let session = session_of(&state, &session)?;
    if let Some(player) = session.remove_player(guild) {
        player.close().await;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Absent stays `None`; `null` becomes `Some(None)`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackUpdate {
    #[serde(default, deserialize_with = "present")]
    encoded: Option<Option<String>>,
    identifier: Option<String>,
    user_data: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VoiceUpdate {
    #[serde(default, deserialize_with = "present")]
    token: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    endpoint: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    session_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    channel_id: Option<Option<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlayerUpdate {
    track: Option<TrackUpdate>,
    #[serde(default, deserialize_with = "present")]
    encoded_track: Option<Option<String>>,
    identifier: Option<String>,
    position: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    end_time: Option<Option<u64>>,
    volume: Option<i64>,
    paused: Option<bool>,
    filters: Option<BTreeMap<String, Value>>,
    voice: Option<VoiceUpdate>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PatchQuery {
    no_replace: Option<bool>,
}

/// `PATCH`: creates the player when needed and applies the update; 200 with the player.
pub async fn update(
    State(state): State<LavalinkState>,
    Path((session_id, guild)): Path<(String, String)>,
    Query(query): Query<PatchQuery>,
    JsonBody(update): JsonBody<PlayerUpdate>,
) -> LavalinkResult<Json<Value>> {
    let guild = guild_of(&guild)?;
    let session = session_of(&state, &session_id)?;
    let (encoded, identifier, user_data) = match (update.track, update.encoded_track, update.identifier) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err(LavalinkError::bad_request("Cannot specify both track and encodedTrack/identifier"));
        }
        (Some(t), None, None) => (t.encoded, t.identifier, t.user_data),
        (None, encoded, identifier) => (encoded, identifier, None),
    };
    if encoded.is_some() && identifier.is_some() {
        return Err(LavalinkError::bad_request("Cannot specify both encodedTrack and identifier"));
    }
    let chain = update.filters.as_ref().map(filter_chain).transpose()?;
    if let Some((chain, _)) = &chain {
        state.app.registry.check_filters(chain).await.map_err(|e| LavalinkError::bad_request(e.to_string()))?;
    }
    let voice = update.voice.map(voice_state).transpose()?;
    if update.end_time == Some(Some(0)) {
        return Err(LavalinkError::bad_request("End time must be greater than 0"));
    }
    let track = match (encoded, identifier) {
        (Some(None), _) => Some(NewTrack::Stop),
        (Some(Some(blob)), _) => Some(from_blob(&blob)?),
        (None, Some(identifier)) => Some(from_identifier(&state, &identifier).await?),
        (None, None) => None,
    };
    let checked = CheckedUpdate {
        voice,
        paused: update.paused,
        user_data,
        position: update.position,
        volume: update.volume.map(|v| v.clamp(0, 1000) as u16),
        filters: chain,
        track,
        no_replace: query.no_replace == Some(true),
        end_time: update.end_time,
    };

    let player = session.player_or_create(guild, &state)?;
    let tell = player.apply(&state, session.user_id, checked).await?;
    let view = player.view().await;
    if tell && let Some(frame) = player.update_frame(true).await {
        session.send(frame, true);
    }
    Ok(Json(view))
}

/// The voice state, every field present and not blank (4.2 makes `channelId` required).
fn voice_state(v: VoiceUpdate) -> LavalinkResult<VoiceState> {
    let field = |value: Option<Option<String>>, name: &str| match value {
        None => Err(LavalinkError::bad_request(format!("voice.{name} is missing (Lavalink 4.2 requires it)"))),
        Some(v) => v.filter(|s| !s.trim().is_empty()).ok_or_else(|| {
            LavalinkError::bad_request("token, endpoint, sessionId and channelId must be provided in voice state")
        }),
    };
    Ok(VoiceState {
        token: field(v.token, "token")?,
        endpoint: field(v.endpoint, "endpoint")?,
        session_id: field(v.session_id, "sessionId")?,
        channel_id: Some(field(v.channel_id, "channelId")?),
    })
}

async fn from_identifier(state: &LavalinkState, identifier: &str) -> LavalinkResult<NewTrack> {
    let loaded = tracks::load_result(state, identifier).await?;
    match loaded["loadType"].as_str() {
        Some("track") => {
            let encoded = loaded["data"]["encoded"].as_str().unwrap_or_default();
            from_blob(encoded)
        }
        Some("playlist" | "search") => Err(LavalinkError::bad_request("Cannot play a playlist or search result")),
        Some("error") => Err(LavalinkError::bad_request(
            loaded["data"]["message"].as_str().unwrap_or("the track could not be loaded").to_string(),
        )),
        _ => Err(LavalinkError::bad_request("No matches found for identifier")),
    }
}

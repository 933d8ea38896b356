//! A session's players: `GET`/`PATCH`/`DELETE /v4/sessions/{session}/players/{guild}`.
//! Each is one of the node's players (the same engine as the mesastream routes'), owned by
//! the session and driven through the player's own operations. PATCH applies its fields in
//! Lavalink's order: everything is checked before anything changes, the player is made if
//! needed, then voice, pause, volume, position, filters and last the track.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};

use super::LavalinkState;
use super::encoded_track::EncodedTrack;
use super::error::{LavalinkError, LavalinkResult};
use super::extract::{JsonBody, Query};
use super::persist::{SavedPlayer, SavedTrack};
use super::sessions::Session;
use super::tracks::{self, Track};
use crate::model::{FilterEntry, Id, PlayerStatus, VoiceBridgePayload};
use crate::player::{EndReason, Player, PlayerListener, PlayerNews};

/// Lavalink's filters in the order it applies them; `volume` is the player's gain, the rest
/// are plugin filters of the same names and fields.
pub(super) const FILTER_ORDER: [&str; 10] = [
    "volume",
    "equalizer",
    "karaoke",
    "timescale",
    "tremolo",
    "vibrato",
    "rotation",
    "distortion",
    "channelMix",
    "lowPass",
];

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VoiceState {
    token: String,
    endpoint: String,
    session_id: String,
    channel_id: Option<String>,
}

/// What the client knows of the player beyond the engine's state.
#[derive(Default)]
struct Known {
    /// The current track as the client sees it, under the engine's track id.
    track: Option<(String, Track)>,
    /// The track it replaced, until the engine says that one ended.
    replaced: Option<(String, Track)>,
    voice: VoiceState,
    /// 0–1000, as the client set it.
    volume: u16,
    /// The filters as the client set them, only those that are set.
    filters: BTreeMap<String, Value>,
}

/// Lavalink's default `trackStuckThresholdMs`.
const STUCK_AFTER: std::time::Duration = std::time::Duration::from_secs(10);
/// A track nobody takes frames from (no voice connection) is let go after this, as
/// lavaplayer's cleanup does.
const CLEANUP_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

impl Known {
    /// The player's gain: its volume (100 = unchanged) times the `volume` filter.
    fn gain(&self) -> f32 {
        let filter_volume = self.filters.get("volume").and_then(Value::as_f64).unwrap_or(1.0);
        (f64::from(self.volume) / 100.0 * filter_volume) as f32
    }
}

/// One guild's player in one session.
pub struct LavalinkPlayer {
    pub guild_id: Id,
    pub player: Arc<Player>,
    known: Arc<Mutex<Known>>,
    /// Frames sent at the last check, since when, and whether a stall was reported.
    progress: Mutex<(u64, std::time::Instant, bool)>,
}

/// Tells the owning session what its player did, as Lavalink events.
struct SessionListener {
    session: Weak<Session>,
    known: Arc<Mutex<Known>>,
}

impl PlayerListener for SessionListener {
    fn news(&self, guild_id: Id, _player: Id, news: PlayerNews) {
        let Some(session) = self.session.upgrade() else { return };
        let event = |kind: &str, fields: Value| {
            let mut frame = json!({"op": "event", "type": kind, "guildId": guild_id.to_string()});
            if let (Some(frame), Value::Object(fields)) = (frame.as_object_mut(), fields) {
                frame.extend(fields);
            }
            frame.to_string()
        };
        let known_track = |id: &str| {
            let known = lock(&self.known);
            [&known.track, &known.replaced].into_iter().flatten().find(|(k, _)| k == id).map(|(_, t)| t.clone())
        };
        match news {
            PlayerNews::TrackStarted { track, .. } => {
                if let Some(t) = known_track(&track.id) {
                    session.send(event("TrackStartEvent", json!({"track": t})), false);
                }
            }
            PlayerNews::TrackEnded { track, reason } => {
                let Some(t) = known_track(&track.id) else { return };
                let reason = match reason {
                    EndReason::Finished => "finished",
                    EndReason::Stopped => "stopped",
                    EndReason::Replaced => "replaced",
                    EndReason::Cleanup => "cleanup",
                    EndReason::Failed(message) => {
                        let exception = json!({
                            "message": message, "severity": "common", "cause": message, "causeStackTrace": "",
                        });
                        session.send(event("TrackExceptionEvent", json!({"track": t, "exception": exception})), false);
                        "loadFailed"
                    }
                };
                let mut guard = lock(&self.known);
                let known = &mut *guard;
                for slot in [&mut known.track, &mut known.replaced] {
                    if slot.as_ref().is_some_and(|(k, _)| *k == track.id) {
                        *slot = None;
                    }
                }
                drop(guard);
                session.send(event("TrackEndEvent", json!({"track": t, "reason": reason})), false);
            }
            PlayerNews::VoiceClosed { code, reason } => {
                let fields = json!({"code": code.unwrap_or(1006), "reason": reason, "byRemote": true});
                session.send(event("WebSocketClosedEvent", fields), false);
            }
            PlayerNews::FilterFailed { filter, reason, .. } => {
                tracing::warn!(guild = %guild_id, %filter, %reason, "a filter failed; the track plays on without it");
            }
        }
    }
}

impl LavalinkPlayer {
    /// The player as Lavalink shows it.
    pub async fn view(&self) -> Value {
        let state = self.player.state.lock().await;
        let position = self.player.position_ms(&state);
        let (connected, ping) = voice_link(&state);
        let paused = state.status == PlayerStatus::Paused;
        drop(state);
        let known = lock(&self.known);
        let track = known.track.as_ref().map(|(_, t)| {
            let mut t = t.clone();
            t.info.position = position as i64;
            t
        });
        json!({
            "guildId": self.guild_id.to_string(),
            "track": track,
            "volume": known.volume,
            "paused": paused,
            "state": player_state(position, connected, ping),
            "voice": known.voice,
            "filters": known.filters,
        })
    }

    /// A `playerUpdate` frame: always when `now` (after a change the client made), else only
    /// while a track is loaded (the periodic updates).
    pub async fn update_frame(&self, now: bool) -> Option<String> {
        if !now {
            lock(&self.known).track.as_ref()?;
        }
        let state = self.player.state.lock().await;
        let position = self.player.position_ms(&state);
        let (connected, ping) = voice_link(&state);
        drop(state);
        let frame = json!({
            "op": "playerUpdate",
            "state": player_state(position, connected, ping),
            "guildId": self.guild_id.to_string(),
        });
        Some(frame.to_string())
    }

    /// What the store keeps of the player, to restore it after a restart.
    pub async fn saved(&self) -> SavedPlayer {
        let state = self.player.state.lock().await;
        let position_ms = self.player.position_ms(&state);
        let paused = state.status == PlayerStatus::Paused;
        drop(state);
        let known = lock(&self.known);
        SavedPlayer {
            guild: self.guild_id.0,
            voice: (known.voice != VoiceState::default()).then(|| known.voice.clone()),
            track: known.track.as_ref().map(|(_, t)| SavedTrack {
                encoded: t.encoded.clone(),
                user_data: t.user_data.clone(),
                position_ms,
            }),
            paused,
            volume: known.volume,
            filters: known.filters.clone(),
            end_ms: self.player.output.end_ms(),
        }
    }

    /// Watches the track's progress: a `TrackStuckEvent` frame when a track that should be
    /// playing has sent no frame for [`STUCK_AFTER`] (once per stall); a track without a
    /// voice connection for [`CLEANUP_AFTER`] ends (as `cleanup`).
    pub async fn watch_progress(&self) -> Option<String> {
        let (sent, _) = self.player.output.frame_counts();
        let mut state = self.player.state.lock().await;
        let connected = state.voice_connected();
        let playing = state.status == PlayerStatus::Playing;
        let mut progress = lock(&self.progress);
        let loaded = state.current.is_some();
        if sent != progress.0 || !loaded || (connected && !playing) {
            *progress = (sent, std::time::Instant::now(), false);
            return None;
        }
        let idle_for = progress.1.elapsed();
        if !connected {
            if idle_for >= CLEANUP_AFTER {
                drop(progress);
                self.player.end_track_as(&mut state, EndReason::Cleanup);
            }
            return None;
        }
        if progress.2 || idle_for < STUCK_AFTER {
            return None;
        }
        progress.2 = true;
        drop(progress);
        drop(state);
        let track = lock(&self.known).track.as_ref().map(|(_, t)| t.clone())?;
        let frame = json!({
            "op": "event", "type": "TrackStuckEvent", "guildId": self.guild_id.to_string(),
            "track": track, "thresholdMs": STUCK_AFTER.as_millis() as u64,
        });
        Some(frame.to_string())
    }

    /// Stops the player and lets go of its voice connection.
    pub async fn close(&self) {
        let mut state = self.player.state.lock().await;
        self.player.end_track(&mut state);
        self.player.shut_down(&mut state);
    }
}

/// Whether the voice session is up, and its gateway's heartbeat round trip in ms (-1 when
/// there is none, as Lavalink says).
fn voice_link(state: &crate::player::State) -> (bool, i64) {
    let connected = state.voice_connected();
    let ping = state.voice.as_ref().filter(|_| connected).and_then(|v| v.ping());
    (connected, ping.map_or(-1, |p| p.as_millis() as i64))
}

fn player_state(position: u64, connected: bool, ping: i64) -> Value {
    let time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    json!({"time": time, "position": position, "connected": connected, "ping": ping})
}

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

/// What to play, decided before anything changes.
enum NewTrack {
    Stop,
    Play { track: Box<Track>, engine: Box<crate::model::Track>, start_ms: u64 },
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
    let new_track = match (encoded, identifier) {
        (Some(None), _) => Some(NewTrack::Stop),
        (Some(Some(blob)), _) => Some(from_blob(&blob)?),
        (None, Some(identifier)) => Some(from_identifier(&state, &identifier).await?),
        (None, None) => None,
    };

    let player = session.player_or_create(guild, &state)?;
    let voice_changed = voice.is_some();
    if let Some(voice) = voice {
        connect(&state, &session, &player, voice).await?;
    }
    let engine = &player.player;
    let mut es = engine.state.lock().await;
    if new_track.is_none() {
        if let Some(paused) = update.paused {
            engine.set_paused(&mut es, paused);
        }
        if let Some(data) = user_data.clone()
            && let Some((_, t)) = lock(&player.known).track.as_mut()
        {
            t.user_data = data;
        }
        if let Some(position) = update.position {
            engine.seek(&mut es, position);
        }
    }
    let keep = query.no_replace == Some(true) && es.current.is_some();
    let play = {
        let mut known = lock(&player.known);
        if let Some(volume) = update.volume {
            known.volume = volume.clamp(0, 1000) as u16;
        }
        if let Some((chain, set)) = chain {
            engine.set_filters(&mut es, chain);
            known.filters = set;
        }
        if update.volume.is_some() || update.filters.is_some() {
            engine.set_volume(&mut es, known.gain());
        }
        match new_track {
            Some(NewTrack::Play { mut track, engine: mut engine_track, start_ms }) if !keep => {
                engine_track.id = uuid::Uuid::new_v4().to_string();
                if let Some(data) = user_data {
                    track.user_data = data;
                }
                known.replaced = known.track.replace((engine_track.id.clone(), *track));
                Some(Some((*engine_track, update.position.unwrap_or(start_ms))))
            }
            Some(NewTrack::Stop) if !keep => Some(None),
            _ => None,
        }
    };
    let played = play.is_some();
    match play {
        Some(Some((track, start))) => engine.play_now(&mut es, track, None, start, update.paused.unwrap_or(false)),
        Some(None) => engine.end_track(&mut es),
        None => {}
    }
    // The end marker goes on the track now playing, new or not; null removes it (as
    // Lavalink's documentation says; its code ignores a null).
    if let Some(end) = update.end_time {
        engine.set_end(&es, end);
    }
    drop(es);
    let view = player.view().await;
    // As Lavalink: at once after voice, play, seek and filters.
    let changed = voice_changed || update.position.is_some() || update.filters.is_some() || played;
    if changed && let Some(frame) = player.update_frame(true).await {
        session.send(frame, true);
    }
    Ok(Json(view))
}

/// The engine's chain and the filters as the client set them: Lavalink's own in its order,
/// then `pluginFilters` (filter name → config) onto any loaded filter plugin of that name.
/// Unknown keys are ignored, as Lavalink ignores them.
fn filter_chain(filters: &BTreeMap<String, Value>) -> LavalinkResult<(Vec<FilterEntry>, BTreeMap<String, Value>)> {
    let mut chain = Vec::new();
    let mut set = BTreeMap::new();
    for name in FILTER_ORDER {
        let Some(config) = filters.get(name).filter(|v| !v.is_null()) else { continue };
        set.insert(name.to_string(), config.clone());
        if name == "volume" {
            if !config.as_f64().is_some_and(|v| (0.0..=5.0).contains(&v)) {
                return Err(LavalinkError::bad_request("filters.volume must be a number from 0.0 to 5.0"));
            }
            continue;
        }
        chain.push(FilterEntry { name: name.to_string(), config: config.clone() });
    }
    match filters.get("pluginFilters") {
        None | Some(Value::Null) => {}
        Some(Value::Object(plugins)) => {
            for (name, config) in plugins {
                chain.push(FilterEntry { name: name.clone(), config: config.clone() });
            }
            set.insert("pluginFilters".to_string(), Value::Object(plugins.clone()));
        }
        Some(_) => return Err(LavalinkError::bad_request("filters.pluginFilters must be an object")),
    }
    Ok((chain, set))
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

/// Connects the player's voice unless the same session is already up; waits until it is.
async fn connect(
    state: &LavalinkState,
    session: &Session,
    player: &LavalinkPlayer,
    voice: VoiceState,
) -> LavalinkResult<()> {
    let same = {
        let known = lock(&player.known);
        known.voice == voice
    };
    if same && player.player.state.lock().await.voice_connected() {
        return Ok(());
    }
    let channel = voice.channel_id.as_deref().and_then(|c| c.parse::<u64>().ok());
    let channel = channel.ok_or_else(|| LavalinkError::bad_request("voice.channelId is not a number"))?;
    let endpoint = voice.endpoint.trim_start_matches("wss://").trim_end_matches('/').to_string();
    let payload = VoiceBridgePayload {
        guild_id: player.guild_id,
        player_id: player.player.id,
        channel_id: Id(channel),
        user_id: Id(session.user_id),
        session_id: voice.session_id.clone(),
        token: voice.token.clone(),
        endpoint: endpoint.clone(),
        gateway_url: format!("wss://{endpoint}/?v=8"),
    };
    state
        .app
        .registry
        .connect(&player.player, payload)
        .await
        .map_err(|e| LavalinkError::internal(format!("Failed to connect to voice server: {e}")))?;
    lock(&player.known).voice = voice;
    Ok(())
}

/// A track to play from its encoded form: found again by its link when it starts.
fn from_blob(blob: &str) -> LavalinkResult<NewTrack> {
    let decoded =
        EncodedTrack::decode(blob).map_err(|e| LavalinkError::bad_request(format!("Failed to decode track: {e}")))?;
    let engine = tracks::engine_track(&decoded);
    let start_ms = u64::try_from(decoded.position_ms).unwrap_or(0);
    let mut track = Track::from_encoded(decoded)?;
    track.info.position = 0;
    Ok(NewTrack::Play { track: Box::new(track), engine: Box::new(engine), start_ms })
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

/// Makes a session's player listener (the player does not exist yet when it is made).
pub fn new_player(state: &LavalinkState, session: &Arc<Session>, guild: Id) -> LavalinkResult<LavalinkPlayer> {
    let known = Arc::new(Mutex::new(Known { volume: 100, ..Known::default() }));
    let listener = Arc::new(SessionListener { session: Arc::downgrade(session), known: known.clone() });
    let player = state
        .app
        .registry
        .create_owned(guild, Id(session.user_id), listener)
        .map_err(|e| LavalinkError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(LavalinkPlayer { guild_id: guild, player, known, progress: Mutex::new((0, std::time::Instant::now(), false)) })
}

/// Makes a saved player again: its filters and volume, its voice connection (with the saved
/// credentials) and its track at the saved position.
pub async fn restore(state: &LavalinkState, session: &Arc<Session>, saved: SavedPlayer) -> LavalinkResult<()> {
    let player = Arc::new(new_player(state, session, Id(saved.guild))?);
    session.insert_player(player.clone());
    let (chain, set) = filter_chain(&saved.filters)?;
    {
        let mut es = player.player.state.lock().await;
        player.player.set_filters(&mut es, chain);
        let mut known = lock(&player.known);
        known.volume = saved.volume;
        known.filters = set;
        player.player.set_volume(&mut es, known.gain());
    }
    // What the client sees at once; the engine catches up as the call connects.
    let track = match saved.track {
        Some(track) => {
            let NewTrack::Play { track: mut lavalink_track, engine: mut engine_track, .. } = from_blob(&track.encoded)?
            else {
                return Ok(());
            };
            engine_track.id = uuid::Uuid::new_v4().to_string();
            lavalink_track.user_data = track.user_data;
            lock(&player.known).track = Some((engine_track.id.clone(), *lavalink_track));
            Some((*engine_track, track.position_ms))
        }
        None => None,
    };
    if let Some(voice) = saved.voice {
        connect(state, session, &player, voice).await?;
    }
    if let Some((engine_track, position_ms)) = track {
        let mut es = player.player.state.lock().await;
        player.player.play_now(&mut es, engine_track, None, position_ms, saved.paused);
        player.player.set_end(&es, saved.end_ms);
    }
    if let Some(frame) = player.update_frame(true).await {
        session.send(frame, true);
    }
    Ok(())
}

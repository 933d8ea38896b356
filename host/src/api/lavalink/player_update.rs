//! Changing a Lavalink player: a PATCH checked whole and then applied in Lavalink's order,
//! its voice connected, its track made from an encoded blob, and a saved player made again.

use std::collections::BTreeMap;

use serde_json::Value;

use super::LavalinkState;
use super::encoded_track::EncodedTrack;
use super::error::{LavalinkError, LavalinkResult};
use super::player::{LavalinkPlayer, SavedPlayer, VoiceState};
use super::tracks::{self, Track};
use crate::model::{FilterEntry, Id, VoiceBridgePayload};
use crate::player::EndReason;

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

/// What to play, decided before anything changes.
pub enum NewTrack {
    Stop,
    Play { track: Box<Track>, engine: Box<crate::model::Track>, start_ms: u64 },
}

/// A PATCH checked whole: nothing in it is invalid, so applying it cannot fail half-way
/// (but for the voice connection, which is made first).
pub struct CheckedUpdate {
    pub voice: Option<VoiceState>,
    pub paused: Option<bool>,
    pub user_data: Option<Value>,
    pub position: Option<u64>,
    /// 0–1000.
    pub volume: Option<u16>,
    /// The engine's chain and the filters as the client set them.
    pub filters: Option<(Vec<FilterEntry>, BTreeMap<String, Value>)>,
    pub track: Option<NewTrack>,
    /// Keep a playing track rather than replace it.
    pub no_replace: bool,
    /// `Some(None)` removes the end marker.
    pub end_time: Option<Option<u64>>,
}

impl LavalinkPlayer {
    /// Applies a checked PATCH in Lavalink's order: voice, pause, user data, position,
    /// volume, filters, then the track and its end marker. Answers whether the client is
    /// told the player's state at once (as Lavalink does after voice, play, seek and filters).
    pub async fn apply(&self, state: &LavalinkState, user_id: u64, update: CheckedUpdate) -> LavalinkResult<bool> {
        let voice_changed = update.voice.is_some();
        if let Some(voice) = update.voice {
            connect(state, user_id, self, voice).await?;
        }
        let mut engine = self.player.lock().await;
        if update.track.is_none() {
            if let Some(paused) = update.paused {
                engine.set_paused(paused);
            }
            if let Some(data) = update.user_data.clone()
                && let Some((_, t)) = self.known.lock().track.as_mut()
            {
                t.user_data = data;
            }
            if let Some(position) = update.position {
                engine.seek(position);
            }
        }
        let keep = update.no_replace && engine.current().is_some();
        let filters_changed = update.filters.is_some();
        // The client's view changes first, so the events the engine raises below name the
        // track as the client sent it (the engine's calls below tell the session, which
        // reads this view: it is not held across them).
        let play = {
            let mut known = self.known.lock();
            if let Some(volume) = update.volume {
                known.volume = volume;
            }
            if let Some((_, set)) = &update.filters {
                known.filters = set.clone();
            }
            let gain = (update.volume.is_some() || filters_changed).then(|| known.gain());
            let play = match update.track {
                Some(NewTrack::Play { mut track, engine: mut engine_track, start_ms }) if !keep => {
                    engine_track.id = uuid::Uuid::new_v4().to_string();
                    if let Some(data) = update.user_data {
                        track.user_data = data;
                    }
                    known.replaced = known.track.replace((engine_track.id.clone(), *track));
                    Some(Some((*engine_track, update.position.unwrap_or(start_ms))))
                }
                Some(NewTrack::Stop) if !keep => Some(None),
                _ => None,
            };
            (gain, play)
        };
        let (gain, play) = play;
        if let Some((chain, _)) = update.filters {
            engine.set_filters(chain);
        }
        if let Some(gain) = gain {
            engine.set_volume(gain);
        }
        let played = play.is_some();
        match play {
            Some(Some((track, start))) => engine.play_now(track, None, start, update.paused.unwrap_or(false)),
            Some(None) => engine.end_track(EndReason::Stopped),
            None => {}
        }
        // The end marker goes on the track now playing, new or not; null removes it (as
        // Lavalink's documentation says; its code ignores a null).
        if let Some(end) = update.end_time {
            engine.set_end(end);
        }
        Ok(voice_changed || update.position.is_some() || filters_changed || played)
    }
}

/// The engine's chain and the filters as the client set them: Lavalink's own in its order,
/// then `pluginFilters` (filter name → config) onto any loaded filter plugin of that name.
/// Unknown keys are ignored, as Lavalink ignores them.
pub(super) fn filter_chain(
    filters: &BTreeMap<String, Value>,
) -> LavalinkResult<(Vec<FilterEntry>, BTreeMap<String, Value>)> {
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

/// Connects the player's voice unless the same session is already up; waits until it is.
pub(super) async fn connect(
    state: &LavalinkState,
    user_id: u64,
    player: &LavalinkPlayer,
    voice: VoiceState,
) -> LavalinkResult<()> {
    let same = {
        let known = player.known.lock();
        known.voice == voice
    };
    if same && player.player.lock().await.voice_connected() {
        return Ok(());
    }
    let channel = voice.channel_id.as_deref().and_then(|c| c.parse::<u64>().ok());
    let channel = channel.ok_or_else(|| LavalinkError::bad_request("voice.channelId is not a number"))?;
    let endpoint = voice.endpoint.trim_start_matches("wss://").trim_end_matches('/').to_string();
    let payload = VoiceBridgePayload {
        guild_id: player.guild_id,
        player_id: player.player.id,
        channel_id: Id(channel),
        user_id: Id(user_id),
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
    player.known.lock().voice = voice;
    Ok(())
}

/// A track to play from its encoded form: found again by its link when it starts.
pub(super) fn from_blob(blob: &str) -> LavalinkResult<NewTrack> {
    let decoded =
        EncodedTrack::decode(blob).map_err(|e| LavalinkError::bad_request(format!("Failed to decode track: {e}")))?;
    let engine = tracks::engine_track(&decoded);
    let start_ms = u64::try_from(decoded.position_ms).unwrap_or(0);
    let mut track = Track::from_encoded(decoded)?;
    track.info.position = 0;
    Ok(NewTrack::Play { track: Box::new(track), engine: Box::new(engine), start_ms })
}

/// Makes a saved player again: its filters and volume, its voice connection (with the saved
/// credentials) and its track at the saved position. Answers the `playerUpdate` frame that
/// tells its client.
pub async fn restore(
    state: &LavalinkState,
    user_id: u64,
    player: &LavalinkPlayer,
    saved: SavedPlayer,
) -> LavalinkResult<Option<String>> {
    let (chain, set) = filter_chain(&saved.filters)?;
    {
        let mut engine = player.player.lock().await;
        engine.set_filters(chain);
        let mut known = player.known.lock();
        known.volume = saved.volume;
        known.filters = set;
        engine.set_volume(known.gain());
    }
    // What the client sees at once; the engine catches up as the call connects.
    let track = match saved.track {
        Some(track) => {
            let NewTrack::Play { track: mut lavalink_track, engine: mut engine_track, .. } = from_blob(&track.encoded)?
            else {
                return Ok(None);
            };
            engine_track.id = uuid::Uuid::new_v4().to_string();
            lavalink_track.user_data = track.user_data;
            player.known.lock().track = Some((engine_track.id.clone(), *lavalink_track));
            Some((*engine_track, track.position_ms))
        }
        None => None,
    };
    if let Some(voice) = saved.voice {
        connect(state, user_id, player, voice).await?;
    }
    if let Some((engine_track, position_ms)) = track {
        let mut engine = player.player.lock().await;
        engine.play_now(engine_track, None, position_ms, saved.paused);
        engine.set_end(saved.end_ms);
    }
    Ok(player.update_frame(true).await)
}

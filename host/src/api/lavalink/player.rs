//! One guild's player in one Lavalink session: the node's own player (the same engine as the
//! mesastream routes'), owned by the session, with what the client set that the engine does
//! not keep (the track as the client sent it, its voice state, its volume and filters), and
//! the session events it causes.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use axum::http::StatusCode;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::LavalinkState;
use super::error::{LavalinkError, LavalinkResult};
use super::tracks::Track;
use crate::model::{Id, PlayerStatus};
use crate::player::{EndReason, Player, PlayerGuard, PlayerListener, PlayerNews};

/// Where a player's events go: its session.
pub trait FrameSink: Send + Sync {
    /// `droppable` frames (position updates) need not be kept for an away client.
    fn send(&self, frame: String, droppable: bool);
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VoiceState {
    pub token: String,
    pub endpoint: String,
    pub session_id: String,
    pub channel_id: Option<String>,
}

/// What the client knows of the player beyond the engine's state.
#[derive(Default)]
pub(super) struct Known {
    /// The current track as the client sees it, under the engine's track id.
    pub(super) track: Option<(String, Track)>,
    /// The track it replaced, until the engine says that one ended.
    pub(super) replaced: Option<(String, Track)>,
    pub(super) voice: VoiceState,
    /// 0–1000, as the client set it.
    pub(super) volume: u16,
    /// The filters as the client set them, only those that are set.
    pub(super) filters: BTreeMap<String, Value>,
}

/// Lavalink's default `trackStuckThresholdMs`.
const STUCK_AFTER: std::time::Duration = std::time::Duration::from_secs(10);
/// A track nobody takes frames from (no voice connection) is let go after this, as
/// lavaplayer's cleanup does.
const CLEANUP_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

impl Known {
    /// The player's gain: its volume (100 = unchanged) times the `volume` filter.
    pub(super) fn gain(&self) -> f32 {
        let filter_volume = self.filters.get("volume").and_then(Value::as_f64).unwrap_or(1.0);
        (f64::from(self.volume) / 100.0 * filter_volume) as f32
    }
}

/// One guild's player in one session.
pub struct LavalinkPlayer {
    pub guild_id: Id,
    pub player: Arc<Player>,
    pub(super) known: Arc<Mutex<Known>>,
    /// Frames sent at the last check, since when, and whether a stall was reported.
    progress: Mutex<(u64, std::time::Instant, bool)>,
}

/// What the store keeps of a player, to make it again after a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedPlayer {
    pub guild: u64,
    pub voice: Option<VoiceState>,
    pub track: Option<SavedTrack>,
    pub paused: bool,
    pub volume: u16,
    pub filters: BTreeMap<String, Value>,
    pub end_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedTrack {
    pub encoded: String,
    pub user_data: Value,
    pub position_ms: u64,
}

/// Tells the owning session what its player did, as Lavalink events.
struct SessionListener {
    session: Weak<dyn FrameSink>,
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
            let known = self.known.lock();
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
                let mut guard = self.known.lock();
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
        let guard = self.player.lock().await;
        let position = guard.position_ms();
        let (connected, ping) = voice_link(&guard);
        let paused = guard.status() == PlayerStatus::Paused;
        drop(guard);
        let known = self.known.lock();
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
            self.known.lock().track.as_ref()?;
        }
        let guard = self.player.lock().await;
        let position = guard.position_ms();
        let (connected, ping) = voice_link(&guard);
        drop(guard);
        let frame = json!({
            "op": "playerUpdate",
            "state": player_state(position, connected, ping),
            "guildId": self.guild_id.to_string(),
        });
        Some(frame.to_string())
    }

    /// What the store keeps of the player, to restore it after a restart.
    pub async fn saved(&self) -> SavedPlayer {
        let guard = self.player.lock().await;
        let position_ms = guard.position_ms();
        let paused = guard.status() == PlayerStatus::Paused;
        drop(guard);
        let known = self.known.lock();
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
        let mut guard = self.player.lock().await;
        let connected = guard.voice_connected();
        let playing = guard.status() == PlayerStatus::Playing;
        let mut progress = self.progress.lock();
        let loaded = guard.current().is_some();
        if sent != progress.0 || !loaded || (connected && !playing) {
            *progress = (sent, std::time::Instant::now(), false);
            return None;
        }
        let idle_for = progress.1.elapsed();
        if !connected {
            if idle_for >= CLEANUP_AFTER {
                drop(progress);
                guard.end_track(EndReason::Cleanup);
            }
            return None;
        }
        if progress.2 || idle_for < STUCK_AFTER {
            return None;
        }
        progress.2 = true;
        drop(progress);
        drop(guard);
        let track = self.known.lock().track.as_ref().map(|(_, t)| t.clone())?;
        let frame = json!({
            "op": "event", "type": "TrackStuckEvent", "guildId": self.guild_id.to_string(),
            "track": track, "thresholdMs": STUCK_AFTER.as_millis() as u64,
        });
        Some(frame.to_string())
    }

    /// Stops the player and lets go of its voice connection.
    pub async fn close(&self) {
        let mut guard = self.player.lock().await;
        guard.end_track(EndReason::Stopped);
        guard.shut_down();
    }
}

/// Whether the voice session is up, and its gateway's heartbeat round trip in ms (-1 when
/// there is none, as Lavalink says).
fn voice_link(player: &PlayerGuard<'_>) -> (bool, i64) {
    (player.voice_connected(), player.voice_ping().map_or(-1, |p| p.as_millis() as i64))
}

fn player_state(position: u64, connected: bool, ping: i64) -> Value {
    json!({"time": crate::wall_clock::unix_ms(), "position": position, "connected": connected, "ping": ping})
}

/// Makes a session's player listener (the player does not exist yet when it is made).
pub fn new_player(
    state: &LavalinkState,
    session: Weak<dyn FrameSink>,
    user_id: u64,
    guild: Id,
) -> LavalinkResult<LavalinkPlayer> {
    let known = Arc::new(Mutex::new(Known { volume: 100, ..Known::default() }));
    let listener = Arc::new(SessionListener { session, known: known.clone() });
    let player = state
        .app
        .registry
        .create_owned(guild, Id(user_id), listener)
        .map_err(|e| LavalinkError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(LavalinkPlayer { guild_id: guild, player, known, progress: Mutex::new((0, std::time::Instant::now(), false)) })
}

//! What one player holds and changes: private to `player/`, reached from outside only through
//! a [`super::PlayerGuard`], whose operations keep it consistent and saved.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::KnownSource;
use crate::model::{Equalizer, FilterEntry, PlayerStatus, Track, VoiceBridgePayload};
use crate::voice::VoiceConnection;

pub(super) struct State {
    pub(super) connection: VoiceBridgePayload,
    pub(super) voice: Option<VoiceConnection>,
    pub(super) status: PlayerStatus,
    pub(super) queue: VecDeque<Track>,
    pub(super) current: Option<Track>,
    pub(super) volume: f32,
    /// The filter chain (the equalizer's filter included).
    pub(super) filters: Vec<FilterEntry>,
    /// How to fetch queued tracks and what they are cached under, as their resolvers said
    /// (kept in memory only; tracks without one are resolved again when they start).
    pub(super) sources: HashMap<String, KnownSource>,
    pub(super) playback_session_id: Option<String>,
    /// Moves with every track start, so a late signal about an earlier one is ignored.
    pub(super) token: u64,
    pub(super) cancel: Option<Arc<AtomicBool>>,
    pub(super) played_any: bool,
}

impl State {
    pub(super) fn new(connection: VoiceBridgePayload, voice: Option<VoiceConnection>) -> Self {
        Self {
            connection,
            voice,
            status: PlayerStatus::Idle,
            queue: VecDeque::new(),
            current: None,
            volume: 1.0,
            filters: Vec::new(),
            sources: HashMap::new(),
            playback_session_id: None,
            token: 0,
            cancel: None,
            played_any: false,
        }
    }

    /// The 3-band equalizer as the contract shows it: the chain's entry, flat without one.
    pub(super) fn equalizer(&self) -> Equalizer {
        self.filters
            .iter()
            .find(|e| e.name == Equalizer::FILTER)
            .and_then(|e| serde_json::from_value(e.config.clone()).ok())
            .unwrap_or_default()
    }

    pub(super) fn voice_connected(&self) -> bool {
        self.voice.as_ref().is_some_and(VoiceConnection::is_connected)
    }
}

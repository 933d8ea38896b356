//! Players: one per guild, each with its queue, current track and voice connection, driven by
//! API calls and by signals from the packet clock and the voice transport.

mod output;
pub mod registry;
pub mod track;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Mutex;

pub use output::{OutputSignal, PlayerOutput};
pub use registry::{Context, PlayerError, Registry};

use crate::audio::{Gain, TrackInfo, pipeline};
use crate::events::Event;
use crate::model::{Equalizer, Id, PlayerSnapshot, PlayerStatus, Track, VoiceBridgePayload};
use crate::voice::VoiceConnection;
use crate::voice::scheduler::Registration;

/// Mutable state of one player.
pub struct State {
    pub connection: VoiceBridgePayload,
    pub voice: Option<VoiceConnection>,
    pub status: PlayerStatus,
    pub queue: VecDeque<Track>,
    pub current: Option<Track>,
    pub volume: f32,
    pub equalizer: Equalizer,
    pub playback_session_id: Option<String>,
    token: u64,
    cancel: Option<Arc<AtomicBool>>,
    played_any: bool,
}

pub struct Player {
    pub id: Id,
    pub guild_id: Id,
    pub state: Mutex<State>,
    pub output: Arc<PlayerOutput>,
    gain: Arc<Gain>,
    ctx: Arc<Context>,
    opened: tokio::sync::mpsc::UnboundedSender<(u64, TrackInfo)>,
    _clock: Registration,
}

/// What happened when the player looked for its next track.
#[derive(Debug, PartialEq, Eq)]
pub enum Advance {
    Started,
    /// Nothing queued; the player waits.
    Idle,
    /// The queue ran out after playing: the player should go away.
    Drained,
}

impl Player {
    pub fn snapshot_of(&self, state: &State) -> PlayerSnapshot {
        PlayerSnapshot {
            player_id: self.id,
            connection: state.connection.clone(),
            status: state.status,
            queue: state.queue.iter().cloned().collect(),
            current_track: state.current.clone(),
            position_ms: if state.current.is_some() { self.output.position_ms() } else { 0 },
            volume: state.volume,
            equalizer: state.equalizer,
            voice_connected: state.voice.as_ref().is_some_and(VoiceConnection::is_connected),
            playback_session_id: state.playback_session_id.clone(),
        }
    }

    pub async fn snapshot(&self) -> PlayerSnapshot {
        let state = self.state.lock().await;
        self.snapshot_of(&state)
    }

    /// Starts the next queued track if there is one.
    pub fn advance(&self, state: &mut State) -> Advance {
        self.end_current(state);
        let Some(track) = state.queue.pop_front() else {
            state.status =
                if state.status == PlayerStatus::Stopped { PlayerStatus::Stopped } else { PlayerStatus::Idle };
            return if state.played_any { Advance::Drained } else { Advance::Idle };
        };
        self.start(state, track);
        Advance::Started
    }

    fn start(&self, state: &mut State, track: Track) {
        state.token += 1;
        let token = state.token;
        let cancel = Arc::new(AtomicBool::new(false));
        let signals = self.opened.clone();
        let on_open = move |info: TrackInfo| {
            let _ = signals.send((token, info));
        };
        let spawned = pipeline::spawn(
            track.stream_url.clone(),
            self.ctx.pipeline.clone(),
            self.gain.clone(),
            cancel.clone(),
            on_open,
        );
        state.played_any = true;
        state.playback_session_id = Some(uuid::Uuid::new_v4().to_string());
        match spawned {
            Ok(frames) => {
                self.output.play(token, frames, 0);
                self.output.set_paused(false);
                state.cancel = Some(cancel);
                state.status = PlayerStatus::Playing;
                if let Some(voice) = state.voice.as_ref() {
                    voice.sender().set_speaking(true);
                }
                self.ctx.events.emit(Event::TrackStarted {
                    guild_id: self.guild_id,
                    player_id: self.id,
                    track: track.clone(),
                    position_ms: 0,
                });
                state.current = Some(track);
            }
            Err(e) => {
                // Could not even start a thread: report the track as failed right away.
                let mut failed = track;
                failed.error = Some(format!("could not start decoding: {e}"));
                self.ctx.events.emit(Event::TrackEnded {
                    guild_id: self.guild_id,
                    player_id: self.id,
                    track_id: failed.id.clone(),
                    error: failed.error.clone(),
                });
            }
        }
    }

    /// Cancels the current track's work and forgets it.
    fn end_current(&self, state: &mut State) {
        if let Some(cancel) = state.cancel.take() {
            cancel.store(true, Ordering::Release);
        }
        self.output.clear();
        state.current = None;
    }

    /// The packet clock reports the end of a track.
    pub fn on_track_finished(&self, state: &mut State, token: u64, result: Result<(), String>) -> Option<Advance> {
        if token != state.token {
            return None;
        }
        let mut track = state.current.take()?;
        state.cancel = None;
        if let Err(e) = result {
            tracing::warn!(player = %self.id, track = %track.id, error = %e, "track ended early");
            track.error = Some(e);
        }
        self.ctx.events.emit(Event::TrackEnded {
            guild_id: self.guild_id,
            player_id: self.id,
            track_id: track.id.clone(),
            error: track.error.clone(),
        });
        Some(self.advance(state))
    }

    pub fn on_track_opened(&self, state: &mut State, token: u64, info: TrackInfo) {
        if token != state.token {
            return;
        }
        if let (Some(track), Some(ms)) = (state.current.as_mut(), info.duration_ms)
            && track.metadata.duration_ms == 0
        {
            track.metadata.duration_ms = ms;
        }
    }

    pub fn enqueue(&self, state: &mut State, track: Track) {
        state.queue.push_back(track);
        if state.current.is_none() && state.status == PlayerStatus::Idle {
            self.advance(state);
        }
    }

    pub fn play(&self, state: &mut State) {
        match (state.current.is_some(), state.status) {
            (true, PlayerStatus::Paused) => self.set_paused(state, false),
            (false, _) => {
                state.status = PlayerStatus::Idle;
                self.advance(state);
            }
            _ => {}
        }
    }

    pub fn stop(&self, state: &mut State) {
        self.end_current(state);
        self.output.set_paused(false);
        state.status = PlayerStatus::Stopped;
    }

    pub fn set_paused(&self, state: &mut State, paused: bool) {
        if state.current.is_none() {
            return;
        }
        self.output.set_paused(paused);
        state.status = if paused { PlayerStatus::Paused } else { PlayerStatus::Playing };
    }

    pub fn set_volume(&self, state: &mut State, volume: f32) {
        state.volume = volume;
        self.gain.set(volume);
    }

    /// Tears the player down: its track work now, its voice connection once the silence
    /// tail is out (bounded), so listeners hear a clean stop.
    pub fn shut_down(self: &Arc<Self>, state: &mut State) {
        self.end_current(state);
        state.status = PlayerStatus::Stopped;
        let Some(voice) = state.voice.take() else { return };
        let player = self.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(std::time::Duration::from_millis(500), player.output.wait_quiet()).await;
            player.output.set_sender(None);
            drop(voice);
        });
    }
}

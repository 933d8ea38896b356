//! Players: one per guild, each with its queue, current track and voice connection, driven by
//! API calls and by signals from the packet clock and the voice transport. Every control acts
//! at once and the status always says what the listener hears.

pub mod filter_check;
pub mod listener;
pub mod lookup;
mod output;
pub mod prepare;
pub mod registry;
pub mod track;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Mutex, mpsc, watch};

pub use listener::{EndReason, EventBusListener, PlayerListener, PlayerNews};
pub use output::{OutputCounters, OutputSignal, PlayerOutput};
pub use registry::{Context, PlayerError, Registry};

use crate::audio::{Controls, TrackInfo, TrackRequest, TrackSource, pipeline};
use crate::model::{Equalizer, FilterEntry, Id, PlayerSnapshot, PlayerStatus, Track, VoiceBridgePayload};
use crate::plugins::resolver::Locator;
use crate::voice::scheduler::Registration;
use crate::voice::{VoiceConnection, VoiceEvent};

/// Where a queued track's media is and what it is cached under, as its resolver said.
#[derive(Debug, Clone)]
pub struct KnownSource {
    pub locator: Locator,
    pub cache_key: String,
}

/// An enqueue that would take the queue past its limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a queue holds at most {limit} tracks ({queued} queued, {adding} more asked; MAX_QUEUE_TRACKS)")]
pub struct QueueFull {
    pub limit: usize,
    pub queued: usize,
    pub adding: usize,
}

/// Mutable state of one player.
pub struct State {
    pub connection: VoiceBridgePayload,
    pub voice: Option<VoiceConnection>,
    pub status: PlayerStatus,
    pub queue: VecDeque<Track>,
    pub current: Option<Track>,
    pub volume: f32,
    /// The filter chain (the equalizer's filter included).
    pub filters: Vec<FilterEntry>,
    /// How to fetch queued tracks and what they are cached under, as their resolvers said
    /// (kept in memory only; tracks without one are resolved again when they start).
    pub sources: HashMap<String, KnownSource>,
    pub playback_session_id: Option<String>,
    token: u64,
    cancel: Option<Arc<AtomicBool>>,
    played_any: bool,
}

impl State {
    /// The 3-band equalizer as the contract shows it: the chain's entry, flat without one.
    pub fn equalizer(&self) -> Equalizer {
        self.filters
            .iter()
            .find(|e| e.name == Equalizer::FILTER)
            .and_then(|e| serde_json::from_value(e.config.clone()).ok())
            .unwrap_or_default()
    }

    pub fn new(connection: VoiceBridgePayload, voice: Option<VoiceConnection>) -> Self {
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

    pub fn voice_connected(&self) -> bool {
        self.voice.as_ref().is_some_and(VoiceConnection::is_connected)
    }
}

pub struct Player {
    pub id: Id,
    pub guild_id: Id,
    pub state: Mutex<State>,
    pub output: Arc<PlayerOutput>,
    /// Who hears what happens to it: the event bus, or the protocol session that owns it.
    listener: Arc<dyn PlayerListener>,
    /// How it lives: a mesastream player goes away once its queue runs out after playing and
    /// keeps its guild's state in the store; one another protocol owns does neither.
    pub kind: PlayerKind,
    controls: Arc<Controls>,
    ctx: Arc<Context>,
    opened: mpsc::UnboundedSender<(u64, TrackInfo)>,
    /// Where every voice connection of this player reports (kept across PUT /connection).
    pub(crate) voice_events: mpsc::UnboundedSender<VoiceEvent>,
    /// The latest state to persist; a writer task stores it, newest wins.
    persist_tx: watch::Sender<Option<PersistView>>,
    _clock: Registration,
}

/// What the store keeps of a player: the queue with the playing track at its head, the
/// position in that track, and the last snapshot.
#[derive(Debug, Clone)]
pub struct PersistView {
    pub queue: Vec<Track>,
    pub position_ms: u64,
    pub snapshot: PlayerSnapshot,
    /// Moves with every whole view; a view that only moved its position keeps it, so the
    /// writer neither copies nor compares the queue and snapshot twice a second per player.
    pub revision: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlayerKind {
    /// Made by `POST /players`: one per guild, in the original's ways.
    Mesastream,
    /// Made and owned by another protocol's session (Lavalink).
    Owned,
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

/// What listeners over HTTP are shown while `track` plays: `artist - title`, or what there is.
pub fn stream_title(track: &Track) -> String {
    let meta = &track.metadata;
    match (meta.artist.trim(), meta.title.trim()) {
        ("", "") => track.source_url.clone(),
        ("", title) => title.to_string(),
        (artist, "") => artist.to_string(),
        (artist, title) => format!("{artist} - {title}"),
    }
}

/// `{mins}:{secs:02}` with unbounded minutes, as the contract formats positions.
pub fn format_ms(ms: u64) -> String {
    let secs = ms / 1000;
    format!("{}:{:02}", secs / 60, secs % 60)
}

impl Player {
    pub fn snapshot_of(&self, state: &State) -> PlayerSnapshot {
        PlayerSnapshot {
            player_id: self.id,
            connection: state.connection.clone(),
            status: state.status,
            queue: state.queue.iter().cloned().collect(),
            current_track: state.current.clone(),
            position_ms: self.position_ms(state),
            volume: state.volume,
            equalizer: state.equalizer(),
            voice_connected: state.voice_connected(),
            playback_session_id: state.playback_session_id.clone(),
            filters: state.filters.clone(),
        }
    }

    pub async fn snapshot(&self) -> PlayerSnapshot {
        let state = self.state.lock().await;
        self.snapshot_of(&state)
    }

    /// Hands the current state to the store writer.
    pub fn persist(&self, state: &State) {
        let mut view = self.persist_view(state);
        self.persist_tx.send_modify(|last| {
            view.revision = last.as_ref().map_or(0, |last| last.revision.wrapping_add(1));
            *last = Some(view);
        });
    }

    /// Persists the position alone: what a playing player's periodic save changes.
    pub fn persist_position(&self, state: &State) {
        let position_ms = self.position_ms(state);
        let moved = self.persist_tx.send_if_modified(|last| match last {
            Some(last) if last.position_ms != position_ms => {
                last.position_ms = position_ms;
                true
            }
            _ => false,
        });
        if !moved && self.persist_tx.borrow().is_none() {
            self.persist(state);
        }
    }

    fn persist_view(&self, state: &State) -> PersistView {
        let queue = state.current.iter().chain(state.queue.iter()).cloned().collect();
        PersistView { queue, position_ms: self.position_ms(state), snapshot: self.snapshot_of(state), revision: 0 }
    }

    /// Starts the head of a restored queue at `position_ms`.
    pub fn resume_restored(&self, state: &mut State, position_ms: u64) {
        if let Some(track) = state.queue.pop_front() {
            let duration = track.metadata.duration_ms;
            let start = if duration > 0 && position_ms >= duration { 0 } else { position_ms };
            self.start(state, track, start);
        }
    }

    pub fn position_ms(&self, state: &State) -> u64 {
        if state.current.is_some() { self.output.position_ms() } else { 0 }
    }

    /// Starts the next queued track if there is one.
    pub fn advance(&self, state: &mut State) -> Advance {
        self.end_current(state);
        let Some(track) = state.queue.pop_front() else {
            if state.status != PlayerStatus::Stopped {
                state.status = PlayerStatus::Idle;
            }
            return if state.played_any { Advance::Drained } else { Advance::Idle };
        };
        self.start(state, track, 0);
        Advance::Started
    }

    /// Starts `track` at `start_ms`, keeping the paused state.
    fn start(&self, state: &mut State, track: Track, start_ms: u64) {
        state.token += 1;
        let token = state.token;
        let cancel = Arc::new(AtomicBool::new(false));
        let signals = self.opened.clone();
        let on_open = move |info: TrackInfo| {
            let _ = signals.send((token, info));
        };
        let span =
            tracing::info_span!("track", player = %self.id, track_id = %track.id, url = %track.source_url, start_ms);
        let (source, cache_key) = self.source_of(state, &track);
        let request = TrackRequest {
            source,
            cache_key,
            duration_hint_ms: Some(track.metadata.duration_ms).filter(|ms| *ms > 0),
            start_ms,
            span,
        };
        let frames =
            pipeline::spawn(request, self.ctx.pipeline.clone(), self.controls.clone(), cancel.clone(), on_open);
        state.played_any = true;
        self.output.play(token, frames, start_ms / 20, stream_title(&track).into());
        state.cancel = Some(cancel);
        let paused = state.status == PlayerStatus::Paused;
        self.output.set_paused(paused);
        state.status = if paused { PlayerStatus::Paused } else { PlayerStatus::Playing };
        let same_track = state.current.as_ref().is_some_and(|c| c.id == track.id);
        if !same_track {
            state.playback_session_id = Some(uuid::Uuid::new_v4().to_string());
            if let Some(voice) = state.voice.as_ref().filter(|_| !paused) {
                voice.sender().set_speaking(true);
            }
            self.tell(PlayerNews::TrackStarted { track: track.clone(), position_ms: start_ms });
        }
        state.current = Some(track);
    }

    /// Where `track`'s media comes from and what it is cached under: a live mount for a
    /// `live:` track (never cached); what its resolver said at enqueue; else the resolvers again when one takes its link (tracks restored after a
    /// restart, tracks played from a Lavalink blob; the pipeline learns the key when it
    /// resolves); else its URL.
    fn source_of(&self, state: &State, track: &Track) -> (TrackSource, Option<String>) {
        if track.source == track::LIVE_SOURCE
            && let Some(mount) = track::live_mount(&track.source_url)
        {
            return (TrackSource::Live(self.ctx.live.follow(mount)), None);
        }
        match state.sources.get(&track.id) {
            Some(known) => (TrackSource::Located(known.locator.clone()), Some(known.cache_key.clone())),
            _ if self
                .ctx
                .pipeline
                .plugins
                .as_ref()
                .is_some_and(|h| h.has_resolvers() && h.claims(&track.source_url)) =>
            {
                (
                    TrackSource::Resolve { query: track.source_url.clone(), guild_id: Some(self.guild_id.to_string()) },
                    None,
                )
            }
            _ => (
                TrackSource::Located(Locator::Http { url: track.stream_url.clone(), headers: Vec::new() }),
                Some(pipeline::direct_cache_key(&track.stream_url)),
            ),
        }
    }

    /// Cancels the current track's work and forgets it.
    fn end_current(&self, state: &mut State) {
        if let Some(track) = &state.current {
            state.sources.remove(&track.id);
        }
        if let Some(cancel) = state.cancel.take() {
            cancel.store(true, Ordering::Release);
        }
        self.output.clear();
        state.current = None;
    }

    pub(crate) fn tell(&self, news: PlayerNews) {
        self.listener.news(self.guild_id, self.id, news);
    }

    fn emit_ended(&self, track: &Track, reason: EndReason) {
        self.tell(PlayerNews::TrackEnded { track: track.clone(), reason });
    }

    /// The packet clock reports the end of a track.
    pub fn on_track_finished(&self, state: &mut State, token: u64, result: Result<(), String>) -> Option<Advance> {
        if token != state.token {
            return None;
        }
        let mut track = state.current.take()?;
        state.cancel = None;
        let reason = match result {
            Ok(()) => EndReason::Finished,
            Err(e) => {
                tracing::warn!(player = %self.id, track = %track.id, error = %e, "track ended early");
                track.error = Some(e.clone());
                EndReason::Failed(e)
            }
        };
        self.emit_ended(&track, reason);
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

    /// Appends tracks; an idle player starts playing.
    /// Appends `tracks` (with what their resolvers said about fetching some of them); an
    /// idle player starts. Refused whole when the queue would hold more than its limit.
    pub fn enqueue(
        &self,
        state: &mut State,
        tracks: Vec<Track>,
        sources: Vec<(String, KnownSource)>,
    ) -> Result<(), QueueFull> {
        let limit = self.ctx.limits.queue_tracks;
        if state.queue.len() + tracks.len() > limit {
            return Err(QueueFull { limit, queued: state.queue.len(), adding: tracks.len() });
        }
        state.sources.extend(sources);
        state.queue.extend(tracks);
        if state.current.is_none() && state.status == PlayerStatus::Idle {
            self.advance(state);
        }
        Ok(())
    }

    /// Empties the queue (the current track plays on) and releases what its tracks held.
    pub fn clear_queue(&self, state: &mut State) {
        for track in state.queue.drain(..) {
            state.sources.remove(&track.id);
        }
    }

    pub fn play(&self, state: &mut State) {
        if state.current.is_some() {
            self.set_paused(state, false);
        } else {
            state.status = PlayerStatus::Idle;
            self.advance(state);
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

    /// Ends the current track (emitting `TrackEnded`) and starts the next.
    pub fn skip(&self, state: &mut State) -> Option<Advance> {
        let track = state.current.clone()?;
        self.emit_ended(&track, EndReason::Stopped);
        Some(self.advance(state))
    }

    /// Plays `track` now from `start_ms`, in place of the current one (which ends as
    /// replaced); the queue is left as it is. `paused` says whether it starts paused.
    pub fn play_now(&self, state: &mut State, track: Track, source: Option<KnownSource>, start_ms: u64, paused: bool) {
        if let Some(current) = state.current.clone() {
            self.emit_ended(&current, EndReason::Replaced);
            self.end_current(state);
        }
        if let Some(source) = source {
            state.sources.insert(track.id.clone(), source);
        }
        state.status = if paused { PlayerStatus::Paused } else { PlayerStatus::Idle };
        self.start(state, track, start_ms);
    }

    /// Ends the current track when its position reaches `ms` (`None`: at its own end); it
    /// ends as finished. A new track starts without a marker.
    pub fn set_end(&self, state: &State, ms: Option<u64>) {
        if state.current.is_some() {
            self.output.set_end(ms);
        }
    }

    /// Ends the current track (it ends as stopped) and leaves the player idle, the queue
    /// as it is.
    pub fn end_track(&self, state: &mut State) {
        self.end_track_as(state, EndReason::Stopped);
    }

    /// The same, saying why it ended.
    pub fn end_track_as(&self, state: &mut State, reason: EndReason) {
        if let Some(current) = state.current.clone() {
            self.emit_ended(&current, reason);
        }
        self.end_current(state);
        self.output.set_paused(false);
        state.status = PlayerStatus::Idle;
    }

    /// Restarts the current track's decoding at `ms`.
    pub fn seek(&self, state: &mut State, ms: u64) -> bool {
        let Some(track) = state.current.clone() else { return false };
        if let Some(cancel) = state.cancel.take() {
            cancel.store(true, Ordering::Release);
        }
        // The end marker belongs to the track, not to where it was read from.
        let end = self.output.end_ms();
        self.start(state, track, ms);
        self.output.set_end(end);
        true
    }

    pub fn set_volume(&self, state: &mut State, volume: f32) {
        state.volume = volume;
        self.controls.gain.set(volume);
    }

    /// Sets the 3-band equalizer, which is the chain's `threeBandEqualizer` entry (added
    /// in front when missing, removed when flat).
    pub fn set_equalizer(&self, state: &mut State, equalizer: Equalizer) {
        let mut chain = state.filters.clone();
        let at = chain.iter().position(|e| e.name == Equalizer::FILTER);
        match (at, equalizer.is_flat()) {
            (Some(i), true) => {
                chain.remove(i);
            }
            (Some(i), false) => chain[i] = equalizer.entry(),
            (None, false) => chain.insert(0, equalizer.entry()),
            (None, true) => {}
        }
        self.set_filters(state, chain);
    }

    /// Replaces the filter chain.
    pub fn set_filters(&self, state: &mut State, chain: Vec<FilterEntry>) {
        self.controls.filters.set(chain.clone());
        state.filters = chain;
    }

    /// Swaps in a connected voice session at the next frame; the old one closes afterwards.
    pub fn replace_voice(&self, state: &mut State, connection: VoiceBridgePayload, voice: VoiceConnection) {
        let speaking = state.status == PlayerStatus::Playing;
        let sender = voice.sender();
        if speaking {
            sender.set_speaking(true);
        }
        self.output.set_sender(Some(sender));
        state.voice = Some(voice);
        state.connection = connection;
    }

    /// Tears the player down: its track work now, its voice connection once the silence
    /// tail is out, so listeners hear a clean stop. The wait is bounded for a connection that
    /// can no longer send, generously: a stalled machine must not cut the tail short.
    pub fn shut_down(self: &Arc<Self>, state: &mut State) {
        self.end_current(state);
        state.status = PlayerStatus::Stopped;
        let Some(voice) = state.voice.take() else { return };
        let player = self.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), player.output.wait_quiet()).await;
            player.output.set_sender(None);
            drop(voice);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::format_ms;

    #[test]
    fn positions_have_unbounded_minutes() {
        assert_eq!(format_ms(0), "0:00");
        assert_eq!(format_ms(63_999), "1:03");
        assert_eq!(format_ms(75 * 60_000 + 3_000), "75:03");
    }
}

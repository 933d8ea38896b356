//! The one way to drive a player: [`Player::lock`] hands out a guard whose methods are the
//! player's operations. Every operation that changes the player marks the guard, and a marked
//! guard hands its state to the store writer when it is committed or dropped: no caller can
//! change a player and forget to save it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::MutexGuard;

use super::state::State;
use super::{Advance, EndReason, KnownSource, Player, PlayerNews, QueueFull};
use crate::audio::TrackInfo;
use crate::model::{Equalizer, FilterEntry, PlayerSnapshot, PlayerStatus, Track, VoiceBridgePayload};
use crate::voice::VoiceConnection;

/// A locked player. Read what it shows, call its operations, then [`Self::commit`] for the
/// snapshot (or drop it: what changed is saved either way).
#[must_use = "a player guard holds the player's lock"]
pub struct PlayerGuard<'a> {
    pub(super) player: &'a Arc<Player>,
    pub(super) state: MutexGuard<'a, State>,
    pub(super) changed: bool,
}

impl Drop for PlayerGuard<'_> {
    fn drop(&mut self) {
        if self.changed {
            self.save();
        }
    }
}

impl Player {
    /// Waits for the player's lock.
    pub async fn lock<'a>(self: &'a Arc<Self>) -> PlayerGuard<'a> {
        PlayerGuard { player: self, state: self.state.lock().await, changed: false }
    }

    /// The player's lock if nobody holds it now.
    pub(super) fn try_lock<'a>(self: &'a Arc<Self>) -> Option<PlayerGuard<'a>> {
        let state = self.state.try_lock().ok()?;
        Some(PlayerGuard { player: self, state, changed: false })
    }

    /// What the player shows now.
    pub async fn snapshot(self: &Arc<Self>) -> PlayerSnapshot {
        self.lock().await.snapshot()
    }

    pub async fn is_playing(self: &Arc<Self>) -> bool {
        self.lock().await.status() == PlayerStatus::Playing
    }
}

/// How many of `players` are playing now.
pub async fn count_playing(players: &[Arc<Player>]) -> usize {
    let mut playing = 0;
    for player in players {
        playing += usize::from(player.is_playing().await);
    }
    playing
}

/// What a player shows.
impl PlayerGuard<'_> {
    pub fn snapshot(&self) -> PlayerSnapshot {
        let state = &self.state;
        PlayerSnapshot {
            player_id: self.player.id,
            connection: state.connection.clone(),
            status: state.status,
            queue: state.queue.iter().cloned().collect(),
            current_track: state.current.clone(),
            position_ms: self.position_ms(),
            volume: state.volume,
            equalizer: state.equalizer(),
            voice_connected: state.voice_connected(),
            playback_session_id: state.playback_session_id.clone(),
            filters: state.filters.clone(),
        }
    }

    /// Saves what changed (if anything did) and answers what the player shows.
    pub fn commit(mut self) -> PlayerSnapshot {
        let snapshot = self.snapshot();
        if std::mem::take(&mut self.changed) && self.player.is_saved() {
            self.player.persist(self.view_with(snapshot.clone()));
        }
        snapshot
    }

    pub fn status(&self) -> PlayerStatus {
        self.state.status
    }

    pub fn current(&self) -> Option<&Track> {
        self.state.current.as_ref()
    }

    /// The tracks waiting behind the current one.
    pub fn queue(&self) -> impl ExactSizeIterator<Item = &Track> {
        self.state.queue.iter()
    }

    pub fn filters(&self) -> &[FilterEntry] {
        &self.state.filters
    }

    /// The voice credentials the player was given last.
    pub fn connection(&self) -> &VoiceBridgePayload {
        &self.state.connection
    }

    pub fn voice_connected(&self) -> bool {
        self.state.voice_connected()
    }

    /// The voice gateway's heartbeat round trip, while connected.
    pub fn voice_ping(&self) -> Option<std::time::Duration> {
        self.state.voice.as_ref().filter(|_| self.voice_connected()).and_then(VoiceConnection::ping)
    }

    pub fn position_ms(&self) -> u64 {
        if self.state.current.is_some() { self.player.output.position_ms() } else { 0 }
    }

    /// What the store keeps of the player now.
    pub(super) fn persist_view(&self) -> super::PersistView {
        self.view_with(self.snapshot())
    }

    /// What the store keeps, around `snapshot`: the queue with the playing track at its head.
    fn view_with(&self, snapshot: PlayerSnapshot) -> super::PersistView {
        let state = &self.state;
        let queue = state.current.iter().chain(state.queue.iter()).cloned().collect();
        super::PersistView { queue, position_ms: snapshot.position_ms, snapshot, revision: 0 }
    }

    /// Hands the player as it is to the store writer, if anything stores it.
    fn save(&self) {
        if self.player.is_saved() {
            self.player.persist(self.persist_view());
        }
    }

    /// Saves the position alone: what a playing player's periodic save changes.
    pub(super) fn persist_position(&self) {
        if !self.player.persist_position(self.position_ms()) {
            self.save();
        }
    }
}

/// What a player does.
impl PlayerGuard<'_> {
    /// Appends `tracks` (with what their resolvers said about fetching some of them); an
    /// idle player starts. Refused whole when the queue would hold more than its limit.
    pub fn enqueue(&mut self, tracks: Vec<Track>, sources: Vec<(String, KnownSource)>) -> Result<(), QueueFull> {
        let limit = self.player.ctx.limits.queue_tracks;
        let queued = self.state.queue.len();
        if queued + tracks.len() > limit {
            return Err(QueueFull { limit, queued, adding: tracks.len() });
        }
        self.changed = true;
        self.state.sources.extend(sources);
        self.state.queue.extend(tracks);
        if self.state.current.is_none() && self.state.status == PlayerStatus::Idle {
            self.advance();
        }
        Ok(())
    }

    /// Empties the queue (the current track plays on) and releases what its tracks held.
    pub fn clear_queue(&mut self) {
        self.changed = true;
        let state = &mut *self.state;
        for track in state.queue.drain(..) {
            state.sources.remove(&track.id);
        }
    }

    pub fn play(&mut self) {
        if self.state.current.is_some() {
            self.set_paused(false);
        } else {
            self.changed = true;
            self.state.status = PlayerStatus::Idle;
            self.advance();
        }
    }

    pub fn stop(&mut self) {
        self.changed = true;
        self.end_current();
        self.player.output.set_paused(false);
        self.state.status = PlayerStatus::Stopped;
    }

    pub fn set_paused(&mut self, paused: bool) {
        if self.state.current.is_none() {
            return;
        }
        self.changed = true;
        self.player.output.set_paused(paused);
        self.state.status = if paused { PlayerStatus::Paused } else { PlayerStatus::Playing };
    }

    /// Ends the current track (emitting `TrackEnded`) and starts the next; see
    /// [`super::Registry::after`] for a queue that ran out.
    pub fn skip(&mut self) -> Option<Advance> {
        let track = self.state.current.clone()?;
        self.changed = true;
        self.player.tell(PlayerNews::TrackEnded { track, reason: EndReason::Stopped });
        Some(self.advance())
    }

    /// Restarts the current track's decoding at `ms`; false without a track.
    pub fn seek(&mut self, ms: u64) -> bool {
        let Some(track) = self.state.current.clone() else { return false };
        self.changed = true;
        if let Some(cancel) = self.state.cancel.take() {
            cancel.store(true, Ordering::Release);
        }
        // The end marker belongs to the track, not to where it was read from.
        let end = self.player.output.end_ms();
        self.start(track, ms);
        self.player.output.set_end(end);
        true
    }

    pub fn set_volume(&mut self, volume: f32) {
        self.changed = true;
        self.state.volume = volume;
        self.player.controls.gain.set(volume);
    }

    /// Sets the 3-band equalizer, which is the chain's `threeBandEqualizer` entry (added
    /// in front when missing, removed when flat).
    pub fn set_equalizer(&mut self, equalizer: Equalizer) {
        let mut chain = self.state.filters.clone();
        let at = chain.iter().position(|e| e.name == Equalizer::FILTER);
        match (at, equalizer.is_flat()) {
            (Some(i), true) => {
                chain.remove(i);
            }
            (Some(i), false) => chain[i] = equalizer.entry(),
            (None, false) => chain.insert(0, equalizer.entry()),
            (None, true) => {}
        }
        self.set_filters(chain);
    }

    /// Replaces the filter chain.
    pub fn set_filters(&mut self, chain: Vec<FilterEntry>) {
        self.changed = true;
        self.player.controls.filters.set(chain.clone());
        self.state.filters = chain;
    }

    /// Plays `track` now from `start_ms`, in place of the current one (which ends as
    /// replaced); the queue is left as it is. `paused` says whether it starts paused.
    pub fn play_now(&mut self, track: Track, source: Option<KnownSource>, start_ms: u64, paused: bool) {
        self.changed = true;
        if let Some(current) = self.state.current.clone() {
            self.player.tell(PlayerNews::TrackEnded { track: current, reason: EndReason::Replaced });
            self.end_current();
        }
        if let Some(source) = source {
            self.state.sources.insert(track.id.clone(), source);
        }
        self.state.status = if paused { PlayerStatus::Paused } else { PlayerStatus::Idle };
        self.start(track, start_ms);
    }

    /// Ends the current track when its position reaches `ms` (`None`: at its own end); it
    /// ends as finished. A new track starts without a marker.
    pub fn set_end(&mut self, ms: Option<u64>) {
        if self.state.current.is_some() {
            self.player.output.set_end(ms);
        }
    }

    /// Ends the current track, saying why, and leaves the player idle, the queue as it is.
    pub fn end_track(&mut self, reason: EndReason) {
        self.changed = true;
        if let Some(current) = self.state.current.clone() {
            self.player.tell(PlayerNews::TrackEnded { track: current, reason });
        }
        self.end_current();
        self.player.output.set_paused(false);
        self.state.status = PlayerStatus::Idle;
    }

    /// Swaps in a connected voice session at the next frame; the old one closes afterwards.
    pub fn replace_voice(&mut self, connection: VoiceBridgePayload, voice: VoiceConnection) {
        self.changed = true;
        let sender = voice.sender();
        if self.state.status == PlayerStatus::Playing {
            sender.set_speaking(true);
        }
        self.player.output.set_sender(Some(sender));
        self.state.voice = Some(voice);
        self.state.connection = connection;
    }

    /// Tears the player down. The store keeps what it held as it was (the playing track at
    /// the head of its queue), for the guild's next player; nothing after is saved.
    pub fn shut_down(self) {
        self.save();
        self.shut_down_unsaved();
    }

    /// Tears the player down and saves nothing of it (another node plays it now, or it
    /// never took over). Its track work stops now, its voice connection once the silence
    /// tail is out, so listeners hear a clean stop. The wait is bounded for a connection that
    /// can no longer send, generously: a stalled machine must not cut the tail short.
    pub(super) fn shut_down_unsaved(mut self) {
        self.changed = false;
        self.end_current();
        self.state.status = PlayerStatus::Stopped;
        let Some(voice) = self.state.voice.take() else { return };
        let player = self.player.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), player.output.wait_quiet()).await;
            player.output.set_sender(None);
            drop(voice);
        });
    }

    /// Puts a restored queue in place and starts its head at `position_ms` (past its end:
    /// from the start).
    pub(super) fn restore_queue(&mut self, queue: Vec<Track>, position_ms: u64) {
        self.changed = true;
        self.state.queue.extend(queue);
        if let Some(track) = self.state.queue.pop_front() {
            let duration = track.metadata.duration_ms;
            let start = if duration > 0 && position_ms >= duration { 0 } else { position_ms };
            self.start(track, start);
        }
    }

    /// Queues tracks behind the current one without starting anything.
    pub(super) fn queue_behind(&mut self, tracks: impl IntoIterator<Item = Track>) {
        self.changed = true;
        self.state.queue.extend(tracks);
    }

    /// The packet clock reports the end of the track started as `token`.
    pub(super) fn track_finished(&mut self, token: u64, result: Result<(), String>) -> Option<Advance> {
        if token != self.state.token {
            return None;
        }
        let mut track = self.state.current.take()?;
        self.changed = true;
        self.state.cancel = None;
        let reason = match result {
            Ok(()) => EndReason::Finished,
            Err(e) => {
                tracing::warn!(player = %self.player.id, track = %track.id, error = %e, "track ended early");
                track.error = Some(e.clone());
                EndReason::Failed(e)
            }
        };
        self.player.tell(PlayerNews::TrackEnded { track, reason });
        Some(self.advance())
    }

    /// The track started as `token` is open: its duration, if it had none, is known now.
    pub(super) fn track_opened(&mut self, token: u64, info: TrackInfo) {
        if token != self.state.token {
            return;
        }
        if let (Some(track), Some(ms)) = (self.state.current.as_mut(), info.duration_ms)
            && track.metadata.duration_ms == 0
        {
            track.metadata.duration_ms = ms;
            self.changed = true;
        }
    }

    /// Saves the player as it is (a voice session that went away changes what it shows).
    pub(super) fn mark_changed(&mut self) {
        self.changed = true;
    }

    /// Lets go of the lock without saving: for a player not yet in place (a take-over
    /// being prepared), whose state is still another node's to save.
    pub(super) fn release_unsaved(mut self) {
        self.changed = false;
    }

    /// The player's guild and id.
    pub fn ids(&self) -> (crate::model::Id, crate::model::Id) {
        (self.player.guild_id, self.player.id)
    }
}

//! How a player's track starts and ends: the pipeline spawned for it, the clock's output
//! switched to it, and where its media comes from.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::state::State;
use super::{Advance, Player, PlayerGuard, PlayerNews, stream_title, track};
use crate::audio::{TrackInfo, TrackRequest, TrackSource, pipeline};
use crate::model::{PlayerStatus, Track};
use crate::plugins::resolver::Locator;

/// How a track starts and ends.
impl PlayerGuard<'_> {
    /// Starts the next queued track if there is one.
    pub(super) fn advance(&mut self) -> Advance {
        self.end_current();
        let Some(track) = self.state.queue.pop_front() else {
            if self.state.status != PlayerStatus::Stopped {
                self.state.status = PlayerStatus::Idle;
            }
            return if self.state.played_any { Advance::Drained } else { Advance::Idle };
        };
        self.start(track, 0);
        Advance::Started
    }

    /// Starts `track` at `start_ms`, keeping the paused state.
    pub(super) fn start(&mut self, track: Track, start_ms: u64) {
        let player = self.player;
        let state = &mut *self.state;
        state.token += 1;
        let token = state.token;
        let cancel = Arc::new(AtomicBool::new(false));
        let signals = player.opened.clone();
        let on_open = move |info: TrackInfo| {
            let _ = signals.send((token, info));
        };
        let span =
            tracing::info_span!("track", player = %player.id, track_id = %track.id, url = %track.source_url, start_ms);
        let (source, cache_key) = source_of(player, state, &track);
        let request = TrackRequest {
            source,
            cache_key,
            duration_hint_ms: Some(track.metadata.duration_ms).filter(|ms| *ms > 0),
            start_ms,
            span,
        };
        let frames =
            pipeline::spawn(request, player.ctx.pipeline.clone(), player.controls.clone(), cancel.clone(), on_open);
        state.played_any = true;
        player.output.play(token, frames, start_ms / 20, stream_title(&track).into());
        state.cancel = Some(cancel);
        let paused = state.status == PlayerStatus::Paused;
        player.output.set_paused(paused);
        state.status = if paused { PlayerStatus::Paused } else { PlayerStatus::Playing };
        let same_track = state.current.as_ref().is_some_and(|c| c.id == track.id);
        if !same_track {
            state.playback_session_id = Some(uuid::Uuid::new_v4().to_string());
            if let Some(voice) = state.voice.as_ref().filter(|_| !paused) {
                voice.sender().set_speaking(true);
            }
            player.tell(PlayerNews::TrackStarted { track: track.clone(), position_ms: start_ms });
        }
        state.current = Some(track);
    }

    /// Cancels the current track's work and forgets it.
    pub(super) fn end_current(&mut self) {
        let state = &mut *self.state;
        if let Some(track) = &state.current {
            state.sources.remove(&track.id);
        }
        if let Some(cancel) = state.cancel.take() {
            cancel.store(true, Ordering::Release);
        }
        self.player.output.clear();
        state.current = None;
    }
}

/// Where `track`'s media comes from and what it is cached under: a live mount for a `live:`
/// track (never cached); what its resolver said at enqueue; else the resolvers again when one
/// takes its link (tracks restored after a restart, tracks played from a Lavalink blob; the
/// pipeline learns the key when it resolves); else its URL.
fn source_of(player: &Player, state: &State, track: &Track) -> (TrackSource, Option<String>) {
    if track.source == track::LIVE_SOURCE
        && let Some(mount) = track::live_mount(&track.source_url)
    {
        return (TrackSource::Live(player.ctx.live.follow(mount)), None);
    }
    let plugins = player.ctx.pipeline.plugins.as_ref();
    match state.sources.get(&track.id) {
        Some(known) => (TrackSource::Located(known.locator.clone()), Some(known.cache_key.clone())),
        _ if plugins.is_some_and(|h| h.has_resolvers() && h.claims(&track.source_url)) => (
            TrackSource::Resolve { query: track.source_url.clone(), guild_id: Some(player.guild_id.to_string()) },
            None,
        ),
        _ => (
            TrackSource::Located(Locator::Http { url: track.stream_url.clone(), headers: Vec::new() }),
            Some(pipeline::direct_cache_key(&track.stream_url)),
        ),
    }
}

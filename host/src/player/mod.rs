//! Players: one per guild, each with its queue, current track and voice connection, driven by
//! API calls and by signals from the packet clock and the voice transport. Every control acts
//! at once and the status always says what the listener hears.

mod context;
mod dialling;
pub mod filter_check;
mod handle;
mod lifecycle;
pub mod listener;
pub mod lookup;
mod output;
mod playback;
pub mod prepare;
pub mod registry;
mod state;
pub mod tasks;
pub mod track;

use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, watch};

pub use context::{Context, PlayerError};
pub use handle::{PlayerGuard, count_playing};
pub use listener::{EndReason, EventBusListener, PlayerListener, PlayerNews};
pub use output::{OutputCounters, OutputSignal, PlayerOutput};
pub use registry::Registry;

use crate::audio::{Controls, TrackInfo};
use crate::model::{Id, PlayerSnapshot, Track};
use crate::plugins::resolver::Locator;
use crate::voice::VoiceEvent;
use crate::voice::scheduler::Registration;
use state::State;

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

pub struct Player {
    pub id: Id,
    pub guild_id: Id,
    state: Mutex<State>,
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
    /// Whether anything stores this player (nothing does for one another protocol owns).
    fn is_saved(&self) -> bool {
        !self.persist_tx.is_closed()
    }

    /// Hands `view` to the store writer.
    fn persist(&self, mut view: PersistView) {
        self.persist_tx.send_modify(|last| {
            view.revision = last.as_ref().map_or(0, |last| last.revision.wrapping_add(1));
            *last = Some(view);
        });
    }

    /// Moves the saved position alone; false when there is no saved view to move yet.
    fn persist_position(&self, position_ms: u64) -> bool {
        let mut known = true;
        self.persist_tx.send_if_modified(|last| match last {
            Some(last) if last.position_ms != position_ms => {
                last.position_ms = position_ms;
                true
            }
            Some(_) => false,
            None => {
                known = false;
                false
            }
        });
        known
    }

    pub(crate) fn tell(&self, news: PlayerNews) {
        self.listener.news(self.guild_id, self.id, news);
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

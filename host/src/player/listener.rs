//! What a player tells whoever drives it, in words of its own: each protocol turns these into
//! its events. A mesastream player reports to the event bus (`/ws`); a player that another
//! protocol owns reports to that protocol's session only.

use crate::events::{Event, EventBus};
use crate::model::{Id, Track};

/// Why a track stopped playing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// It played to its end.
    Finished,
    /// It could not be opened or broke while playing.
    Failed(String),
    /// A control ended it (stop, skip).
    Stopped,
    /// Another track took its place.
    Replaced,
    /// Nobody took its frames for a long while (no voice connection), so it was let go.
    Cleanup,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PlayerNews {
    TrackStarted {
        track: Track,
        position_ms: u64,
    },
    TrackEnded {
        track: Track,
        reason: EndReason,
    },
    /// The voice session ended for good (`code` is the gateway's close code).
    VoiceClosed {
        code: Option<u16>,
        reason: String,
    },
    /// A filter failed and is bypassed for the rest of the track.
    FilterFailed {
        filter: String,
        plugin: String,
        kind: String,
        reason: String,
    },
}

pub trait PlayerListener: Send + Sync {
    fn news(&self, guild_id: Id, player_id: Id, news: PlayerNews);
}

/// A mesastream player's events, on the bus every `/ws` client reads.
pub struct EventBusListener(pub EventBus);

impl PlayerListener for EventBusListener {
    fn news(&self, guild_id: Id, player_id: Id, news: PlayerNews) {
        self.0.emit(match news {
            PlayerNews::TrackStarted { track, position_ms } => {
                Event::TrackStarted { guild_id, player_id, track, position_ms }
            }
            PlayerNews::TrackEnded { track, reason } => Event::TrackEnded {
                guild_id,
                player_id,
                track_id: track.id,
                error: match reason {
                    EndReason::Failed(e) => Some(e),
                    _ => track.error,
                },
            },
            PlayerNews::VoiceClosed { reason, .. } => Event::VoiceDisconnected { guild_id, player_id, reason },
            PlayerNews::FilterFailed { filter, plugin, kind, reason } => {
                Event::FilterFailed { guild_id, player_id, filter, plugin, kind, reason }
            }
        });
    }
}

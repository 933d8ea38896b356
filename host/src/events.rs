//! The event stream: adjacently tagged (`{"type":…,"data":{…}}`), one bus for all guilds.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::model::{Id, Track};

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", content = "data")]
pub enum Event {
    PlayerCreated {
        guild_id: Id,
        player_id: Id,
        restored_queue_len: usize,
        restored_position_ms: u64,
    },
    PlayerDestroyed {
        guild_id: Id,
        player_id: Id,
        was_stopped: bool,
    },
    TrackStarted {
        guild_id: Id,
        player_id: Id,
        track: Track,
        position_ms: u64,
    },
    TrackEnded {
        guild_id: Id,
        player_id: Id,
        track_id: String,
        /// Why the track ended early, when it did (an addition to the original's payload).
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    VoiceDisconnected {
        guild_id: Id,
        player_id: Id,
        reason: String,
    },
    /// A filter failed (trapped, ran too long, hit its memory cap) and is bypassed for the
    /// rest of the track; the track plays on without it.
    FilterFailed {
        guild_id: Id,
        player_id: Id,
        filter: String,
        plugin: String,
        /// `timeout`, `memory`, `trap`, `refused` (its config, after a reload) or `pool_full`
        /// (every instance of `PLUGIN_INSTANCES` in use: the player plays unfiltered).
        kind: String,
        reason: String,
    },
    /// A plugin was loaded or reloaded from the plugins directory.
    PluginLoaded {
        id: String,
        version: String,
    },
    /// A plugin's folder was removed.
    PluginUnloaded {
        id: String,
    },
    /// Someone started listening to a player over HTTP (`/listen`); `listeners` counts them now.
    ListenerJoined {
        guild_id: Id,
        player_id: Id,
        listeners: usize,
    },
    /// A listener left, or was dropped for falling too far behind (`dropped`).
    ListenerLeft {
        guild_id: Id,
        player_id: Id,
        listeners: usize,
        dropped: bool,
    },
    /// Someone started listening to a live mount over HTTP (`/live/{mount}/listen`).
    MountListenerJoined {
        mount: String,
        listeners: usize,
    },
    MountListenerLeft {
        mount: String,
        listeners: usize,
        dropped: bool,
    },
    /// A source client connected to a live mount and is on air (`replaced` when it took over
    /// from a source still connected).
    LiveSourceConnected {
        mount: String,
        content_type: Option<String>,
        replaced: bool,
    },
    /// A live mount's source went away: `reason` is `disconnected`, `stalled` (sent nothing
    /// for `INGEST_IDLE_SECONDS`), `max_duration`, `replaced`, `removed` or `failed: …`.
    LiveSourceDisconnected {
        mount: String,
        reason: String,
    },
    /// A live mount's title changed (the source's metadata, `/admin/metadata`, or the API).
    LiveTitle {
        mount: String,
        title: String,
    },
    /// A DJ waits their turn on a stage: `place` 1 is next.
    StageQueued {
        stage: String,
        dj: String,
        place: usize,
    },
    /// A DJ is on air until `deadline_ms` (Unix ms).
    OnAir {
        stage: String,
        dj: String,
        deadline_ms: u64,
    },
    /// The DJ on air has `remaining_secs` left.
    SlotWarning {
        stage: String,
        dj: String,
        remaining_secs: u64,
    },
    /// A DJ's turn ended: `slot_over`, `skipped`, `kicked`, or `gone` (away past the grace).
    OffAir {
        stage: String,
        dj: String,
        reason: String,
    },
    /// A DJ may not log in to the stage until `until_ms` (Unix ms).
    DjBlocked {
        stage: String,
        dj: String,
        until_ms: u64,
    },
    /// In a cluster: `node` now plays the player, from where it was saved; `from` is the node
    /// that played it before (absent when unknown).
    PlayerAdopted {
        guild_id: Id,
        player_id: Id,
        node: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<String>,
    },
    Goodbye,
}

/// Fan-out of events to every WebSocket client: this node's, and (in a cluster) the other
/// nodes' as they sent them.
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
    relayed: broadcast::Sender<Arc<str>>,
}

impl EventBus {
    pub fn new(capacity: usize) -> Self {
        Self { tx: broadcast::channel(capacity.max(16)).0, relayed: broadcast::channel(capacity.max(16)).0 }
    }

    /// Hands another node's event (its JSON text) to this node's clients.
    pub fn relay(&self, json: Arc<str>) {
        let _ = self.relayed.send(json);
    }

    pub fn subscribe_relayed(&self) -> broadcast::Receiver<Arc<str>> {
        self.relayed.subscribe()
    }

    pub fn emit(&self, event: Event) {
        tracing::debug!(?event, "event");
        let _ = self.tx.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_adjacently_tagged() {
        let e = Event::PlayerDestroyed { guild_id: Id(1), player_id: Id(2), was_stopped: true };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"PlayerDestroyed","data":{"guild_id":"1","player_id":"2","was_stopped":true}}"#
        );
        assert_eq!(serde_json::to_string(&Event::Goodbye).unwrap(), r#"{"type":"Goodbye"}"#);
    }
}

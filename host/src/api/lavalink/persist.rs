//! Lavalink sessions kept in the state store, so a restart of the node (or a crash) loses
//! none of them, which Lavalink itself cannot do. One record holds every session: its
//! client's bot id and timeout, and each player's voice credentials, track, position, pause,
//! volume, filters and end marker. A single task writes it, at most every half second and
//! only when something changed; at start it makes the sessions again, each waiting for its
//! client for its timeout as a resuming session does, its players connected and playing
//! from where they were. In a cluster each node keeps its own record (`sessions:{node}`):
//! Lavalink clients balance nodes themselves, so a session stays with its node.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::LavalinkState;
use super::player::SavedPlayer;
use super::player_update;
use crate::model::Id;

const PROTOCOL: &str = "lavalink";
const RECORD: &str = "sessions";
/// How often the record is brought up to date: a restart resumes within this.
const SAVE_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedSession {
    pub user_id: u64,
    pub timeout_s: u64,
    pub players: Vec<SavedPlayer>,
}

/// Restores what the last run saved, then keeps the record up to date for as long as the
/// node runs.
pub async fn run(state: LavalinkState) {
    let store = state.app.registry.ctx.store.clone();
    let record = match &state.app.registry.ctx.cluster {
        Some(cluster) => format!("{RECORD}:{}", cluster.node_id()),
        None => RECORD.to_string(),
    };
    let saved: BTreeMap<String, SavedSession> = match store.protocol_record(PROTOCOL, &record).await {
        Ok(saved) => saved.unwrap_or_default(),
        Err(e) => {
            // Not overwritten until the store answers: the next run may still restore them.
            tracing::error!(error = %e, "the saved Lavalink sessions could not be read; none are restored");
            return;
        }
    };
    for (id, session) in &saved {
        restore(&state, id, session).await;
    }
    let mut last = Some(saved);
    let mut every = tokio::time::interval(SAVE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        every.tick().await;
        let now = snapshot(&state).await;
        if last.as_ref() == Some(&now) {
            continue;
        }
        if store.save_protocol_record(PROTOCOL, &record, &now).await.is_ok() {
            last = Some(now);
        }
    }
}

async fn restore(state: &LavalinkState, id: &str, saved: &SavedSession) {
    let session = state.node.sessions.restore(id, saved.user_id, saved.timeout_s);
    tracing::info!(session = %id, players = saved.players.len(), "lavalink session restored; waiting for its client");
    for saved in saved.players.clone() {
        let guild = saved.guild;
        let restored = match session.player_or_create(Id(guild), state) {
            Ok(made) => player_update::restore(state, session.user_id, &made, saved).await,
            Err(e) => Err(e),
        };
        match restored {
            Ok(Some(frame)) => session.send(frame, true),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(session = %id, guild, error = %e.message, "a saved lavalink player could not be restored");
            }
        }
    }
}

async fn snapshot(state: &LavalinkState) -> BTreeMap<String, SavedSession> {
    let mut all = BTreeMap::new();
    for session in state.node.sessions.all() {
        let mut players = Vec::new();
        for player in session.players() {
            players.push(player.saved().await);
        }
        let (_, timeout_s) = session.resuming();
        all.insert(session.id.clone(), SavedSession { user_id: session.user_id, timeout_s, players });
    }
    all
}

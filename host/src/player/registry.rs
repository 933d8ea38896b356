//! All players: the mesastream contract's, keyed by player id, one per guild (creation
//! connects voice before anything else changes: an old player is replaced only once the new
//! connection works), and those another protocol's sessions own, which the registry counts
//! against `MAX_PLAYERS` and shows in the node's figures but does not key. Here: finding
//! them and taking them away; making them is `lifecycle`, their voice `dialling`.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::{Advance, Context, Player, PlayerError, PlayerGuard, PlayerKind};
use crate::events::Event;
use crate::model::{Id, VoiceBridgePayload};

pub struct Registry {
    pub ctx: Arc<Context>,
    pub(super) players: Mutex<HashMap<Id, Arc<Player>>>,
    /// Players other protocols own (they hold them; gone when dropped).
    pub(super) owned: Mutex<Vec<Weak<Player>>>,
}

impl Registry {
    pub fn new(ctx: Arc<Context>) -> Arc<Self> {
        Arc::new(Self { ctx, players: Mutex::new(HashMap::new()), owned: Mutex::default() })
    }

    pub fn get(&self, id: Id) -> Result<Arc<Player>, PlayerError> {
        self.players.lock().get(&id).cloned().ok_or(PlayerError::NotFound(id))
    }

    /// Whether `player` is the mesastream player registered under its id.
    pub(super) fn is_registered(&self, player: &Arc<Player>) -> bool {
        self.players.lock().get(&player.id).is_some_and(|p| Arc::ptr_eq(p, player))
    }

    /// The mesastream players, by id.
    pub fn list(&self) -> Vec<Arc<Player>> {
        let mut all: Vec<_> = self.players.lock().values().cloned().collect();
        all.sort_by_key(|p| p.id);
        all
    }

    /// Every player on this node, whoever owns it.
    pub fn all(&self) -> Vec<Arc<Player>> {
        let mut all = self.list();
        all.extend(self.owned.lock().iter().filter_map(Weak::upgrade));
        all
    }

    pub(super) fn count(&self) -> usize {
        let mut owned = self.owned.lock();
        owned.retain(|p| p.strong_count() > 0);
        self.players.lock().len() + owned.len()
    }

    /// Stops playing a player another node holds now, leaving its saved state to that node.
    /// Not a frame more goes out for it (not even the silence tail): the other node plays it.
    pub async fn let_go(&self, id: Id) {
        let Some(player) = self.players.lock().remove(&id) else { return };
        player.output.set_sender(None);
        player.lock().await.shut_down_unsaved();
        self.report_load();
    }

    /// Tells the cluster how many players this node plays.
    pub(super) fn report_load(&self) {
        if let Some(cluster) = &self.ctx.cluster {
            cluster.set_load(self.count());
        }
    }

    /// Drops a prepared player that did not take over: nothing of it is saved.
    pub async fn abandon(&self, player: Arc<Player>) {
        player.output.set_sender(None);
        player.lock().await.shut_down_unsaved();
    }

    /// Whether a new player fits (one that replaces a player of the same id or guild does).
    pub(super) fn check_room(&self, payload: &VoiceBridgePayload) -> Result<(), PlayerError> {
        let replaces =
            self.players.lock().values().any(|p| p.id == payload.player_id || p.guild_id == payload.guild_id);
        if !replaces && self.count() >= self.ctx.limits.players {
            return Err(PlayerError::Full(self.ctx.limits.players));
        }
        Ok(())
    }

    /// Auto-destroys `player` when a control drained its queue.
    pub async fn after(&self, player: &Arc<Player>, advance: Option<Advance>) {
        if advance == Some(Advance::Drained) && player.kind == PlayerKind::Mesastream {
            self.retire(player).await;
        }
    }

    /// Removes a player; `was_stopped` says whether it was asked to go (true) or ran out of
    /// tracks (false).
    pub async fn destroy(&self, id: Id, was_stopped: bool) -> Result<(), PlayerError> {
        let player = self.players.lock().remove(&id).ok_or(PlayerError::NotFound(id))?;
        self.tear_down(player.lock().await, was_stopped);
        self.leave(id).await;
        Ok(())
    }

    /// In a cluster, gives up a removed player's lease for good.
    pub(super) async fn leave(&self, id: Id) {
        self.report_load();
        if let Some(cluster) = &self.ctx.cluster {
            cluster.release(id).await;
        }
    }

    /// Saves a removed player's guild state, stops it and says so on the event stream.
    pub(super) fn tear_down(&self, player: PlayerGuard<'_>, was_stopped: bool) {
        let (guild_id, player_id) = player.ids();
        player.shut_down();
        self.ctx.events.emit(Event::PlayerDestroyed { guild_id, player_id, was_stopped });
    }

    /// Removes `player` if it is still the registered one (used for auto-destroy).
    pub(super) async fn retire(&self, player: &Arc<Player>) {
        let removed = {
            let mut players = self.players.lock();
            match players.get(&player.id) {
                Some(p) if Arc::ptr_eq(p, player) => players.remove(&player.id),
                _ => None,
            }
        };
        if removed.is_some() {
            self.tear_down(player.lock().await, false);
            self.leave(player.id).await;
        }
    }
}

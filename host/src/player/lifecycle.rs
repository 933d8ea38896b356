//! Making players: a mesastream player for `POST /players` (voice first, then it replaces
//! any of its id or guild and restores the guild's queue), one adopted or taken over from
//! another node, and one another protocol's session owns.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::tasks::{store_writer, watch_player};
use super::{
    EventBusListener, PersistView, Player, PlayerError, PlayerKind, PlayerListener, PlayerNews, PlayerOutput, Registry,
    State,
};
use crate::audio::Controls;
use crate::cluster::Claim;
use crate::events::Event;
use crate::model::{Id, PlayerSnapshot, VoiceBridgePayload};
use crate::voice::{Tickable, VoiceConnection, VoiceEvent};

impl Registry {
    /// `POST /players`: connect, then replace any player of the same id or guild. In a cluster
    /// the player's lease is taken first (kept if this node holds it already).
    pub async fn create(self: &Arc<Self>, payload: VoiceBridgePayload) -> Result<PlayerSnapshot, PlayerError> {
        self.check_room(&payload)?;
        let id = payload.player_id;
        if let Some(cluster) = &self.ctx.cluster
            && let Claim::Elsewhere(node) = cluster.claim(id).await?
        {
            return Err(PlayerError::Elsewhere(id, node));
        }
        let opened = self.open(payload, None).await;
        let (player, restored_queue_len, position_ms) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                // A new player that failed lets its lease go; a replaced one keeps it.
                if let Some(cluster) = &self.ctx.cluster
                    && self.get(id).is_err()
                {
                    cluster.release(id).await;
                }
                return Err(e);
            }
        };
        self.ctx.events.emit(Event::PlayerCreated {
            guild_id: player.guild_id,
            player_id: player.id,
            restored_queue_len,
            restored_position_ms: position_ms,
        });
        Ok(player.snapshot().await)
    }

    /// Plays a player another node played (its lease is this node's now): from its saved
    /// view, with the stored credentials, queue, position, volume and filters. When it cannot
    /// be played here its lease lapses, for another node or a later round to try (five
    /// times at most).
    pub async fn adopt(self: &Arc<Self>, id: Id, from: Option<String>) -> Result<(), PlayerError> {
        let Some(cluster) = self.ctx.cluster.clone() else { return Ok(()) };
        let saved = match self.ctx.store.player_state(id).await {
            Ok(Some(saved)) => saved,
            Ok(None) => {
                cluster.release(id).await;
                return Err(PlayerError::NotFound(id));
            }
            Err(e) => {
                cluster.adoption_failed(id).await;
                return Err(e.into());
            }
        };
        if let Err(e) = self.open(saved.connection.clone(), Some(&saved)).await {
            cluster.adoption_failed(id).await;
            return Err(e);
        }
        tracing::info!(player = %id, from = from.as_deref().unwrap_or("?"), "adopted a player");
        cluster.counters.adopted.inc();
        self.ctx.events.emit(Event::PlayerAdopted {
            guild_id: saved.connection.guild_id,
            player_id: id,
            node: cluster.node_id().to_string(),
            from,
        });
        Ok(())
    }

    /// Connects voice for `payload` and puts its player in place of any of the same id or
    /// guild, restoring the replaced player's queue or the guild's saved one, and (`adopted`)
    /// a saved player's volume and filters before its first frame. Answers the player, the
    /// restored queue's length and the position restored.
    async fn open(
        self: &Arc<Self>,
        payload: VoiceBridgePayload,
        adopted: Option<&PlayerSnapshot>,
    ) -> Result<(Arc<Player>, usize, u64), PlayerError> {
        let (voice_tx, voice_rx) = mpsc::unbounded_channel();
        let voice = self.connect_voice(&payload, voice_tx.clone()).await?;

        // What to restore: a replaced player's state in memory, else the stored guild state,
        // read before anything changes: if the store cannot answer, the call fails and the
        // saved queue is left as it is (the new connection is dropped).
        let in_memory = self.players.lock().values().any(|p| p.guild_id == payload.guild_id);
        let stored = if in_memory { None } else { Some(self.stored_state(payload.guild_id).await?) };
        let replaced: Vec<Arc<Player>> = {
            let mut players = self.players.lock();
            let ids: Vec<Id> = players
                .values()
                .filter(|p| p.id == payload.player_id || p.guild_id == payload.guild_id)
                .map(|p| p.id)
                .collect();
            ids.iter().filter_map(|id| players.remove(id)).collect()
        };
        let mut restored: Option<PersistView> = None;
        for old in replaced {
            let guard = old.lock().await;
            if old.guild_id == payload.guild_id && restored.is_none() {
                restored = Some(guard.persist_view());
            }
            self.tear_down(guard, true);
        }
        let (queue, position_ms) = match (restored, stored) {
            (Some(view), _) => (view.queue, view.position_ms),
            (None, Some(stored)) => stored,
            // The guild's player went away while this one connected: read again.
            (None, None) => self.stored_state(payload.guild_id).await?,
        };

        let player = self.mesastream_player(payload, voice, (voice_tx, voice_rx));
        self.players.lock().insert(player.id, player.clone());
        self.report_load();
        let restored_queue_len = queue.len();
        let mut guard = player.lock().await;
        if let Some(saved) = adopted {
            guard.set_volume(saved.volume);
            guard.set_filters(saved.filters.clone());
        }
        // As the original, a restored queue starts playing at once, at the saved position.
        guard.restore_queue(queue, position_ms);
        drop(guard);
        Ok((player, restored_queue_len, position_ms))
    }

    /// A mesastream player on the clock, reporting to the event stream, its state saved.
    fn mesastream_player(
        self: &Arc<Self>,
        payload: VoiceBridgePayload,
        voice: VoiceConnection,
        voice_events: (mpsc::UnboundedSender<VoiceEvent>, mpsc::UnboundedReceiver<VoiceEvent>),
    ) -> Arc<Player> {
        let listener: Arc<dyn PlayerListener> = Arc::new(EventBusListener(self.ctx.events.clone()));
        let (player, persist_rx) =
            self.new_player(payload, Some(voice), voice_events, PlayerKind::Mesastream, listener);
        let fence = self.ctx.cluster.clone().map(|cluster| (cluster, player.id));
        tokio::spawn(store_writer::write_state(self.ctx.store.clone(), player.guild_id, persist_rx, fence));
        player
    }

    /// Makes, paused and not yet registered, the player another node hands over (a
    /// migration): its voice connected with the saved credentials (DAVE ready), its volume
    /// and filters set, its track opened at `position_ms` and the rest of its queue behind
    /// it. [`Self::commit_take_over`] puts it in place and lets it play.
    pub async fn prepare_take_over(
        self: &Arc<Self>,
        saved: &PlayerSnapshot,
        position_ms: u64,
    ) -> Result<Arc<Player>, PlayerError> {
        let payload = saved.connection.clone();
        if self.get(payload.player_id).is_ok() {
            return Err(PlayerError::Internal(format!("player {} is here already", payload.player_id)));
        }
        self.check_room(&payload)?;
        let (voice_tx, voice_rx) = mpsc::unbounded_channel();
        let voice = self.connect_voice(&payload, voice_tx.clone()).await?;
        let player = self.mesastream_player(payload, voice, (voice_tx, voice_rx));
        let mut guard = player.lock().await;
        guard.set_volume(saved.volume);
        guard.set_filters(saved.filters.clone());
        guard.queue_behind(saved.queue.iter().cloned());
        if let Some(track) = saved.current_track.clone() {
            guard.play_now(track, None, position_ms, true);
        }
        guard.release_unsaved();
        Ok(player)
    }

    /// Puts a player prepared by [`Self::prepare_take_over`] in place and lets it play (its
    /// lease is this node's now).
    pub async fn commit_take_over(&self, player: Arc<Player>, from: String, was_playing: bool) {
        self.players.lock().insert(player.id, player.clone());
        self.report_load();
        let mut guard = player.lock().await;
        guard.mark_changed();
        if was_playing {
            guard.set_paused(false);
        }
        drop(guard);
        self.ctx.events.emit(Event::PlayerAdopted {
            guild_id: player.guild_id,
            player_id: player.id,
            node: self.ctx.cluster.as_ref().map_or_else(String::new, |c| c.node_id().to_string()),
            from: Some(from),
        });
    }

    /// A player on the clock, and the task that applies what the clock and its voice
    /// connections report to it.
    fn new_player(
        self: &Arc<Self>,
        payload: VoiceBridgePayload,
        voice: Option<VoiceConnection>,
        (voice_tx, voice_rx): (mpsc::UnboundedSender<VoiceEvent>, mpsc::UnboundedReceiver<VoiceEvent>),
        kind: PlayerKind,
        listener: Arc<dyn PlayerListener>,
    ) -> (Arc<Player>, watch::Receiver<Option<PersistView>>) {
        let (signal_tx, signal_rx) = mpsc::unbounded_channel();
        let (opened_tx, opened_rx) = mpsc::unbounded_channel();
        let (persist_tx, persist_rx) = watch::channel(None);
        let recording = Arc::new(crate::audio::recording::Recording::new(
            self.ctx.rewind_ticks,
            self.ctx.scheduler.now_tick(),
            self.ctx.rewind_budget.clone(),
        ));
        let output = Arc::new(PlayerOutput::new(signal_tx, self.ctx.output_counters.clone(), recording));
        output.set_sender(voice.as_ref().map(VoiceConnection::sender));
        let on_clock: Arc<dyn Tickable> = output.clone();
        let registration = self.ctx.scheduler.register(&on_clock);
        let controls = Arc::new(self.controls_for(payload.guild_id, payload.player_id, listener.clone()));
        let player = Arc::new(Player {
            id: payload.player_id,
            guild_id: payload.guild_id,
            state: tokio::sync::Mutex::new(State::new(payload, voice)),
            output,
            listener,
            kind,
            controls,
            ctx: self.ctx.clone(),
            opened: opened_tx,
            voice_events: voice_tx,
            persist_tx,
            _clock: registration,
        });
        tokio::spawn(watch_player::watch_player(
            Arc::downgrade(self),
            Arc::downgrade(&player),
            signal_rx,
            opened_rx,
            voice_rx,
        ));
        (player, persist_rx)
    }

    /// A player another protocol owns, without a voice connection yet (see [`Self::connect`]).
    /// It reports to `listener` only, keeps nothing in the store and stays when its track
    /// ends; it is gone when its owner drops it (after [`Player::shut_down`]).
    pub fn create_owned(
        self: &Arc<Self>,
        guild_id: Id,
        user_id: Id,
        listener: Arc<dyn PlayerListener>,
    ) -> Result<Arc<Player>, PlayerError> {
        if self.count() >= self.ctx.limits.players {
            return Err(PlayerError::Full(self.ctx.limits.players));
        }
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        // Above every snowflake, so logs never mistake one for a mesastream player.
        let player_id = Id(u64::MAX - NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let payload = VoiceBridgePayload {
            guild_id,
            player_id,
            channel_id: Id(0),
            user_id,
            session_id: String::new(),
            token: String::new(),
            endpoint: String::new(),
            gateway_url: String::new(),
        };
        let (player, _) = self.new_player(payload, None, mpsc::unbounded_channel(), PlayerKind::Owned, listener);
        self.owned.lock().push(Arc::downgrade(&player));
        Ok(player)
    }

    /// The controls of a new player: its failing filters become events and metrics.
    fn controls_for(&self, guild_id: Id, player_id: Id, listener: Arc<dyn PlayerListener>) -> Controls {
        let metrics = self.ctx.metrics.clone();
        let on_filter_failure = Arc::new(move |failure: crate::plugins::filter::CallFailure| {
            tracing::warn!(player = %player_id, %failure, "filter bypassed");
            metrics
                .filters_bypassed
                .get_or_create(&crate::telemetry::metrics::FilterLabels {
                    plugin: failure.plugin.clone(),
                    filter: failure.filter.clone(),
                    reason: failure.kind.as_str().to_string(),
                })
                .inc();
            let news = PlayerNews::FilterFailed {
                filter: failure.filter.clone(),
                plugin: failure.plugin.clone(),
                kind: failure.kind.as_str().to_string(),
                reason: failure.message.clone(),
            };
            listener.news(guild_id, player_id, news);
        });
        Controls { gain: Default::default(), filters: Default::default(), on_filter_failure }
    }

    /// The guild's saved queue and the position in its first track.
    async fn stored_state(&self, guild: Id) -> Result<(Vec<crate::model::Track>, u64), PlayerError> {
        let queue = self.ctx.store.queue(guild).await?;
        let position = if queue.is_empty() { 0 } else { self.ctx.store.position(guild).await?.unwrap_or(0) };
        Ok((queue, position))
    }
}

//! All players: the mesastream contract's, keyed by player id, one per guild (creation
//! connects voice before anything else changes: an old player is replaced only once the new
//! connection works), and those another protocol's sessions own, which the registry counts
//! against `MAX_PLAYERS` and shows in the node's figures but does not key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{mpsc, watch};

use super::{
    Advance, EventBusListener, OutputSignal, PersistView, Player, PlayerKind, PlayerListener, PlayerNews, PlayerOutput,
    State,
};
use crate::audio::{Controls, PipelineConfig, TrackInfo};
use crate::cluster::{Claim, Cluster};
use crate::events::{Event, EventBus};
use crate::model::{Id, PlayerSnapshot, PlayerStatus, VoiceBridgePayload};
use crate::store::StateStore;
use crate::voice::{Scheduler, Tickable, VoiceConnection, VoiceError, VoiceEvent, VoiceOptions, VoiceParams};

/// What every player shares.
pub struct Context {
    pub events: EventBus,
    pub pipeline: PipelineConfig,
    pub voice: VoiceOptions,
    pub scheduler: Arc<Scheduler>,
    /// The runtime for network and voice work, apart from the API's.
    pub media: tokio::runtime::Handle,
    /// The guarded client every media request goes through.
    pub egress: crate::egress::Egress,
    pub store: StateStore,
    pub metrics: Arc<crate::telemetry::Metrics>,
    pub output_counters: super::OutputCounters,
    pub limits: crate::config::Limits,
    /// Ticks of sent audio each player keeps for listeners over HTTP (`REWIND_SECONDS`).
    pub rewind_ticks: u64,
    /// What all players' recordings may hold together (`REWIND_MAX_BYTES`).
    pub rewind_budget: Arc<crate::audio::recording::RewindBudget>,
    /// Live mounts, which `live:{mount}` tracks follow.
    pub live: Arc<crate::live::Mounts>,
    /// The cluster this node belongs to, if any: a mesastream player is played only by the
    /// node holding its lease.
    pub cluster: Option<Arc<Cluster>>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlayerError {
    #[error("player {0} not found")]
    NotFound(Id),
    #[error(transparent)]
    Voice(#[from] VoiceError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("this node has its {0} players (MAX_PLAYERS); try another node or later")]
    Full(usize),
    #[error("player {0} is played by node {1}")]
    Elsewhere(Id, String),
    #[error("{0}")]
    Internal(String),
}

pub struct Registry {
    pub ctx: Arc<Context>,
    players: Mutex<HashMap<Id, Arc<Player>>>,
    /// Players other protocols own (they hold them; gone when dropped).
    owned: Mutex<Vec<Weak<Player>>>,
}

fn guard<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Registry {
    pub fn new(ctx: Arc<Context>) -> Arc<Self> {
        Arc::new(Self { ctx, players: Mutex::new(HashMap::new()), owned: Mutex::default() })
    }

    pub fn get(&self, id: Id) -> Result<Arc<Player>, PlayerError> {
        guard(&self.players).get(&id).cloned().ok_or(PlayerError::NotFound(id))
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

    /// Whether `player` is the mesastream player registered under its id.
    fn is_registered(&self, player: &Arc<Player>) -> bool {
        guard(&self.players).get(&player.id).is_some_and(|p| Arc::ptr_eq(p, player))
    }

    /// The mesastream players, by id.
    pub fn list(&self) -> Vec<Arc<Player>> {
        let mut all: Vec<_> = guard(&self.players).values().cloned().collect();
        all.sort_by_key(|p| p.id);
        all
    }

    /// Every player on this node, whoever owns it.
    pub fn all(&self) -> Vec<Arc<Player>> {
        let mut all = self.list();
        all.extend(guard(&self.owned).iter().filter_map(Weak::upgrade));
        all
    }

    fn count(&self) -> usize {
        let mut owned = guard(&self.owned);
        owned.retain(|p| p.strong_count() > 0);
        guard(&self.players).len() + owned.len()
    }

    /// Connects voice on the media runtime.
    pub async fn connect_voice(
        &self,
        payload: &VoiceBridgePayload,
        events: mpsc::UnboundedSender<VoiceEvent>,
    ) -> Result<VoiceConnection, PlayerError> {
        let params = VoiceParams {
            server_id: payload.guild_id.to_string(),
            user_id: payload.user_id.0,
            channel_id: payload.channel_id.0,
            session_id: payload.session_id.clone(),
            token: payload.token.clone(),
            gateway_url: payload.gateway_url.clone(),
        };
        let options = self.ctx.voice.clone();
        let connecting = self.ctx.media.spawn(VoiceConnection::connect(params, options, events));
        connecting.await.map_err(|e| PlayerError::Internal(e.to_string()))?.map_err(PlayerError::from)
    }

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

    /// Stops playing a player another node holds now, leaving its saved state to that node.
    /// Not a frame more goes out for it (not even the silence tail): the other node plays it.
    pub async fn let_go(&self, id: Id) {
        let Some(player) = guard(&self.players).remove(&id) else { return };
        player.output.set_sender(None);
        player.shut_down(&mut *player.state.lock().await);
        self.report_load();
    }

    /// Tells the cluster how many players this node plays.
    fn report_load(&self) {
        if let Some(cluster) = &self.ctx.cluster {
            cluster.set_load(self.count());
        }
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
        let in_memory = guard(&self.players).values().any(|p| p.guild_id == payload.guild_id);
        let stored = if in_memory { None } else { Some(self.stored_state(payload.guild_id).await?) };
        let replaced: Vec<Arc<Player>> = {
            let mut players = guard(&self.players);
            let ids: Vec<Id> = players
                .values()
                .filter(|p| p.id == payload.player_id || p.guild_id == payload.guild_id)
                .map(|p| p.id)
                .collect();
            ids.iter().filter_map(|id| players.remove(id)).collect()
        };
        let mut restored: Option<PersistView> = None;
        for old in replaced {
            let mut state = old.state.lock().await;
            if old.guild_id == payload.guild_id && restored.is_none() {
                restored = Some(old.persist_view(&state));
            }
            self.tear_down(&old, &mut state, true);
        }
        let (queue, position_ms) = match (restored, stored) {
            (Some(view), _) => (view.queue, view.position_ms),
            (None, Some(stored)) => stored,
            // The guild's player went away while this one connected: read again.
            (None, None) => self.stored_state(payload.guild_id).await?,
        };

        let player = self.mesastream_player(payload, voice, (voice_tx, voice_rx));
        guard(&self.players).insert(player.id, player.clone());
        self.report_load();
        let restored_queue_len = queue.len();
        let mut state = player.state.lock().await;
        if let Some(saved) = adopted {
            player.set_volume(&mut state, saved.volume);
            player.set_filters(&mut state, saved.filters.clone());
        }
        state.queue.extend(queue);
        // As the original, a restored queue starts playing at once, at the saved position.
        player.resume_restored(&mut state, position_ms);
        player.persist(&state);
        drop(state);
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
        tokio::spawn(write_state(self.ctx.store.clone(), player.guild_id, persist_rx, fence));
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
        let mut state = player.state.lock().await;
        player.set_volume(&mut state, saved.volume);
        player.set_filters(&mut state, saved.filters.clone());
        state.queue.extend(saved.queue.iter().cloned());
        if let Some(track) = saved.current_track.clone() {
            player.play_now(&mut state, track, None, position_ms, true);
        }
        drop(state);
        Ok(player)
    }

    /// Puts a player prepared by [`Self::prepare_take_over`] in place and lets it play (its
    /// lease is this node's now).
    pub async fn commit_take_over(&self, player: Arc<Player>, from: String, was_playing: bool) {
        guard(&self.players).insert(player.id, player.clone());
        self.report_load();
        let mut state = player.state.lock().await;
        if was_playing {
            player.set_paused(&mut state, false);
        }
        player.persist(&state);
        self.ctx.events.emit(Event::PlayerAdopted {
            guild_id: player.guild_id,
            player_id: player.id,
            node: self.ctx.cluster.as_ref().map_or_else(String::new, |c| c.node_id().to_string()),
            from: Some(from),
        });
    }

    /// Drops a prepared player that did not take over: nothing of it is saved.
    pub async fn abandon(&self, player: Arc<Player>) {
        player.output.set_sender(None);
        player.shut_down(&mut *player.state.lock().await);
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
        tokio::spawn(watch_player(Arc::downgrade(self), Arc::downgrade(&player), signal_rx, opened_rx, voice_rx));
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
        guard(&self.owned).push(Arc::downgrade(&player));
        Ok(player)
    }

    /// Connects `player` to a voice session and switches to it at a frame boundary (the old
    /// one, if any, closes after); on failure nothing changes.
    pub async fn connect(&self, player: &Arc<Player>, payload: VoiceBridgePayload) -> Result<(), PlayerError> {
        let voice = self.connect_voice(&payload, player.voice_events.clone()).await?;
        let mut state = player.state.lock().await;
        player.replace_voice(&mut state, payload, voice);
        Ok(())
    }

    /// Whether a new player fits (one that replaces a player of the same id or guild does).
    fn check_room(&self, payload: &VoiceBridgePayload) -> Result<(), PlayerError> {
        let replaces =
            guard(&self.players).values().any(|p| p.id == payload.player_id || p.guild_id == payload.guild_id);
        if !replaces && self.count() >= self.ctx.limits.players {
            return Err(PlayerError::Full(self.ctx.limits.players));
        }
        Ok(())
    }

    /// The guild's saved queue and the position in its first track.
    async fn stored_state(&self, guild: Id) -> Result<(Vec<crate::model::Track>, u64), PlayerError> {
        let queue = self.ctx.store.queue(guild).await?;
        let position = if queue.is_empty() { 0 } else { self.ctx.store.position(guild).await?.unwrap_or(0) };
        Ok((queue, position))
    }

    /// `PUT /players/{id}/connection`: connects the new session first (DAVE ready), then
    /// switches the player to it at a frame boundary; on failure nothing changes.
    pub async fn update_connection(&self, id: Id, payload: VoiceBridgePayload) -> Result<PlayerSnapshot, PlayerError> {
        let player = self.get(id)?;
        self.connect(&player, payload).await?;
        let state = player.state.lock().await;
        player.persist(&state);
        Ok(player.snapshot_of(&state))
    }

    /// Reconnects with the stored credentials when the voice session is gone (what `/play`
    /// does, so a stale session surfaces as the 503 the bot retries on).
    pub async fn ensure_voice(&self, player: &Arc<Player>) -> Result<(), PlayerError> {
        let payload = {
            let state = player.state.lock().await;
            if state.voice_connected() {
                return Ok(());
            }
            state.connection.clone()
        };
        self.connect(player, payload).await
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
        let player = guard(&self.players).remove(&id).ok_or(PlayerError::NotFound(id))?;
        self.tear_down(&player, &mut *player.state.lock().await, was_stopped);
        self.leave(id).await;
        Ok(())
    }

    /// In a cluster, gives up a removed player's lease for good.
    async fn leave(&self, id: Id) {
        self.report_load();
        if let Some(cluster) = &self.ctx.cluster {
            cluster.release(id).await;
        }
    }

    /// Saves a removed player's guild state, stops it and says so on the event stream.
    fn tear_down(&self, player: &Arc<Player>, state: &mut State, was_stopped: bool) {
        player.persist(state);
        player.shut_down(state);
        self.ctx.events.emit(Event::PlayerDestroyed { guild_id: player.guild_id, player_id: player.id, was_stopped });
    }

    /// Removes `player` if it is still the registered one (used for auto-destroy).
    async fn retire(&self, player: &Arc<Player>) {
        let removed = {
            let mut players = guard(&self.players);
            match players.get(&player.id) {
                Some(p) if Arc::ptr_eq(p, player) => players.remove(&player.id),
                _ => None,
            }
        };
        if removed.is_some() {
            self.tear_down(player, &mut *player.state.lock().await, false);
            self.leave(player.id).await;
        }
    }
}

/// How often a playing player's position is saved (a restart resumes within this).
const POSITION_SAVE_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Saves the position of every playing player on the node at one instant each
/// [`POSITION_SAVE_EVERY`]: one timer for the node, not one per player, so the runtime wakes
/// for this twice a second instead of twice a second per player (and their store writes
/// share commits).
pub async fn save_positions(registry: Weak<Registry>) {
    let mut every = tokio::time::interval(POSITION_SAVE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        every.tick().await;
        let Some(registry) = registry.upgrade() else { return };
        for player in registry.all() {
            if !player.output.has_track() {
                continue;
            }
            // A player in the middle of a command is saved next time (a command that moves
            // it saves it itself).
            let Ok(state) = player.state.try_lock() else { continue };
            if state.status == PlayerStatus::Playing {
                player.persist_position(&state);
            }
        }
    }
}

/// Stores each player's newest state in order; only what changed is written. In a cluster
/// (`fence`) nothing is written unless this node holds the player with fresh leases: a node
/// back from a pause must not write over what the player's new holder saves.
async fn write_state(
    store: StateStore,
    guild: Id,
    mut views: watch::Receiver<Option<PersistView>>,
    fence: Option<(Arc<Cluster>, Id)>,
) {
    let mut saved_ids: Option<Vec<String>> = None;
    let mut saved_position: Option<u64> = None;
    let mut saved_snapshot: Option<PlayerSnapshot> = None;
    // The revision whose queue and snapshot are both stored: a view that only moved its
    // position is neither copied nor compared again.
    let mut saved_revision: Option<u64> = None;
    while views.changed().await.is_ok() {
        if let Some((cluster, player)) = &fence
            && !cluster.may_write(*player)
        {
            continue;
        }
        let (position_ms, whole) = {
            let view = views.borrow_and_update();
            let Some(view) = view.as_ref() else { continue };
            let whole = (saved_revision != Some(view.revision))
                .then(|| (view.revision, view.queue.clone(), view.snapshot.clone()));
            (view.position_ms, whole)
        };
        // What failed to save is not marked saved, so the next change tries it again.
        let mut stored = true;
        if let Some((_, queue, _)) = &whole {
            let same = saved_ids.as_ref().is_some_and(|ids| {
                ids.len() == queue.len() && ids.iter().zip(queue).all(|(id, track)| *id == track.id)
            });
            if !same {
                if store.save_queue(guild, queue).await.is_ok() {
                    saved_ids = Some(queue.iter().map(|t| t.id.clone()).collect());
                } else {
                    stored = false;
                }
            }
        }
        let moved = saved_position.is_none_or(|p| p.abs_diff(position_ms) >= 250 || position_ms == 0);
        if moved && saved_position != Some(position_ms) && store.save_position(guild, position_ms).await.is_ok() {
            saved_position = Some(position_ms);
        }
        if let Some((revision, _, snapshot)) = whole {
            let mut comparable = snapshot.clone();
            comparable.position_ms = 0;
            if saved_snapshot.as_ref() != Some(&comparable) {
                if store.save_player_state(&snapshot).await.is_ok() {
                    saved_snapshot = Some(comparable);
                } else {
                    stored = false;
                }
            }
            if stored {
                saved_revision = Some(revision);
            }
        }
    }
}

/// Applies what the clock and the voice transport report to one player, for its lifetime.
async fn watch_player(
    registry: Weak<Registry>,
    player: Weak<Player>,
    mut signals: mpsc::UnboundedReceiver<OutputSignal>,
    mut opened: mpsc::UnboundedReceiver<(u64, TrackInfo)>,
    mut voice: mpsc::UnboundedReceiver<VoiceEvent>,
) {
    loop {
        tokio::select! {
            Some(signal) = signals.recv() => {
                let Some(p) = player.upgrade() else { return };
                let OutputSignal::TrackFinished { token, result } = signal;
                let mut state = p.state.lock().await;
                let outcome = p.on_track_finished(&mut state, token, result);
                p.persist(&state);
                drop(state);
                if outcome == Some(Advance::Drained)
                    && p.kind == PlayerKind::Mesastream
                    && let Some(r) = registry.upgrade()
                {
                    r.retire(&p).await;
                }
            }
            Some((token, info)) = opened.recv() => {
                let Some(p) = player.upgrade() else { return };
                let mut state = p.state.lock().await;
                // The opened track's metadata (its duration, learned now) is kept too.
                p.on_track_opened(&mut state, token, info);
                p.persist(&state);
            }
            Some(event) = voice.recv() => {
                let Some(p) = player.upgrade() else { return };
                match event {
                    VoiceEvent::Disconnected { code, reason } => {
                        // A player no longer registered here (let go to another node, or
                        // destroyed) has nothing to report: its guild may be playing elsewhere.
                        if p.kind == PlayerKind::Mesastream && !registry.upgrade().is_some_and(|r| r.is_registered(&p)) {
                            continue;
                        }
                        tracing::warn!(player = %p.id, %reason, "voice disconnected");
                        p.persist(&*p.state.lock().await);
                        p.tell(PlayerNews::VoiceClosed { code, reason });
                    }
                    VoiceEvent::Resumed => tracing::info!(player = %p.id, "voice session resumed"),
                }
            }
            else => return,
        }
    }
}

//! A stage: a mount whose DJs take turns. Each DJ logs in to the stage's ingest with a key of
//! their own; the first connected DJ is on air for the stage's slot, the others wait in
//! arrival order (connected, decoded, not heard). A slot ends at its deadline (cut on the
//! packet clock), or by skip or kick; with the block toggle on, a DJ whose turn ended so
//! cannot log in again for the cooldown. Queue, deadline and blocks are kept in the state store with
//! absolute times, so a restart keeps the order and the current slot's end.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::keys;
use super::mount::{Mount, SourceSession};
use super::stop_reason::SourceStop;

mod turns;
use crate::audio::TrackFrames;
use crate::events::{Event, EventBus};
use crate::store::StateStore;
use crate::voice::Scheduler;

/// How often a stage looks at its clock besides when something happens.
const STEP_EVERY: Duration = Duration::from_millis(200);
/// How late a look at a slot that ran out may be for the next slot to count from its
/// deadline (the clock's handover) rather than from now.
const HANDOVER_LATENESS_MS: u64 = 1000;
/// The store record of a stage: `stage:{name}`.
pub const RECORD: &str = "stage";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageSettings {
    /// How long a DJ is on air.
    pub slot_secs: u64,
    /// A `SlotWarning` is sent this long before a slot ends.
    pub warning_secs: u64,
    /// Whether a DJ whose turn ended (or who was kicked) is kept out for the cooldown.
    pub block: bool,
    pub cooldown_secs: u64,
    /// Played in turn while nobody is on air (links, or what the resolvers take); none:
    /// silence.
    #[serde(default)]
    pub fallback: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Dj {
    name: String,
    key_digest: String,
}

/// The DJ on air and until when (Unix ms).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Slot {
    dj: String,
    deadline_ms: u64,
    warned: bool,
}

/// What the store keeps of a stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Kept {
    settings: StageSettings,
    djs: Vec<Dj>,
    /// DJs in turn order: the one on air first, then those waiting, by arrival.
    queue: Vec<String>,
    slot: Option<Slot>,
    /// DJs kept out, until when (Unix ms).
    blocked: BTreeMap<String, u64>,
}

/// What a stage last told its mount: the source on air, its deadline, the next source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Applied {
    session: Option<u64>,
    deadline_ms: u64,
    next: Option<u64>,
}

/// A connected DJ's source.
struct Connection {
    session: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("no DJ of this stage logs in with that key")]
    BadKey,
    #[error("{dj} is blocked from this stage for {seconds} s more")]
    Blocked { dj: String, seconds: u64 },
    #[error("a DJ named {0:?} exists")]
    Exists(String),
    #[error("no DJ named {0:?} is on this stage")]
    NoDj(String),
    #[error("nobody is on air")]
    NobodyOnAir,
    #[error("{0}")]
    Invalid(String),
}

/// What the API shows of a stage.
#[derive(Debug, Clone, Serialize)]
pub struct StageView {
    pub name: String,
    pub settings: StageSettings,
    pub on_air: Option<OnAirView>,
    pub queue: Vec<QueuedView>,
    pub blocked: Vec<BlockedView>,
    pub djs: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OnAirView {
    pub dj: String,
    pub deadline_ms: u64,
    pub remaining_ms: u64,
    pub connected: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueuedView {
    pub dj: String,
    /// 1 for the next DJ on air.
    pub place: usize,
    pub connected: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct BlockedView {
    pub dj: String,
    pub until_ms: u64,
}

pub struct Stage {
    pub name: String,
    mount: Arc<Mount>,
    kept: Mutex<Kept>,
    connected: Mutex<HashMap<String, Connection>>,
    /// When each DJ not connected went away (the stage's start for those kept across one).
    gone_since: Mutex<HashMap<String, u64>>,
    /// What was last put on air.
    applied: Mutex<Option<Applied>>,
    /// The waiting DJs as last announced, and the record as last saved.
    announced: Mutex<Vec<String>>,
    saved: Mutex<Option<serde_json::Value>>,
    fallback: Mutex<Option<Fallback>>,
    /// The fallback track that plays next.
    fallback_next: std::sync::atomic::AtomicUsize,
    /// A DJ who is away longer than this loses their place (or their slot).
    grace_ms: u64,
    changed: Notify,
    services: StageServices,
}

/// What a stage reports to and runs on.
#[derive(Clone)]
pub struct StageServices {
    pub events: EventBus,
    pub store: StateStore,
    pub scheduler: Arc<Scheduler>,
    /// DJs waiting their turn on this stage (`mesastream_stage_waiting{stage}`).
    pub waiting: Gauge,
    /// Starts a fallback track (a link or query) as frames.
    pub play: Arc<dyn Fn(&str) -> TrackFrames + Send + Sync>,
}

/// The fallback track playing, and when it started.
struct Fallback {
    session: SourceSession,
    started: std::time::Instant,
}

/// The least time between two fallback tracks' starts: one that fails at once is not retried
/// in a loop.
const FALLBACK_RETRY: Duration = Duration::from_secs(2);

/// A DJ's hold on the stage while connected; dropping it marks them away.
pub struct DjPresence {
    stage: Arc<Stage>,
    dj: String,
    session: u64,
}

impl Drop for DjPresence {
    fn drop(&mut self) {
        let mut connected = self.stage.connected.lock();
        if connected.get(&self.dj).is_some_and(|c| c.session == self.session) {
            connected.remove(&self.dj);
            self.stage.gone_since.lock().insert(self.dj.clone(), crate::wall_clock::unix_ms());
        }
        drop(connected);
        self.stage.changed.notify_one();
    }
}

impl Stage {
    /// A new stage (nothing kept yet), or one restored from its record.
    pub fn new(
        mount: Arc<Mount>,
        settings: StageSettings,
        restored: Option<serde_json::Value>,
        grace_ms: u64,
        services: StageServices,
    ) -> Arc<Self> {
        let fresh = Kept { settings, djs: Vec::new(), queue: Vec::new(), slot: None, blocked: BTreeMap::new() };
        let kept = match restored.map(serde_json::from_value::<Kept>) {
            Some(Ok(kept)) => kept,
            Some(Err(e)) => {
                tracing::warn!(stage = %mount.name, error = %e, "the stage's saved state does not read; starting it empty");
                fresh
            }
            None => fresh,
        };
        let now = crate::wall_clock::unix_ms();
        let gone_since = kept.queue.iter().map(|dj| (dj.clone(), now)).collect();
        Arc::new(Self {
            name: mount.name.to_string(),
            mount,
            kept: Mutex::new(kept),
            connected: Mutex::default(),
            gone_since: Mutex::new(gone_since),
            applied: Mutex::default(),
            announced: Mutex::default(),
            saved: Mutex::default(),
            fallback: Mutex::default(),
            fallback_next: Default::default(),
            grace_ms,
            changed: Notify::new(),
            services,
        })
    }

    pub fn mount(&self) -> &Arc<Mount> {
        &self.mount
    }

    /// The stage's record as the store keeps it.
    pub fn record(&self) -> serde_json::Value {
        serde_json::to_value(&*self.kept.lock()).unwrap_or_default()
    }

    /// Saves the record when it changed since the last save.
    async fn save(&self) {
        let record = self.record();
        if self.saved.lock().as_ref() == Some(&record) {
            return;
        }
        match self.services.store.save_protocol_record(RECORD, &self.name, &record).await {
            Ok(()) => *self.saved.lock() = Some(record),
            Err(e) => tracing::warn!(stage = %self.name, error = %e, "the stage's state was not saved; trying again"),
        }
    }

    /// Runs the stage's turns until its mount is removed.
    pub async fn run(self: Arc<Self>) {
        let mut interval = tokio::time::interval(STEP_EVERY);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.mount.is_removed() {
            tokio::select! {
                _ = interval.tick() => {}
                () = self.changed.notified() => {}
                () = self.mount.slot_over.notified() => {}
            }
            self.step(crate::wall_clock::unix_ms());
            self.save().await;
        }
    }

    /// Adds a DJ; their key, shown once.
    pub async fn add_dj(&self, name: &str) -> Result<String, StageError> {
        let valid = !name.is_empty() && name.len() <= 64 && !name.chars().any(char::is_control) && !name.contains(':');
        if !valid {
            return Err(StageError::Invalid(format!("DJ name {name:?}: 1 to 64 characters, no ':'")));
        }
        let key = keys::new_key();
        {
            let mut kept = self.kept.lock();
            if kept.djs.iter().any(|d| d.name == name) {
                return Err(StageError::Exists(name.into()));
            }
            kept.djs.push(Dj { name: name.into(), key_digest: keys::digest(&key) });
        }
        self.save().await;
        Ok(key)
    }

    /// The DJ `user`/`key` logs in as (user `source` or the DJ's name), unless blocked.
    pub fn login(&self, user: &str, key: &str) -> Result<String, StageError> {
        let kept = self.kept.lock();
        let dj = kept
            .djs
            .iter()
            .find(|d| keys::matches(key, &d.key_digest) && (user == "source" || user == d.name))
            .ok_or(StageError::BadKey)?;
        if let Some(until) = kept.blocked.get(&dj.name).filter(|until| **until > crate::wall_clock::unix_ms()) {
            return Err(StageError::Blocked {
                dj: dj.name.clone(),
                seconds: (until - crate::wall_clock::unix_ms()).div_ceil(1000),
            });
        }
        Ok(dj.name.clone())
    }

    /// DJ `dj` connected with source `session`: queued (or back in their place).
    pub fn joined(self: &Arc<Self>, dj: &str, session: u64) -> DjPresence {
        let old = self.connected.lock().insert(dj.to_string(), Connection { session });
        if let Some(old) = old {
            self.mount.stop_source(old.session, SourceStop::Replaced);
        }
        self.gone_since.lock().remove(dj);
        {
            let mut kept = self.kept.lock();
            if !kept.queue.iter().any(|d| d == dj) {
                kept.queue.push(dj.to_string());
            }
        }
        self.changed.notify_one();
        DjPresence { stage: self.clone(), dj: dj.to_string(), session }
    }

    /// Sets the slot length; `reset` restarts the current slot from now.
    pub fn set_timer(&self, slot_secs: u64, reset: bool) {
        let mut kept = self.kept.lock();
        kept.settings.slot_secs = slot_secs;
        if reset && let Some(slot) = kept.slot.as_mut() {
            slot.deadline_ms = crate::wall_clock::unix_ms() + slot_secs * 1000;
            slot.warned = false;
        }
        drop(kept);
        self.changed.notify_one();
    }

    pub fn set_block(&self, block: bool, cooldown_secs: Option<u64>) {
        let mut kept = self.kept.lock();
        kept.settings.block = block;
        if let Some(secs) = cooldown_secs {
            kept.settings.cooldown_secs = secs;
        }
        if !block {
            kept.blocked.clear();
        }
        drop(kept);
        self.changed.notify_one();
    }

    /// Ends `dj`'s turn (the DJ on air when none is named), as a kick or a skip; either blocks
    /// them for the cooldown when the toggle is on.
    pub fn end_turn(&self, dj: Option<&str>, kick: bool) -> Result<String, StageError> {
        let mut events = Vec::new();
        let name = {
            let mut kept = self.kept.lock();
            let name = match dj {
                Some(dj) => dj.to_string(),
                None => kept.slot.as_ref().map(|s| s.dj.clone()).ok_or(StageError::NobodyOnAir)?,
            };
            if !kept.queue.contains(&name) {
                return Err(StageError::NoDj(name));
            }
            let reason = if kick { "kicked" } else { "skipped" };
            self.off_air(&mut kept, &name, reason, true, crate::wall_clock::unix_ms(), &mut events);
            name
        };
        for event in events {
            self.services.events.emit(event);
        }
        self.changed.notify_one();
        Ok(name)
    }

    /// Takes `dj` out of the queue (and off air), blocking them when asked and the toggle is on.
    fn off_air(&self, kept: &mut Kept, dj: &str, reason: &'static str, block: bool, now: u64, events: &mut Vec<Event>) {
        kept.queue.retain(|d| d != dj);
        if kept.slot.as_ref().is_some_and(|s| s.dj == dj) {
            kept.slot = None;
        }
        if let Some(connection) = self.connected.lock().remove(dj) {
            self.mount.stop_source(connection.session, SourceStop::OffAir(reason));
        }
        self.gone_since.lock().insert(dj.to_string(), now);
        events.push(Event::OffAir { stage: self.name.clone(), dj: dj.to_string(), reason: reason.to_string() });
        if block && kept.settings.block {
            let until_ms = now + kept.settings.cooldown_secs * 1000;
            kept.blocked.insert(dj.to_string(), until_ms);
            events.push(Event::DjBlocked { stage: self.name.clone(), dj: dj.to_string(), until_ms });
        }
    }

    pub fn view(&self) -> StageView {
        let kept = self.kept.lock();
        let connected = self.connected.lock();
        let now = crate::wall_clock::unix_ms();
        let on_air = kept.slot.as_ref().map(|s| OnAirView {
            dj: s.dj.clone(),
            deadline_ms: s.deadline_ms,
            remaining_ms: s.deadline_ms.saturating_sub(now),
            connected: connected.contains_key(&s.dj),
        });
        let on_air_dj = kept.slot.as_ref().map(|s| s.dj.as_str());
        let queue = kept
            .queue
            .iter()
            .filter(|d| Some(d.as_str()) != on_air_dj)
            .enumerate()
            .map(|(i, dj)| QueuedView { dj: dj.clone(), place: i + 1, connected: connected.contains_key(dj) })
            .collect();
        let blocked = kept
            .blocked
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(dj, until)| BlockedView { dj: dj.clone(), until_ms: *until })
            .collect();
        StageView {
            name: self.name.clone(),
            settings: kept.settings.clone(),
            on_air,
            queue,
            blocked,
            djs: kept.djs.iter().map(|d| d.name.clone()).collect(),
        }
    }
}

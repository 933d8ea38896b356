//! Live mounts: created and removed through the API, kept in the state store (settings and
//! key digests, never keys), each on the packet clock while it exists. Ingest (`api/ingest`)
//! connects sources to them; players follow them as `live:{name}` tracks; listeners hear them
//! through `api/listen`.

pub mod keys;
pub mod mount;
pub mod stage;
pub mod stop_reason;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde::Deserialize;

use crate::audio::live_follow::LiveSource;
use crate::audio::pushed::PushedStream;
use crate::audio::recording::{Recording, RewindBudget};
use crate::audio::{Controls, PipelineConfig, TrackRequest, TrackSource, pipeline};
use crate::events::EventBus;
use crate::plugins::resolver::Locator;
use crate::store::{StateStore, StoreError};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::StageLabels;
use crate::voice::Scheduler;
use crate::voice::scheduler::Registration;
pub use mount::{Mount, MountSettings, MountView, SourceSession};
pub use stage::{Stage, StageError, StageSettings, StageView};
pub use stop_reason::SourceStop;

/// The store record holding every mount's settings.
const RECORD: (&str, &str) = ("live", "mounts");
/// Names routes already use under `/live/`.
const RESERVED: [&str; 1] = ["mounts"];
/// The formats a mount may be limited to.
pub const FORMATS: [&str; 4] = ["mp3", "aac", "ogg", "flac"];

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("no mount named {0:?}")]
    NotFound(String),
    #[error("a mount named {0:?} exists")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error("the state store has not answered since the start: live mounts are not loaded yet, try again")]
    NotLoaded,
}

/// What a new mount asks for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMount {
    pub name: String,
    #[serde(default)]
    pub max_duration_secs: Option<u64>,
    #[serde(default)]
    pub formats: Vec<String>,
}

/// What a new stage asks for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewStage {
    pub name: String,
    /// How long each DJ is on air (default one hour).
    #[serde(default = "default_slot")]
    pub slot_secs: u64,
    #[serde(default = "default_warning")]
    pub warning_secs: u64,
    #[serde(default)]
    pub block: bool,
    #[serde(default = "default_cooldown")]
    pub cooldown_secs: u64,
    /// Tracks (links, or what the resolvers take) played in turn while nobody is on air.
    #[serde(default)]
    pub fallback: Vec<String>,
}

impl Default for StageSettings {
    fn default() -> Self {
        Self {
            slot_secs: default_slot(),
            warning_secs: default_warning(),
            block: false,
            cooldown_secs: default_cooldown(),
            fallback: Vec::new(),
        }
    }
}

fn default_slot() -> u64 {
    3600
}
fn default_warning() -> u64 {
    60
}
fn default_cooldown() -> u64 {
    600
}

/// How every mount is run.
pub struct LiveSettings {
    pub grace_ticks: u64,
    pub rewind_ticks: u64,
    pub budget: Arc<RewindBudget>,
}

struct Entry {
    mount: Arc<Mount>,
    stage: Option<Arc<Stage>>,
    _clock: Registration,
}

pub struct Mounts {
    mounts: parking_lot::Mutex<HashMap<String, Entry>>,
    /// Store writes one at a time, so the record always holds the latest set.
    saving: tokio::sync::Mutex<()>,
    /// Whether the store's mounts were read (changes wait for it).
    loaded: AtomicBool,
    store: StateStore,
    scheduler: Arc<Scheduler>,
    pipeline: PipelineConfig,
    settings: LiveSettings,
    metrics: Arc<Metrics>,
    events: EventBus,
}

/// The format a source's content type names, as mounts' limits name formats.
pub fn format_of(content_type: &str) -> Option<&'static str> {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        "audio/mpeg" | "audio/mp3" | "audio/mpa" => Some("mp3"),
        "audio/aac" | "audio/aacp" | "audio/x-aac" => Some("aac"),
        "audio/ogg" | "application/ogg" | "audio/opus" | "audio/vorbis" => Some("ogg"),
        "audio/flac" | "audio/x-flac" => Some("flac"),
        _ => None,
    }
}

/// A mount's name: the node's name rule ([`crate::model::is_name`]), and not a route's.
pub fn check_name(name: &str) -> Result<(), LiveError> {
    if crate::model::is_name(name) && !RESERVED.contains(&name) {
        Ok(())
    } else {
        Err(LiveError::Invalid(format!(
            "mount name {name:?}: 1 to {} letters, digits, '-' or '_' (and not {RESERVED:?})",
            crate::model::MAX_NAME
        )))
    }
}

impl Mounts {
    /// The mounts the store keeps, each back on the clock (with no source until one connects).
    /// A store that does not answer yet is asked again every second: until it answers, mounts
    /// cannot be changed, so nothing it keeps is written over.
    pub async fn open(
        store: StateStore,
        scheduler: Arc<Scheduler>,
        pipeline: PipelineConfig,
        settings: LiveSettings,
        metrics: Arc<Metrics>,
        events: EventBus,
    ) -> Arc<Self> {
        let mounts = Arc::new(Self {
            mounts: Default::default(),
            saving: Default::default(),
            loaded: AtomicBool::new(false),
            store,
            scheduler,
            pipeline,
            settings,
            metrics,
            events,
        });
        if let Err(e) = mounts.load().await {
            tracing::warn!(error = %e, "live mounts not loaded yet: the state store does not answer; retrying");
            let retrying = mounts.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(1));
                while retrying.load().await.is_err() {
                    every.tick().await;
                }
                tracing::info!("live mounts loaded");
            });
        }
        mounts
    }

    /// Reads every mount (and stage) the store keeps, then puts them on the clock.
    async fn load(&self) -> Result<(), StoreError> {
        let kept: Vec<MountSettings> = self.store.protocol_record(RECORD.0, RECORD.1).await?.unwrap_or_default();
        let mut stages = HashMap::new();
        for settings in kept.iter().filter(|s| s.stage) {
            let restored: Option<serde_json::Value> = self.store.protocol_record(stage::RECORD, &settings.name).await?;
            stages.insert(settings.name.clone(), restored);
        }
        for settings in kept {
            let restored = stages.remove(&settings.name);
            let mount = self.insert(settings);
            if let Some(restored) = restored {
                self.start_stage(&mount, StageSettings::default(), restored);
            }
        }
        self.loaded.store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    fn mount_counters(&self) -> mount::MountCounters {
        mount::MountCounters {
            underruns: self.metrics.live_underruns.clone(),
            encoder: self.pipeline.encoder.clone(),
            decodes: self.pipeline.decodes.clone(),
        }
    }

    /// Refuses changes until what the store keeps is loaded.
    fn ready(&self) -> Result<(), LiveError> {
        if self.loaded.load(std::sync::atomic::Ordering::Acquire) { Ok(()) } else { Err(LiveError::NotLoaded) }
    }

    /// Runs a stage on `mount` (its state restored when there is one).
    fn start_stage(
        &self,
        mount: &Arc<Mount>,
        settings: StageSettings,
        restored: Option<serde_json::Value>,
    ) -> Arc<Stage> {
        let services = stage::StageServices {
            events: self.events.clone(),
            store: self.store.clone(),
            scheduler: self.scheduler.clone(),
            waiting: self.metrics.stage_waiting.get_or_create(&StageLabels { stage: mount.name.to_string() }).clone(),
            play: self.fallback_player(&mount.name),
        };
        let stage = Stage::new(mount.clone(), settings, restored, self.settings.grace_ticks * 20, services);
        if let Some(entry) = self.mounts.lock().get_mut(mount.name.as_ref()) {
            entry.stage = Some(stage.clone());
        }
        tokio::spawn(stage.clone().run());
        stage
    }

    /// What starts a stage's fallback track: the resolvers when one takes it, else a link.
    fn fallback_player(&self, stage: &str) -> Arc<dyn Fn(&str) -> crate::audio::TrackFrames + Send + Sync> {
        let pipeline = self.pipeline.clone();
        let stage = stage.to_string();
        Arc::new(move |query: &str| {
            let resolvable = pipeline.plugins.as_ref().is_some_and(|h| h.has_resolvers() && h.claims(query));
            let (source, cache_key) = if resolvable {
                (TrackSource::Resolve { query: query.to_string(), guild_id: None }, None)
            } else {
                let locator = Locator::Http { url: query.to_string(), headers: Vec::new() };
                (TrackSource::Located(locator), Some(pipeline::direct_cache_key(query)))
            };
            let span = tracing::info_span!("stage fallback", stage = %stage, url = %query);
            let request = TrackRequest { source, cache_key, duration_hint_ms: None, start_ms: 0, span };
            pipeline::spawn(request, pipeline.clone(), Controls::unchanged(), Arc::new(AtomicBool::new(false)), |_| {})
        })
    }

    /// Makes a stage: a mount whose DJs take turns.
    pub async fn create_stage(&self, new: NewStage) -> Result<StageView, LiveError> {
        self.ready()?;
        if new.slot_secs == 0 {
            return Err(LiveError::Invalid("slot_secs must be at least 1".into()));
        }
        check_name(&new.name)?;
        if self.mounts.lock().contains_key(&new.name) {
            return Err(LiveError::Exists(new.name));
        }
        let settings = MountSettings {
            name: new.name.clone(),
            // Nobody logs in with the mount's own key: DJs have theirs.
            key_digest: keys::digest(&keys::new_key()),
            max_duration_secs: None,
            formats: Vec::new(),
            stage: true,
            created_at: crate::wall_clock::unix_secs(),
        };
        let mount = self.insert(settings);
        let stage_settings = StageSettings {
            slot_secs: new.slot_secs,
            warning_secs: new.warning_secs,
            block: new.block,
            cooldown_secs: new.cooldown_secs,
            fallback: new.fallback,
        };
        let stage = self.start_stage(&mount, stage_settings, None);
        let saved = self.store.save_protocol_record(stage::RECORD, &new.name, &stage.record()).await;
        if let Err(e) = saved.map_err(LiveError::from).and(self.save().await.map_err(LiveError::from)) {
            self.mounts.lock().remove(&new.name);
            mount.remove();
            return Err(e);
        }
        Ok(stage.view())
    }

    pub fn stage(&self, name: &str) -> Option<Arc<Stage>> {
        self.mounts.lock().get(name).and_then(|e| e.stage.clone())
    }

    fn insert(&self, settings: MountSettings) -> Arc<Mount> {
        let now = self.scheduler.now_tick();
        let recording = Arc::new(Recording::new(self.settings.rewind_ticks, now, self.settings.budget.clone()));
        let name = settings.name.clone();
        let mount = Arc::new(Mount::new(settings, recording, self.settings.grace_ticks, self.mount_counters()));
        let clock = mount.clone() as Arc<dyn crate::voice::Tickable>;
        let entry = Entry { _clock: self.scheduler.register(&clock), mount: mount.clone(), stage: None };
        self.mounts.lock().insert(name, entry);
        mount
    }

    /// Writes every mount's settings; on failure nothing the caller changed may stay.
    async fn save(&self) -> Result<(), StoreError> {
        let _one = self.saving.lock().await;
        let mut all: Vec<MountSettings> = self.mounts.lock().values().map(|e| e.mount.settings()).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        self.store.save_protocol_record(RECORD.0, RECORD.1, &all).await
    }

    /// Makes a mount; its key is returned once, here.
    pub async fn create(&self, new: NewMount) -> Result<(MountView, String), LiveError> {
        self.ready()?;
        check_name(&new.name)?;
        let mut formats = new.formats;
        for f in &mut formats {
            *f = f.to_ascii_lowercase();
            if !FORMATS.contains(&f.as_str()) {
                return Err(LiveError::Invalid(format!("format {f:?}: one of {FORMATS:?}")));
            }
        }
        if new.max_duration_secs == Some(0) {
            return Err(LiveError::Invalid("max_duration_secs must be at least 1".into()));
        }
        if self.mounts.lock().contains_key(&new.name) {
            return Err(LiveError::Exists(new.name));
        }
        let key = keys::new_key();
        let settings = MountSettings {
            name: new.name.clone(),
            key_digest: keys::digest(&key),
            max_duration_secs: new.max_duration_secs,
            formats,
            stage: false,
            created_at: crate::wall_clock::unix_secs(),
        };
        let mount = self.insert(settings);
        if let Err(e) = self.save().await {
            self.mounts.lock().remove(&new.name);
            mount.remove();
            return Err(e.into());
        }
        Ok((mount.view(), key))
    }

    /// Removes a mount: its source is cut off and its followers end.
    pub async fn remove(&self, name: &str) -> Result<(), LiveError> {
        self.ready()?;
        let entry = self.mounts.lock().remove(name).ok_or_else(|| LiveError::NotFound(name.into()))?;
        if let Err(e) = self.save().await {
            self.mounts.lock().insert(name.to_string(), entry);
            return Err(e.into());
        }
        entry.mount.remove();
        if entry.stage.is_some() {
            self.store.remove_protocol_record(stage::RECORD, name).await;
            self.metrics.stage_waiting.remove(&StageLabels { stage: name.to_string() });
        }
        Ok(())
    }

    /// A new key for a mount; the old one stops working for new connections (a source on air
    /// stays on).
    pub async fn rotate_key(&self, name: &str) -> Result<String, LiveError> {
        self.ready()?;
        let mount = self.get(name).ok_or_else(|| LiveError::NotFound(name.into()))?;
        let old = mount.settings().key_digest;
        let key = keys::new_key();
        mount.set_key_digest(keys::digest(&key));
        if let Err(e) = self.save().await {
            mount.set_key_digest(old);
            return Err(e.into());
        }
        Ok(key)
    }

    pub fn get(&self, name: &str) -> Option<Arc<Mount>> {
        self.mounts.lock().get(name).map(|e| e.mount.clone())
    }

    pub fn list(&self) -> Vec<MountView> {
        let mounts: Vec<Arc<Mount>> =
            self.mounts.lock().values().filter(|e| e.stage.is_none()).map(|e| e.mount.clone()).collect();
        let mut views: Vec<MountView> = mounts.iter().map(|m| m.view()).collect();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        views
    }

    /// What a `live:{name}` track follows.
    pub fn follow(&self, name: &str) -> Result<LiveSource, String> {
        self.get(name).map(|m| LiveSource(m as _)).ok_or_else(|| format!("no live mount named {name:?}"))
    }

    /// Starts decoding a connected source's stream and puts it on air.
    pub fn start_source(
        &self,
        mount: &Arc<Mount>,
        stream: PushedStream,
        content_type: Option<String>,
        stream_name: Option<String>,
        cancel: Arc<AtomicBool>,
        exclusive: bool,
    ) -> (SourceSession, bool) {
        let span = tracing::info_span!("live source", mount = %mount.name);
        let frames = pipeline::spawn_pushed(
            stream,
            content_type.clone(),
            self.pipeline.clone(),
            Controls::unchanged(),
            cancel,
            span,
        );
        mount.connect(frames, content_type, stream_name, exclusive)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_and_formats_come_from_content_types() {
        assert!(check_name("studio-1_b").is_ok());
        for bad in ["", "a/b", "mounts", "st udio", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format_of("audio/mpeg"), Some("mp3"));
        assert_eq!(format_of("application/ogg; charset=x"), Some("ogg"));
        assert_eq!(format_of("text/plain"), None);
    }
}

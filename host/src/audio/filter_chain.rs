//! A player's filter chain as a track's pipeline runs it: an ordered list of WASM filter
//! instances, rebuilt at a frame boundary when the player's chain or the loaded plugins
//! change, with a failing filter taken out (and reported once) instead of the track. The
//! bypass belongs to the player: later tracks skip that filter too, until the chain is set
//! again or the plugins reload.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::model::FilterEntry;
use crate::plugins::PluginHost;
use crate::plugins::engine::FailureKind;
use crate::plugins::filter::{CallFailure, CreateError, FilterInstance};

/// Which chain, under which set of loaded plugins: (chain version, plugin generation).
type Epoch = (u64, u64);

/// The chain a player wants; written by API calls, read by its track pipeline.
#[derive(Debug, Default)]
pub struct ChainControl {
    version: AtomicU64,
    entries: Mutex<Vec<FilterEntry>>,
    /// Stages that failed, by position, in the epoch they failed in.
    bypassed: Mutex<HashSet<(Epoch, usize)>>,
}

impl ChainControl {
    pub fn set(&self, entries: Vec<FilterEntry>) {
        *self.entries.lock() = entries;
        self.version.fetch_add(1, Ordering::Release);
    }

    pub fn get(&self) -> Vec<FilterEntry> {
        self.entries.lock().clone()
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    fn bypass(&self, epoch: Epoch, stage: usize) {
        let mut bypassed = self.bypassed.lock();
        // Older epochs can never match again.
        bypassed.retain(|(e, _)| *e == epoch);
        bypassed.insert((epoch, stage));
    }

    fn is_bypassed(&self, epoch: Epoch, stage: usize) -> bool {
        self.bypassed.lock().contains(&(epoch, stage))
    }
}

/// Told when a filter fails and is taken out of the chain.
pub type FailureReport = Arc<dyn Fn(CallFailure) + Send + Sync>;

struct Stage {
    entry: FilterEntry,
    /// None once the filter failed (or could not be created): it is bypassed.
    instance: Option<FilterInstance>,
    /// Why it could not be created or updated, until reported.
    failure: Option<CallFailure>,
}

pub struct FilterChain {
    host: Option<Arc<PluginHost>>,
    report: FailureReport,
    seen: Epoch,
    stages: Vec<Stage>,
}

impl FilterChain {
    pub fn new(host: Option<Arc<PluginHost>>, report: FailureReport) -> Self {
        Self { host, report, seen: (u64::MAX, u64::MAX), stages: Vec::new() }
    }

    /// Runs a block through every working stage, first catching up with changes.
    pub fn process(&mut self, control: &ChainControl, block: Vec<f32>) -> Vec<f32> {
        self.refresh(control);
        self.run_from(control, 0, block)
    }

    /// Whether any stage would touch the audio, after catching up with changes.
    pub fn is_active(&mut self, control: &ChainControl) -> bool {
        self.refresh(control);
        self.stages.iter().any(|s| s.instance.is_some())
    }

    /// Drains every stage's tail through the stages after it, at the end of a track.
    pub fn flush(&mut self, control: &ChainControl) -> Vec<f32> {
        let mut out = Vec::new();
        for i in 0..self.stages.len() {
            let tail = match self.stages[i].instance.as_mut().map(FilterInstance::flush) {
                Some(Ok(tail)) => tail,
                Some(Err(failure)) => {
                    self.bypass(control, i, failure);
                    Vec::new()
                }
                None => Vec::new(),
            };
            let mut tail = self.run_from(control, i + 1, tail);
            out.append(&mut tail);
        }
        out
    }

    fn run_from(&mut self, control: &ChainControl, first: usize, mut block: Vec<f32>) -> Vec<f32> {
        for i in first..self.stages.len() {
            let Some(instance) = self.stages[i].instance.as_mut() else { continue };
            match instance.process(&block) {
                Ok(mut out) => {
                    // Only whole stereo pairs go on.
                    out.truncate(out.len() & !1);
                    block = out;
                }
                Err(failure) => self.bypass(control, i, failure),
            }
        }
        block
    }

    fn bypass(&mut self, control: &ChainControl, i: usize, failure: CallFailure) {
        self.stages[i].instance = None;
        control.bypass(self.seen, i);
        (self.report)(failure);
    }

    fn refresh(&mut self, control: &ChainControl) {
        let generation = self.host.as_ref().map_or(0, |h| h.generation());
        let now = (control.version(), generation);
        if self.seen == now {
            return;
        }
        self.seen = now;
        let wanted = control.get();
        let mut old: Vec<Option<Stage>> = std::mem::take(&mut self.stages).into_iter().map(Some).collect();
        for (i, entry) in wanted.into_iter().enumerate() {
            if control.is_bypassed(now, i) {
                // Failed on an earlier track of this player; not retried until something changes.
                self.stages.push(Stage { entry, instance: None, failure: None });
                continue;
            }
            let plugin = self.host.as_ref().and_then(|h| h.filter(&entry.name));
            let reusable = old.get_mut(i).and_then(Option::take).filter(|s| {
                s.entry.name == entry.name
                    && matches!((&s.instance, &plugin), (Some(inst), Some(p)) if Arc::ptr_eq(inst.plugin(), p))
            });
            let mut stage = match reusable {
                Some(mut stage) => {
                    if stage.entry.config != entry.config {
                        self.update(&mut stage, &entry);
                    }
                    stage.entry = entry;
                    stage
                }
                None => self.create(plugin, entry),
            };
            if let Some(failure) = stage.failure.take() {
                control.bypass(now, i);
                (self.report)(failure);
            }
            self.stages.push(stage);
        }
    }

    fn update(&self, stage: &mut Stage, entry: &FilterEntry) {
        let Some(instance) = stage.instance.as_mut() else { return };
        match instance.update(&entry.config.to_string()) {
            Ok(Ok(())) => {}
            // Checked when the chain was set; a refusal now keeps the previous config.
            Ok(Err(refused)) => tracing::warn!(filter = %entry.name, %refused, "filter refused its new config"),
            Err(failure) => {
                stage.instance = None;
                stage.failure = Some(failure);
            }
        }
    }

    fn create(&self, plugin: Option<Arc<crate::plugins::LoadedPlugin>>, entry: FilterEntry) -> Stage {
        let Some(plugin) = plugin else {
            tracing::warn!(filter = %entry.name, "no loaded plugin provides this filter; bypassing it");
            return Stage { entry, instance: None, failure: None };
        };
        match FilterInstance::create(&plugin, &entry.name, &entry.config.to_string()) {
            Ok(instance) => Stage { entry, instance: Some(instance), failure: None },
            Err(e) => {
                let failure = match e {
                    CreateError::Failed(failure) => failure,
                    CreateError::Refused(message) => CallFailure {
                        plugin: plugin.id().to_string(),
                        filter: entry.name.clone(),
                        kind: FailureKind::Refused,
                        message,
                    },
                };
                Stage { entry, instance: None, failure: Some(failure) }
            }
        }
    }
}

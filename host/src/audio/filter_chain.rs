//! A player's filter chain as a track's pipeline runs it: an ordered list of WASM filter
//! instances, rebuilt at a frame boundary when the player's chain or the loaded plugins
//! change, with a failing filter taken out (and reported once) instead of the track. The
//! bypass belongs to the player: later tracks skip that filter too, until the chain is set
//! again or the plugins reload. An instance that runs out of memory after a long run is
//! replaced by a fresh one instead (see [`RESTART_AFTER_CALLS`]).
//!
//! Instantiating a Python or JavaScript component takes milliseconds (half a second on a
//! loaded machine), which the track's frames must not wait for. So when only the plugins
//! changed (a reload), the new instances are made on a thread of their own while the old ones
//! go on filtering, and take over at the first block after they are ready; and an instance
//! whose memory still grows after a long run (it will run out) gets its successor made the
//! same way, ready long before it runs out.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;

use parking_lot::Mutex;

use crate::model::FilterEntry;
use crate::plugins::PluginHost;
use crate::plugins::engine::FailureKind;
use crate::plugins::filter::{CallFailure, CreateError, FilterInstance};
use crate::telemetry::metrics::FilterLabels;

/// An instance that runs out of memory after this many blocks (5 s) is replaced by a fresh
/// one, its state starting over, rather than taken out: a guest whose memory grows with every
/// call (ComponentizeJS 0.23 never frees the blocks it is given) keeps working. One that runs
/// out sooner is taken out as any failing filter.
pub const RESTART_AFTER_CALLS: u64 = 250;

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
    /// A fresh instance being made to take over when this one runs out of memory.
    successor: Option<Receiver<Result<FilterInstance, CreateError>>>,
    /// The instance's memory after [`RESTART_AFTER_CALLS`] blocks: growth past it in steady
    /// play means it will run out.
    settled_memory: Option<usize>,
}

impl Stage {
    fn new(entry: FilterEntry, instance: Option<FilterInstance>, failure: Option<CallFailure>) -> Self {
        Self { entry, instance, failure, successor: None, settled_memory: None }
    }
}

pub struct FilterChain {
    host: Option<Arc<PluginHost>>,
    report: FailureReport,
    seen: Epoch,
    stages: Vec<Stage>,
    /// The stages being made for a reload, and the epoch they are for.
    preparing: Option<(Epoch, Receiver<Vec<Stage>>)>,
}

impl FilterChain {
    pub fn new(host: Option<Arc<PluginHost>>, report: FailureReport) -> Self {
        Self { host, report, seen: (u64::MAX, u64::MAX), stages: Vec::new(), preparing: None }
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
            let mut restarted = false;
            while let Some(instance) = self.stages[i].instance.as_mut() {
                match instance.process(&block) {
                    Ok(mut out) => {
                        // Only whole stereo pairs go on.
                        out.truncate(out.len() & !1);
                        block = out;
                        break;
                    }
                    Err(failure) if !restarted && self.restart(i, &failure) => restarted = true,
                    Err(failure) => {
                        self.bypass(control, i, failure);
                        break;
                    }
                }
            }
            self.make_successor_if_due(i);
        }
        block
    }

    /// Starts making stage `i`'s successor once its instance's memory grows after a long run.
    fn make_successor_if_due(&mut self, i: usize) {
        let stage = &mut self.stages[i];
        let Some(instance) = stage.instance.as_ref() else { return };
        if stage.successor.is_some() || instance.calls() < RESTART_AFTER_CALLS {
            return;
        }
        let size = instance.memory_size();
        let settled = *stage.settled_memory.get_or_insert(size);
        if size <= settled {
            return;
        }
        let (plugin, name, config) =
            (instance.plugin().clone(), stage.entry.name.clone(), stage.entry.config.to_string());
        stage.successor = off_thread("filter-successor", move || FilterInstance::create(&plugin, &name, &config));
    }

    /// Replaces stage `i`'s instance with a fresh one when it ran out of memory after a long
    /// run; false (nothing changed) otherwise.
    fn restart(&mut self, i: usize, failure: &CallFailure) -> bool {
        let stage = &mut self.stages[i];
        let Some(worn) = stage.instance.as_ref() else { return false };
        if failure.kind != FailureKind::Memory || worn.calls() < RESTART_AFTER_CALLS {
            return false;
        }
        let (plugin, calls) = (worn.plugin().clone(), worn.calls());
        // The worn instance goes first, so its memory is free for a fresh one made here.
        stage.instance = None;
        let ahead = match stage.successor.take() {
            Some(ready) => match ready.try_recv() {
                Ok(made) => Some((made, true)),
                // Started but not ready: waiting for it is still shorter than starting over.
                Err(_) => ready.recv().ok().map(|made| (made, false)),
            },
            None => None,
        };
        let (made, ready_ahead) = ahead.unwrap_or_else(|| {
            (FilterInstance::create(&plugin, &stage.entry.name, &stage.entry.config.to_string()), false)
        });
        let fresh = match made {
            Ok(fresh) => fresh,
            Err(e) => {
                tracing::warn!(plugin = plugin.id(), filter = %stage.entry.name, error = %e, "filter could not be restarted");
                return false;
            }
        };
        tracing::warn!(plugin = plugin.id(), filter = %stage.entry.name, calls, ready_ahead, "filter ran out of memory after a long run; restarted with a fresh instance");
        if let Some(host) = &self.host {
            let labels = FilterLabels {
                plugin: plugin.id().to_string(),
                filter: stage.entry.name.clone(),
                reason: failure.kind.as_str().to_string(),
            };
            let metrics = &host.services.metrics;
            metrics.filter_restarts.get_or_create(&labels).inc();
            if !ready_ahead {
                metrics.filter_restart_waits.get_or_create(&labels).inc();
            }
        }
        stage.instance = Some(fresh);
        stage.settled_memory = None;
        true
    }

    fn bypass(&mut self, control: &ChainControl, i: usize, failure: CallFailure) {
        self.stages[i].instance = None;
        // A successor made for it would only hold memory.
        self.stages[i].successor = None;
        control.bypass(self.seen, i);
        (self.report)(failure);
    }

    fn refresh(&mut self, control: &ChainControl) {
        let generation = self.host.as_ref().map_or(0, |h| h.generation());
        let now = (control.version(), generation);
        if let Some((epoch, ready)) = &self.preparing
            && *epoch == now
        {
            if let Ok(stages) = ready.try_recv() {
                self.adopt(control, now, stages);
            }
            return;
        }
        if self.seen == now {
            return;
        }
        let reloaded = now.0 == self.seen.0 && self.stages.iter().any(|s| s.instance.is_some());
        if reloaded && self.prepare(control, now) {
            return;
        }
        self.preparing = None;
        self.seen = now;
        let wanted = control.get();
        let mut old: Vec<Option<Stage>> = std::mem::take(&mut self.stages).into_iter().map(Some).collect();
        for (i, entry) in wanted.into_iter().enumerate() {
            if control.is_bypassed(now, i) {
                // Failed on an earlier track of this player; not retried until something changes.
                self.stages.push(Stage::new(entry, None, None));
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
                None => create(plugin, entry),
            };
            if let Some(failure) = stage.failure.take() {
                control.bypass(now, i);
                (self.report)(failure);
            }
            self.stages.push(stage);
        }
    }

    /// Starts making the chain's stages for `epoch` on a thread of its own; false when no
    /// thread could be started (the caller makes them here instead).
    fn prepare(&mut self, control: &ChainControl, epoch: Epoch) -> bool {
        let Some(host) = self.host.clone() else { return false };
        let wanted = control.get();
        let made = off_thread("filter-reload", move || {
            wanted.into_iter().map(|entry| create(host.filter(&entry.name), entry)).collect()
        });
        self.preparing = made.map(|ready| (epoch, ready));
        self.preparing.is_some()
    }

    /// Puts the stages made for `epoch` in place of the running ones.
    fn adopt(&mut self, control: &ChainControl, epoch: Epoch, stages: Vec<Stage>) {
        self.preparing = None;
        self.seen = epoch;
        self.stages = stages;
        for (i, stage) in self.stages.iter_mut().enumerate() {
            if control.is_bypassed(epoch, i) {
                stage.instance = None;
            } else if let Some(failure) = stage.failure.take() {
                control.bypass(epoch, i);
                (self.report)(failure);
            }
        }
    }

    fn update(&self, stage: &mut Stage, entry: &FilterEntry) {
        // A successor in the making has the old config.
        stage.successor = None;
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
}

/// A stage for `entry`, made from `plugin` (none: bypassed, as no plugin provides it).
fn create(plugin: Option<Arc<crate::plugins::LoadedPlugin>>, entry: FilterEntry) -> Stage {
    let Some(plugin) = plugin else {
        tracing::warn!(filter = %entry.name, "no loaded plugin provides this filter; bypassing it");
        return Stage::new(entry, None, None);
    };
    match FilterInstance::create(&plugin, &entry.name, &entry.config.to_string()) {
        Ok(instance) => Stage::new(entry, Some(instance), None),
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
            Stage::new(entry, None, Some(failure))
        }
    }
}

/// Runs `make` on a thread of its own; its result arrives on the receiver. None when no
/// thread could be started (the caller makes it on its own thread instead).
fn off_thread<T: Send + 'static>(name: &str, make: impl FnOnce() -> T + Send + 'static) -> Option<Receiver<T>> {
    let (send, ready) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new().name(name.into()).spawn(move || {
        // The chain may have moved on meanwhile; then nobody listens.
        let _ = send.send(make());
    });
    match spawned {
        Ok(_) => Some(ready),
        Err(e) => {
            tracing::warn!(error = %e, thread = name, "cannot make filter instances off the track's thread");
            None
        }
    }
}

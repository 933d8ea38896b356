//! The wasmtime engine every plugin runs on, the per-call store state, and the cache of
//! compiled components.
//!
//! Runaway guests are bounded three ways: a memory cap per store (growing past it traps),
//! an epoch deadline on guest compute time per call, and one store per instance, so a trap
//! poisons only the instance that trapped. Compute time is the calling thread's CPU time:
//! a thread waiting for a core (a busy machine, a hypervisor taking the vCPU) is not
//! charged for the wait, and time spent in host calls does not count either (those have
//! their own timeouts).

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cpu_time::ThreadTime;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::PluginError;
use super::capabilities::Capabilities;
use super::grants::Limits;
use super::guest_stderr::GuestStderr;
use super::memory_watch::MemoryWatch;

/// How often the epoch advances; deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// The largest memory any plugin may be granted (the pooling allocator's slot size).
pub const MAX_MEMORY_BYTES: usize = 512 << 20;

/// The nice value plugin compilation runs at: behind the media workers and the packet
/// clock, so a plugin dropped in while the server plays (compiling a Python or JavaScript
/// component takes tens of CPU seconds) is compiled with the CPU they leave.
pub const COMPILE_NICE: i32 = 19;

/// Builds the engine: pooling allocator when the address space allows it, epochs on.
pub fn build(pool_instances: u32) -> Result<Engine, PluginError> {
    lower_compile_priority();
    let mut config = wasmtime::Config::new();
    config.epoch_interruption(true);
    let mut pooling = PoolingAllocationConfig::default();
    pooling
        .total_component_instances(pool_instances)
        .total_core_instances(pool_instances * 4)
        .total_memories(pool_instances * 2)
        .total_tables(pool_instances * 4)
        .max_memory_size(MAX_MEMORY_BYTES);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    let engine = match Engine::new(&config) {
        Ok(engine) => engine,
        Err(e) => {
            // Small address spaces (some containers) cannot reserve the pool.
            tracing::warn!(error = %e, "pooling allocator unavailable; instantiating on demand");
            config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
            Engine::new(&config).map_err(|e| PluginError::Engine(e.to_string()))?
        }
    };
    if ThreadTime::try_now().is_err() {
        tracing::error!("no per-thread CPU clock on this system; plugin calls are not time-bounded");
    }
    start_epoch_ticker(&engine);
    Ok(engine)
}

/// Wasmtime compiles on rayon's global pool: it is built here, its threads at
/// [`COMPILE_NICE`]. Built once per process; a pool built before keeps its threads' priority.
fn lower_compile_priority() {
    let built = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("plugin-compile-{i}"))
        .start_handler(|_| {
            crate::voice::scheduler::set_thread_nice(COMPILE_NICE);
        })
        .build_global();
    if built.is_err() {
        tracing::debug!("the compile pool was built before; its priority is unchanged");
    }
}

fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new().name("plugin-epoch".into()).spawn(move || {
        while let Some(engine) = weak.upgrade() {
            engine.increment_epoch();
            drop(engine);
            std::thread::sleep(EPOCH_TICK);
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the plugin epoch ticker; plugin calls are not time-bounded");
    }
}

/// Loads a component, from the compiled cache when it holds this exact component for this
/// exact engine and its checksum matches, compiling (and caching) it otherwise. Compiled
/// code is native code: a cached file that does not match its checksum (damaged, or written
/// by someone else) is deleted and compiled again, never loaded.
pub fn load_component(engine: &Engine, bytes: &[u8], cache_dir: Option<&Path>) -> Result<Component, PluginError> {
    let Some(dir) = cache_dir else {
        return Component::new(engine, bytes)
            .map_err(|e| PluginError::Invalid(format!("not a valid component: {e:#}")));
    };
    let key = CacheKey::new(engine, bytes);
    let path = dir.join(format!("{}.cwasm", key.name));
    if let Some(component) = load_cached(engine, &key, &path) {
        return Ok(component);
    }
    let component =
        Component::new(engine, bytes).map_err(|e| PluginError::Invalid(format!("not a valid component: {e:#}")))?;
    if let Err(e) = write_cache(&component, &key, &path) {
        tracing::warn!(path = %path.display(), error = %e, "cannot cache the compiled plugin");
    }
    Ok(component)
}

/// What a compiled file is for: this component's digest and this engine's compatibility.
struct CacheKey {
    name: String,
    component_digest: [u8; 32],
    engine_hash: u64,
}

impl CacheKey {
    fn new(engine: &Engine, bytes: &[u8]) -> Self {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_hash = hasher.finish();
        let component_digest: [u8; 32] = Sha256::digest(bytes).into();
        let hex: String = component_digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        Self { name: format!("{hex}-{engine_hash:016x}"), component_digest, engine_hash }
    }

    /// The checksum of a compiled file made from this component for this engine.
    fn checksum(&self, compiled: &[u8]) -> String {
        let mut sum = Sha256::new();
        sum.update(self.component_digest);
        sum.update(self.engine_hash.to_le_bytes());
        sum.update(compiled);
        sum.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn checksum_path(path: &Path) -> PathBuf {
    path.with_extension("cwasm.sha256")
}

fn load_cached(engine: &Engine, key: &CacheKey, path: &Path) -> Option<Component> {
    let compiled = std::fs::read(path).ok()?;
    let recorded = std::fs::read_to_string(checksum_path(path)).unwrap_or_default();
    if recorded.trim() != key.checksum(&compiled) {
        tracing::warn!(path = %path.display(), "compiled plugin does not match its checksum; compiling it again");
        let _ = std::fs::remove_file(path);
        return None;
    }
    // SAFETY: these bytes were checked against the checksum recorded when this engine
    // configuration serialized this component (the key covers the component's digest and
    // the engine's compatibility hash), and they are the bytes deserialized: nothing can
    // change between the check and the load.
    match unsafe { Component::deserialize(engine, &compiled) } {
        Ok(component) => Some(component),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "discarding unusable compiled plugin");
            None
        }
    }
}

fn write_cache(component: &Component, key: &CacheKey, path: &Path) -> std::io::Result<()> {
    let bytes = component.serialize().map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, key.checksum(&bytes))?;
    std::fs::rename(&tmp, checksum_path(path))?;
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Accounts for the CPU time a call spends in the guest, as opposed to in host calls.
#[derive(Debug)]
pub struct Budget {
    /// The thread's CPU time when the call began.
    started: Duration,
    in_host: Duration,
    limit: Duration,
}

impl Budget {
    fn new(limit: Duration) -> Self {
        Self { started: thread_cpu_time(), in_host: Duration::ZERO, limit }
    }

    fn guest_time(&self) -> Duration {
        thread_cpu_time().saturating_sub(self.started).saturating_sub(self.in_host)
    }
}

/// CPU time the calling thread has used so far (zero where the system cannot tell, which
/// `build` reports).
fn thread_cpu_time() -> Duration {
    ThreadTime::try_now().map_or(Duration::ZERO, |t| t.as_duration())
}

/// What a store carries for its one instance.
pub struct PluginState {
    pub plugin_id: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    limits: MemoryWatch,
    budget: Budget,
    /// Whether the plugin may write to the log.
    pub log: bool,
    /// Granted capabilities (resolvers only).
    pub caps: Option<Arc<Capabilities>>,
    /// The operator's settings for the plugin.
    pub settings: Arc<BTreeMap<String, String>>,
    /// The end of what the guest wrote to stderr.
    stderr: GuestStderr,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl PluginState {
    /// The size of the guest's largest memory, in bytes.
    pub fn memory_size(&self) -> usize {
        self.limits.largest()
    }

    /// Runs a host call, keeping its time out of the guest's budget.
    pub fn in_host<R>(&mut self, f: impl FnOnce() -> R) -> R {
        let start = thread_cpu_time();
        let result = f();
        self.budget.in_host += thread_cpu_time().saturating_sub(start);
        result
    }
}

/// The error a call ends with when the guest ran out of compute time.
#[derive(Debug, thiserror::Error)]
#[error("ran longer than its {0:?} limit")]
pub struct OutOfTime(pub Duration);

/// A fresh store for one instance. The guest sees no files, no network, no environment.
pub fn new_store(
    engine: &Engine,
    plugin_id: Arc<str>,
    limits: Limits,
    log: bool,
    caps: Option<Arc<Capabilities>>,
    settings: Arc<BTreeMap<String, String>>,
) -> Store<PluginState> {
    let stderr = GuestStderr::default();
    let state = PluginState {
        plugin_id,
        wasi: WasiCtx::builder().stderr(stderr.clone()).build(),
        table: ResourceTable::new(),
        limits: MemoryWatch::new(limits.memory_bytes.min(MAX_MEMORY_BYTES)),
        budget: Budget::new(limits.call_time),
        log,
        caps,
        settings,
        stderr,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
    store.epoch_deadline_callback(|ctx| {
        let budget = &ctx.data().budget;
        let used = budget.guest_time();
        if used >= budget.limit {
            return Err(OutOfTime(budget.limit).into());
        }
        let left = budget.limit - used;
        Ok(wasmtime::UpdateDeadline::Continue(ticks(left)))
    });
    store.set_epoch_deadline(ticks(limits.call_time));
    store
}

/// Starts the budget for a new call.
pub fn begin_call(store: &mut Store<PluginState>) {
    let budget = &mut store.data_mut().budget;
    *budget = Budget::new(budget.limit);
    let limit = budget.limit;
    store.set_epoch_deadline(ticks(limit));
}

fn ticks(d: Duration) -> u64 {
    (d.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64
}

/// Describes a failed call for people: out of time, out of memory, or the guest's trap.
pub fn describe(error: &wasmtime::Error) -> (FailureKind, String) {
    if let Some(t) = error.downcast_ref::<OutOfTime>() {
        return (FailureKind::Timeout, t.to_string());
    }
    if let Some(full) = error.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
        return (
            FailureKind::PoolFull,
            format!("no plugin instance is free ({full}); raise PLUGIN_INSTANCES for more filtered players"),
        );
    }
    let text = format!("{error:#}");
    if text.contains("forcing trap when growing memory") || text.contains("memory") && text.contains("limit") {
        return (FailureKind::Memory, "exceeded its memory limit".to_string());
    }
    // The root cause names the trap (`wasm trap: wasm \`unreachable\` instruction executed`);
    // the outer context only says a backtrace follows.
    let cause = error.root_cause().to_string();
    (FailureKind::Trap, format!("trapped: {}", cause.lines().next().unwrap_or("trap")))
}

/// Lines of the guest's stderr a failure's message quotes (the log has all that was kept).
const QUOTED_LINES: usize = 8;

/// [`describe`] for a call on `state`'s instance: a trap quotes the last lines the guest
/// wrote to stderr, which for Python and JavaScript is the exception that ended the call.
pub fn describe_call(error: &wasmtime::Error, state: &PluginState) -> (FailureKind, String) {
    let (kind, mut message) = describe(error);
    if kind == FailureKind::Trap
        && let Some(said) = state.stderr.tail()
    {
        tracing::warn!(plugin = %state.plugin_id, "the plugin wrote before it trapped:\n{said}");
        let lines: Vec<&str> = said.lines().filter(|l| !l.trim().is_empty()).collect();
        let quoted = lines[lines.len().saturating_sub(QUOTED_LINES)..].join(" | ");
        message.push_str(&format!(" (it wrote: {quoted})"));
    }
    (kind, message)
}

/// Why a plugin call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    Timeout,
    Memory,
    Trap,
    /// A filter refused its config when re-created (after a plugin reload).
    Refused,
    /// Every instance of the pool (`PLUGIN_INSTANCES`) is in use.
    PoolFull,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Memory => "memory",
            Self::Trap => "trap",
            Self::Refused => "refused",
            Self::PoolFull => "pool_full",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn a_call_is_charged_for_the_cpu_it_uses_not_for_waiting() {
        let budget = Budget::new(Duration::from_millis(20));
        // Off the CPU for three budgets' worth of wall time, as when the machine is busy.
        std::thread::sleep(Duration::from_millis(60));
        let waited = budget.guest_time();
        assert!(waited < Duration::from_millis(5), "charged {waited:?} for sleeping");

        // Spinning is charged: the budget runs out (a generous wall limit only ends a hang).
        let give_up = Instant::now() + Duration::from_secs(30);
        while budget.guest_time() < budget.limit {
            assert!(Instant::now() < give_up, "spinning never used up the budget");
        }
    }
}

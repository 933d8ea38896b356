//! Filter components: one instance per filter per track, each in its own store, called on
//! the track's pipeline thread.

use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::ResourceAny;

use super::LoadedPlugin;
use super::engine::{self, FailureKind, PluginState};

pub(super) mod bindings {
    wasmtime::component::bindgen!({ world: "filter", path: "../wit" });
}

pub(super) use bindings::FilterPre;

/// A failed call: the instance is unusable afterwards.
#[derive(Debug, Clone, thiserror::Error)]
#[error("filter {filter} of plugin {plugin} {message}")]
pub struct CallFailure {
    pub plugin: String,
    pub filter: String,
    pub kind: FailureKind,
    pub message: String,
}

/// Why a filter instance could not be created.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CreateError {
    /// The filter rejected its config (its own message), or the plugin has no such filter.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Failed(CallFailure),
}

pub struct FilterInstance {
    store: Store<PluginState>,
    bindings: bindings::Filter,
    handle: ResourceAny,
    name: String,
    plugin: Arc<LoadedPlugin>,
    /// Blocks processed so far.
    calls: u64,
}

impl FilterInstance {
    /// Instantiates `plugin` and creates filter `name` from its JSON config.
    pub fn create(plugin: &Arc<LoadedPlugin>, name: &str, config: &str) -> Result<Self, CreateError> {
        let pre =
            plugin.filter_pre().ok_or_else(|| CreateError::Refused(format!("{} is not a filter", plugin.id())))?;
        let mut store = engine::new_store(
            pre.engine(),
            plugin.id_arc(),
            plugin.limits,
            plugin.grants.log,
            None,
            plugin.settings.clone(),
        );
        let failed = |e: wasmtime::Error, store: &Store<PluginState>| {
            let (kind, message) = engine::describe_call(&e, store.data());
            CreateError::Failed(CallFailure {
                plugin: plugin.id().to_string(),
                filter: name.to_string(),
                kind,
                message,
            })
        };
        let bindings = match pre.instantiate(&mut store) {
            Ok(bindings) => bindings,
            Err(e) => return Err(failed(e, &store)),
        };
        engine::begin_call(&mut store);
        let created = bindings.mesastream_plugin0_1_0_filters().call_create(&mut store, name, config);
        let handle = created.map_err(|e| failed(e, &store))?.map_err(CreateError::Refused)?;
        Ok(Self { store, bindings, handle, name: name.to_string(), plugin: plugin.clone(), calls: 0 })
    }

    pub fn plugin(&self) -> &Arc<LoadedPlugin> {
        &self.plugin
    }

    /// Blocks this instance has processed.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// The size of its largest memory, in bytes.
    pub fn memory_size(&self) -> usize {
        self.store.data().memory_size()
    }

    pub fn process(&mut self, samples: &[f32]) -> Result<Vec<f32>, CallFailure> {
        self.calls += 1;
        engine::begin_call(&mut self.store);
        let r = self.bindings.mesastream_plugin0_1_0_filters().instance().call_process(
            &mut self.store,
            self.handle,
            samples,
        );
        r.map_err(|e| self.failure(&e))
    }

    pub fn flush(&mut self) -> Result<Vec<f32>, CallFailure> {
        engine::begin_call(&mut self.store);
        let r = self.bindings.mesastream_plugin0_1_0_filters().instance().call_flush(&mut self.store, self.handle);
        r.map_err(|e| self.failure(&e))
    }

    /// Applies a new config; the outer error means the instance failed, the inner that the
    /// filter refused the config (and kept the old one).
    pub fn update(&mut self, config: &str) -> Result<Result<(), String>, CallFailure> {
        engine::begin_call(&mut self.store);
        let r =
            self.bindings.mesastream_plugin0_1_0_filters().instance().call_update(&mut self.store, self.handle, config);
        r.map_err(|e| self.failure(&e))
    }

    fn failure(&self, e: &wasmtime::Error) -> CallFailure {
        let (kind, message) = engine::describe_call(e, self.store.data());
        CallFailure { plugin: self.plugin.id().to_string(), filter: self.name.clone(), kind, message }
    }
}

impl Drop for FilterInstance {
    fn drop(&mut self) {
        // A poisoned store cannot run the destructor; the store's memory goes either way.
        let _ = self.handle.resource_drop(&mut self.store);
    }
}

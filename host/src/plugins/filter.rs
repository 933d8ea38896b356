//! Filter components: one instance per filter per track, each in its own store, called on
//! the track's pipeline thread.

use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::ResourceAny;

use super::engine::{self, FailureKind, PluginState};
use super::{LoadedPlugin, PluginError};

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

pub struct FilterInstance {
    store: Store<PluginState>,
    bindings: bindings::Filter,
    handle: ResourceAny,
    name: String,
    plugin: Arc<LoadedPlugin>,
}

impl FilterInstance {
    /// Instantiates `plugin` and creates filter `name`. A config the filter rejects is
    /// `PluginError::Config` with the filter's own message.
    pub fn create(plugin: &Arc<LoadedPlugin>, name: &str, config: &str) -> Result<Self, PluginError> {
        let pre =
            plugin.filter_pre().ok_or_else(|| PluginError::NotFound(format!("{} is not a filter", plugin.id())))?;
        let mut store = engine::new_store(pre.engine(), plugin.id_arc(), plugin.limits, plugin.grants.log, None);
        let failed = |e: wasmtime::Error| PluginError::Failed(format!("{}: {}", plugin.id(), engine::describe(&e).1));
        let bindings = pre.instantiate(&mut store).map_err(failed)?;
        engine::begin_call(&mut store);
        let handle = bindings
            .mesastream_plugin_filters()
            .call_create(&mut store, name, config)
            .map_err(failed)?
            .map_err(PluginError::Config)?;
        Ok(Self { store, bindings, handle, name: name.to_string(), plugin: plugin.clone() })
    }

    pub fn plugin(&self) -> &Arc<LoadedPlugin> {
        &self.plugin
    }

    pub fn process(&mut self, samples: &[f32]) -> Result<Vec<f32>, CallFailure> {
        engine::begin_call(&mut self.store);
        let r =
            self.bindings.mesastream_plugin_filters().instance().call_process(&mut self.store, self.handle, samples);
        r.map_err(|e| self.failure(&e))
    }

    pub fn flush(&mut self) -> Result<Vec<f32>, CallFailure> {
        engine::begin_call(&mut self.store);
        let r = self.bindings.mesastream_plugin_filters().instance().call_flush(&mut self.store, self.handle);
        r.map_err(|e| self.failure(&e))
    }

    /// Applies a new config; the outer error means the instance failed, the inner that the
    /// filter refused the config (and kept the old one).
    pub fn update(&mut self, config: &str) -> Result<Result<(), String>, CallFailure> {
        engine::begin_call(&mut self.store);
        let r = self.bindings.mesastream_plugin_filters().instance().call_update(&mut self.store, self.handle, config);
        r.map_err(|e| self.failure(&e))
    }

    fn failure(&self, e: &wasmtime::Error) -> CallFailure {
        let (kind, message) = engine::describe(e);
        CallFailure { plugin: self.plugin.id().to_string(), filter: self.name.clone(), kind, message }
    }
}

impl Drop for FilterInstance {
    fn drop(&mut self) {
        // A poisoned store cannot run the destructor; the store's memory goes either way.
        let _ = self.handle.resource_drop(&mut self.store);
    }
}

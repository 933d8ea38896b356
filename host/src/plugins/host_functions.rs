//! What a guest may call on the host besides its capabilities: logging (bounded, and only
//! when the operator lets the plugin log) and reading the settings the operator gave it.

use super::engine::PluginState;
use super::filter;

impl filter::bindings::mesastream::plugin0_1_0::log::Host for PluginState {
    fn log(&mut self, level: filter::bindings::mesastream::plugin0_1_0::log::Level, message: String) {
        use filter::bindings::mesastream::plugin0_1_0::log::Level;
        if !self.log {
            return;
        }
        let message: String = message.chars().take(1024).collect();
        let plugin = &*self.plugin_id;
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

impl filter::bindings::mesastream::plugin0_2_0::settings::Host for PluginState {
    fn get(&mut self, name: String) -> Option<String> {
        self.settings.get(&name).cloned()
    }
}

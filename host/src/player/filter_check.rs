//! Whether a filter chain can run, for every protocol: each filter must come from a loaded
//! plugin and accept its config, which the plugin itself checks (an instance is created and
//! dropped, off the API's threads).

use std::sync::Arc;

use super::Registry;
use crate::model::FilterEntry;
use crate::plugins::PluginHost;
use crate::plugins::filter::{CreateError, FilterInstance};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterCheckError {
    #[error("no filter plugins are loaded (PLUGINS_DIR is not set)")]
    NoPlugins,
    #[error("unknown filter {name:?} (loaded: {loaded})")]
    Unknown { name: String, loaded: String },
    /// The plugin refused the config; the message is its own.
    #[error("filter {name}: {why}")]
    Refused { name: String, why: String },
    /// The plugin could not be asked (it trapped, its pool is full, …).
    #[error("filter {name}: {why}")]
    Unavailable { name: String, why: String },
}

impl Registry {
    pub async fn check_filters(&self, chain: &[FilterEntry]) -> Result<(), FilterCheckError> {
        if chain.is_empty() {
            return Ok(());
        }
        let host = self.ctx.pipeline.plugins.clone().ok_or(FilterCheckError::NoPlugins)?;
        let chain = chain.to_vec();
        let checked = self.ctx.media.spawn_blocking(move || check_chain(&host, &chain));
        checked.await.map_err(|e| FilterCheckError::Unavailable { name: "chain".into(), why: e.to_string() })?
    }
}

fn check_chain(host: &Arc<PluginHost>, chain: &[FilterEntry]) -> Result<(), FilterCheckError> {
    for entry in chain {
        let Some(plugin) = host.filter(&entry.name) else {
            let known: Vec<String> =
                host.plugins().iter().flat_map(|p| p.manifest.filters.iter().map(|f| f.name.clone())).collect();
            let loaded = if known.is_empty() { "none".to_string() } else { known.join(", ") };
            return Err(FilterCheckError::Unknown { name: entry.name.clone(), loaded });
        };
        match FilterInstance::create(&plugin, &entry.name, &entry.config.to_string()) {
            Ok(_) => {}
            Err(CreateError::Refused(why)) => return Err(FilterCheckError::Refused { name: entry.name.clone(), why }),
            Err(e) => return Err(FilterCheckError::Unavailable { name: entry.name.clone(), why: e.to_string() }),
        }
    }
    Ok(())
}

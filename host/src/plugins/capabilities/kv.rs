//! `mesastream:plugin/kv` (namespaced per plugin, in the state store) and
//! `mesastream:plugin/library` (the guild's saved playlists).

use std::time::Duration;

use super::Capabilities;
use crate::model::Id;
use crate::plugins::engine::PluginState;
use crate::plugins::resolver::bindings::mesastream::plugin0_1_0::{kv, library};

fn caps_or(state: &PluginState, what: &str) -> Result<std::sync::Arc<Capabilities>, String> {
    state.caps.clone().ok_or_else(|| format!("{what} is not available to filters"))
}

fn kv_caps(state: &PluginState) -> Result<std::sync::Arc<Capabilities>, kv::Error> {
    let caps = caps_or(state, "kv").map_err(kv::Error::Denied)?;
    if caps.grants.kv { Ok(caps) } else { Err(kv::Error::Denied("the kv capability is not granted".into())) }
}

impl kv::Host for PluginState {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, kv::Error> {
        let caps = kv_caps(self)?;
        self.in_host(|| {
            let store = caps.services.store.clone();
            caps.services
                .runtime
                .block_on(store.plugin_get(&caps.plugin_id, &key))
                .map_err(|e| kv::Error::Failed(e.to_string()))
        })
    }

    fn set(&mut self, key: String, value: Vec<u8>, ttl_secs: Option<u32>) -> Result<(), kv::Error> {
        let caps = kv_caps(self)?;
        if value.len() > caps.limits.kv_max_value {
            return Err(kv::Error::Failed(format!(
                "value of {} bytes exceeds the {} byte cap",
                value.len(),
                caps.limits.kv_max_value
            )));
        }
        self.in_host(|| {
            let store = caps.services.store.clone();
            let ttl = ttl_secs.map(|s| Duration::from_secs(u64::from(s)));
            caps.services
                .runtime
                .block_on(store.plugin_set(&caps.plugin_id, &key, value, ttl))
                .map_err(|e| kv::Error::Failed(e.to_string()))
        })
    }

    fn delete(&mut self, key: String) -> Result<(), kv::Error> {
        let caps = kv_caps(self)?;
        self.in_host(|| {
            let store = caps.services.store.clone();
            caps.services
                .runtime
                .block_on(store.plugin_delete(&caps.plugin_id, &key))
                .map_err(|e| kv::Error::Failed(e.to_string()))
        })
    }
}

impl library::Host for PluginState {
    fn playlist(&mut self, guild_id: String, name: String) -> Result<Option<Vec<String>>, library::Error> {
        let caps = caps_or(self, "library").map_err(library::Error::Denied)?;
        if !caps.grants.library {
            return Err(library::Error::Denied("the library capability is not granted".into()));
        }
        let guild: Id =
            guild_id.parse().map_err(|_| library::Error::Failed(format!("invalid guild id {guild_id:?}")))?;
        self.in_host(|| {
            let store = caps.services.store.clone();
            let playlist = caps.services.runtime.block_on(async move { store.playlist(guild, &name).await });
            let playlist = playlist.map_err(|e| library::Error::Failed(e.to_string()))?;
            playlist
                .map(|p| p.tracks.iter().map(serde_json::to_string).collect::<Result<Vec<_>, _>>())
                .transpose()
                .map_err(|e| library::Error::Failed(e.to_string()))
        })
    }
}

//! Guild state that outlives a player and the process: queues, positions, playlists and the
//! last snapshot, in the original mesastream's key layout (`{prefix}:guild:{id}:queue`, …,
//! JSON values) on an embedded redb file or on Redis. A read that fails is an error for the
//! caller (only a key that is confirmed absent reads as nothing), so a store outage can
//! never look like an empty queue that is then saved over the real one. Background writes
//! are logged, counted and retried; they never stop playback.

mod embedded;
mod redis;

use std::path::Path;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use embedded::EmbeddedKv;
pub use redis::RedisKv;
pub(crate) use redis::err as redis_error;

use crate::model::{Id, PlayerSnapshot, PlaylistSnapshot, Track};

/// How long a saved position stays, as in the original.
pub const POSITION_TTL: Duration = Duration::from_secs(3600);
const WRITE_ATTEMPTS: u32 = 3;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("state store: {0}")]
    Backend(String),
}

#[derive(Clone)]
enum Backend {
    Embedded(EmbeddedKv),
    Redis(RedisKv),
}

#[derive(Clone)]
pub struct StateStore {
    backend: Backend,
    prefix: String,
    /// Failed operations (each retry counts); share it with the metrics registry.
    pub errors: Counter,
}

impl StateStore {
    pub fn embedded(path: &Path, prefix: &str) -> Result<Self, StoreError> {
        Ok(Self::with(Backend::Embedded(EmbeddedKv::open(path)?), prefix))
    }

    /// A store kept in memory only.
    pub fn in_memory(prefix: &str) -> Result<Self, StoreError> {
        Ok(Self::with(Backend::Embedded(EmbeddedKv::in_memory()?), prefix))
    }

    /// Redis at `uri`; when it does not answer yet, it is connected in the background.
    pub async fn redis(uri: &str, prefix: &str) -> Result<Self, StoreError> {
        Ok(Self::with(Backend::Redis(RedisKv::connect(uri).await?), prefix))
    }

    fn with(backend: Backend, prefix: &str) -> Self {
        Self { backend, prefix: format!("{prefix}:"), errors: Counter::default() }
    }

    pub fn kind(&self) -> &'static str {
        match self.backend {
            Backend::Embedded(_) => "embedded",
            Backend::Redis(_) => "redis",
        }
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    async fn raw_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match &self.backend {
            Backend::Embedded(kv) => kv.get(key).await,
            Backend::Redis(kv) => kv.get(key).await,
        }
    }

    async fn raw_set(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Embedded(kv) => kv.set(key, value, ttl).await,
            Backend::Redis(kv) => kv.set(key, value, ttl).await,
        }
    }

    async fn raw_delete(&self, key: &str) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Embedded(kv) => kv.delete(key).await,
            Backend::Redis(kv) => kv.delete(key).await,
        }
    }

    /// Whether the store answers (`/ready`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Embedded(kv) => kv.get("__ping__").await.map(|_| ()),
            Backend::Redis(kv) => kv.ping().await,
        }
    }

    /// Reads a JSON value. A store error is returned; a value that does not parse is moved
    /// aside to `<key>:unreadable` (kept for the operator, logged) and reads as absent.
    async fn read<T: DeserializeOwned>(&self, rest: &str) -> Result<Option<T>, StoreError> {
        let key = self.key(rest);
        let bytes = match self.raw_get(&key).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(None),
            Err(e) => {
                self.errors.inc();
                tracing::warn!(%key, error = %e, "state store read failed");
                return Err(e);
            }
        };
        match serde_json::from_slice(&bytes) {
            Ok(v) => Ok(Some(v)),
            Err(e) => {
                let aside = format!("{key}:unreadable");
                tracing::warn!(%key, %aside, error = %e, "state store value does not parse; moving it aside");
                self.raw_set(&aside, bytes, None).await.inspect_err(|_| {
                    self.errors.inc();
                })?;
                self.raw_delete(&key).await.inspect_err(|_| {
                    self.errors.inc();
                })?;
                Ok(None)
            }
        }
    }

    /// Writes a JSON value, retrying a few times; a final failure is logged, counted and
    /// returned.
    async fn write<T: Serialize>(&self, rest: &str, value: &T, ttl: Option<Duration>) -> Result<(), StoreError> {
        let key = self.key(rest);
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Backend(e.to_string()))?;
        let mut last = StoreError::Backend("no attempt".into());
        for attempt in 1..=WRITE_ATTEMPTS {
            match self.raw_set(&key, bytes.clone(), ttl).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.errors.inc();
                    tracing::warn!(%key, attempt, error = %e, "state store write failed");
                    last = e;
                    if attempt < WRITE_ATTEMPTS {
                        tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                    }
                }
            }
        }
        tracing::error!(%key, "state store write lost after {WRITE_ATTEMPTS} attempts");
        Err(last)
    }

    async fn remove(&self, rest: &str) {
        let key = self.key(rest);
        if let Err(e) = self.raw_delete(&key).await {
            self.errors.inc();
            tracing::warn!(%key, error = %e, "state store delete failed");
        }
    }

    /// A protocol's own record (`{protocol}:{key}`), as JSON; one that does not parse is
    /// moved aside and reads as absent.
    pub async fn protocol_record<T: DeserializeOwned>(
        &self,
        protocol: &str,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        self.read(&format!("{protocol}:{key}")).await
    }

    pub async fn save_protocol_record<T: Serialize>(
        &self,
        protocol: &str,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        self.write(&format!("{protocol}:{key}"), value, None).await
    }

    pub async fn remove_protocol_record(&self, protocol: &str, key: &str) {
        self.remove(&format!("{protocol}:{key}")).await;
    }

    /// An operator-page session (`ui:session:{digest}`), kept for `ttl`.
    pub async fn ui_session<T: DeserializeOwned>(&self, digest: &str) -> Result<Option<T>, StoreError> {
        self.read(&format!("ui:session:{digest}")).await
    }

    pub async fn save_ui_session<T: Serialize>(
        &self,
        digest: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.write(&format!("ui:session:{digest}"), value, Some(ttl)).await
    }

    pub async fn remove_ui_session(&self, digest: &str) {
        self.remove(&format!("ui:session:{digest}")).await;
    }

    /// A plugin's own key (`plugin:{id}:kv:{key}`); errors reach the plugin.
    pub async fn plugin_get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.key(&format!("plugin:{plugin}:kv:{key}"));
        self.raw_get(&key).await.inspect_err(|_| {
            self.errors.inc();
        })
    }

    pub async fn plugin_set(
        &self,
        plugin: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        let key = self.key(&format!("plugin:{plugin}:kv:{key}"));
        self.raw_set(&key, value, ttl).await.inspect_err(|_| {
            self.errors.inc();
        })
    }

    pub async fn plugin_delete(&self, plugin: &str, key: &str) -> Result<(), StoreError> {
        let key = self.key(&format!("plugin:{plugin}:kv:{key}"));
        self.raw_delete(&key).await.inspect_err(|_| {
            self.errors.inc();
        })
    }

    /// The guild's saved queue (empty only when none is saved).
    pub async fn queue(&self, guild: Id) -> Result<Vec<Track>, StoreError> {
        Ok(self.read(&format!("guild:{guild}:queue")).await?.unwrap_or_default())
    }

    /// The guild's queue; a track that is playing is stored at its head so a restart resumes it.
    pub async fn save_queue(&self, guild: Id, tracks: &[Track]) -> Result<(), StoreError> {
        self.write(&format!("guild:{guild}:queue"), &tracks, None).await
    }

    pub async fn position(&self, guild: Id) -> Result<Option<u64>, StoreError> {
        self.read(&format!("guild:{guild}:position")).await
    }

    /// The position in the track at the head of the saved queue.
    pub async fn save_position(&self, guild: Id, ms: u64) -> Result<(), StoreError> {
        if ms == 0 {
            self.remove(&format!("guild:{guild}:position")).await;
            Ok(())
        } else {
            self.write(&format!("guild:{guild}:position"), &ms, Some(POSITION_TTL)).await
        }
    }

    pub async fn playlist(&self, guild: Id, name: &str) -> Result<Option<PlaylistSnapshot>, StoreError> {
        self.read(&format!("guild:{guild}:playlist:{name}")).await
    }

    pub async fn save_playlist(&self, guild: Id, playlist: &PlaylistSnapshot) -> Result<(), StoreError> {
        self.write(&format!("guild:{guild}:playlist:{}", playlist.name), playlist, None).await
    }

    /// The player's last saved view (its voice credentials, queue, volume and filters).
    pub async fn player_state(&self, player: Id) -> Result<Option<PlayerSnapshot>, StoreError> {
        self.read(&format!("player:{player}:state")).await
    }

    pub async fn save_player_state(&self, snapshot: &PlayerSnapshot) -> Result<(), StoreError> {
        self.write(&format!("player:{}:state", snapshot.player_id), snapshot, None).await
    }
}

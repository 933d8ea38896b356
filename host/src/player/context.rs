//! What every player shares, and how the registry's operations fail.

use std::sync::Arc;

use crate::audio::PipelineConfig;
use crate::cluster::Cluster;
use crate::events::EventBus;
use crate::model::Id;
use crate::store::StateStore;
use crate::voice::{Scheduler, VoiceError, VoiceOptions};

/// What every player shares.
pub struct Context {
    pub events: EventBus,
    pub pipeline: PipelineConfig,
    pub voice: VoiceOptions,
    pub scheduler: Arc<Scheduler>,
    /// The runtime for network and voice work, apart from the API's.
    pub media: tokio::runtime::Handle,
    /// The guarded client every media request goes through.
    pub egress: crate::egress::Egress,
    pub store: StateStore,
    pub metrics: Arc<crate::telemetry::Metrics>,
    pub output_counters: super::OutputCounters,
    pub limits: crate::config::Limits,
    /// Ticks of sent audio each player keeps for listeners over HTTP (`REWIND_SECONDS`).
    pub rewind_ticks: u64,
    /// What all players' recordings may hold together (`REWIND_MAX_BYTES`).
    pub rewind_budget: Arc<crate::audio::recording::RewindBudget>,
    /// Live mounts, which `live:{mount}` tracks follow.
    pub live: Arc<crate::live::Mounts>,
    /// The cluster this node belongs to, if any: a mesastream player is played only by the
    /// node holding its lease.
    pub cluster: Option<Arc<Cluster>>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlayerError {
    #[error("player {0} not found")]
    NotFound(Id),
    #[error(transparent)]
    Voice(#[from] VoiceError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("this node has its {0} players (MAX_PLAYERS); try another node or later")]
    Full(usize),
    #[error("player {0} is played by node {1}")]
    Elsewhere(Id, String),
    #[error("{0}")]
    Internal(String),
}

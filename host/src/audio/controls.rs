//! What a player lets its track's pipeline read while it runs: the volume and the filter
//! chain, changed between frames without a lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use super::filter_chain::{ChainControl, FailureReport};
use crate::plugins::PluginHost;

/// Linear gain shared with the player so volume changes reach the next encoded frame.
#[derive(Debug)]
pub struct Gain(AtomicU32);

impl Gain {
    fn bits(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Gain {
    pub fn new(v: f32) -> Self {
        Self(AtomicU32::new(v.to_bits()))
    }
    pub fn get(&self) -> f32 {
        f32::from_bits(self.0.load(Ordering::Relaxed))
    }
    pub fn set(&self, v: f32) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
}

/// What a player lets its track pipeline read while it runs.
pub struct Controls {
    pub gain: Gain,
    pub filters: ChainControl,
    /// Told when a filter fails and is taken out of the chain.
    pub on_filter_failure: FailureReport,
}

impl Controls {
    /// Volume 1 and no filters: a track's audio as it is (a cache fill, a live mount's source).
    pub fn unchanged() -> Arc<Self> {
        Arc::new(Self { gain: Gain::default(), filters: ChainControl::default(), on_filter_failure: Arc::new(|_| {}) })
    }

    /// Changes whenever the volume, the chain or the loaded plugins change: what a
    /// passed-through packet is checked against (see `frames`). The chain's and the plugins'
    /// counters would have to move by exactly 2^16 between two looks to go unnoticed.
    pub fn version(&self, plugins: Option<&PluginHost>) -> u64 {
        let generation = plugins.map_or(0, PluginHost::generation);
        u64::from(self.gain.bits()) ^ (self.filters.version() << 32) ^ (generation << 48)
    }
}

impl Default for Gain {
    fn default() -> Self {
        Self::new(1.0)
    }
}

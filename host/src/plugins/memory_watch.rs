//! A store's memory limit, and how close its guest has come to it: a filter whose memory
//! creeps up (ComponentizeJS never frees the blocks it is given) gets a successor made ahead
//! of the call that would run out, so the swap costs the track's frames nothing.

use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

pub struct MemoryWatch {
    limits: StoreLimits,
    /// Bytes any one linear memory may grow to (the limit is per memory).
    limit: usize,
    /// The largest size any of the store's memories has been allowed to grow to.
    largest: usize,
}

impl MemoryWatch {
    pub fn new(limit: usize) -> Self {
        let limits = StoreLimitsBuilder::new().memory_size(limit).trap_on_grow_failure(true).build();
        Self { limits, limit, largest: 0 }
    }

    /// Whether a memory has used three quarters of what it may grow to.
    pub fn nearly_full(&self) -> bool {
        self.largest >= self.limit / 4 * 3
    }
}

impl ResourceLimiter for MemoryWatch {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            self.largest = self.largest.max(desired);
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearly_full_at_three_quarters_of_the_limit_and_refused_past_it() {
        let mut watch = MemoryWatch::new(4 << 20);
        assert!(watch.memory_growing(0, 2 << 20, None).expect("grow"));
        assert!(!watch.nearly_full());
        assert!(watch.memory_growing(2 << 20, 3 << 20, None).expect("grow"));
        assert!(watch.nearly_full());
        // Past the limit the grow traps (trap_on_grow_failure), and the size stays.
        assert!(watch.memory_growing(3 << 20, 5 << 20, None).is_err());
        assert_eq!(watch.largest, 3 << 20);
    }
}

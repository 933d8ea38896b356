//! A store's memory limit, and how far its guest has grown: a filter whose memory keeps
//! growing in steady play (ComponentizeJS never frees the blocks it is given) gets a
//! successor made long before the call that would run out, so the swap costs the track's
//! frames nothing.

use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

pub struct MemoryWatch {
    limits: StoreLimits,
    /// The largest size any of the store's memories has been allowed to grow to.
    largest: usize,
}

impl MemoryWatch {
    pub fn new(limit: usize) -> Self {
        let limits = StoreLimitsBuilder::new().memory_size(limit).trap_on_grow_failure(true).build();
        Self { limits, largest: 0 }
    }

    /// The size of the store's largest memory, in bytes.
    pub fn largest(&self) -> usize {
        self.largest
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
    fn follows_each_allowed_growth_and_refuses_past_the_limit() {
        let mut watch = MemoryWatch::new(4 << 20);
        assert!(watch.memory_growing(0, 2 << 20, None).expect("grow"));
        assert_eq!(watch.largest(), 2 << 20);
        assert!(watch.memory_growing(2 << 20, 3 << 20, None).expect("grow"));
        assert_eq!(watch.largest(), 3 << 20);
        // Past the limit the grow traps (trap_on_grow_failure), and the size stays.
        assert!(watch.memory_growing(3 << 20, 5 << 20, None).is_err());
        assert_eq!(watch.largest(), 3 << 20);
    }
}

//! Whether this node may send audio right now. In a cluster a node holds its players through
//! leases it renews; a node that was paused past its lease (SIGSTOP, a stalled VM) may have
//! had its players adopted elsewhere, so once the gate's time runs out nothing is sent until
//! the renewal says which players are still its own. Outside a cluster there is no gate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct SendGate {
    base: Instant,
    /// Microseconds after `base` until which sending is allowed.
    open_until_us: AtomicU64,
}

impl SendGate {
    /// A gate that is shut until [`Self::open_for`] is called.
    pub fn shut() -> Self {
        Self { base: Instant::now(), open_until_us: AtomicU64::new(0) }
    }

    /// Allows sending for `span` from now.
    pub fn open_for(&self, span: Duration) {
        let until = self.base.elapsed() + span;
        self.open_until_us.store(until.as_micros() as u64, Ordering::Release);
    }

    pub fn is_open(&self) -> bool {
        (self.base.elapsed().as_micros() as u64) < self.open_until_us.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shut_until_opened_and_shut_again_when_its_span_is_over() {
        let gate = SendGate::shut();
        assert!(!gate.is_open());
        gate.open_for(Duration::from_secs(60));
        assert!(gate.is_open());
        gate.open_for(Duration::ZERO);
        assert!(!gate.is_open());
    }
}

//! How many frames the packet clock has asked a track's encoder for. The encoder filters,
//! applies the volume and encodes a frame only once it is asked for, so a change reaches the
//! next frame asked for instead of frames already waiting. The clock asks one frame ahead
//! in steady play and for every frame it owes while catching up.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::Thread;
use std::time::Duration;

/// How long the encoder sleeps between looks at the cancel flag when nothing is asked.
const IDLE_CHECK: Duration = Duration::from_millis(50);

#[derive(Debug)]
pub struct Demand {
    /// Frames asked for since the track started.
    asked: AtomicU64,
    /// The reader is gone: the encoder stops.
    closed: AtomicBool,
    /// The encoder thread, once it first waited.
    encoder: OnceLock<Thread>,
}

impl Demand {
    /// A demand with the first `frames` already asked for.
    pub fn new(frames: u64) -> Self {
        Self { asked: AtomicU64::new(frames), closed: AtomicBool::new(false), encoder: OnceLock::new() }
    }

    /// Clock side: asks for frames up to `total` since the start (never fewer than before).
    /// Never blocks.
    pub fn ask_up_to(&self, total: u64) {
        if self.asked.fetch_max(total, Ordering::AcqRel) < total {
            self.wake();
        }
    }

    /// Clock side: nobody will take frames any more.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake();
    }

    /// Encoder side: waits until a frame beyond the first `made` is asked for. False when the
    /// reader closed or `cancel` is set.
    pub fn wait_beyond(&self, made: u64, cancel: &AtomicBool) -> bool {
        let _ = self.encoder.get_or_init(std::thread::current);
        loop {
            if self.closed.load(Ordering::Acquire) || cancel.load(Ordering::Acquire) {
                return false;
            }
            if self.asked.load(Ordering::Acquire) > made {
                return true;
            }
            // A wake between the check and the park is kept by the thread's token.
            std::thread::park_timeout(IDLE_CHECK);
        }
    }

    fn wake(&self) {
        if let Some(thread) = self.encoder.get() {
            thread.unpark();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn the_encoder_waits_for_each_frame_to_be_asked_for() {
        let demand = Arc::new(Demand::new(1));
        let cancel = AtomicBool::new(false);
        assert!(demand.wait_beyond(0, &cancel), "the first frame is asked for up front");
        let (made_tx, made_rx) = std::sync::mpsc::channel();
        let encoder = {
            let demand = demand.clone();
            std::thread::spawn(move || {
                let cancel = AtomicBool::new(false);
                let mut made = 1;
                while demand.wait_beyond(made, &cancel) {
                    made += 1;
                    made_tx.send(made).expect("test listens");
                }
                made
            })
        };
        // Nothing is made until asked; then exactly what was asked.
        assert!(made_rx.recv_timeout(IDLE_CHECK * 3).is_err(), "made a frame nobody asked for");
        demand.ask_up_to(4);
        assert_eq!((made_rx.recv().ok(), made_rx.recv().ok(), made_rx.recv().ok()), (Some(2), Some(3), Some(4)));
        demand.ask_up_to(2); // asking for fewer takes nothing back
        assert!(made_rx.recv_timeout(IDLE_CHECK * 3).is_err(), "made a frame nobody asked for");
        demand.close();
        assert_eq!(encoder.join().ok(), Some(4), "closing ends the encoder's wait");
    }
}

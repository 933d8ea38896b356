//! A track's frames on their way to the packet clock, and what the clock asks for. Only the
//! track's work and its player's clock lane touch a ring, each for a moment per packet.
//!
//! Two kinds of frame wait here. Encoded frames are made only once the clock asks for them
//! (one frame ahead), so a volume or filter change reaches the next frame asked for.
//! Passed-through packets (an Opus source with nothing to change) are put here up to
//! [`PASS_AHEAD`] at a time, so the clock reads them itself with no thread hop per frame. Each
//! carries the version of the player's controls it was passed under. When the controls change,
//! the clock leaves a stale one where it is and wakes the work, which takes the stale packets
//! back and decides again: the change is heard from the next frame.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use super::workers::Urgency;

/// Passed-through packets kept ready for the clock (0.5 s).
pub const PASS_AHEAD: usize = 25;
/// Below this many, the work is woken to put more in.
const PASS_LOW: usize = 10;
/// Spent packet buffers kept for reuse, so steady play allocates nothing per packet.
const SPARE_BUFFERS: usize = PASS_AHEAD + 8;

/// What the clock found.
#[derive(Debug)]
pub enum Taken {
    Audio(Vec<u8>),
    /// The track is over; an error says why it ended early.
    End(Result<(), String>),
    /// Nothing ready yet (or a packet waits to be decided again after a change).
    Empty,
}

struct Entry {
    packet: Vec<u8>,
    /// The controls' version it was passed through under; none for an encoded frame.
    passed_at: Option<u64>,
}

#[derive(Default)]
struct Ring {
    queue: VecDeque<Entry>,
    /// How many entries at the back are passed-through packets.
    tail_passed: usize,
    /// Passed-through packets in the queue.
    passed: usize,
    end: Option<Result<(), String>>,
    spare: Vec<Vec<u8>>,
    /// Frames the clock took so far.
    taken: u64,
}

/// The version of the controls a passed packet is checked against.
pub type Version = Arc<dyn Fn() -> u64 + Send + Sync>;
type Waker = Box<dyn Fn(Urgency) + Send + Sync>;

pub struct FrameRing {
    ring: Mutex<Ring>,
    /// Frames asked for since the track started.
    asked: AtomicU64,
    closed: AtomicBool,
    version: Version,
    wake: OnceLock<Waker>,
}

impl FrameRing {
    /// A ring with the first `frames` already asked for.
    pub fn new(frames: u64, version: Version) -> Self {
        Self {
            ring: Mutex::new(Ring::default()),
            asked: AtomicU64::new(frames),
            closed: AtomicBool::new(false),
            version,
            wake: OnceLock::new(),
        }
    }

    /// Work side: how the track's work is woken.
    pub fn set_waker(&self, wake: impl Fn(Urgency) + Send + Sync + 'static) {
        let _ = self.wake.set(Box::new(wake));
    }

    fn wake(&self, urgency: Urgency) {
        if let Some(wake) = self.wake.get() {
            wake(urgency);
        }
    }

    // The clock's side.

    /// Frames ready to send (an end counts as one).
    pub fn ready(&self) -> usize {
        let ring = self.ring.lock();
        ring.queue.len() + usize::from(ring.end.is_some())
    }

    /// The next frame, if one is ready. Never blocks on the track's work.
    pub fn take(&self) -> Taken {
        let mut ring = self.ring.lock();
        let Some(front) = ring.queue.front() else {
            return match ring.end.take() {
                Some(end) => Taken::End(end),
                None => Taken::Empty,
            };
        };
        if let Some(at) = front.passed_at
            && ring.queue.len() <= ring.tail_passed
            && at != (self.version)()
        {
            drop(ring);
            self.wake(Urgency::Now);
            return Taken::Empty;
        }
        let Some(entry) = ring.queue.pop_front() else { return Taken::Empty };
        ring.taken += 1;
        ring.tail_passed = ring.tail_passed.min(ring.queue.len());
        if entry.passed_at.is_some() {
            ring.passed -= 1;
            if ring.passed == PASS_LOW {
                drop(ring);
                self.wake(Urgency::Ahead);
            }
        }
        Taken::Audio(entry.packet)
    }

    /// Gives a sent packet's buffer back for reuse.
    pub fn recycle(&self, mut buffer: Vec<u8>) {
        let mut ring = self.ring.lock();
        if ring.spare.len() < SPARE_BUFFERS {
            buffer.clear();
            ring.spare.push(buffer);
        }
    }

    /// Asks for frames up to `total` since the start (never fewer than before). The work is
    /// woken only when the frames asked for are not already here: a passed-through track is
    /// not visited every tick.
    pub fn ask_up_to(&self, total: u64) {
        if self.asked.fetch_max(total, Ordering::AcqRel) >= total {
            return;
        }
        let ring = self.ring.lock();
        let here = ring.taken + ring.queue.len() as u64;
        let ended = ring.end.is_some();
        drop(ring);
        if here < total && !ended {
            self.wake(Urgency::Now);
        }
    }

    /// Nobody will take frames any more: the work stops.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake(Urgency::Ahead);
    }

    // The work's side.

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub fn asked(&self) -> u64 {
        self.asked.load(Ordering::Acquire)
    }

    pub fn version(&self) -> u64 {
        (self.version)()
    }

    /// Passed-through packets waiting for the clock.
    pub fn passed(&self) -> usize {
        self.ring.lock().passed
    }

    /// A buffer holding `packet`, from the spares when there is one.
    fn buffer(ring: &mut Ring, packet: &[u8]) -> Vec<u8> {
        let mut buffer = ring.spare.pop().unwrap_or_default();
        buffer.extend_from_slice(packet);
        buffer
    }

    pub fn push_encoded(&self, packet: &[u8]) {
        let mut ring = self.ring.lock();
        let packet = Self::buffer(&mut ring, packet);
        ring.queue.push_back(Entry { packet, passed_at: None });
        ring.tail_passed = 0;
    }

    pub fn push_passed(&self, packet: &[u8], version: u64) {
        let mut ring = self.ring.lock();
        let packet = Self::buffer(&mut ring, packet);
        ring.queue.push_back(Entry { packet, passed_at: Some(version) });
        ring.tail_passed += 1;
        ring.passed += 1;
    }

    /// Takes back the passed-through packets at the back of the queue when any of them was
    /// passed under other controls than `version`, oldest first, so they can be decided again.
    pub fn reclaim_stale(&self, version: u64) -> Vec<Vec<u8>> {
        let mut ring = self.ring.lock();
        let first = ring.queue.len() - ring.tail_passed;
        if ring.queue.range(first..).all(|e| e.passed_at == Some(version)) {
            return Vec::new();
        }
        let taken: Vec<Vec<u8>> = ring.queue.drain(first..).map(|e| e.packet).collect();
        ring.passed -= taken.len();
        ring.tail_passed = 0;
        taken
    }

    pub fn finish(&self, result: Result<(), String>) {
        self.ring.lock().end = Some(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_of_controls_holds_back_passed_packets_until_they_are_decided_again() {
        let version = Arc::new(AtomicU64::new(1));
        let v = version.clone();
        let ring = FrameRing::new(0, Arc::new(move || v.load(Ordering::Acquire)));
        ring.push_encoded(b"e0");
        ring.push_passed(b"p1", 1);
        ring.push_passed(b"p2", 1);
        assert!(matches!(ring.take(), Taken::Audio(p) if p == b"e0"));
        version.store(2, Ordering::Release);
        assert!(matches!(ring.take(), Taken::Empty), "a stale passed packet is not sent");
        assert_eq!(ring.reclaim_stale(2), vec![b"p1".to_vec(), b"p2".to_vec()]);
        assert_eq!(ring.passed(), 0);
        ring.push_passed(b"p1", 2);
        assert!(matches!(ring.take(), Taken::Audio(p) if p == b"p1"));
        ring.finish(Ok(()));
        assert!(matches!(ring.take(), Taken::End(Ok(()))));
    }

    #[test]
    fn passed_packets_before_an_encoded_frame_are_sent_as_they_are() {
        // The work decided to encode after them: taking them back would reorder the audio.
        let ring = FrameRing::new(0, Arc::new(|| 2));
        ring.push_passed(b"p1", 1);
        ring.push_encoded(b"e2");
        assert!(ring.reclaim_stale(2).is_empty());
        assert!(matches!(ring.take(), Taken::Audio(p) if p == b"p1"));
    }
}

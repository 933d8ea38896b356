//! A track that follows a live mount. The mount decodes and encodes its source once, on the
//! packet clock, into its recording; every player playing it reads those packets a little
//! behind the live edge, one per tick, with silence where the mount recorded none. Nothing is
//! decoded per player unless that player's own filters or volume need the PCM.

use std::collections::VecDeque;
use std::sync::Arc;

use super::recording::Recording;
use super::transcode::Unit;
use crate::voice::OPUS_SILENCE;

/// How far behind the newest published audio a follower starts (0.5 s): the mount publishes
/// every 200 ms, so the follower always has packets in hand when its clock asks.
pub const FOLLOW_DELAY_TICKS: u64 = 25;
/// Further behind than this (3 s: a player that stalled), a follower jumps back to the delay.
const MAX_BEHIND_TICKS: u64 = 150;
/// Packets read ahead in one go.
const READ_AHEAD: u64 = 25;

/// What a follower reads: a mount, as the audio side sees it.
pub trait LiveFeed: Send + Sync {
    /// What the track is called (`live:{mount}`).
    fn name(&self) -> &str;
    fn recording(&self) -> &Arc<Recording>;
    /// Why nothing more will come for a follower that started at tick `started`, now that
    /// the mount has published up to `end`: none while the mount has a source, or lost it
    /// less than its grace period ago.
    fn over(&self, started: u64, end: u64) -> Option<String>;
}

/// A mount to follow, as a track source names it.
#[derive(Clone)]
pub struct LiveSource(pub Arc<dyn LiveFeed>);

impl std::fmt::Debug for LiveSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LiveSource").field(&self.0.name()).finish()
    }
}

/// What a read gave.
pub enum LiveNext {
    Some,
    /// Caught up: the waker runs once the mount publishes more.
    Waiting,
    Over(String),
}

pub struct LiveFollower {
    feed: Arc<dyn LiveFeed>,
    /// The next tick to read.
    next: u64,
    started: u64,
}

impl LiveFollower {
    pub fn new(source: LiveSource) -> Self {
        let recording = source.0.recording();
        let end = recording.published_end();
        let next = end.saturating_sub(FOLLOW_DELAY_TICKS).max(recording.oldest(end));
        Self { feed: source.0, next, started: end }
    }

    /// Queues the packets published since the last read (at least `target` when there are).
    pub fn read(
        &mut self,
        pending: &mut VecDeque<Unit>,
        target: usize,
        wake: impl FnOnce() + Send + 'static,
    ) -> LiveNext {
        let recording = self.feed.recording();
        let end = recording.published_end();
        if end > self.next + MAX_BEHIND_TICKS {
            self.next = end - FOLLOW_DELAY_TICKS;
        }
        if self.next >= end {
            if let Some(reason) = self.feed.over(self.started, end) {
                return LiveNext::Over(reason);
            }
            recording.when_published_past(self.next, wake);
            return LiveNext::Waiting;
        }
        let to = end.min(self.next + READ_AHEAD.max(target as u64));
        for chunk in recording.chunks(self.next, to) {
            for (tick, packet) in chunk.packets() {
                if tick < self.next {
                    continue;
                }
                if tick >= to {
                    break;
                }
                self.silence_until(pending, tick);
                pending.push_back(Unit::Opus(packet.to_vec(), None));
                self.next = tick + 1;
            }
        }
        self.silence_until(pending, to);
        LiveNext::Some
    }

    fn silence_until(&mut self, pending: &mut VecDeque<Unit>, tick: u64) {
        while self.next < tick {
            pending.push_back(Unit::Opus(OPUS_SILENCE.to_vec(), None));
            self.next += 1;
        }
    }
}

//! What a player sent (or a live mount took in), kept for people listening over HTTP and for
//! players following a mount: every Opus packet, stamped with the clock tick it went out on,
//! for the last `REWIND_SECONDS`. A tick without a packet is silence, so silence costs nothing
//! to keep.
//!
//! The clock appends to a chunk only it touches; a chunk is published to readers once its
//! span is over or the audio stops. Readers therefore never wait on the clock per packet, and
//! every reader shares the published bytes (reference-counted slices of a few large buffers,
//! not one allocation per packet).
//!
//! What all players keep together is bounded too (`REWIND_MAX_BYTES`): past it, each player
//! sealing a chunk lets go of its oldest audio while it holds more than an even share, down
//! to [`MIN_KEEP_TICKS`]. A few players keep their whole rewind; thousands keep less each.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use parking_lot::Mutex;

/// Ticks one chunk spans (200 ms): how stale the newest published audio may be.
pub const CHUNK_TICKS: u64 = 10;
/// Buffer the clock writes packets into; a new one is taken when it is full (about 1 s of
/// audio at 128 kbit/s), so allocations happen per second of audio, not per packet.
const ARENA_BYTES: usize = 16 * 1024;
/// Before each packet: its tick within the chunk and its length (both u16).
const RECORD_HEADER: usize = 4;
/// Audio a player keeps whatever the budget (10 s): a listener's burst and live delay, and a
/// few live HLS segments.
pub const MIN_KEEP_TICKS: u64 = 500;

/// The memory every recording shares.
#[derive(Debug)]
pub struct RewindBudget {
    max_bytes: usize,
    held: AtomicUsize,
    /// Recordings holding any audio.
    holders: AtomicUsize,
}

impl RewindBudget {
    pub fn new(max_bytes: usize) -> Arc<Self> {
        Arc::new(Self { max_bytes, held: AtomicUsize::new(0), holders: AtomicUsize::new(0) })
    }

    /// Bytes of audio all recordings hold.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// What one recording may keep while the budget is exceeded.
    fn share(&self) -> Option<usize> {
        (self.held() > self.max_bytes).then(|| self.max_bytes / self.holders.load(Ordering::Relaxed).max(1))
    }
}

/// Packets of up to [`CHUNK_TICKS`] consecutive ticks.
#[derive(Clone)]
pub struct Chunk {
    pub first_tick: u64,
    data: Bytes,
}

impl Chunk {
    /// The packets with their ticks, sharing the chunk's bytes.
    pub fn packets(&self) -> impl Iterator<Item = (u64, Bytes)> + '_ {
        let mut rest = self.data.clone();
        std::iter::from_fn(move || {
            if rest.remaining() < RECORD_HEADER {
                return None;
            }
            let offset = u64::from(rest.get_u16());
            let len = usize::from(rest.get_u16()).min(rest.remaining());
            Some((self.first_tick + offset, rest.split_to(len)))
        })
    }
}

struct Writer {
    arena: BytesMut,
    /// The open chunk's first tick, while one is open.
    open: Option<u64>,
    /// No packet may carry a tick below this (each tick holds at most one packet).
    next_tick: u64,
}

type Waker = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Published {
    chunks: VecDeque<Chunk>,
    bytes: usize,
    /// The tick after the last one published.
    end: u64,
    /// Told once when the next chunk is published (followers that caught up).
    wakers: Vec<Waker>,
    /// Where each track's first packet went out, and what it is called.
    titles: VecDeque<(u64, Arc<str>)>,
}

pub struct Recording {
    writer: Mutex<Writer>,
    published: Mutex<Published>,
    keep_ticks: u64,
    /// The tick the player was made at: nothing before it is its audio.
    started: u64,
    budget: Arc<RewindBudget>,
    /// Set when the player is gone: its listeners end once they have what it sent.
    closed: std::sync::atomic::AtomicBool,
}

impl Recording {
    /// Keeps the last `keep_ticks` ticks of audio of a player made at tick `started`, within
    /// `budget`.
    pub fn new(keep_ticks: u64, started: u64, budget: Arc<RewindBudget>) -> Self {
        Self {
            started,
            budget,
            closed: std::sync::atomic::AtomicBool::new(false),
            writer: Mutex::new(Writer { arena: BytesMut::new(), open: None, next_tick: 0 }),
            published: Mutex::default(),
            keep_ticks,
        }
    }

    /// Records the packet sent for `tick` (called by the clock). A packet stamped for a tick
    /// already taken (a player catching up) moves to the next free one.
    pub fn record(&self, tick: u64, packet: &[u8]) {
        let Ok(len) = u16::try_from(packet.len()) else { return };
        let mut writer = self.writer.lock();
        let tick = tick.max(writer.next_tick);
        if writer.open.is_some_and(|first| tick >= first + CHUNK_TICKS) {
            self.seal(&mut writer);
        }
        let first = *writer.open.get_or_insert(tick);
        if writer.arena.capacity() - writer.arena.len() < RECORD_HEADER + packet.len() {
            // Keeps the open chunk's records; a shared arena is left to the chunks using it.
            writer.arena.reserve(ARENA_BYTES.max(RECORD_HEADER + packet.len()));
        }
        writer.arena.put_u16((tick - first) as u16);
        writer.arena.put_u16(len);
        writer.arena.put_slice(packet);
        writer.next_tick = tick + 1;
    }

    /// Publishes what the clock has recorded (the audio stopped or paused).
    pub fn flush(&self) {
        let mut writer = self.writer.lock();
        if writer.open.is_some() {
            self.seal(&mut writer);
        }
    }

    /// The player is gone: publishes what is left; nothing more will come.
    pub fn close(&self) {
        self.flush();
        self.closed.store(true, Ordering::Release);
        let wakers = std::mem::take(&mut self.published.lock().wakers);
        for wake in wakers {
            wake();
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The tick after the last packet recorded.
    pub fn end(&self) -> u64 {
        self.writer.lock().next_tick
    }

    /// Notes that the track called `title` starts at `tick`.
    pub fn mark_title(&self, tick: u64, title: Arc<str>) {
        self.published.lock().titles.push_back((tick, title));
    }

    fn seal(&self, writer: &mut Writer) {
        let Some(first_tick) = writer.open.take() else { return };
        let chunk = Chunk { first_tick, data: writer.arena.split().freeze() };
        let mut published = self.published.lock();
        published.end = writer.next_tick;
        let wakers = std::mem::take(&mut published.wakers);
        if published.bytes == 0 {
            self.budget.holders.fetch_add(1, Ordering::Relaxed);
        }
        published.bytes += chunk.data.len();
        self.budget.held.fetch_add(chunk.data.len(), Ordering::Relaxed);
        published.chunks.push_back(chunk);
        let horizon = first_tick.saturating_sub(self.keep_ticks);
        let share = self.budget.share();
        let floor = first_tick.saturating_sub(MIN_KEEP_TICKS);
        while let Some(front) = published.chunks.front() {
            let expired = front.first_tick + CHUNK_TICKS <= horizon;
            let over_share = share.is_some_and(|s| published.bytes > s) && front.first_tick + CHUNK_TICKS <= floor;
            if !expired && !over_share {
                break;
            }
            let len = front.data.len();
            published.chunks.pop_front();
            published.bytes -= len;
            self.budget.held.fetch_sub(len, Ordering::Relaxed);
        }
        let oldest = published.chunks.front().map_or(first_tick, |c| c.first_tick);
        // The title in force at the oldest audio kept stays: it names that audio.
        while published.titles.get(1).is_some_and(|(tick, _)| *tick <= oldest) {
            published.titles.pop_front();
        }
        drop(published);
        for wake in wakers {
            wake();
        }
    }

    /// The tick after the last one published: what a follower can read up to.
    pub fn published_end(&self) -> u64 {
        self.published.lock().end
    }

    /// Calls `wake` once the next chunk is published, or now when one was published past
    /// `seen` (the end the caller last read up to), so no publication is missed.
    pub fn when_published_past(&self, seen: u64, wake: impl FnOnce() + Send + 'static) {
        let mut published = self.published.lock();
        if published.end > seen {
            drop(published);
            wake();
            return;
        }
        published.wakers.push(Box::new(wake));
    }

    /// The published chunks holding ticks in `from..to`.
    pub fn chunks(&self, from: u64, to: u64) -> Vec<Chunk> {
        let published = self.published.lock();
        let start = published.chunks.partition_point(|c| c.first_tick + CHUNK_TICKS <= from);
        published.chunks.range(start..).take_while(|c| c.first_tick < to).cloned().collect()
    }

    /// The title of the track playing at `tick`, if any was marked by then.
    pub fn title_at(&self, tick: u64) -> Option<Arc<str>> {
        let published = self.published.lock();
        published.titles.iter().rev().find(|(at, _)| *at <= tick).map(|(_, title)| title.clone())
    }

    /// The earliest tick readers may start at, at tick `now`: the rewind window, less the
    /// silence before the oldest audio kept (the node's budget may have taken older audio).
    pub fn oldest(&self, now: u64) -> u64 {
        let kept = self.published.lock().chunks.front().map_or(0, |c| c.first_tick);
        now.saturating_sub(self.keep_ticks).max(self.started).max(kept.min(now))
    }

    /// Bytes of audio held (published chunks).
    pub fn bytes(&self) -> usize {
        self.published.lock().bytes
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        let bytes = self.published.get_mut().bytes;
        if bytes > 0 {
            self.budget.held.fetch_sub(bytes, Ordering::Relaxed);
            self.budget.holders.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packets(recording: &Recording, from: u64, to: u64) -> Vec<(u64, Vec<u8>)> {
        recording
            .chunks(from, to)
            .iter()
            .flat_map(|c| c.packets().map(|(t, p)| (t, p.to_vec())).collect::<Vec<_>>())
            .filter(|(t, _)| (from..to).contains(t))
            .collect()
    }

    #[test]
    fn packets_come_back_with_their_ticks_once_published() {
        let r = Recording::new(1000, 0, RewindBudget::new(usize::MAX));
        for tick in 100..125 {
            r.record(tick, &[tick as u8; 7]);
        }
        // Two chunks are over; the third is still open.
        assert_eq!(packets(&r, 0, 1000).len(), 20);
        r.flush();
        let all = packets(&r, 0, 1000);
        assert_eq!(all.len(), 25);
        assert!(all.iter().all(|(t, p)| p == &vec![*t as u8; 7]));
        assert_eq!(packets(&r, 105, 112).iter().map(|(t, _)| *t).collect::<Vec<_>>(), (105..112).collect::<Vec<_>>());
    }

    #[test]
    fn a_late_stamp_takes_the_next_free_tick_and_gaps_stay_gaps() {
        let r = Recording::new(1000, 0, RewindBudget::new(usize::MAX));
        r.record(10, b"a");
        r.record(10, b"b");
        r.record(30, b"c");
        r.flush();
        let ticks: Vec<u64> = packets(&r, 0, 100).iter().map(|(t, _)| *t).collect();
        assert_eq!(ticks, vec![10, 11, 30]);
    }

    #[test]
    fn audio_older_than_the_window_is_let_go_and_titles_follow() {
        let r = Recording::new(100, 0, RewindBudget::new(usize::MAX));
        r.mark_title(0, "one".into());
        for tick in 0..50 {
            r.record(tick, &[1; 100]);
        }
        r.mark_title(50, "two".into());
        for tick in 50..400 {
            r.record(tick, &[2; 100]);
        }
        r.flush();
        let kept = packets(&r, 0, 1000);
        assert!(kept.first().is_some_and(|(t, _)| *t >= 280), "first kept {:?}", kept.first().map(|k| k.0));
        assert_eq!(r.title_at(399).as_deref(), Some("two"));
        assert_eq!(r.title_at(10), None, "the first title went with its audio");
        assert!(r.bytes() < 150 * 104);
    }

    #[test]
    fn past_the_node_budget_players_keep_an_even_share_and_never_less_than_the_floor() {
        let budget = RewindBudget::new(400_000);
        let a = Recording::new(15_000, 0, budget.clone());
        let b = Recording::new(15_000, 0, budget.clone());
        for tick in 0..3000 {
            a.record(tick, &[1; 200]);
            b.record(tick, &[2; 200]);
        }
        a.flush();
        b.flush();
        // Each 60 s (about 612 KB) alone; together held to about 200 KB each.
        assert!(budget.held() <= 400_000 + 2 * 2100, "held {}", budget.held());
        assert!(a.bytes() > 150_000 && b.bytes() > 150_000, "{} {}", a.bytes(), b.bytes());
        assert!(a.oldest(3000) > 2000, "readers start where audio is kept: {}", a.oldest(3000));
        drop(b);
        assert_eq!(budget.held(), a.bytes(), "a dropped player gives its share back");
        let tight = RewindBudget::new(1000);
        let c = Recording::new(15_000, 0, tight);
        for tick in 0..3000 {
            c.record(tick, &[3; 200]);
        }
        c.flush();
        let kept = packets(&c, 0, 3000);
        assert!(kept.len() as u64 >= MIN_KEEP_TICKS, "the floor stays: {}", kept.len());
    }
}

//! The shared packet clock. A few threads (one per core by default) wake on one 20 ms grid
//! anchored at a common start instant; each tick they ask every registered stream to send its
//! next frame. Deadlines are absolute (start + n·20 ms), so the clock never drifts, and the
//! tick number doubles as the RTP timestamp schedule (960 samples per tick).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;

pub const TICK: Duration = Duration::from_millis(20);
/// Behind by more than this many ticks (a stalled machine), the clock jumps ahead instead of
/// bursting; below it, late frames go out at once and the listener's jitter buffer absorbs them.
const MAX_CATCH_UP_TICKS: u64 = 15;

/// What a stream did with its tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickOutcome {
    Done,
    /// The stream could not take a lock without waiting; call it once more at the end of the
    /// tick, after everyone else.
    Retry,
}

/// Something the clock drives every 20 ms. Implementations must never block.
pub trait Tickable: Send + Sync {
    /// `retry` is false on the first call in a tick and true on the second.
    fn on_tick(&self, tick: u64, retry: bool) -> TickOutcome;
}

struct Lane {
    streams: Mutex<Vec<Weak<dyn Tickable>>>,
    load: AtomicU64,
}

/// Figures about the clock itself (shared counter handles).
#[derive(Debug, Default, Clone)]
pub struct ClockStats {
    pub ticks: Counter,
    /// Ticks that started more than 5 ms after their deadline.
    pub late_ticks: Counter,
    /// Ticks dropped because a lane fell more than MAX_CATCH_UP_TICKS behind.
    pub skipped_ticks: Counter,
}

pub struct Scheduler {
    lanes: Vec<Arc<Lane>>,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    pub stats: Arc<ClockStats>,
}

/// Keeps a stream on the clock; dropping it takes the stream off.
pub struct Registration {
    lane: Arc<Lane>,
    stream: Weak<dyn Tickable>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut streams = self.lane.streams.lock();
        streams.retain(|s| !s.ptr_eq(&self.stream));
        self.lane.load.store(streams.len() as u64, Ordering::Relaxed);
    }
}

impl Scheduler {
    /// Starts `lanes` clock threads (at least one).
    pub fn start(lanes: usize, stats: ClockStats) -> std::io::Result<Arc<Self>> {
        let start = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(stats);
        let lanes: Vec<Arc<Lane>> = (0..lanes.max(1))
            .map(|_| Arc::new(Lane { streams: Mutex::new(Vec::new()), load: AtomicU64::new(0) }))
            .collect();
        let mut threads = Vec::new();
        for (i, lane) in lanes.iter().enumerate() {
            let (lane, stop, stats) = (lane.clone(), stop.clone(), stats.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("packet-clock-{i}"))
                    .spawn(move || run_lane(&lane, start, &stop, &stats))?,
            );
        }
        Ok(Arc::new(Self { lanes, stop, threads: Mutex::new(threads), stats }))
    }

    /// Puts a stream on the least busy lane.
    pub fn register(&self, stream: &Arc<dyn Tickable>) -> Registration {
        let lane = self
            .lanes
            .iter()
            .min_by_key(|l| l.load.load(Ordering::Relaxed))
            .cloned()
            .unwrap_or_else(|| self.lanes[0].clone());
        let weak = Arc::downgrade(stream);
        let mut streams = lane.streams.lock();
        streams.push(weak.clone());
        lane.load.store(streams.len() as u64, Ordering::Relaxed);
        drop(streams);
        Registration { lane, stream: weak }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
    }
}

/// When tick `n` is due. In 64-bit nanoseconds: a 32-bit tick count would wrap after 2.7
/// years of uptime and put every deadline in the past.
fn tick_time(start: Instant, n: u64) -> Instant {
    start + Duration::from_nanos((TICK.as_nanos() as u64).saturating_mul(n))
}

/// Runs one stream's tick; a stream that panics is taken off the lane (and logged) instead
/// of taking the lane, and every other stream on it, down.
fn tick_one(lane: &Lane, stream: &Arc<dyn Tickable>, tick: u64, retry: bool) -> TickOutcome {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| stream.on_tick(tick, retry))) {
        Ok(outcome) => outcome,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(tick, panic = %what, "a stream panicked on the packet clock; it is taken off the clock");
            let mut streams = lane.streams.lock();
            let gone = Arc::downgrade(stream);
            streams.retain(|s| !s.ptr_eq(&gone));
            lane.load.store(streams.len() as u64, Ordering::Relaxed);
            TickOutcome::Done
        }
    }
}

/// The nice value the clock's threads ask for: ahead of decoding, encoding and the async
/// runtimes, so a busy machine delays them last. Raising a priority needs `CAP_SYS_NICE`;
/// without it the lanes keep the default and the media workers still step back (see
/// `audio::workers`).
const LANE_NICE: i32 = -10;

/// Sets the calling thread's nice value (on Linux, `PRIO_PROCESS` with id 0 is the calling
/// thread). False when the system refused.
pub fn set_thread_nice(nice: i32) -> bool {
    // SAFETY: setpriority reads its arguments only.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) == 0 }
}

fn run_lane(lane: &Lane, start: Instant, stop: &AtomicBool, stats: &ClockStats) {
    if !set_thread_nice(LANE_NICE) {
        tracing::debug!("the packet clock runs at the default priority (raising it needs CAP_SYS_NICE)");
    }
    let mut next_tick: u64 = (start.elapsed().as_nanos() / TICK.as_nanos()) as u64 + 1;
    let mut batch: Vec<Arc<dyn Tickable>> = Vec::new();
    let mut retry: Vec<Arc<dyn Tickable>> = Vec::new();
    while !stop.load(Ordering::Acquire) {
        let deadline = tick_time(start, next_tick);
        let now = Instant::now();
        if deadline > now {
            std::thread::sleep(deadline - now);
        }
        let now_tick = (start.elapsed().as_nanos() / TICK.as_nanos()) as u64;
        if now_tick > next_tick + MAX_CATCH_UP_TICKS {
            stats.skipped_ticks.inc_by(now_tick - next_tick);
            next_tick = now_tick;
        }
        let lateness = Instant::now().saturating_duration_since(tick_time(start, next_tick));
        if lateness > Duration::from_millis(5) {
            stats.late_ticks.inc();
        }
        batch.clear();
        batch.extend(lane.streams.lock().iter().filter_map(Weak::upgrade));
        retry.clear();
        for stream in &batch {
            if tick_one(lane, stream, next_tick, false) == TickOutcome::Retry {
                retry.push(stream.clone());
            }
        }
        for stream in &retry {
            tick_one(lane, stream, next_tick, true);
        }
        stats.ticks.inc();
        next_tick += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    struct Recorder(Mutex<Vec<u64>>, mpsc::Sender<()>);
    impl Tickable for Recorder {
        fn on_tick(&self, tick: u64, _wait: bool) -> TickOutcome {
            let mut ticks = self.0.lock();
            ticks.push(tick);
            if ticks.len() == 10 {
                let _ = self.1.send(());
            }
            TickOutcome::Done
        }
    }

    #[test]
    fn ticks_are_consecutive_and_stop_after_deregistration() {
        let clock = Scheduler::start(2, ClockStats::default()).unwrap();
        let (tx, rx) = mpsc::channel();
        let recorder = Arc::new(Recorder(Mutex::new(Vec::new()), tx));
        let as_dyn: Arc<dyn Tickable> = recorder.clone();
        let registration = clock.register(&as_dyn);
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        drop(registration);
        let ticks = recorder.0.lock().clone();
        assert!(ticks.windows(2).all(|w| w[1] == w[0] + 1), "{ticks:?}");
        let count = ticks.len();
        // After deregistration the lane no longer holds the stream.
        assert!(clock.lanes.iter().all(|l| l.streams.lock().is_empty()));
        assert!(count >= 10);
    }

    struct Panicker(AtomicU64);
    impl Tickable for Panicker {
        fn on_tick(&self, _tick: u64, _retry: bool) -> TickOutcome {
            self.0.fetch_add(1, Ordering::SeqCst);
            panic!("a bug in one player");
        }
    }

    #[test]
    fn a_stream_that_panics_leaves_the_others_on_its_lane_playing() {
        let clock = Scheduler::start(1, ClockStats::default()).unwrap();
        let panicker = Arc::new(Panicker(AtomicU64::new(0)));
        let (tx, rx) = mpsc::channel();
        let recorder = Arc::new(Recorder(Mutex::new(Vec::new()), tx));
        let (p, r): (Arc<dyn Tickable>, Arc<dyn Tickable>) = (panicker.clone(), recorder.clone());
        let _registrations = (clock.register(&p), clock.register(&r));
        rx.recv_timeout(Duration::from_secs(5)).expect("the other stream kept ticking");
        let ticks = recorder.0.lock().clone();
        assert!(ticks.windows(2).all(|w| w[1] == w[0] + 1), "no tick lost: {ticks:?}");
        assert_eq!(panicker.0.load(Ordering::SeqCst), 1, "the panicking stream was taken off the clock");
    }

    #[test]
    fn deadlines_do_not_wrap_after_two_to_the_32_ticks() {
        let start = Instant::now();
        let late = tick_time(start, 1 << 32);
        assert!(late > tick_time(start, (1 << 32) - 1));
        assert_eq!((late - start).as_secs(), (1u64 << 32) / 50, "2^32 ticks of 20 ms");
    }
}

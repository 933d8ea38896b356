//! The shared packet clock. A few threads (one per core by default) wake on one 20 ms grid
//! anchored at a common start instant; each tick they ask every registered stream to send its
//! next frame. Deadlines are absolute (start + n·20 ms), so the clock never drifts, and the
//! tick number doubles as the RTP timestamp schedule (960 samples per tick).
//!
//! Each stream also has a phase, one of [`PHASES`] equal steps within the tick, and is called
//! at its phase's offset every tick. A lane fills a phase with [`PHASE_FILL`] streams before
//! it opens another (opened in an order that keeps them evenly spaced), and once all are open
//! it adds to the least busy. So a lane with few streams wakes once a tick, and a busy one
//! wakes for a share of its streams at a time instead of all on one deadline, where the last
//! in line would wait for the whole lane's work and every packet would leave in one burst. A
//! stream keeps its phase, so its own packets stay exactly 20 ms apart.
//!
//! Lanes ask for nice −10, or a low real-time priority (round-robin) when the operator asks
//! and the system grants it, so a busy machine (decoders, encoders, the async runtimes,
//! other processes) delays them least.

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

/// Steps within a tick at which a lane's streams are called (1.25 ms apart).
pub const PHASES: usize = 16;
const PHASE: Duration = Duration::from_micros(TICK.as_micros() as u64 / PHASES as u64);
/// Streams a phase takes before the lane opens another: a wake-up costs a few µs, a stream's
/// tick about one.
pub const PHASE_FILL: usize = 16;
/// The order phases open in: each new one halves the largest gap left (bit-reversed order).
const OPENING_ORDER: [usize; PHASES] = [0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15];

type Streams = Vec<Weak<dyn Tickable>>;

struct Lane {
    /// The streams of each phase.
    phases: Mutex<Vec<Streams>>,
    load: AtomicU64,
}

impl Lane {
    fn new() -> Self {
        Self { phases: Mutex::new(vec![Vec::new(); PHASES]), load: AtomicU64::new(0) }
    }

    fn remove(&self, phase: usize, stream: &Weak<dyn Tickable>) {
        let mut phases = self.phases.lock();
        phases[phase].retain(|s| !s.ptr_eq(stream));
        self.load.store(phases.iter().map(Vec::len).sum::<usize>() as u64, Ordering::Relaxed);
    }
}

/// Figures about the clock itself (shared counter handles).
#[derive(Debug, Default, Clone)]
pub struct ClockStats {
    pub ticks: Counter,
    /// Ticks in which some streams were called more than 5 ms after their phase's deadline.
    pub late_ticks: Counter,
    /// Ticks dropped because a lane fell more than MAX_CATCH_UP_TICKS behind.
    pub skipped_ticks: Counter,
}

pub struct Scheduler {
    start: Instant,
    lanes: Vec<Arc<Lane>>,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    pub stats: Arc<ClockStats>,
}

/// Keeps a stream on the clock; dropping it takes the stream off.
pub struct Registration {
    lane: Arc<Lane>,
    phase: usize,
    stream: Weak<dyn Tickable>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.lane.remove(self.phase, &self.stream);
    }
}

impl Scheduler {
    /// Starts `lanes` clock threads (at least one), real-time when asked and allowed.
    pub fn start(lanes: usize, realtime: bool, stats: ClockStats) -> std::io::Result<Arc<Self>> {
        let start = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(stats);
        let lanes: Vec<Arc<Lane>> = (0..lanes.max(1)).map(|_| Arc::new(Lane::new())).collect();
        let mut threads = Vec::new();
        for (i, lane) in lanes.iter().enumerate() {
            let (lane, stop, stats) = (lane.clone(), stop.clone(), stats.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("packet-clock-{i}"))
                    .spawn(move || run_lane(&lane, start, realtime, &stop, &stats))?,
            );
        }
        Ok(Arc::new(Self { start, lanes, stop, threads: Mutex::new(threads), stats }))
    }

    /// Puts a stream on the least busy lane, at that lane's least busy phase.
    pub fn register(&self, stream: &Arc<dyn Tickable>) -> Registration {
        let lane = self
            .lanes
            .iter()
            .min_by_key(|l| l.load.load(Ordering::Relaxed))
            .cloned()
            .unwrap_or_else(|| self.lanes[0].clone());
        let weak = Arc::downgrade(stream);
        let mut phases = lane.phases.lock();
        let phase = choose_phase(&phases);
        phases[phase].push(weak.clone());
        lane.load.fetch_add(1, Ordering::Relaxed);
        drop(phases);
        Registration { lane, phase, stream: weak }
    }

    /// The tick the clock is in now (the RTP schedule's tick number).
    pub fn now_tick(&self) -> u64 {
        ticks_since(self.start)
    }

    /// When a stream at `phase` is called for tick `tick`.
    pub fn deadline(&self, tick: u64, phase: usize) -> Instant {
        phase_time(self.start, tick, phase)
    }
}

/// The least busy open phase while it has room, else the next phase to open, else (all open
/// and full) the least busy.
fn choose_phase(phases: &[Streams]) -> usize {
    let busy = |p: &usize| phases[*p].len();
    let open = OPENING_ORDER.iter().copied().filter(|&p| !phases[p].is_empty());
    match open.clone().min_by_key(busy) {
        Some(p) if phases[p].len() < PHASE_FILL => p,
        _ => {
            OPENING_ORDER.iter().copied().find(|&p| phases[p].is_empty()).or_else(|| open.min_by_key(busy)).unwrap_or(0)
        }
    }
}

impl Registration {
    /// The step within each tick at which this stream is called.
    pub fn phase(&self) -> usize {
        self.phase
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

/// The tick the clock started at `start` is in now.
fn ticks_since(start: Instant) -> u64 {
    (start.elapsed().as_nanos() / TICK.as_nanos()) as u64
}

/// When tick `n` is due. In 64-bit nanoseconds: a 32-bit tick count would wrap after 2.7
/// years of uptime and put every deadline in the past.
fn tick_time(start: Instant, n: u64) -> Instant {
    start + Duration::from_nanos((TICK.as_nanos() as u64).saturating_mul(n))
}

fn phase_time(start: Instant, n: u64, phase: usize) -> Instant {
    tick_time(start, n) + PHASE * phase as u32
}

/// Runs one stream's tick; a stream that panics is taken off the lane (and logged) instead
/// of taking the lane, and every other stream on it, down.
fn tick_one(lane: &Lane, phase: usize, stream: &Arc<dyn Tickable>, tick: u64, retry: bool) -> TickOutcome {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| stream.on_tick(tick, retry))) {
        Ok(outcome) => outcome,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(tick, panic = %what, "a stream panicked on the packet clock; it is taken off the clock");
            lane.remove(phase, &Arc::downgrade(stream));
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

/// The real-time priority lanes ask for: the lowest few of 1–99, below the kernel's own
/// real-time threads and any audio server's.
const LANE_REALTIME_PRIORITY: i32 = 5;

/// Puts the calling thread under the real-time round-robin policy. False when the system
/// refused (it needs `CAP_SYS_NICE` or an `RLIMIT_RTPRIO` that allows it).
fn set_thread_realtime() -> bool {
    let param = libc::sched_param { sched_priority: LANE_REALTIME_PRIORITY };
    // SAFETY: sched_setscheduler reads the struct passed; pid 0 is the calling thread.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_RR, &param) == 0 }
}

/// How a lane asks to be scheduled.
fn prioritize(realtime: bool) {
    if realtime && set_thread_realtime() {
        return;
    }
    if !set_thread_nice(LANE_NICE) {
        tracing::debug!("the packet clock runs at the default priority (raising it needs CAP_SYS_NICE)");
    }
}

fn run_lane(lane: &Lane, start: Instant, realtime: bool, stop: &AtomicBool, stats: &ClockStats) {
    prioritize(realtime);
    let mut next_tick: u64 = ticks_since(start) + 1;
    let mut batch: Vec<Arc<dyn Tickable>> = Vec::new();
    let mut retry: Vec<Arc<dyn Tickable>> = Vec::new();
    while !stop.load(Ordering::Acquire) {
        sleep_until(tick_time(start, next_tick));
        let now_tick = ticks_since(start);
        if now_tick > next_tick + MAX_CATCH_UP_TICKS {
            stats.skipped_ticks.inc_by(now_tick - next_tick);
            next_tick = now_tick;
        }
        let mut late = false;
        for phase in 0..PHASES {
            if lane.phases.lock()[phase].is_empty() {
                continue;
            }
            let deadline = phase_time(start, next_tick, phase);
            sleep_until(deadline);
            late |= Instant::now().saturating_duration_since(deadline) > Duration::from_millis(5);
            batch.extend(lane.phases.lock()[phase].iter().filter_map(Weak::upgrade));
            for stream in &batch {
                if tick_one(lane, phase, stream, next_tick, false) == TickOutcome::Retry {
                    retry.push(stream.clone());
                }
            }
            for stream in &retry {
                tick_one(lane, phase, stream, next_tick, true);
            }
            // Held no longer than the phase: a stream taken off the clock is dropped now, not
            // whenever this lane next ticks another one.
            batch.clear();
            retry.clear();
        }
        if late {
            stats.late_ticks.inc();
        }
        stats.ticks.inc();
        next_tick += 1;
    }
}

fn sleep_until(deadline: Instant) {
    let now = Instant::now();
    if deadline > now {
        std::thread::sleep(deadline - now);
    }
}

#[cfg(test)]
mod tests;

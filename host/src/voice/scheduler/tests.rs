//! The packet clock's own tests: consecutive ticks, a panicking stream isolated, lanes and phases.

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
    let clock = Scheduler::start(2, false, ClockStats::default()).unwrap();
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
    assert!(clock.lanes.iter().all(|l| l.phases.lock().iter().all(Vec::is_empty)));
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
    let clock = Scheduler::start(1, false, ClockStats::default()).unwrap();
    let panicker = Arc::new(Panicker(AtomicU64::new(0)));
    let (tx, rx) = mpsc::channel();
    let recorder = Arc::new(Recorder(Mutex::new(Vec::new()), tx));
    let (p, r): (Arc<dyn Tickable>, Arc<dyn Tickable>) = (panicker.clone(), recorder.clone());
    let _registrations = (clock.register(&p), clock.register(&r));
    rx.recv_timeout(Duration::from_secs(5)).expect("the other stream kept ticking");
    let ticks = recorder.0.lock().clone();
    // Reporting the panic (a backtrace on a loaded machine) may hold the lane past its
    // catch-up bound; then it jumps ahead and counts what it skipped. No tick is lost
    // without being counted, and none comes twice.
    assert!(ticks.windows(2).all(|w| w[1] > w[0]), "ticks in order: {ticks:?}");
    let gaps: u64 = ticks.windows(2).map(|w| w[1] - w[0] - 1).sum();
    assert_eq!(gaps, clock.stats.skipped_ticks.get(), "every missing tick counted as skipped: {ticks:?}");
    assert_eq!(panicker.0.load(Ordering::SeqCst), 1, "the panicking stream was taken off the clock");
}

#[test]
fn a_lane_fills_a_phase_before_opening_the_next_evenly_spaced_one() {
    let mut phases = vec![Vec::new(); PHASES];
    let mut place = |n: usize| {
        for _ in 0..n {
            let p = choose_phase(&phases);
            let stream: Weak<dyn Tickable> = Weak::<Panicker>::new();
            phases[p].push(stream);
        }
        phases.iter().map(Vec::len).collect::<Vec<_>>()
    };
    let one_phase = place(PHASE_FILL);
    assert_eq!(one_phase.iter().filter(|&&n| n > 0).count(), 1, "{one_phase:?}");
    let two = place(1);
    assert_eq!((two[0], two[PHASES / 2]), (PHASE_FILL, 1), "the second opens half a tick away: {two:?}");
    let all = place(PHASES * PHASE_FILL - PHASE_FILL - 1);
    assert_eq!(all, vec![PHASE_FILL; PHASES]);
    let more = place(PHASES);
    assert_eq!(more, vec![PHASE_FILL + 1; PHASES], "then evenly");
}

/// Records when it was called.
struct Stamper(Mutex<Vec<(u64, Instant)>>, mpsc::Sender<()>);
impl Tickable for Stamper {
    fn on_tick(&self, tick: u64, _retry: bool) -> TickOutcome {
        let mut calls = self.0.lock();
        calls.push((tick, Instant::now()));
        if calls.len() == 3 {
            let _ = self.1.send(());
        }
        TickOutcome::Done
    }
}

#[test]
fn each_stream_is_called_at_its_phase_and_phases_in_order() {
    let clock = Scheduler::start(1, false, ClockStats::default()).unwrap();
    let (tx, rx) = mpsc::channel();
    let stampers: Vec<Arc<Stamper>> =
        (0..PHASES * PHASE_FILL).map(|_| Arc::new(Stamper(Mutex::new(Vec::new()), tx.clone()))).collect();
    let registrations: Vec<Registration> = stampers
        .iter()
        .map(|s| {
            let s: Arc<dyn Tickable> = s.clone();
            clock.register(&s)
        })
        .collect();
    for _ in &stampers {
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
    }
    for (stamper, registration) in stampers.iter().zip(&registrations) {
        for &(tick, at) in stamper.0.lock().iter() {
            assert!(at >= clock.deadline(tick, registration.phase()), "never before its phase's time");
        }
    }
    // Within a tick every stream was called for, earlier phases are called first.
    let tick = stampers.iter().map(|s| s.0.lock()[0].0).max().unwrap_or(0);
    let mut order: Vec<(Instant, usize)> = stampers
        .iter()
        .zip(&registrations)
        .filter_map(|(s, r)| s.0.lock().iter().find(|c| c.0 == tick).map(|c| (c.1, r.phase())))
        .collect();
    assert_eq!(order.len(), stampers.len());
    order.sort();
    assert!(order.windows(2).all(|w| w[0].1 <= w[1].1), "{:?}", order.iter().map(|o| o.1).collect::<Vec<_>>());
}

/// Reports the scheduling policy of the thread that calls it.
struct PolicyProbe(mpsc::Sender<i32>);
impl Tickable for PolicyProbe {
    fn on_tick(&self, _tick: u64, _retry: bool) -> TickOutcome {
        // SAFETY: sched_getscheduler only reads; pid 0 is the calling thread.
        let _ = self.0.send(unsafe { libc::sched_getscheduler(0) });
        TickOutcome::Done
    }
}

#[test]
fn lanes_run_real_time_when_asked_and_allowed() {
    // Whether this process may: a throwaway thread tries.
    let allowed = std::thread::spawn(set_thread_realtime).join().unwrap();
    let clock = Scheduler::start(1, true, ClockStats::default()).unwrap();
    let (tx, rx) = mpsc::channel();
    let probe: Arc<dyn Tickable> = Arc::new(PolicyProbe(tx));
    let _registration = clock.register(&probe);
    let policy = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let expected = if allowed { libc::SCHED_RR } else { libc::SCHED_OTHER };
    assert_eq!(policy, expected, "allowed: {allowed}");
}

#[test]
fn deadlines_do_not_wrap_after_two_to_the_32_ticks() {
    let start = Instant::now();
    let late = tick_time(start, 1 << 32);
    assert!(late > tick_time(start, (1 << 32) - 1));
    assert_eq!((late - start).as_secs(), (1u64 << 32) / 50, "2^32 ticks of 20 ms");
}

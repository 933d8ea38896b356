//! The media workers: a fixed pool of threads (one per core by default) that runs every
//! track's decoding, filtering and encoding as short work items, so the number of threads
//! does not grow with the number of players. A track's work is queued when there is
//! something to do (the clock asked for a frame, its input arrived, its buffer ran low) and
//! runs on one worker at a time. Work the clock is waiting for goes ahead of work that only
//! fills buffers; within each kind, work runs in the order it was asked for, which is the
//! order of the clock's deadlines.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use crossbeam_channel::{Receiver, Sender, select_biased, unbounded};

/// How soon a piece of work is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// The clock is waiting for it (a frame it asked for).
    Now,
    /// It keeps a buffer ahead; nothing waits on it yet.
    Ahead,
}

/// Something the workers run. `run` does what is there to do now and returns; whoever makes
/// more work for it calls [`Workers::wake`].
pub trait Work: Send + Sync + 'static {
    fn slot(&self) -> &WorkSlot;
    fn run(&self);
}

const IDLE: u8 = 0;
const QUEUED: u8 = 1;
const RUNNING: u8 = 2;
/// Woken while running: it runs again once more.
const RUNNING_AGAIN: u8 = 3;

/// Where a piece of work stands; makes sure it is queued at most once per kind and never
/// runs on two workers at once, and that a wake while it runs is not lost.
#[derive(Debug, Default)]
pub struct WorkSlot {
    state: AtomicU8,
    /// Already in the urgent queue (it may also sit in the other one).
    urgent: AtomicBool,
}

impl WorkSlot {
    /// Queued → running; false when another queue entry already ran it.
    fn begin(&self) -> bool {
        self.urgent.store(false, Ordering::Release);
        self.state.compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Running → idle; false when it was woken meanwhile (then it is queued again).
    fn end(&self) -> bool {
        if self.state.compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            return true;
        }
        self.state.store(QUEUED, Ordering::Release);
        false
    }
}

type Job = Arc<dyn Work>;
/// What a worker takes from a queue: work, or none to stop.
type Message = Option<Job>;

pub struct Workers {
    now: Sender<Message>,
    ahead: Sender<Message>,
    threads: usize,
}

impl Drop for Workers {
    fn drop(&mut self) {
        for _ in 0..self.threads {
            let _ = self.now.send(None);
        }
    }
}

impl Workers {
    /// Starts `threads` workers (at least one). They end when the pool is dropped.
    pub fn start(threads: usize) -> std::io::Result<Arc<Self>> {
        let threads = threads.max(1);
        let (now, now_rx) = unbounded::<Message>();
        let (ahead, ahead_rx) = unbounded::<Message>();
        let pool = Arc::new(Self { now, ahead, threads });
        for i in 0..threads {
            let (now_rx, ahead_rx, requeue) = (now_rx.clone(), ahead_rx.clone(), pool.ahead.clone());
            std::thread::Builder::new()
                .name(format!("media-worker-{i}"))
                .spawn(move || work_loop(&now_rx, &ahead_rx, &requeue))?;
        }
        Ok(pool)
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Queues `work` unless it is already queued (an urgent wake of work queued as `Ahead`
    /// also puts it in the urgent queue); work that is running runs once more after.
    pub fn wake(&self, work: &Job, urgency: Urgency) {
        let slot = work.slot();
        let mut state = slot.state.load(Ordering::Acquire);
        loop {
            let next = match state {
                IDLE => QUEUED,
                RUNNING => RUNNING_AGAIN,
                QUEUED => {
                    if urgency == Urgency::Now && !slot.urgent.swap(true, Ordering::AcqRel) {
                        let _ = self.now.send(Some(work.clone()));
                    }
                    return;
                }
                _ => return,
            };
            match slot.state.compare_exchange_weak(state, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) if next == QUEUED => {
                    let queue = match urgency {
                        Urgency::Now => {
                            slot.urgent.store(true, Ordering::Release);
                            &self.now
                        }
                        Urgency::Ahead => &self.ahead,
                    };
                    let _ = queue.send(Some(work.clone()));
                    return;
                }
                Ok(_) => return,
                Err(actual) => state = actual,
            }
        }
    }
}

/// The nice value of the workers: behind the packet clock, which must never wait for them.
const WORKER_NICE: i32 = 5;

fn work_loop(now: &Receiver<Message>, ahead: &Receiver<Message>, requeue: &Sender<Message>) {
    crate::voice::scheduler::set_thread_nice(WORKER_NICE);
    loop {
        let message = match now.try_recv() {
            Ok(message) => message,
            Err(_) => select_biased! {
                recv(now) -> message => message.ok().flatten(),
                recv(ahead) -> message => message.ok().flatten(),
            },
        };
        let Some(job) = message else { return };
        if !job.slot().begin() {
            continue;
        }
        // A bug in one track's work ends that work, not the worker.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run())).is_err() {
            tracing::error!("a track's media work panicked; that track stops");
            job.slot().state.store(IDLE, Ordering::Release);
            continue;
        }
        if !job.slot().end() {
            // Woken while it ran: behind the others, so one busy track cannot hold a worker.
            let _ = requeue.send(Some(job));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    struct Counter {
        slot: WorkSlot,
        runs: AtomicU64,
        running: AtomicBool,
        overlapped: AtomicBool,
        done: mpsc::SyncSender<u64>,
    }

    impl Work for Counter {
        fn slot(&self) -> &WorkSlot {
            &self.slot
        }
        fn run(&self) {
            if self.running.swap(true, Ordering::AcqRel) {
                self.overlapped.store(true, Ordering::Release);
            }
            std::thread::sleep(Duration::from_micros(200));
            let n = self.runs.fetch_add(1, Ordering::AcqRel) + 1;
            self.running.store(false, Ordering::Release);
            let _ = self.done.try_send(n);
        }
    }

    #[test]
    fn work_never_runs_twice_at_once_and_no_wake_is_lost() {
        let workers = Workers::start(4).unwrap();
        let (done, ran) = mpsc::sync_channel(10_000);
        let counter = Arc::new(Counter {
            slot: WorkSlot::default(),
            runs: AtomicU64::new(0),
            running: AtomicBool::new(false),
            overlapped: AtomicBool::new(false),
            done,
        });
        let job: Job = counter.clone();
        for i in 0..500 {
            workers.wake(&job, if i % 2 == 0 { Urgency::Now } else { Urgency::Ahead });
        }
        // After the last wake it runs at least once more: wait for a run that began after it.
        let before = counter.runs.load(Ordering::Acquire);
        workers.wake(&job, Urgency::Now);
        while ran.recv_timeout(Duration::from_secs(5)).expect("the last wake ran") <= before {}
        assert!(!counter.overlapped.load(Ordering::Acquire), "ran on two workers at once");
    }
}

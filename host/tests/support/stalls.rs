//! A witness to the machine itself. A thread asks to wake every few milliseconds and notes
//! each time it woke far too late: then the whole test process was not given the CPU (a
//! virtual machine losing its cores to the hypervisor, heavy contention from elsewhere), and
//! the server and the fake listener stalled with it. A gap the listener heard while the
//! witness ran on time was the server's own doing.

use std::sync::Once;
use std::time::{Duration, Instant};

use fake_voice::Gap;
use parking_lot::Mutex;

const PERIOD: Duration = Duration::from_millis(5);
/// Woke this much later than asked: the machine stalled.
const STALL: Duration = Duration::from_millis(15);
/// How long before a gap a stall still counts: a sender falls behind for up to half a second
/// before it jumps, and catches up within a few hundred milliseconds after a stall.
const LOOKBACK: Duration = Duration::from_millis(1500);

/// When the witness asked to wake and when it did, for every wake far too late.
static STALLS: Mutex<Vec<(Instant, Instant)>> = Mutex::new(Vec::new());

fn witness() -> &'static Mutex<Vec<(Instant, Instant)>> {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        std::thread::Builder::new()
            .name("stall-witness".into())
            .spawn(|| {
                loop {
                    let asked = Instant::now() + PERIOD;
                    std::thread::sleep(PERIOD);
                    let woke = Instant::now();
                    if woke.duration_since(asked) > STALL {
                        STALLS.lock().push((asked, woke));
                    }
                }
            })
            .expect("stall witness thread");
    });
    &STALLS
}

/// Starts the witness (once per test process); call before anything is measured.
pub fn watch() {
    witness();
}

/// How long the machine stalled in the time leading up to `gap` and during it.
pub fn stalled_around(gap: &Gap) -> Duration {
    stalled_between(gap.before.checked_sub(LOOKBACK).unwrap_or(gap.before), gap.after)
}

/// How long the machine stalled between `from` and `to`.
pub fn stalled_between(from: Instant, to: Instant) -> Duration {
    witness().lock().iter().map(|&(start, end)| end.min(to).saturating_duration_since(start.max(from))).sum()
}

/// Whether the machine stalled for at least half as long as `gap` lasted.
pub fn explains(gap: &Gap) -> bool {
    stalled_around(gap) * 2 >= Duration::from_millis(gap.ticks * 20)
}

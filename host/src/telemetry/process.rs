//! This process and its machine as the kernel reports them (`/proc`), for the stats a
//! protocol shows its clients. Anything unreadable reads as 0.
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Resident memory of this process, in bytes.
pub fn rss_bytes() -> u64 {
    kib_field("/proc/self/status", "VmRSS:") * 1024
}

/// Memory this process may use: its cgroup's limit when it has one, else the machine's.
pub fn memory_limit_bytes() -> u64 {
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok().and_then(|v| v.trim().parse::<u64>().ok());
    cgroup.unwrap_or_else(|| kib_field("/proc/meminfo", "MemTotal:") * 1024)
}

/// Memory the machine has free, in bytes.
pub fn memory_available_bytes() -> u64 {
    kib_field("/proc/meminfo", "MemAvailable:") * 1024
}

/// The one-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0.0)
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn kib_field(file: &str, name: &str) -> u64 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// This process's CPU use as a share of all cores (0–1), between successive readings at
/// least `min_interval` apart; in between, the last reading.
pub struct CpuShare {
    min_interval: Duration,
    last: Mutex<Option<(Instant, Duration, f64)>>,
}

impl CpuShare {
    pub fn new(min_interval: Duration) -> Self {
        Self { min_interval, last: Mutex::new(None) }
    }

    pub fn read(&self) -> f64 {
        let now = Instant::now();
        let cpu = cpu_time::ProcessTime::try_now().map_or(Duration::ZERO, |t| t.as_duration());
        let mut last = self.last.lock();
        match *last {
            None => {
                *last = Some((now, cpu, 0.0));
                0.0
            }
            Some((at, _, share)) if now.duration_since(at) < self.min_interval => share,
            Some((at, used, _)) => {
                let wall = now.duration_since(at).as_secs_f64() * cores() as f64;
                let share = (cpu.saturating_sub(used).as_secs_f64() / wall).clamp(0.0, 1.0);
                *last = Some((now, cpu, share));
                share
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_a_machine_under_it() {
        assert!(rss_bytes() > 0);
        assert!(memory_limit_bytes() >= rss_bytes());
        assert!(cores() >= 1);
    }
}

//! Who listens to which player, how far behind each listener is, and the pulse that paces
//! them all. One task wakes every [`PULSE`] and publishes the clock's tick: every listener
//! waits on that one value instead of a timer of its own. Once a second the task also looks
//! for listeners that fell further behind than allowed (a client that stopped reading is
//! never polled again, so it cannot notice by itself), drops them and counts them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::events::{Event, EventBus};
use crate::model::Id;
use crate::telemetry::Metrics;
use crate::voice::Scheduler;

pub const PULSE: Duration = Duration::from_millis(100);
/// How far behind the clock listeners read: past the newest chunk a player may still publish
/// (a chunk's span plus the most a catching-up player stamps late).
pub const LIVE_DELAY_TICKS: u64 = 40;

/// One listener's place, shared with the sweeper.
pub struct Slot {
    /// The next tick it will send.
    pub cursor: AtomicU64,
    /// How far behind live it listens by choice (its rewind, less the burst).
    pub delay_ticks: u64,
    pub dropped: AtomicBool,
}

struct Listeners {
    guild_id: Id,
    slots: Vec<Arc<Slot>>,
}

pub struct Hub {
    players: Mutex<HashMap<Id, Listeners>>,
    events: EventBus,
    metrics: Arc<Metrics>,
    pub max_lag_ticks: u64,
    pub max_listeners: usize,
}

/// Leaves the hub when the listener's stream is dropped.
pub struct Membership {
    hub: Arc<Hub>,
    player_id: Id,
    pub slot: Arc<Slot>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.hub.leave(self.player_id, &self.slot, false);
    }
}

#[derive(Debug, thiserror::Error)]
#[error("this node serves at most {0} listeners at once (MAX_LISTENERS)")]
pub struct HubFull(pub usize);

impl Hub {
    pub fn new(events: EventBus, metrics: Arc<Metrics>, max_lag_ticks: u64, max_listeners: usize) -> Self {
        Self { players: Mutex::default(), events, metrics, max_lag_ticks, max_listeners }
    }

    pub fn join(
        self: &Arc<Self>,
        guild_id: Id,
        player_id: Id,
        cursor: u64,
        delay_ticks: u64,
    ) -> Result<Membership, HubFull> {
        let slot = Arc::new(Slot { cursor: AtomicU64::new(cursor), delay_ticks, dropped: AtomicBool::new(false) });
        let mut players = self.players.lock();
        let total: usize = players.values().map(|l| l.slots.len()).sum();
        if total >= self.max_listeners {
            return Err(HubFull(self.max_listeners));
        }
        let listeners = players.entry(player_id).or_insert_with(|| Listeners { guild_id, slots: Vec::new() });
        listeners.slots.push(slot.clone());
        let count = listeners.slots.len();
        drop(players);
        self.metrics.listeners.inc();
        self.events.emit(Event::ListenerJoined { guild_id, player_id, listeners: count });
        Ok(Membership { hub: self.clone(), player_id, slot })
    }

    /// Takes a listener off its player (once); `dropped` when it fell behind.
    fn leave(&self, player_id: Id, slot: &Arc<Slot>, dropped: bool) {
        let mut players = self.players.lock();
        let Some(listeners) = players.get_mut(&player_id) else { return };
        let before = listeners.slots.len();
        listeners.slots.retain(|s| !Arc::ptr_eq(s, slot));
        if listeners.slots.len() == before {
            return;
        }
        let (guild_id, count) = (listeners.guild_id, listeners.slots.len());
        if count == 0 {
            players.remove(&player_id);
        }
        drop(players);
        self.metrics.listeners.dec();
        if dropped {
            self.metrics.listener_drops.inc();
        }
        self.events.emit(Event::ListenerLeft { guild_id, player_id, listeners: count, dropped });
    }

    /// Listeners of each player that has any.
    pub fn counts(&self) -> HashMap<Id, usize> {
        self.players.lock().iter().map(|(id, l)| (*id, l.slots.len())).collect()
    }

    pub fn count(&self, player_id: Id) -> usize {
        self.players.lock().get(&player_id).map_or(0, |l| l.slots.len())
    }

    /// Drops every listener further behind its place than allowed at `now`.
    fn sweep(&self, now: u64) {
        let live = now.saturating_sub(LIVE_DELAY_TICKS);
        let behind: Vec<(Id, Arc<Slot>)> = self
            .players
            .lock()
            .iter()
            .flat_map(|(id, l)| l.slots.iter().map(move |s| (*id, s.clone())))
            .filter(|(_, s)| {
                live.saturating_sub(s.delay_ticks).saturating_sub(s.cursor.load(Ordering::Relaxed)) > self.max_lag_ticks
            })
            .collect();
        for (player_id, slot) in behind {
            slot.dropped.store(true, Ordering::Release);
            self.leave(player_id, &slot, true);
        }
    }
}

/// Starts the pulse (and the sweep) on the current runtime; the receiver is what listeners
/// wait on. The task ends with the last receiver.
pub fn start_pulse(hub: Arc<Hub>, scheduler: Arc<Scheduler>) -> watch::Receiver<u64> {
    let (tx, rx) = watch::channel(scheduler.now_tick());
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(PULSE);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut beats = 0u64;
        loop {
            interval.tick().await;
            let now = scheduler.now_tick();
            if tx.send(now).is_err() {
                return;
            }
            beats += 1;
            if beats.is_multiple_of(10) {
                hub.sweep(now);
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listener_further_behind_than_allowed_is_dropped_once_and_counted() {
        let events = EventBus::new(16);
        let mut seen = events.subscribe();
        let metrics = Arc::new(Metrics::new());
        let hub = Arc::new(Hub::new(events, metrics.clone(), 100, 10));
        let keeping_up = hub.join(Id(1), Id(2), 1000, 0).unwrap();
        let rewound = hub.join(Id(1), Id(2), 500, 450).unwrap();
        let stalled = hub.join(Id(1), Id(2), 800, 0).unwrap();
        assert_eq!(hub.count(Id(2)), 3);
        // Live is at 1000 + LIVE_DELAY: the stalled one is 200 ticks behind, the rewound one
        // 50 behind where it chose to be.
        hub.sweep(1000 + LIVE_DELAY_TICKS);
        assert!(stalled.slot.dropped.load(Ordering::Acquire));
        assert!(!rewound.slot.dropped.load(Ordering::Acquire) && !keeping_up.slot.dropped.load(Ordering::Acquire));
        assert_eq!(hub.count(Id(2)), 2);
        assert_eq!(metrics.listener_drops.get(), 1);
        drop(stalled);
        assert_eq!(metrics.listener_drops.get(), 1, "leaving after the drop is not a second leave");
        assert_eq!(metrics.listeners.get(), 2);
        let mut left = Vec::new();
        while let Ok(event) = seen.try_recv() {
            if let Event::ListenerLeft { dropped, listeners, .. } = event {
                left.push((dropped, listeners));
            }
        }
        assert_eq!(left, vec![(true, 2)]);
    }

    #[test]
    fn a_node_takes_at_most_its_listeners() {
        let hub = Arc::new(Hub::new(EventBus::new(16), Arc::new(Metrics::new()), 100, 1));
        let _one = hub.join(Id(1), Id(2), 0, 0).unwrap();
        assert!(hub.join(Id(1), Id(3), 0, 0).is_err());
    }
}

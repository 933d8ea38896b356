//! Who listens to which player or live mount, how far behind each listener is, and the pulse that paces
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

/// What a listener listens to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Audience {
    Player { guild_id: Id, player_id: Id },
    Mount(Arc<str>),
}

impl Audience {
    fn joined(&self, listeners: usize) -> Event {
        match self {
            Self::Player { guild_id, player_id } => {
                Event::ListenerJoined { guild_id: *guild_id, player_id: *player_id, listeners }
            }
            Self::Mount(mount) => Event::MountListenerJoined { mount: mount.to_string(), listeners },
        }
    }

    fn left(&self, listeners: usize, dropped: bool) -> Event {
        match self {
            Self::Player { guild_id, player_id } => {
                Event::ListenerLeft { guild_id: *guild_id, player_id: *player_id, listeners, dropped }
            }
            Self::Mount(mount) => Event::MountListenerLeft { mount: mount.to_string(), listeners, dropped },
        }
    }
}

pub struct Hub {
    audiences: Mutex<HashMap<Audience, Vec<Arc<Slot>>>>,
    events: EventBus,
    metrics: Arc<Metrics>,
    pub max_lag_ticks: u64,
    pub max_listeners: usize,
}

/// Leaves the hub when the listener's stream is dropped.
pub struct Membership {
    hub: Arc<Hub>,
    audience: Audience,
    pub slot: Arc<Slot>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.hub.leave(&self.audience, &self.slot, false);
    }
}

#[derive(Debug, thiserror::Error)]
#[error("this node serves at most {0} listeners at once (MAX_LISTENERS)")]
pub struct HubFull(pub usize);

impl Hub {
    pub fn new(events: EventBus, metrics: Arc<Metrics>, max_lag_ticks: u64, max_listeners: usize) -> Self {
        Self { audiences: Mutex::default(), events, metrics, max_lag_ticks, max_listeners }
    }

    pub fn join(self: &Arc<Self>, audience: Audience, cursor: u64, delay_ticks: u64) -> Result<Membership, HubFull> {
        let slot = Arc::new(Slot { cursor: AtomicU64::new(cursor), delay_ticks, dropped: AtomicBool::new(false) });
        let mut audiences = self.audiences.lock();
        let total: usize = audiences.values().map(Vec::len).sum();
        if total >= self.max_listeners {
            return Err(HubFull(self.max_listeners));
        }
        let slots = audiences.entry(audience.clone()).or_default();
        slots.push(slot.clone());
        let count = slots.len();
        drop(audiences);
        self.metrics.listeners.inc();
        self.events.emit(audience.joined(count));
        Ok(Membership { hub: self.clone(), audience, slot })
    }

    /// Takes a listener off what it listens to (once); `dropped` when it fell behind.
    fn leave(&self, audience: &Audience, slot: &Arc<Slot>, dropped: bool) {
        let mut audiences = self.audiences.lock();
        let Some(slots) = audiences.get_mut(audience) else { return };
        let before = slots.len();
        slots.retain(|s| !Arc::ptr_eq(s, slot));
        if slots.len() == before {
            return;
        }
        let count = slots.len();
        if count == 0 {
            audiences.remove(audience);
        }
        drop(audiences);
        self.metrics.listeners.dec();
        if dropped {
            self.metrics.listener_drops.inc();
        }
        self.events.emit(audience.left(count, dropped));
    }

    /// Listeners of each player that has any.
    pub fn counts(&self) -> HashMap<Id, usize> {
        let audiences = self.audiences.lock();
        let players = audiences.iter().filter_map(|(audience, slots)| match audience {
            Audience::Player { player_id, .. } => Some((*player_id, slots.len())),
            Audience::Mount(_) => None,
        });
        players.collect()
    }

    pub fn count(&self, audience: &Audience) -> usize {
        self.audiences.lock().get(audience).map_or(0, Vec::len)
    }

    /// Drops every listener further behind its place than allowed at `now`.
    fn sweep(&self, now: u64) {
        let live = now.saturating_sub(LIVE_DELAY_TICKS);
        let behind: Vec<(Audience, Arc<Slot>)> = self
            .audiences
            .lock()
            .iter()
            .flat_map(|(audience, slots)| slots.iter().map(move |s| (audience.clone(), s.clone())))
            .filter(|(_, s)| {
                live.saturating_sub(s.delay_ticks).saturating_sub(s.cursor.load(Ordering::Relaxed)) > self.max_lag_ticks
            })
            .collect();
        for (audience, slot) in behind {
            slot.dropped.store(true, Ordering::Release);
            self.leave(&audience, &slot, true);
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
        let player = Audience::Player { guild_id: Id(1), player_id: Id(2) };
        let keeping_up = hub.join(player.clone(), 1000, 0).unwrap();
        let rewound = hub.join(player.clone(), 500, 450).unwrap();
        let stalled = hub.join(player.clone(), 800, 0).unwrap();
        assert_eq!(hub.count(&player), 3);
        // Live is at 1000 + LIVE_DELAY: the stalled one is 200 ticks behind, the rewound one
        // 50 behind where it chose to be.
        hub.sweep(1000 + LIVE_DELAY_TICKS);
        assert!(stalled.slot.dropped.load(Ordering::Acquire));
        assert!(!rewound.slot.dropped.load(Ordering::Acquire) && !keeping_up.slot.dropped.load(Ordering::Acquire));
        assert_eq!(hub.count(&player), 2);
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
        let _one = hub.join(Audience::Player { guild_id: Id(1), player_id: Id(2) }, 0, 0).unwrap();
        assert!(hub.join(Audience::Mount("studio".into()), 0, 0).is_err());
    }
}

//! Who listens to which player or live mount, how far behind each listener is, and the pulse that paces
//! them all. One task wakes every [`PULSE`] and publishes the clock's tick: every listener
//! waits on that one value instead of a timer of its own. Once a second the task also looks
//! for listeners that fell further behind than allowed (a client that stopped reading is
//! never polled again, so it cannot notice by itself), drops them and counts them.
//!
//! The hub also bounds who listens: the node's listeners (`MAX_LISTENERS`), the listeners
//! one listen token brings (`MAX_LISTENERS_PER_TOKEN`) and those of one client address
//! (`MAX_LISTENERS_PER_ADDRESS`).

use std::collections::HashMap;
use std::net::IpAddr;
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
    who: Who,
}

/// Who a listener is, as the caps count it: the listen token it came with (by digest) and
/// its client's address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Who {
    pub token: Option<[u8; 16]>,
    pub address: Option<IpAddr>,
}

impl Who {
    pub fn new(token: Option<&str>, address: Option<IpAddr>) -> Self {
        use sha2::Digest;
        let token = token.map(|t| {
            let digest = sha2::Sha256::digest(t.as_bytes());
            let mut short = [0u8; 16];
            short.copy_from_slice(&digest[..16]);
            short
        });
        Self { token, address }
    }
}

/// How many listeners the node, one token and one address may have.
#[derive(Debug, Clone, Copy)]
pub struct ListenerCaps {
    pub node: usize,
    pub per_token: usize,
    pub per_address: usize,
}

#[derive(Default)]
struct WhoCounts {
    by_token: HashMap<[u8; 16], usize>,
    by_address: HashMap<IpAddr, usize>,
}

fn count_down<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(key);
        }
    }
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
    /// Locked after `audiences` when both are.
    who: Mutex<WhoCounts>,
    events: EventBus,
    metrics: Arc<Metrics>,
    pub max_lag_ticks: u64,
    pub caps: ListenerCaps,
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
pub enum HubFull {
    #[error("this node serves at most {0} listeners at once (MAX_LISTENERS)")]
    Node(usize),
    #[error("this listen token already has {0} listeners (MAX_LISTENERS_PER_TOKEN)")]
    Token(usize),
    #[error("{1} already has {0} listeners (MAX_LISTENERS_PER_ADDRESS)")]
    Address(usize, IpAddr),
}

impl Hub {
    pub fn new(events: EventBus, metrics: Arc<Metrics>, max_lag_ticks: u64, caps: ListenerCaps) -> Self {
        Self { audiences: Mutex::default(), who: Mutex::default(), events, metrics, max_lag_ticks, caps }
    }

    pub fn join(
        self: &Arc<Self>,
        audience: Audience,
        who: Who,
        cursor: u64,
        delay_ticks: u64,
    ) -> Result<Membership, HubFull> {
        let mut audiences = self.audiences.lock();
        let total: usize = audiences.values().map(Vec::len).sum();
        if total >= self.caps.node {
            return Err(HubFull::Node(self.caps.node));
        }
        let mut counts = self.who.lock();
        if let Some(token) = who.token
            && counts.by_token.get(&token).copied().unwrap_or(0) >= self.caps.per_token
        {
            return Err(HubFull::Token(self.caps.per_token));
        }
        if let Some(address) = who.address
            && counts.by_address.get(&address).copied().unwrap_or(0) >= self.caps.per_address
        {
            return Err(HubFull::Address(self.caps.per_address, address));
        }
        if let Some(token) = who.token {
            *counts.by_token.entry(token).or_insert(0) += 1;
        }
        if let Some(address) = who.address {
            *counts.by_address.entry(address).or_insert(0) += 1;
        }
        drop(counts);
        let slot = Arc::new(Slot { cursor: AtomicU64::new(cursor), delay_ticks, dropped: AtomicBool::new(false), who });
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
        let mut counts = self.who.lock();
        if let Some(token) = &slot.who.token {
            count_down(&mut counts.by_token, token);
        }
        if let Some(address) = &slot.who.address {
            count_down(&mut counts.by_address, address);
        }
        drop(counts);
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
        let hub = Arc::new(Hub::new(events, metrics.clone(), 100, caps(10)));
        let player = Audience::Player { guild_id: Id(1), player_id: Id(2) };
        let keeping_up = hub.join(player.clone(), Who::default(), 1000, 0).unwrap();
        let rewound = hub.join(player.clone(), Who::default(), 500, 450).unwrap();
        let stalled = hub.join(player.clone(), Who::default(), 800, 0).unwrap();
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

    fn caps(node: usize) -> ListenerCaps {
        ListenerCaps { node, per_token: node, per_address: node }
    }

    #[test]
    fn a_node_takes_at_most_its_listeners() {
        let hub = Arc::new(Hub::new(EventBus::new(16), Arc::new(Metrics::new()), 100, caps(1)));
        let _one = hub.join(Audience::Player { guild_id: Id(1), player_id: Id(2) }, Who::default(), 0, 0).unwrap();
        assert!(hub.join(Audience::Mount("studio".into()), Who::default(), 0, 0).is_err());
    }

    #[test]
    fn one_token_and_one_address_take_at_most_their_share_and_get_it_back() {
        let caps = ListenerCaps { node: 100, per_token: 2, per_address: 3 };
        let hub = Arc::new(Hub::new(EventBus::new(64), Arc::new(Metrics::new()), 100, caps));
        let studio = || Audience::Mount("studio".into());
        let here = Some(IpAddr::from([10, 0, 0, 1]));
        let (a, b) = (Who::new(Some("token-a"), here), Who::new(Some("token-b"), here));
        let first = hub.join(studio(), a.clone(), 0, 0).unwrap();
        let _second = hub.join(studio(), a.clone(), 0, 0).unwrap();
        assert!(matches!(hub.join(studio(), a.clone(), 0, 0), Err(HubFull::Token(2))));
        let _third = hub.join(studio(), b.clone(), 0, 0).unwrap();
        assert!(matches!(hub.join(studio(), b.clone(), 0, 0), Err(HubFull::Address(3, _))), "the address is full");
        let elsewhere = Who::new(Some("token-b"), Some(IpAddr::from([10, 0, 0, 2])));
        let _fourth = hub.join(studio(), elsewhere, 0, 0).unwrap();
        drop(first);
        let _again = hub.join(studio(), a, 0, 0).unwrap();
        // A listener dropped for lagging gives its places back too.
        hub.sweep(10_000);
        assert_eq!(hub.count(&studio()), 0);
        assert!(hub.join(studio(), b, 0, 0).is_ok());
    }
}

//! Several nodes acting as one service, coordinated through Redis: each node says it is alive
//! with a record that expires (`cluster:node:{id}`), holds its players through leases it
//! renews (see [`leases`]), adopts the players of a node whose leases ran out, and hears every
//! other node's events. Nothing here plays audio: the player registry asks for leases and is
//! told which players to let go or adopt.

mod heartbeat;
mod leases;
mod relay;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

pub use heartbeat::News;

use crate::model::Id;
use crate::store::{RedisKv, StoreError};
use crate::telemetry::process::CpuShare;
use crate::voice::SendGate;

/// `NODE_ID`, `CLUSTER_URL` and `NODE_LEASE_MS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    pub node_id: String,
    /// Where the other nodes reach this one's API.
    pub url: String,
    /// How long a node's record and its players' leases last without a renewal.
    pub lease: Duration,
}

/// What a node tells the others about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    pub url: String,
    /// Players this node plays.
    pub players: usize,
    /// The share of the machine's cores the node used lately (0–1).
    #[serde(default)]
    pub cpu: f64,
    /// When the node started (Unix ms).
    pub started_ms: u64,
    /// Whether it is moving its players away (`POST /nodes/{id}/drain`): it takes no new
    /// players and adopts none.
    #[serde(default)]
    pub draining: bool,
}

/// Failed adoptions of one player after which the cluster stops trying.
pub const MAX_ADOPTION_ATTEMPTS: u64 = 5;
/// How long failed adoptions are remembered.
const ATTEMPTS_KEPT: Duration = Duration::from_secs(600);

/// What the cluster counts (shared with the metrics registry).
#[derive(Debug, Clone, Default)]
pub struct ClusterCounters {
    pub adopted: Counter,
    pub lost: Counter,
    pub handed_over: Counter,
    pub heartbeat_failures: Counter,
}

/// The answer to a claim on a player.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This node holds it now, at this generation; `previous` held it before (if anyone).
    Held { generation: u64, previous: Option<String> },
    /// Another node holds it.
    Elsewhere(String),
}

pub struct Cluster {
    pub settings: ClusterSettings,
    /// Shut while this node is not sure its leases are fresh (see [`SendGate`]).
    pub gate: Arc<SendGate>,
    redis: RedisKv,
    prefix: String,
    started_ms: u64,
    /// The players this node holds, with the generation it holds each at.
    held: Mutex<HashMap<Id, u64>>,
    /// Players this node plays (its load), as the registry last said.
    players: AtomicUsize,
    draining: AtomicBool,
    cpu: CpuShare,
    pub counters: ClusterCounters,
}

impl Cluster {
    /// Joins the cluster on the Redis at `uri` (keys under `prefix`). The node's record is
    /// written by the heartbeat ([`Self::spawn`]).
    pub async fn join(
        settings: ClusterSettings,
        uri: &str,
        prefix: &str,
        counters: ClusterCounters,
    ) -> Result<Arc<Self>, StoreError> {
        let redis = RedisKv::connect(uri).await?;
        Ok(Arc::new(Self {
            settings,
            gate: Arc::new(SendGate::shut()),
            redis,
            prefix: format!("{prefix}:"),
            started_ms: crate::wall_clock::unix_ms(),
            held: Mutex::default(),
            players: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            cpu: CpuShare::new(Duration::from_secs(1)),
            counters,
        }))
    }

    pub fn node_id(&self) -> &str {
        &self.settings.node_id
    }

    fn key(&self, rest: &str) -> String {
        format!("{}cluster:{rest}", self.prefix)
    }

    fn ttl_ms(&self) -> u64 {
        self.settings.lease.as_millis() as u64
    }

    /// Stops taking new players and adopting any: the node is being emptied.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The generation at which this node holds `id`, if it does.
    pub fn generation_of(&self, id: Id) -> Option<u64> {
        self.held.lock().get(&id).copied()
    }

    /// Takes `id` over from node `from`, which held it at `generation` (a migration). False
    /// when the lease had changed meanwhile.
    pub async fn take_over(&self, id: Id, from: &str, generation: u64) -> Result<bool, StoreError> {
        let mut conn = self.redis.conn()?;
        let next: u64 = leases::HAND_OVER
            .arg(&self.prefix)
            .arg(self.node_id())
            .arg(self.ttl_ms())
            .arg(id.0)
            .arg(from)
            .arg(generation)
            .invoke_async(&mut conn)
            .await
            .map_err(crate::store::redis_error)?;
        if next == 0 {
            return Ok(false);
        }
        self.held.lock().insert(id, next);
        Ok(true)
    }

    /// Stops holding a player handed to another node (its lease is that node's now).
    pub fn hand_off(&self, id: Id) {
        self.forget(id);
        self.counters.handed_over.inc();
    }

    /// Tells the cluster how many players this node plays.
    pub fn set_load(&self, players: usize) {
        self.players.store(players, Ordering::Relaxed);
    }

    /// Whether this node may write a player's state: it holds the player and its leases are
    /// fresh (a node back from a pause writes nothing until its renewal says what it holds).
    pub fn may_write(&self, id: Id) -> bool {
        self.gate.is_open() && self.held.lock().contains_key(&id)
    }

    /// Claims `id` for a player made here: taken when nobody holds it, kept when this node does.
    pub async fn claim(&self, id: Id) -> Result<Claim, StoreError> {
        self.run_claim(id, "create").await
    }

    /// Claims `id` for adoption: only a player the cluster looks after that nobody holds.
    async fn claim_orphan(&self, id: Id) -> Result<Claim, StoreError> {
        self.run_claim(id, "adopt").await
    }

    async fn run_claim(&self, id: Id, mode: &str) -> Result<Claim, StoreError> {
        let mut conn = self.redis.conn()?;
        let (generation, other): (String, String) = leases::CLAIM
            .arg(&self.prefix)
            .arg(self.node_id())
            .arg(self.ttl_ms())
            .arg(id.0)
            .arg(mode)
            .invoke_async(&mut conn)
            .await
            .map_err(crate::store::redis_error)?;
        let generation: u64 = generation.parse().unwrap_or(0);
        if generation == 0 {
            return Ok(Claim::Elsewhere(other));
        }
        self.held.lock().insert(id, generation);
        let previous = (!other.is_empty() && other != self.node_id()).then_some(other);
        Ok(Claim::Held { generation, previous })
    }

    /// Lets go of a destroyed player for good. A failure is logged: the lease then runs out
    /// and the player, with no saved queue left to play, is adopted and ends at once.
    pub async fn release(&self, id: Id) {
        let Some(generation) = self.held.lock().remove(&id) else { return };
        let released = async {
            let mut conn = self.redis.conn()?;
            leases::RELEASE
                .arg(&self.prefix)
                .arg(self.node_id())
                .arg(id.0)
                .arg(generation)
                .invoke_async::<i64>(&mut conn)
                .await
                .map_err(crate::store::redis_error)
        };
        if let Err(e) = released.await {
            tracing::warn!(player = %id, error = %e, "could not release the player's lease");
        }
    }

    /// Forgets a player this node no longer plays, without touching its lease (it was lost).
    fn forget(&self, id: Id) {
        self.held.lock().remove(&id);
    }

    /// Stops renewing a player this node could not adopt: its lease runs out and another
    /// node (or a later round here) tries. After [`MAX_ADOPTION_ATTEMPTS`] failures in a row
    /// the cluster stops looking after it; its saved guild state stays for the bot's next
    /// `POST /players`.
    pub async fn adoption_failed(&self, id: Id) {
        self.forget(id);
        let attempts_key = self.key(&format!("attempts:{id}"));
        let counted = async {
            let mut conn = self.redis.conn()?;
            let (attempts,): (u64,) = redis::pipe()
                .cmd("INCR")
                .arg(&attempts_key)
                .cmd("PEXPIRE")
                .arg(&attempts_key)
                .arg(ATTEMPTS_KEPT.as_millis() as u64)
                .ignore()
                .query_async(&mut conn)
                .await
                .map_err(crate::store::redis_error)?;
            if attempts >= MAX_ADOPTION_ATTEMPTS {
                tracing::error!(player = %id, attempts, "giving up adopting this player; the bot's next POST /players restores it");
                redis::pipe()
                    .cmd("SREM")
                    .arg(self.key("players"))
                    .arg(id.0)
                    .cmd("DEL")
                    .arg(&attempts_key)
                    .arg(self.key(&format!("owner:{id}")))
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(crate::store::redis_error)?;
            }
            Ok::<_, StoreError>(())
        };
        if let Err(e) = counted.await {
            tracing::warn!(player = %id, error = %e, "could not count a failed adoption");
        }
    }

    /// The live node that holds `id`, if any.
    pub async fn owner(&self, id: Id) -> Result<Option<NodeRecord>, StoreError> {
        let mut conn = self.redis.conn()?;
        let lease: Option<String> =
            conn.get(self.key(&format!("lease:{id}"))).await.map_err(crate::store::redis_error)?;
        let Some(node) = lease.as_deref().and_then(|l| l.rsplit_once(' ')).map(|(node, _)| node.to_string()) else {
            return Ok(None);
        };
        Ok(self.nodes().await?.into_iter().find(|n| n.id == node))
    }

    /// Every live node, this one included, by id.
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let mut conn = self.redis.conn()?;
        let ids: Vec<String> = conn.smembers(self.key("nodes")).await.map_err(crate::store::redis_error)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.key(&format!("node:{id}"))).collect();
        let records: Vec<Option<String>> = conn.mget(&keys).await.map_err(crate::store::redis_error)?;
        let mut nodes: Vec<NodeRecord> =
            records.into_iter().flatten().filter_map(|r| serde_json::from_str(&r).ok()).collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    /// The node a new player should go to: the least loaded live node (see [`load`]), this
    /// one on a tie, or this one when none is known. Draining nodes take none.
    pub async fn least_loaded(&self) -> Result<NodeRecord, StoreError> {
        let here = self.record();
        let best = self.least_loaded_other().await?;
        Ok(match best {
            Some(other) if here.draining || load(&other) < load(&here) => other,
            _ => here,
        })
    }

    /// The least loaded live node other than this one, draining ones aside.
    pub async fn least_loaded_other(&self) -> Result<Option<NodeRecord>, StoreError> {
        let nodes = self.nodes().await?;
        Ok(nodes.into_iter().filter(|n| n.id != self.node_id() && !n.draining).min_by_key(load))
    }

    /// This node's record as it would write it now.
    fn record(&self) -> NodeRecord {
        NodeRecord {
            id: self.settings.node_id.clone(),
            url: self.settings.url.clone(),
            players: self.players.load(Ordering::Relaxed),
            cpu: self.cpu.read(),
            started_ms: self.started_ms,
            draining: self.is_draining(),
        }
    }
}

/// A node's CPU share above which it gets new players only when every node is that busy.
const BUSY_CPU: f64 = 0.85;

/// How loaded a node is, least first: not busy before busy, then fewer players, then less CPU.
fn load(node: &NodeRecord) -> (bool, usize, u64) {
    (node.cpu >= BUSY_CPU, node.players, (node.cpu * 1000.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, players: usize, cpu: f64) -> NodeRecord {
        NodeRecord { id: id.into(), url: String::new(), players, cpu, started_ms: 0, draining: false }
    }

    #[test]
    fn the_least_loaded_node_has_fewer_players_unless_its_cpu_is_nearly_full() {
        let least = |nodes: &[NodeRecord]| nodes.iter().min_by_key(|n| load(n)).map(|n| n.id.clone());
        assert_eq!(least(&[node("a", 3, 0.2), node("b", 1, 0.5)]), Some("b".into()));
        assert_eq!(least(&[node("a", 3, 0.2), node("b", 1, 0.9)]), Some("a".into()));
        assert_eq!(least(&[node("a", 2, 0.3), node("b", 2, 0.1)]), Some("b".into()));
    }
}

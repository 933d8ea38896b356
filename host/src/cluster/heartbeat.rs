//! The node's heartbeat, every third of a lease: it writes the node's record, renews its
//! players' leases (learning which it lost), keeps the send gate open while it is sure of
//! them, and adopts the players whose holder stopped renewing.
//!
//! When Redis does not answer, a node keeps playing what it plays (nobody can adopt its
//! players meanwhile) and adopts nothing until Redis has answered for a whole lease, so a
//! node whose renewals were held up by the outage renews before anyone looks for orphans. A
//! node that was itself paused past its lease sends nothing until Redis answers.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::{Claim, Cluster, leases};
use crate::model::Id;
use crate::store::{StoreError, redis_error};

/// How long the heartbeat waits for the registry to stop the players it lost before it opens
/// the send gate again anyway.
const LET_GO_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// What the heartbeat tells the player registry.
#[derive(Debug)]
pub enum News {
    /// Another node holds this player now: stop sending for it at once (then answer), keep
    /// its saved state.
    Lost(Id, oneshot::Sender<()>),
    /// This node holds this player now: play it from its saved state.
    Adopt { player: Id, from: Option<String> },
}

impl Cluster {
    /// Starts the heartbeat on the current runtime; what it learns comes on the receiver.
    pub fn spawn_heartbeat(self: &Arc<Self>) -> mpsc::UnboundedReceiver<News> {
        let (news, receiver) = mpsc::unbounded_channel();
        tokio::spawn(beat(self.clone(), news));
        receiver
    }

    /// Writes this node's record and renews its leases; answers the players it lost.
    async fn renew(&self) -> Result<Vec<Id>, StoreError> {
        let mut conn = self.redis.conn()?;
        let record = serde_json::to_string(&self.record()).map_err(|e| StoreError::Backend(e.to_string()))?;
        redis::pipe()
            .cmd("SET")
            .arg(self.key(&format!("node:{}", self.node_id())))
            .arg(record)
            .arg("PX")
            .arg(self.ttl_ms())
            .ignore()
            .cmd("SADD")
            .arg(self.key("nodes"))
            .arg(self.node_id())
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(redis_error)?;
        let held: Vec<(Id, u64)> = self.held.lock().iter().map(|(id, generation)| (*id, *generation)).collect();
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let mut renewal = leases::RENEW.prepare_invoke();
        renewal.arg(&self.prefix).arg(self.node_id()).arg(self.ttl_ms());
        for (id, generation) in &held {
            renewal.arg(id.0).arg(*generation);
        }
        let lost: Vec<u64> = renewal.invoke_async(&mut conn).await.map_err(redis_error)?;
        Ok(lost.into_iter().map(Id).collect())
    }

    /// Claims this node's share of the players nobody holds: each live node takes at most an
    /// even share per round, so a dead node's players spread over the survivors.
    async fn adopt_orphans(&self) -> Result<Vec<(Id, Option<String>)>, StoreError> {
        let mut conn = self.redis.conn()?;
        let looked_after: Vec<u64> =
            redis::cmd("SMEMBERS").arg(self.key("players")).query_async(&mut conn).await.map_err(redis_error)?;
        let candidates: Vec<u64> = {
            let held = self.held.lock();
            looked_after.into_iter().filter(|id| !held.contains_key(&Id(*id))).collect()
        };
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = candidates.iter().map(|id| self.key(&format!("lease:{id}"))).collect();
        let leases: Vec<Option<String>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await.map_err(redis_error)?;
        let orphans: Vec<Id> =
            candidates.into_iter().zip(leases).filter(|(_, lease)| lease.is_none()).map(|(id, _)| Id(id)).collect();
        if orphans.is_empty() {
            return Ok(Vec::new());
        }
        let live = self.nodes().await?.len().max(1);
        let share = orphans.len().div_ceil(live);
        let mut adopted = Vec::new();
        for id in orphans {
            if adopted.len() >= share {
                break;
            }
            if let Claim::Held { previous, .. } = self.claim_orphan(id).await? {
                adopted.push((id, previous));
            }
        }
        Ok(adopted)
    }
}

async fn beat(cluster: Arc<Cluster>, news: mpsc::UnboundedSender<News>) {
    let lease = cluster.settings.lease;
    let mut every = tokio::time::interval(lease / 3);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // When the last round ended (a slow Redis answer is not a pause of this node).
    let mut last_round: Option<Instant> = None;
    // Redis has answered every round since then.
    let mut answering_since: Option<Instant> = None;
    // Set after a pause past the lease, until Redis says what this node still holds.
    let mut unsure = false;
    loop {
        every.tick().await;
        let now = Instant::now();
        if last_round.is_some_and(|last| now - last > lease) {
            tracing::warn!(
                paused_ms = (now - last_round.unwrap_or(now)).as_millis() as u64,
                "this node was paused past its lease; sending nothing until the leases are renewed"
            );
            unsure = true;
        }
        // The leases renewed now run out a lease from when Redis ran the renewal, at the
        // earliest `now`: the gate closes a tenth of a lease before, so a node whose next
        // renewal is late stops sending before anyone can have adopted its players.
        let gate_span = |since: Instant| (lease - lease / 10).saturating_sub(since.elapsed());
        let renewed = cluster.renew().await;
        last_round = Some(Instant::now());
        match renewed {
            Ok(lost) => {
                unsure = false;
                // The lost players stop sending before the gate lets the others send again.
                let mut stopped = Vec::new();
                for id in lost {
                    tracing::warn!(player = %id, "another node holds this player now; letting it go");
                    cluster.forget(id);
                    cluster.counters.lost.inc();
                    let (done, wait) = oneshot::channel();
                    let _ = news.send(News::Lost(id, done));
                    stopped.push(wait);
                }
                let _ = tokio::time::timeout(LET_GO_WAIT, futures_util::future::join_all(stopped)).await;
                cluster.gate.open_for(gate_span(now));
                if answering_since.is_none() {
                    tracing::info!(node = cluster.node_id(), "cluster heartbeat is answered");
                }
                let since = *answering_since.get_or_insert(now);
                if now - since < lease || cluster.is_draining() {
                    continue;
                }
                match cluster.adopt_orphans().await {
                    Ok(adopted) => {
                        for (player, from) in adopted {
                            let _ = news.send(News::Adopt { player, from });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "could not look for players to adopt"),
                }
            }
            Err(e) => {
                cluster.counters.heartbeat_failures.inc();
                if answering_since.take().is_some() || unsure {
                    tracing::warn!(error = %e, "cluster heartbeat failed; playing on, adopting nothing");
                }
                // Nobody can adopt while Redis does not answer: play on (unless this node
                // was paused and cannot know what it still holds).
                if !unsure {
                    cluster.gate.open_for(lease);
                }
            }
        }
    }
}

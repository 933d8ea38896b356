//! Every node's events on every node's `/ws`: each node publishes what its bus emits on one
//! Redis channel, tagged with its id, and hands what the others publish to its own clients.
//! A node's `Goodbye` stays local (the service is not going away). Events published while a
//! node is not subscribed (Redis down) are not replayed: the stream is live, as `/ws` is.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::broadcast::error::RecvError;

use super::Cluster;
use crate::events::{Event, EventBus};

/// Longest wait before subscribing again after Redis went away.
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(5);

impl Cluster {
    /// Starts publishing this node's events and relaying the others'.
    pub fn spawn_relay(self: &Arc<Self>, events: EventBus) {
        tokio::spawn(publish(self.clone(), events.clone()));
        tokio::spawn(subscribe(self.clone(), events));
    }

    fn channel(&self) -> String {
        self.key("events")
    }
}

async fn publish(cluster: Arc<Cluster>, events: EventBus) {
    let mut local = events.subscribe();
    loop {
        let event = match local.recv().await {
            Ok(Event::Goodbye) => continue,
            Ok(event) => event,
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(dropped = n, "cluster relay lagged; events not published");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let Ok(json) = serde_json::to_string(&event) else { continue };
        let message = format!("{}\n{json}", cluster.node_id());
        let published = match cluster.redis.conn() {
            Ok(mut conn) => redis::cmd("PUBLISH")
                .arg(cluster.channel())
                .arg(message)
                .query_async::<i64>(&mut conn)
                .await
                .map_err(crate::store::redis_error),
            Err(e) => Err(e),
        };
        if let Err(e) = published {
            tracing::debug!(error = %e, "event not published to the cluster");
        }
    }
}

async fn subscribe(cluster: Arc<Cluster>, events: EventBus) {
    let mut wait = Duration::from_millis(100);
    loop {
        match relay_until_error(&cluster, &events).await {
            Ok(()) => wait = Duration::from_millis(100),
            Err(e) => tracing::warn!(error = %e, "cluster event subscription lost; subscribing again"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(RESUBSCRIBE_MAX);
    }
}

async fn relay_until_error(cluster: &Cluster, events: &EventBus) -> Result<(), redis::RedisError> {
    let mut pubsub = cluster.redis.client().get_async_pubsub().await?;
    pubsub.subscribe(cluster.channel()).await?;
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        let Ok(text) = message.get_payload::<String>() else { continue };
        let Some((node, json)) = text.split_once('\n') else { continue };
        if node != cluster.node_id() {
            events.relay(Arc::from(json));
        }
    }
    Ok(())
}

//! The Redis backend. When Redis does not answer at startup, the first connection is retried
//! in the background, so the server starts (and serves what needs no store) while Redis is
//! down; once connected, the connection manager reconnects on its own. Until then every
//! operation is an error, never an empty answer.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;

use super::StoreError;

/// Longest wait between two attempts at the first connection.
const MAX_RETRY: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct RedisKv {
    client: redis::Client,
    conn: Arc<OnceCell<ConnectionManager>>,
}

pub(crate) fn err(e: redis::RedisError) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl RedisKv {
    /// Checks the URI and connects; when Redis does not answer, goes on connecting in the
    /// background (on the current runtime).
    pub async fn connect(uri: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(uri).map_err(err)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(3)))
            .set_response_timeout(Some(Duration::from_secs(3)))
            .set_number_of_retries(2);
        let conn = Arc::new(OnceCell::new());
        match ConnectionManager::new_with_config(client.clone(), config.clone()).await {
            Ok(manager) => {
                let _ = conn.set(manager);
                return Ok(Self { client, conn });
            }
            Err(e) => tracing::warn!(error = %e, "redis is not reachable; starting without it and retrying"),
        }
        let connecting = conn.clone();
        let retrying = client.clone();
        tokio::spawn(async move {
            let mut wait = Duration::from_millis(100);
            loop {
                match ConnectionManager::new_with_config(retrying.clone(), config.clone()).await {
                    Ok(manager) => {
                        let _ = connecting.set(manager);
                        tracing::info!("connected to redis");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "redis is not reachable yet");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(MAX_RETRY);
                    }
                }
            }
        });
        Ok(Self { client, conn })
    }

    /// The client, for connections of another kind (subscriptions).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The shared connection (an error until the first one is made).
    pub fn conn(&self) -> Result<ConnectionManager, StoreError> {
        self.conn.get().cloned().ok_or_else(|| StoreError::Backend("redis is not connected yet".into()))
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        redis::cmd("GET").arg(key).query_async(&mut self.conn()?).await.map_err(err)
    }

    pub async fn set(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        if let Some(ttl) = ttl {
            cmd.arg("EX").arg(ttl.as_secs().max(1));
        }
        cmd.query_async::<()>(&mut self.conn()?).await.map_err(err)
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        redis::cmd("DEL").arg(key).query_async::<()>(&mut self.conn()?).await.map_err(err)
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        redis::cmd("PING").query_async::<String>(&mut self.conn()?).await.map(|_| ()).map_err(err)
    }
}

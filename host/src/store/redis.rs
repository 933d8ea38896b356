//! The Redis backend, through a connection manager that reconnects on its own.

use std::time::Duration;

use redis::aio::ConnectionManager;

use super::StoreError;

#[derive(Clone)]
pub struct RedisKv {
    conn: ConnectionManager,
}

fn err(e: redis::RedisError) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl RedisKv {
    pub async fn connect(uri: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(uri).map_err(err)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(3)))
            .set_response_timeout(Some(Duration::from_secs(3)))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client, config).await.map_err(err)?;
        Ok(Self { conn })
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        redis::cmd("GET").arg(key).query_async(&mut self.conn.clone()).await.map_err(err)
    }

    pub async fn set(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        if let Some(ttl) = ttl {
            cmd.arg("EX").arg(ttl.as_secs().max(1));
        }
        cmd.query_async::<()>(&mut self.conn.clone()).await.map_err(err)
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        redis::cmd("DEL").arg(key).query_async::<()>(&mut self.conn.clone()).await.map_err(err)
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        redis::cmd("PING").query_async::<String>(&mut self.conn.clone()).await.map(|_| ()).map_err(err)
    }
}

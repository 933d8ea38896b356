//! The embedded key-value backend: one redb file, values prefixed with their expiry time so
//! TTLs behave as in Redis. redb is synchronous, so calls run on the blocking pool, a few at
//! a time: redb commits one write at a time anyway, and a burst of players saving at once
//! would otherwise start a blocking thread each.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{Database, TableDefinition};

use super::StoreError;

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Backend(e.into().to_string())
}

/// Store calls on the blocking pool at once.
const CONCURRENT_CALLS: usize = 4;

#[derive(Clone)]
pub struct EmbeddedKv {
    db: Arc<Database>,
    calls: Arc<tokio::sync::Semaphore>,
}

impl EmbeddedKv {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Backend(format!("{}: {e}", dir.display())))?;
        }
        let db = Database::create(path).map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(err)?;
        txn.open_table(TABLE).map_err(err)?;
        txn.commit().map_err(err)?;
        Ok(Self { db: Arc::new(db), calls: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_CALLS)) })
    }

    /// A database that lives in memory only (for tools that need a store but keep nothing).
    pub fn in_memory() -> Result<Self, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let txn = db.begin_write().map_err(err)?;
        txn.open_table(TABLE).map_err(err)?;
        txn.commit().map_err(err)?;
        Ok(Self { db: Arc::new(db), calls: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_CALLS)) })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        let _turn = self.calls.acquire().await.map_err(|e| StoreError::Backend(e.to_string()))?;
        tokio::task::spawn_blocking(move || f(&db)).await.map_err(|e| StoreError::Backend(e.to_string()))?
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_string();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_table(TABLE).map_err(err)?;
            let Some(value) = table.get(key.as_str()).map_err(err)? else { return Ok(None) };
            let bytes = value.value();
            let (expiry, data) =
                bytes.split_at_checked(8).ok_or_else(|| StoreError::Backend("corrupt entry".into()))?;
            let expiry = u64::from_be_bytes(expiry.try_into().unwrap_or([0; 8]));
            Ok((expiry == 0 || expiry > now_ms()).then(|| data.to_vec()))
        })
        .await
    }

    pub async fn set(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<(), StoreError> {
        let key = key.to_string();
        let expiry = ttl.map_or(0, |t| now_ms() + t.as_millis() as u64);
        self.blocking(move |db| {
            let mut stored = expiry.to_be_bytes().to_vec();
            stored.extend_from_slice(&value);
            let txn = db.begin_write().map_err(err)?;
            {
                let mut table = txn.open_table(TABLE).map_err(err)?;
                table.insert(key.as_str(), stored.as_slice()).map_err(err)?;
            }
            txn.commit().map_err(err)
        })
        .await
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_string();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(err)?;
            {
                let mut table = txn.open_table(TABLE).map_err(err)?;
                table.remove(key.as_str()).map_err(err)?;
            }
            txn.commit().map_err(err)
        })
        .await
    }
}

//! The embedded key-value backend: one redb file, values prefixed with their expiry time so
//! TTLs behave as in Redis. redb is synchronous, so calls run on the blocking pool, a few at
//! a time: a burst of players saving at once would otherwise start a blocking thread each.
//!
//! Writes are committed in groups: every write that arrives while a commit is on disk, or
//! within [`COMMIT_GAP`] of the last commit's start, goes into the next commit, together, and
//! each caller returns once its own write is durable. Each commit syncs the file and copies
//! the pages it changes, so one commit per write would cap a node at the disk's syncs per
//! second, and small groups spend most of a commit on that fixed cost (every playing player
//! saves its position twice a second).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redb::{Database, TableDefinition};
use tokio::sync::oneshot;

use super::StoreError;

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");

fn err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Backend(e.into().to_string())
}

/// Store calls on the blocking pool at once.
const CONCURRENT_CALLS: usize = 4;
/// The least time between the starts of two commits: a write waits at most this long for
/// others to join its commit (a lone write on a quiet store commits at once).
const COMMIT_GAP: Duration = Duration::from_millis(50);

/// A write waiting for the next commit: the key and its stored bytes (none removes it), and
/// who to tell once it is durable.
struct Write {
    key: String,
    stored: Option<Vec<u8>>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

#[derive(Default)]
struct Queue {
    writes: Vec<Write>,
    /// A committer task is running and will take what is queued.
    committing: bool,
    /// When the last commit started.
    last_commit: Option<tokio::time::Instant>,
}

#[derive(Clone)]
pub struct EmbeddedKv {
    db: Arc<Database>,
    calls: Arc<tokio::sync::Semaphore>,
    queue: Arc<Mutex<Queue>>,
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
        Ok(Self::around(db))
    }

    /// A database that lives in memory only (for tools that need a store but keep nothing).
    pub fn in_memory() -> Result<Self, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let txn = db.begin_write().map_err(err)?;
        txn.open_table(TABLE).map_err(err)?;
        txn.commit().map_err(err)?;
        Ok(Self::around(db))
    }

    fn around(db: Database) -> Self {
        Self { db: Arc::new(db), calls: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_CALLS)), queue: Arc::default() }
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
            Ok((expiry == 0 || expiry > crate::wall_clock::unix_ms()).then(|| data.to_vec()))
        })
        .await
    }

    pub async fn set(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<(), StoreError> {
        let expiry = ttl.map_or(0, |t| crate::wall_clock::unix_ms() + t.as_millis() as u64);
        let mut stored = expiry.to_be_bytes().to_vec();
        stored.extend_from_slice(&value);
        self.write(key, Some(stored)).await
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.write(key, None).await
    }

    /// Queues a write for the next commit, starting a committer when none runs, and waits
    /// until the commit that holds it is durable.
    async fn write(&self, key: &str, stored: Option<Vec<u8>>) -> Result<(), StoreError> {
        let (done, committed) = oneshot::channel();
        let start = {
            let mut queue = self.queue.lock();
            queue.writes.push(Write { key: key.to_string(), stored, done });
            !std::mem::replace(&mut queue.committing, true)
        };
        if start {
            let kv = self.clone();
            tokio::spawn(async move { kv.commit_all().await });
        }
        committed.await.map_err(|_| StoreError::Backend("the store's committer stopped".into()))?
    }

    /// Commits what is queued, one transaction at a time, until nothing is.
    async fn commit_all(&self) {
        loop {
            let last = self.queue.lock().last_commit;
            if let Some(last) = last {
                tokio::time::sleep_until(last + COMMIT_GAP).await;
            }
            let writes = {
                let mut queue = self.queue.lock();
                if queue.writes.is_empty() {
                    queue.committing = false;
                    return;
                }
                queue.last_commit = Some(tokio::time::Instant::now());
                std::mem::take(&mut queue.writes)
            };
            let changes: Vec<(String, Option<Vec<u8>>)> =
                writes.iter().map(|w| (w.key.clone(), w.stored.clone())).collect();
            // In order: a later write of a key wins, as if each had committed alone.
            let result = self
                .blocking(move |db| {
                    let txn = db.begin_write().map_err(err)?;
                    {
                        let mut table = txn.open_table(TABLE).map_err(err)?;
                        for (key, stored) in &changes {
                            match stored {
                                Some(bytes) => table.insert(key.as_str(), bytes.as_slice()).map(drop),
                                None => table.remove(key.as_str()).map(drop),
                            }
                            .map_err(err)?;
                        }
                    }
                    txn.commit().map_err(err)
                })
                .await;
            for write in writes {
                let _ = write.done.send(result.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_commits_and_each_reads_back() {
        let dir = tempfile::tempdir().expect("dir");
        let kv = EmbeddedKv::open(&dir.path().join("state.redb")).expect("open");
        let writes = (0..200u32).map(|i| {
            let kv = kv.clone();
            async move { kv.set(&format!("k{}", i % 50), i.to_be_bytes().to_vec(), None).await }
        });
        for result in futures_util::future::join_all(writes).await {
            result.expect("each write is durable when it returns");
        }
        // Each key holds its last write in order.
        for k in 0..50u32 {
            let last = (0..200u32).filter(|i| i % 50 == k).max().expect("a write");
            assert_eq!(kv.get(&format!("k{k}")).await.expect("read"), Some(last.to_be_bytes().to_vec()));
        }
        kv.delete("k0").await.expect("delete");
        assert_eq!(kv.get("k0").await.expect("read"), None);
    }
}

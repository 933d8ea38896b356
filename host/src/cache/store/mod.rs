//! The cache directory: complete, verified Ogg Opus files named by a hash of their key, an
//! in-memory index of them (rebuilt from the files at startup), and the fills in progress.
//!
//! A track asks [`AudioCache::plan`] what to do: play the cached file, follow a fill another
//! player already started (reading its file as it grows, page by complete page), fill the
//! cache itself while it plays, or just stream when the cache cannot be used. A fill is written to a private
//! temporary file and renamed into place only once it is complete and verifies, so nothing
//! that reads as complete is ever a partial download.

mod disk;
mod fills;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use sha2::Digest;

pub use fills::{FillFollower, FillNext, FillWriter};

use super::ogg_opus::{Index, OggOpusError, OggOpusReader, OggOpusWriter, verify};
use crate::telemetry::metrics::{CacheLabels, Metrics};
use disk::{Active, DiskJob, DiskOp, DiskWriter, FILL_IDS};

#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub dir: PathBuf,
    pub ttl: Duration,
    /// 0 turns the cache off.
    pub max_bytes: u64,
    pub writer_buffer: usize,
    pub reader_buffer: usize,
}

struct Entry {
    path: PathBuf,
    bytes: u64,
    last_played: SystemTime,
    /// The file as this process last verified it; unchanged since, it is not read again.
    checked: Option<Checked>,
}

/// A verified file's size and time, and what it holds.
#[derive(Clone, Copy, PartialEq)]
struct Checked {
    bytes: u64,
    modified: SystemTime,
    index: Index,
}

/// A file's size and modification time, as they are now.
fn stamp_of(path: &Path) -> Option<(u64, SystemTime)> {
    std::fs::metadata(path).ok().and_then(|m| Some((m.len(), m.modified().ok()?)))
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    fills: HashMap<String, Weak<Fill>>,
    /// Complete files and partial ones being written: what counts against the size cap.
    bytes: u64,
}

pub struct AudioCache {
    settings: CacheSettings,
    /// False when the directory could not be used; everything streams.
    usable: bool,
    state: Mutex<State>,
    metrics: Arc<Metrics>,
    /// The one thread that writes every fill to disk (see [`DiskWriter`]).
    disk: crossbeam_channel::Sender<DiskJob>,
}

/// What a track should do about the cache.
pub enum Plan {
    Hit(CachedTrack),
    Follow(FillFollower),
    Fill(FillWriter),
    Stream,
}

/// A complete cached file, opened and verified.
pub struct CachedTrack {
    pub index: Index,
    pub reader: OggOpusReader<BufReader<File>>,
}

/// A fill in progress, shared with every player that wants the same track: its file, and how
/// much of it readers may read.
struct Fill {
    partial: PathBuf,
    progress: Mutex<Progress>,
}

type Waker = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Progress {
    /// Packets on disk in complete pages: what a follower may read.
    durable: u64,
    /// Set when the fill ends: whether the whole track arrived.
    complete: Option<bool>,
    /// Followers that found nothing new, to be told when something is.
    waiting: Vec<Waker>,
}

impl Fill {
    /// Changes the progress and tells every waiting follower.
    fn update(&self, change: impl FnOnce(&mut Progress)) {
        let mut progress = self.progress.lock();
        change(&mut progress);
        let waiting = std::mem::take(&mut progress.waiting);
        drop(progress);
        waiting.into_iter().for_each(|wake| wake());
    }
}

/// The name a key's file goes by (without `.opus`): a hash, so any key is a safe file name.
fn stem_of(key: &str) -> String {
    sha2::Sha256::digest(key.as_bytes()).iter().take(16).map(|b| format!("{b:02x}")).collect()
}

impl AudioCache {
    /// Opens the directory and indexes what it holds by name, size and time (files are
    /// verified when they are next played, not here), dropping leftovers of interrupted
    /// fills and expired files. An unusable directory disables the cache.
    pub fn open(settings: CacheSettings, metrics: Arc<Metrics>) -> Arc<Self> {
        let usable = settings.max_bytes > 0 && Self::prepare(&settings.dir);
        let (disk, jobs) = crossbeam_channel::unbounded();
        let cache = Arc::new_cyclic(|cache: &Weak<Self>| {
            let writer = DiskWriter { cache: cache.clone(), active: HashMap::new() };
            let spawned = std::thread::Builder::new().name("cache-writer".into()).spawn(move || writer.run(&jobs));
            if let Err(e) = &spawned {
                tracing::error!(error = %e, "cannot start the cache writer; tracks stream without a cache");
            }
            Self { settings, usable: usable && spawned.is_ok(), state: Mutex::default(), metrics, disk }
        });
        cache.metrics.cache_disabled.set(i64::from(!cache.usable));
        if cache.usable {
            cache.index_directory();
        }
        cache
    }

    fn prepare(dir: &Path) -> bool {
        let probe = dir.join(".write-test");
        let writable = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&probe, b"ok"));
        let _ = std::fs::remove_file(&probe);
        match writable {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "audio cache directory unusable; tracks stream without a cache");
                false
            }
        }
    }

    fn index_directory(&self) {
        let Ok(files) = std::fs::read_dir(&self.settings.dir) else { return };
        let mut state = self.state.lock();
        for path in files.flatten().map(|e| e.path()) {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            if name.contains(".partial") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let Some(stem) = name.strip_suffix(".opus") else { continue };
            let meta = std::fs::metadata(&path).ok();
            let last_played = meta.as_ref().and_then(|m| m.modified().ok()).unwrap_or(SystemTime::UNIX_EPOCH);
            if self.expired(last_played) {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let bytes = meta.map_or(0, |m| m.len());
            state.bytes += bytes;
            state.entries.insert(stem.to_string(), Entry { path, bytes, last_played, checked: None });
        }
        self.evict(&mut state, None);
        tracing::info!(tracks = state.entries.len(), bytes = state.bytes, "audio cache indexed");
    }

    fn expired(&self, last_played: SystemTime) -> bool {
        SystemTime::now().duration_since(last_played).is_ok_and(|age| age > self.settings.ttl)
    }

    fn count(&self, outcome: &'static str) {
        self.metrics.cache_lookups.get_or_create(&CacheLabels { outcome }).inc();
    }

    /// The id `key`'s entry goes by: what on-demand listening names a cached track by.
    pub fn id_of(key: &str) -> String {
        stem_of(key)
    }

    /// The complete cached track with id `id`, opened for reading (verified the first time,
    /// as for playing); none when it is not cached. Reads the file: call from a blocking thread.
    pub fn open_by_id(&self, id: &str) -> Option<CachedTrack> {
        if !self.usable || id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut state = self.state.lock();
        let entry = state.entries.get(id)?;
        if self.expired(entry.last_played) {
            return None;
        }
        let path = entry.path.clone();
        let unchanged = entry.checked.filter(|c| stamp_of(&path) == Some((c.bytes, c.modified)));
        let track = self.open_track(&path, unchanged.map(|c| c.index))?;
        if let Some(entry) = state.entries.get_mut(id) {
            entry.checked = stamp_of(&path).map(|(bytes, modified)| Checked { bytes, modified, index: track.index });
        }
        Some(track)
    }

    /// Waits until `key` is cached, while a fill of it is under way; false when no fill is
    /// (any more) and the track is not cached, or after `limit`. Blocks: call from a blocking
    /// thread.
    pub fn wait_filled(&self, key: &str, limit: std::time::Duration) -> bool {
        let stem = stem_of(key);
        let deadline = std::time::Instant::now() + limit;
        loop {
            let fill = match self.fill_outcome(&stem) {
                Ok(cached) => return cached,
                Err(fill) => fill,
            };
            let (tx, rx) = std::sync::mpsc::channel();
            fill.progress.lock().waiting.push(Box::new(move || {
                let _ = tx.send(());
            }));
            // Looked at again now that the waker is in place, so no outcome is missed.
            if let Ok(cached) = self.fill_outcome(&stem) {
                return cached;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || rx.recv_timeout(left).is_err() {
                return false;
            }
        }
    }

    /// Whether `stem` is cached, once that is decided; the fill under way while it is not.
    fn fill_outcome(&self, stem: &str) -> Result<bool, Arc<Fill>> {
        let state = self.state.lock();
        if state.entries.contains_key(stem) {
            return Ok(true);
        }
        match state.fills.get(stem).and_then(Weak::upgrade) {
            Some(fill) => Err(fill),
            None => Ok(false),
        }
    }

    /// Whether `key` is cached or being filled (so its source need not be checked again).
    pub fn knows(&self, key: &str) -> bool {
        let stem = stem_of(key);
        let state = self.state.lock();
        state.entries.contains_key(&stem) || state.fills.get(&stem).is_some_and(|f| f.strong_count() > 0)
    }

    /// Decides how the track cached under `key` is played; `may_fill` is false for a track
    /// that does not start at its beginning (it cannot fill the cache). Opening and
    /// verifying a cached file reads it whole: call from a blocking thread.
    pub fn plan(self: &Arc<Self>, key: &str, may_fill: bool) -> Plan {
        if !self.usable {
            self.count("off");
            return Plan::Stream;
        }
        let stem = stem_of(key);
        let mut state = self.state.lock();
        if let Some(entry) = state.entries.get(&stem) {
            let path = entry.path.clone();
            let fresh = !self.expired(entry.last_played);
            let unchanged = entry.checked.filter(|c| stamp_of(&path) == Some((c.bytes, c.modified)));
            match fresh.then(|| self.open_track(&path, unchanged.map(|c| c.index))).flatten() {
                Some(track) => {
                    // The file's time is the last play, so the order survives a restart.
                    let now = SystemTime::now();
                    let _ = File::options().append(true).open(&path).and_then(|f| f.set_modified(now));
                    if let Some(entry) = state.entries.get_mut(&stem) {
                        entry.last_played = now;
                        entry.checked =
                            stamp_of(&path).map(|(bytes, modified)| Checked { bytes, modified, index: track.index });
                    }
                    self.count("hit");
                    return Plan::Hit(track);
                }
                None => {
                    self.count(if fresh { "corrupt" } else { "expired" });
                    tracing::warn!(key, path = %path.display(), fresh, "cached track discarded");
                    self.remove(&mut state, &stem);
                }
            }
        }
        if let Some(fill) = state.fills.get(&stem).and_then(Weak::upgrade) {
            let reader = File::open(&fill.partial)
                .map_err(OggOpusError::from)
                .and_then(|f| OggOpusReader::open(BufReader::with_capacity(self.settings.reader_buffer, f)));
            return match reader {
                Ok(reader) => {
                    self.count("follow");
                    Plan::Follow(FillFollower { fill, reader, next: 0, skip: 0, armed: Arc::default() })
                }
                Err(e) => {
                    // The fill ended this instant (its file renamed or removed).
                    tracing::debug!(key, error = %e, "cannot follow a fill; streaming");
                    self.count("miss");
                    Plan::Stream
                }
            };
        }
        self.count("miss");
        if !may_fill {
            return Plan::Stream;
        }
        let partial = self.settings.dir.join(format!("{stem}.partial.{}", uuid::Uuid::new_v4().simple()));
        let writer = File::create(&partial).map_err(|e| e.to_string()).and_then(|f| {
            let mut writer = OggOpusWriter::new(BufWriter::with_capacity(self.settings.writer_buffer, f), 0)
                .map_err(|e| e.to_string())?;
            // Followers open the file at once and read its headers.
            writer.flush().map_err(|e| e.to_string())?;
            Ok(writer)
        });
        let writer = match writer {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a cache fill; streaming");
                let _ = std::fs::remove_file(&partial);
                self.metrics.cache_fill_failures.inc();
                return Plan::Stream;
            }
        };
        let fill = Arc::new(Fill { partial: partial.clone(), progress: Mutex::default() });
        state.fills.insert(stem.clone(), Arc::downgrade(&fill));
        let id = FILL_IDS.fetch_add(1, Ordering::Relaxed);
        let start = Active { stem: stem.clone(), partial, writer, failed: None, written: 0, fill };
        let _ = self.disk.send(DiskJob { id, op: DiskOp::Start(Box::new(start)) });
        Plan::Fill(FillWriter { stem, id, disk: Some(self.disk.clone()), queued: Arc::default(), finished: false })
    }

    /// Opens a cached file, verifying it page by page unless `known` says what it holds (it
    /// was verified by this process and has not changed since).
    fn open_track(&self, path: &Path, known: Option<Index>) -> Option<CachedTrack> {
        let open = || File::open(path).map(|f| BufReader::with_capacity(self.settings.reader_buffer, f));
        let index = match known {
            Some(index) => index,
            None => verify(open().ok()?).ok()?,
        };
        let reader = OggOpusReader::open(open().ok()?).ok()?;
        Some(CachedTrack { index, reader })
    }

    fn remove(&self, state: &mut State, stem: &str) {
        if let Some(entry) = state.entries.remove(stem) {
            state.bytes -= entry.bytes;
            let _ = std::fs::remove_file(&entry.path);
            self.metrics.cache_bytes.set(state.bytes as i64);
        }
    }

    /// Removes the least recently played entries (never `keep`) until the size fits.
    fn evict(&self, state: &mut State, keep: Option<&str>) {
        while state.bytes > self.settings.max_bytes {
            let oldest = state
                .entries
                .iter()
                .filter(|(stem, _)| Some(stem.as_str()) != keep)
                .min_by_key(|(_, e)| e.last_played)
                .map(|(stem, _)| stem.clone());
            let Some(stem) = oldest else { break };
            self.remove(state, &stem);
            self.metrics.cache_evictions.inc();
        }
        self.metrics.cache_bytes.set(state.bytes as i64);
    }

    fn publish(&self, stem: &str, partial: &Path) -> Result<(), String> {
        let index = File::open(partial)
            .map_err(|e| e.to_string())
            .and_then(|f| verify(BufReader::new(f)).map_err(|e| e.to_string()))?;
        let path = self.settings.dir.join(format!("{stem}.opus"));
        std::fs::rename(partial, &path).map_err(|e| e.to_string())?;
        let stamp = stamp_of(&path);
        let bytes = stamp.map_or(0, |(bytes, _)| bytes);
        let checked = stamp.map(|(bytes, modified)| Checked { bytes, modified, index });
        let mut state = self.state.lock();
        self.remove(&mut state, stem);
        state.bytes += bytes;
        state.entries.insert(stem.to_string(), Entry { path, bytes, last_played: SystemTime::now(), checked });
        self.evict(&mut state, Some(stem));
        Ok(())
    }
}

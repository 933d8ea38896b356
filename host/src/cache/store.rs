//! The cache directory: complete, verified Ogg Opus files named by a hash of their key, an
//! in-memory index of them (rebuilt from the files at startup), and the fills in progress.
//!
//! A track asks [`AudioCache::plan`] what to do: play the cached file, follow a fill another
//! player already started (reading its file as it grows, page by complete page), fill the
//! cache itself while it plays, or just stream when the cache cannot be used. A fill is written to a private
//! temporary file and renamed into place only once it is complete and verifies, so nothing
//! that reads as complete is ever a partial download.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use sha2::Digest;

use super::ogg_opus::{Index, OggOpusError, OggOpusReader, OggOpusWriter, PACKETS_PER_PAGE, verify};
use crate::telemetry::metrics::{CacheLabels, Metrics};

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

/// Packets queued for a fill's disk writer (about 20 s at 20 ms): if the disk falls that
/// far behind, the fill is given up rather than holding up the track.
const DISK_QUEUE: usize = 1024;

static FILL_IDS: AtomicU64 = AtomicU64::new(0);

/// A fill being written: its file, what was written, and who follows it.
struct Active {
    stem: String,
    partial: PathBuf,
    writer: OggOpusWriter<BufWriter<File>>,
    failed: Option<String>,
    /// Bytes counted against the cap so far.
    written: u64,
    fill: Arc<Fill>,
}

enum DiskOp {
    Start(Box<Active>),
    Packet(Arc<[u8]>, Arc<AtomicUsize>),
    /// The track ended by itself: keep the file if it verifies.
    Finish,
    /// Cut off, cancelled or given up: drop the file.
    Abandon,
}

struct DiskJob {
    id: u64,
    op: DiskOp,
}

/// Writes every fill in progress on one thread, so the number of threads does not grow with
/// the tracks being cached and a slow or full disk never holds up playback. A partial file
/// counts against the size cap as it grows.
struct DiskWriter {
    cache: Weak<AudioCache>,
    active: HashMap<u64, Active>,
}

impl DiskWriter {
    fn run(mut self, jobs: &crossbeam_channel::Receiver<DiskJob>) {
        for DiskJob { id, op } in jobs {
            let Some(cache) = self.cache.upgrade() else { return };
            match op {
                DiskOp::Start(active) => {
                    self.active.insert(id, *active);
                }
                DiskOp::Packet(packet, queued) => {
                    queued.fetch_sub(1, Ordering::AcqRel);
                    if let Some(active) = self.active.get_mut(&id) {
                        cache.write(active, &packet);
                    }
                }
                DiskOp::Finish => {
                    if let Some(active) = self.active.remove(&id) {
                        cache.end_fill(active, true);
                    }
                }
                DiskOp::Abandon => {
                    if let Some(active) = self.active.remove(&id) {
                        cache.end_fill(active, false);
                    }
                }
            }
        }
    }
}

/// Bytes a packet takes in the file, counted against the cap as it is written (Ogg adds a
/// little per page; the file's real size replaces the count when it is kept).
fn packet_bytes(packet: &[u8]) -> u64 {
    packet.len() as u64 + 1
}

impl AudioCache {
    fn write(&self, active: &mut Active, packet: &[u8]) {
        if active.failed.is_some() {
            return;
        }
        let before = active.writer.written();
        if let Err(e) = active.writer.push(packet) {
            active.failed = Some(e.to_string());
            active.fill.update(|p| p.complete = Some(false));
            return;
        }
        let written = active.writer.written();
        if written != before && written.is_multiple_of(PACKETS_PER_PAGE as u64) {
            // A page just ended: followers may read up to it.
            if let Err(e) = active.writer.flush() {
                active.failed = Some(e.to_string());
                active.fill.update(|p| p.complete = Some(false));
                return;
            }
            active.fill.update(|p| p.durable = written);
        }
        let bytes = packet_bytes(packet);
        active.written += bytes;
        let mut state = self.state.lock();
        state.bytes += bytes;
        if state.bytes > self.settings.max_bytes {
            self.evict(&mut state, None);
        }
    }

    /// Keeps the file only if the track ended by itself, every packet was written and the
    /// file verifies; either way the fill stops counting as partial.
    fn end_fill(&self, active: Active, complete: bool) {
        let Active { stem, partial, writer, failed, written, fill } = active;
        self.state.lock().bytes -= written;
        let finished = match (complete, failed) {
            (false, _) => Err("the track did not play to its end".to_string()),
            (true, Some(e)) => Err(e),
            (true, None) => writer
                .finish()
                .map_err(|e| e.to_string())
                .and_then(|(buf, index)| Ok((buf.into_inner().map_err(|e| e.to_string())?, index)))
                .and_then(|(mut file, index)| {
                    file.flush().and_then(|()| file.sync_all()).map_err(|e| e.to_string())?;
                    Ok(index)
                }),
        };
        // Followers may read to the end before the file is checked and put in place.
        let kept = match finished {
            Ok(index) => {
                fill.update(|p| {
                    p.durable = index.packets;
                    p.complete = Some(true);
                });
                self.publish(&stem, &partial)
            }
            Err(e) => {
                fill.update(|p| p.complete = Some(false));
                Err(e)
            }
        };
        if let Err(e) = kept {
            tracing::debug!(stem, error = %e, "cache fill not kept");
            self.metrics.cache_fill_failures.inc();
            let _ = std::fs::remove_file(&partial);
        }
        let mut state = self.state.lock();
        if state.fills.get(&stem).is_some_and(|f| f.as_ptr() == Arc::as_ptr(&fill)) {
            state.fills.remove(&stem);
        }
        drop(state);
        // Whoever waits for the outcome (see `wait_filled`) looks again: the entry is in place
        // or the fill is gone.
        fill.update(|_| {});
    }
}

/// Feeds a fill while the track plays: its packets go to the disk writer through a queue;
/// followers read them from the file.
pub struct FillWriter {
    stem: String,
    id: u64,
    /// None once the disk writer fell behind: followers are still fed.
    disk: Option<crossbeam_channel::Sender<DiskJob>>,
    /// Packets sent to the disk writer and not yet written.
    queued: Arc<AtomicUsize>,
    finished: bool,
}

impl FillWriter {
    pub fn push(&mut self, packet: &[u8]) {
        let Some(disk) = &self.disk else { return };
        if self.queued.fetch_add(1, Ordering::AcqRel) >= DISK_QUEUE {
            // Followers are told the fill broke and stream for themselves.
            tracing::warn!(stem = %self.stem, "cache writer fell behind; this track will not be cached");
            let _ = disk.send(DiskJob { id: self.id, op: DiskOp::Abandon });
            self.disk = None;
        } else {
            let _ = disk.send(DiskJob { id: self.id, op: DiskOp::Packet(Arc::from(packet), self.queued.clone()) });
        }
    }

    /// The track ended by itself: the disk writer keeps the file if it verifies.
    pub fn finish(mut self) {
        self.finished = true;
        if let Some(disk) = self.disk.take() {
            let _ = disk.send(DiskJob { id: self.id, op: DiskOp::Finish });
        }
    }
}

impl Drop for FillWriter {
    fn drop(&mut self) {
        if !self.finished {
            // Cut off, cancelled or failed: the disk writer drops the file; followers are told.
            if let Some(disk) = self.disk.take() {
                let _ = disk.send(DiskJob { id: self.id, op: DiskOp::Abandon });
            }
        }
    }
}

/// What a follower found.
pub enum FillNext {
    Packet(Vec<u8>),
    /// Not there yet: the waker passed is called when it is.
    Pending,
    /// The end of a complete fill.
    End,
    /// The fill broke off.
    Broken(String),
}

/// Reads a fill in progress from its file, as it grows.
pub struct FillFollower {
    fill: Arc<Fill>,
    reader: OggOpusReader<BufReader<File>>,
    /// Packets read so far.
    next: u64,
    /// Packets to read past before playing (a start after the beginning).
    skip: u64,
    /// A waker of this follower's is waiting to be called: no need for another.
    armed: Arc<std::sync::atomic::AtomicBool>,
}

impl FillFollower {
    /// The next packet, or [`FillNext::Pending`] and `wake` called once there is more.
    pub fn poll_packet(&mut self, wake: impl FnOnce() + Send + 'static) -> FillNext {
        loop {
            let mut progress = self.fill.progress.lock();
            if self.next < progress.durable {
                drop(progress);
                match self.reader.next_packet() {
                    Ok(Some(packet)) => {
                        self.next += 1;
                        if self.next > self.skip {
                            return FillNext::Packet(packet);
                        }
                        continue;
                    }
                    Ok(None) => return FillNext::End,
                    Err(e) => return FillNext::Broken(format!("reading the shared fill: {e}")),
                }
            }
            return match progress.complete {
                Some(true) => FillNext::End,
                Some(false) => FillNext::Broken("the shared download of this track failed".into()),
                None => {
                    if !self.armed.swap(true, Ordering::AcqRel) {
                        let armed = self.armed.clone();
                        progress.waiting.push(Box::new(move || {
                            armed.store(false, Ordering::Release);
                            wake();
                        }));
                    }
                    FillNext::Pending
                }
            };
        }
    }

    /// Skips the packets before `ms`.
    pub fn skip_ms(&mut self, ms: u64) {
        self.skip = ms / 20;
    }
}

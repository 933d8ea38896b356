//! The cache's one disk-writer thread: every fill in progress is written here, so threads do
//! not grow with the tracks being cached and a slow or full disk never holds up playback.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use super::{AudioCache, Fill};
use crate::cache::ogg_opus::{OggOpusWriter, PACKETS_PER_PAGE};

/// Packets queued for a fill's disk writer (about 20 s at 20 ms): if the disk falls that
/// far behind, the fill is given up rather than holding up the track.
pub(super) const DISK_QUEUE: usize = 1024;

pub(super) static FILL_IDS: AtomicU64 = AtomicU64::new(0);

/// A fill being written: its file, what was written, and who follows it.
pub(super) struct Active {
    pub(super) stem: String,
    pub(super) partial: PathBuf,
    pub(super) writer: OggOpusWriter<BufWriter<File>>,
    pub(super) failed: Option<String>,
    /// Bytes counted against the cap so far.
    pub(super) written: u64,
    pub(super) fill: Arc<Fill>,
}

pub(super) enum DiskOp {
    Start(Box<Active>),
    Packet(Arc<[u8]>, Arc<AtomicUsize>),
    /// The track ended by itself: keep the file if it verifies.
    Finish,
    /// Cut off, cancelled or given up: drop the file.
    Abandon,
}

pub(super) struct DiskJob {
    pub(super) id: u64,
    pub(super) op: DiskOp,
}

/// Writes every fill in progress on one thread, so the number of threads does not grow with
/// the tracks being cached and a slow or full disk never holds up playback. A partial file
/// counts against the size cap as it grows.
pub(super) struct DiskWriter {
    pub(super) cache: Weak<AudioCache>,
    pub(super) active: HashMap<u64, Active>,
}

impl DiskWriter {
    pub(super) fn run(mut self, jobs: &crossbeam_channel::Receiver<DiskJob>) {
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

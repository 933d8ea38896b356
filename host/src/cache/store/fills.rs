//! The two ends of a fill: the writer a playing track feeds, and the followers that read
//! the file as it grows.

use std::fs::File;
use std::io::BufReader;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Fill;
use super::disk::{DISK_QUEUE, DiskJob, DiskOp};
use crate::cache::ogg_opus::OggOpusReader;

/// Feeds a fill while the track plays: its packets go to the disk writer through a queue;
/// followers read them from the file.
pub struct FillWriter {
    pub(super) stem: String,
    pub(super) id: u64,
    /// None once the disk writer fell behind: followers are still fed.
    pub(super) disk: Option<crossbeam_channel::Sender<DiskJob>>,
    /// Packets sent to the disk writer and not yet written.
    pub(super) queued: Arc<AtomicUsize>,
    pub(super) finished: bool,
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
    pub(super) fill: Arc<Fill>,
    pub(super) reader: OggOpusReader<BufReader<File>>,
    /// Packets read so far.
    pub(super) next: u64,
    /// Packets to read past before playing (a start after the beginning).
    pub(super) skip: u64,
    /// A waker of this follower's is waiting to be called: no need for another.
    pub(super) armed: Arc<std::sync::atomic::AtomicBool>,
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

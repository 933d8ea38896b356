//! Bytes on their way from the network or a program to a decoder. A task on the media
//! runtime receives them and queues them; the decoder reads them on a media worker. The
//! worker decodes only while enough is queued ([`Readiness::is_ready`]) and is woken when
//! more has arrived, so it does not wait on the network; a read that still finds nothing
//! waits in short slices (and is counted), so a cancelled track stops promptly.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

/// Queued bytes that make a source ready: more than a packet of the formats read takes
/// (FLAC's largest usual frames included), and no more than a second of a 128 kbps live
/// stream that sends no burst on connect takes to arrive.
pub const READY_BYTES: usize = 16 * 1024;

type Waker = Box<dyn Fn() + Send + Sync>;

/// How much is queued for a decoder, and who to tell when it becomes worth reading.
pub struct Readiness {
    bytes: AtomicUsize,
    chunks: AtomicUsize,
    /// The most chunks the queue holds: a full queue is ready whatever its size.
    capacity: usize,
    /// Which stream is current: a seek starts a new one, and the old one's news is ignored.
    stream: AtomicUsize,
    ended: AtomicBool,
    waiting: AtomicBool,
    waker: Mutex<Option<Waker>>,
    /// Reads that found nothing queued and had to wait.
    pub stalls: Counter,
}

impl Readiness {
    pub fn new(capacity: usize, stalls: Counter) -> Arc<Self> {
        Arc::new(Self {
            bytes: AtomicUsize::new(0),
            chunks: AtomicUsize::new(0),
            capacity: capacity.max(1),
            stream: AtomicUsize::new(0),
            ended: AtomicBool::new(false),
            waiting: AtomicBool::new(false),
            waker: Mutex::new(None),
            stalls,
        })
    }

    /// Whether a packet can be decoded without waiting on the source.
    pub fn is_ready(&self) -> bool {
        self.ended.load(Ordering::Acquire)
            || self.bytes.load(Ordering::Acquire) >= READY_BYTES
            || self.chunks.load(Ordering::Acquire) >= self.capacity
    }

    /// Asks to be told once ready. True when it already is (then nothing is told).
    pub fn notify_when_ready(&self, wake: impl Fn() + Send + Sync + 'static) -> bool {
        let mut waker = self.waker.lock();
        if waker.is_none() {
            *waker = Some(Box::new(wake));
        }
        drop(waker);
        self.waiting.store(true, Ordering::Release);
        if self.is_ready() {
            self.waiting.store(false, Ordering::Release);
            return true;
        }
        false
    }

    fn changed(&self) {
        if self.is_ready()
            && self.waiting.swap(false, Ordering::AcqRel)
            && let Some(wake) = self.waker.lock().as_ref()
        {
            wake();
        }
    }

    fn arrived(&self, bytes: usize) {
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
        self.chunks.fetch_add(1, Ordering::AcqRel);
        self.changed();
    }

    fn consumed(&self, bytes: usize) {
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.chunks.fetch_sub(1, Ordering::AcqRel);
    }

    fn end(&self) {
        self.ended.store(true, Ordering::Release);
        self.changed();
    }

    /// A new stream replaces the old one (a seek): nothing is queued yet.
    fn restart(&self) -> usize {
        self.bytes.store(0, Ordering::Release);
        self.chunks.store(0, Ordering::Release);
        self.ended.store(false, Ordering::Release);
        self.stream.fetch_add(1, Ordering::AcqRel) + 1
    }

    fn is_current(&self, stream: usize) -> bool {
        self.stream.load(Ordering::Acquire) == stream
    }
}

/// The receiving task's end: what it queues for the decoder.
pub struct InflowSender {
    tx: mpsc::Sender<Result<Bytes, String>>,
    readiness: Arc<Readiness>,
    stream: usize,
}

impl InflowSender {
    /// Queues bytes, waiting while the queue is full. False when the reader is gone.
    pub async fn send(&self, bytes: Bytes) -> bool {
        let n = bytes.len();
        let Ok(permit) = self.tx.reserve().await else { return false };
        permit.send(Ok(bytes));
        if self.readiness.is_current(self.stream) {
            self.readiness.arrived(n);
        }
        true
    }

    /// Ends the stream with an error.
    pub async fn fail(self, error: String) {
        if self.tx.send(Err(error)).await.is_ok() && self.readiness.is_current(self.stream) {
            self.readiness.arrived(0);
        }
    }

    /// Resolves once the reader is gone (the track stopped), so a quiet source is not
    /// waited on for nobody.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

impl Drop for InflowSender {
    fn drop(&mut self) {
        if self.readiness.is_current(self.stream) {
            self.readiness.end();
        }
    }
}

/// The decoder's end: a blocking [`io::Read`] that rarely has to block.
pub struct InflowReader {
    rx: mpsc::Receiver<Result<Bytes, String>>,
    chunk: Bytes,
    readiness: Arc<Readiness>,
    runtime: Handle,
    cancel: Arc<AtomicBool>,
}

/// A new queue of `capacity` chunks reporting to `readiness`.
pub fn channel(
    capacity: usize,
    readiness: &Arc<Readiness>,
    runtime: Handle,
    cancel: Arc<AtomicBool>,
) -> (InflowSender, InflowReader) {
    let stream = readiness.restart();
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (
        InflowSender { tx, readiness: readiness.clone(), stream },
        InflowReader { rx, chunk: Bytes::new(), readiness: readiness.clone(), runtime, cancel },
    )
}

impl InflowReader {
    pub fn readiness(&self) -> &Arc<Readiness> {
        &self.readiness
    }

    /// The next chunk; none at the end of the stream.
    fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        let item = match self.rx.try_recv() {
            Ok(item) => Some(item),
            Err(mpsc::error::TryRecvError::Disconnected) => None,
            Err(mpsc::error::TryRecvError::Empty) => {
                self.readiness.stalls.inc();
                loop {
                    if self.cancel.load(Ordering::Acquire) {
                        return Err(io::Error::new(io::ErrorKind::Interrupted, "track cancelled"));
                    }
                    let rx = &mut self.rx;
                    let wait = async { tokio::time::timeout(Duration::from_millis(100), rx.recv()).await };
                    match self.runtime.block_on(wait) {
                        Err(_) => continue,
                        Ok(item) => break item,
                    }
                }
            }
        };
        match item {
            None => Ok(None),
            Some(Ok(bytes)) => {
                self.readiness.consumed(bytes.len());
                Ok(Some(bytes))
            }
            Some(Err(e)) => {
                self.readiness.consumed(0);
                Err(io::Error::new(io::ErrorKind::ConnectionAborted, e))
            }
        }
    }

    /// Reads into `buf`: at most the current chunk, so a read returns what is there.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.next_chunk()? {
                Some(bytes) => self.chunk = bytes,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }

    /// Bytes already received and not read.
    pub fn buffered(&self) -> usize {
        self.chunk.len()
    }
}

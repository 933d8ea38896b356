//! A media stream pushed to the host rather than fetched: a program's stdout, a live source's
//! upload. A task on the media runtime receives the bytes and queues them (see `inflow`); a
//! media worker decodes them. Such a stream cannot seek and has no known length.

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use prometheus_client::metrics::counter::Counter;
use symphonia::core::io::MediaSource;
use tokio::runtime::Handle;

use super::inflow::{self, InflowReader, InflowSender, Readiness};

pub struct PushedStream {
    body: InflowReader,
}

impl PushedStream {
    /// A stream holding up to `chunks` received chunks ahead of its decoder, and the sender
    /// the receiving task queues them with.
    pub fn channel(chunks: usize, runtime: &Handle, cancel: Arc<AtomicBool>, stalls: Counter) -> (InflowSender, Self) {
        let readiness = Readiness::new(chunks, stalls);
        let (tx, body) = inflow::channel(chunks, &readiness, runtime.clone(), cancel);
        (tx, Self { body })
    }

    /// Whether the next packet can be decoded without waiting, and who to tell when it can.
    pub fn readiness(&self) -> Arc<Readiness> {
        self.body.readiness().clone()
    }
}

impl Read for PushedStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.body.read(buf).map_err(|e| match e.kind() {
            io::ErrorKind::ConnectionAborted => io::Error::other(e.to_string()),
            _ => e,
        })
    }
}

impl Seek for PushedStream {
    fn seek(&mut self, _: SeekFrom) -> io::Result<u64> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "a pushed stream cannot seek"))
    }
}

impl MediaSource for PushedStream {
    fn is_seekable(&self) -> bool {
        false
    }

    fn byte_len(&self) -> Option<u64> {
        None
    }
}

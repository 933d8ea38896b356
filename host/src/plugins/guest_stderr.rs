//! What a guest writes to stderr: Python's traceback, a JavaScript exception, a Rust panic
//! message. The last few KiB are kept per instance, so a call that fails can say what the
//! guest said before it did; nothing reaches the host's own stderr.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes kept: enough for a traceback's last frames and its message.
const KEEP: usize = 4096;

#[derive(Clone, Default)]
pub struct GuestStderr(Arc<Mutex<VecDeque<u8>>>);

impl GuestStderr {
    /// The last lines written, or none.
    pub fn tail(&self) -> Option<String> {
        let kept = self.0.lock();
        let (a, b) = kept.as_slices();
        let text = String::from_utf8_lossy(&[a, b].concat()).trim().to_string();
        // A cut line at the start is dropped.
        let text = if kept.len() >= KEEP {
            text.split_once('\n').map_or(text.clone(), |(_, rest)| rest.to_string())
        } else {
            text
        };
        (!text.is_empty()).then_some(text)
    }

    fn push(&self, bytes: &[u8]) {
        let mut kept = self.0.lock();
        kept.extend(bytes.iter().rev().take(KEEP).rev());
        let excess = kept.len().saturating_sub(KEEP);
        kept.drain(..excess);
    }
}

impl IsTerminal for GuestStderr {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStderr {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    // Calls run on the media workers, outside any async runtime: written at once.
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestStderr {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for GuestStderr {
    async fn ready(&mut self) {}
}

impl AsyncWrite for GuestStderr {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_lines_are_kept() {
        let stderr = GuestStderr::default();
        assert_eq!(stderr.tail(), None);
        stderr.push(b"Traceback (most recent call last):\n  File \"app.py\"\nValueError: boom\n");
        assert!(stderr.tail().is_some_and(|t| t.ends_with("ValueError: boom")));
        stderr.push(&vec![b'x'; KEEP * 2]);
        stderr.push(b"\nlast words");
        let tail = stderr.tail().unwrap_or_default();
        assert!(tail.len() < KEEP && tail.ends_with("last words"), "{tail}");
    }
}

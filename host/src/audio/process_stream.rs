//! A media stream read from a program's stdout (a resolver's `process` locator). A pump
//! thread moves stdout into a small channel so a cancelled track never waits on a quiet
//! program; dropping the source kills the program. A non-zero exit is an error carrying
//! the end of what the program wrote to stderr.

use std::io::{self, Read, Seek, SeekFrom};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, bounded};
use symphonia::core::io::MediaSource;

/// Chunks of stdout held ahead of the decoder.
const CHUNKS_AHEAD: usize = 16;
/// How much of stderr is kept for the error message.
const STDERR_TAIL: usize = 2048;

pub struct ProcessStream {
    program: String,
    child: Child,
    chunks: Receiver<io::Result<Vec<u8>>>,
    stderr: std::thread::JoinHandle<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
    cancel: Arc<AtomicBool>,
    ended: bool,
    /// The program's private directory, removed with the stream.
    _workdir: tempfile::TempDir,
}

impl ProcessStream {
    /// Starts `command` with stdout piped to the decoder; `workdir` lives as long as it.
    pub fn spawn(mut command: Command, workdir: tempfile::TempDir, cancel: Arc<AtomicBool>) -> io::Result<Self> {
        let program = command.get_program().to_string_lossy().into_owned();
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
            let _ = child.kill();
            return Err(io::Error::other("the program's output is not piped"));
        };
        let (tx, chunks) = bounded(CHUNKS_AHEAD);
        std::thread::Builder::new().name("process-stdout".into()).spawn(move || {
            loop {
                let mut buf = vec![0u8; 32 * 1024];
                let item = match stdout.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        buf.truncate(n);
                        Ok(buf)
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(e),
                };
                let failed = item.is_err();
                if tx.send(item).is_err() || failed {
                    return;
                }
            }
        })?;
        let stderr = std::thread::Builder::new().name("process-stderr".into()).spawn(move || {
            let mut tail = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                tail.extend_from_slice(&buf[..n]);
                let excess = tail.len().saturating_sub(STDERR_TAIL);
                tail.drain(..excess);
            }
            tail
        })?;
        Ok(Self { program, child, chunks, stderr, chunk: Vec::new(), at: 0, cancel, ended: false, _workdir: workdir })
    }

    /// After stdout closed: an error when the program failed.
    fn finish(&mut self) -> io::Result<()> {
        self.ended = true;
        let status = self.child.wait()?;
        if status.success() {
            return Ok(());
        }
        let stderr = std::mem::replace(&mut self.stderr, std::thread::spawn(Vec::new));
        let tail = stderr.join().unwrap_or_default();
        let tail = String::from_utf8_lossy(&tail);
        let line = tail.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
        Err(io::Error::other(format!("{} exited with {status}: {line}", self.program)))
    }
}

impl Read for ProcessStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            if self.ended {
                return Ok(0);
            }
            if self.cancel.load(Ordering::Acquire) {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "track cancelled"));
            }
            match self.chunks.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    self.finish()?;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Seek for ProcessStream {
    fn seek(&mut self, _: SeekFrom) -> io::Result<u64> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "a program's output cannot seek"))
    }
}

impl MediaSource for ProcessStream {
    fn is_seekable(&self) -> bool {
        false
    }

    fn byte_len(&self) -> Option<u64> {
        None
    }
}

impl Drop for ProcessStream {
    fn drop(&mut self) {
        if !self.ended {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

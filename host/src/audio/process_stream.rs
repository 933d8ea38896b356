//! A media stream read from a program's stdout (a resolver's `process` locator). Its output
//! is received on the media runtime (no thread per program) and read by a media worker
//! through the same queue as an HTTP body (see `inflow`). Dropping the stream kills the
//! program. A non-zero exit ends the stream with an error carrying the last line the program
//! wrote to stderr.

use std::io::{self, Read, Seek, SeekFrom};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use bytes::BytesMut;
use prometheus_client::metrics::counter::Counter;
use symphonia::core::io::MediaSource;
use tokio::io::AsyncReadExt;
use tokio::runtime::Handle;

use super::inflow::{self, InflowReader, Readiness};

/// Chunks of stdout held ahead of the decoder.
const CHUNKS_AHEAD: usize = 16;
/// Bytes asked of the pipe at a time.
const CHUNK: usize = 32 * 1024;
/// How much of stderr is kept for the error message.
const STDERR_TAIL: usize = 2048;

pub struct ProcessStream {
    body: InflowReader,
}

impl ProcessStream {
    /// Starts `command` with stdout piped to the decoder; `workdir` lives as long as the
    /// program runs.
    pub fn spawn(
        command: Command,
        workdir: tempfile::TempDir,
        runtime: &Handle,
        cancel: Arc<AtomicBool>,
        stalls: Counter,
    ) -> io::Result<Self> {
        let program = command.get_program().to_string_lossy().into_owned();
        let mut command = tokio::process::Command::from(command);
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        // Spawning registers the child with the runtime's reaper.
        let mut child = {
            let _entered = runtime.enter();
            command.spawn()?
        };
        let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(io::Error::other("the program's output is not piped"));
        };
        let readiness = Readiness::new(CHUNKS_AHEAD, stalls);
        let (tx, body) = inflow::channel(CHUNKS_AHEAD, &readiness, runtime.clone(), cancel);
        runtime.spawn(async move {
            let _workdir = workdir;
            let stderr_tail = tokio::spawn(async move {
                let mut tail = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = stderr.read(&mut buf).await {
                    tail.extend_from_slice(&buf[..n]);
                    let excess = tail.len().saturating_sub(STDERR_TAIL);
                    tail.drain(..excess);
                }
                tail
            });
            loop {
                let mut buf = BytesMut::with_capacity(CHUNK);
                let read = tokio::select! {
                    read = stdout.read_buf(&mut buf) => read,
                    // Nobody reads any more: the program is killed as the child drops.
                    () = tx.closed() => return,
                };
                match read {
                    Ok(0) => break,
                    Ok(_) => {
                        if !tx.send(buf.freeze()).await {
                            return;
                        }
                    }
                    Err(e) => return tx.fail(format!("reading {program}'s output: {e}")).await,
                }
            }
            match child.wait().await {
                Ok(status) if status.success() => {}
                Ok(status) => {
                    let tail = stderr_tail.await.unwrap_or_default();
                    let tail = String::from_utf8_lossy(&tail);
                    let line = tail.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
                    tx.fail(format!("{program} exited with {status}: {line}")).await;
                }
                Err(e) => tx.fail(format!("waiting for {program}: {e}")).await,
            }
        });
        Ok(Self { body })
    }

    /// Whether the next packet can be decoded without waiting, and who to tell when it can.
    pub fn readiness(&self) -> Arc<Readiness> {
        self.body.readiness().clone()
    }
}

impl Read for ProcessStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.body.read(buf).map_err(|e| match e.kind() {
            io::ErrorKind::ConnectionAborted => io::Error::other(e.to_string()),
            _ => e,
        })
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

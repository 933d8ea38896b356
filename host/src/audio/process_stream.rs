//! A media stream read from a program's stdout (a resolver's `process` locator). Its output
//! is received on the media runtime (no thread per program) and read by a media worker as a
//! pushed stream. Dropping the stream kills the program. A non-zero exit ends the stream with an error carrying the last line the program
//! wrote to stderr.

use std::io;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use bytes::BytesMut;
use prometheus_client::metrics::counter::Counter;
use tokio::io::AsyncReadExt;
use tokio::runtime::Handle;

use super::pushed::PushedStream;

/// Chunks of stdout held ahead of the decoder.
const CHUNKS_AHEAD: usize = 16;
/// Bytes asked of the pipe at a time.
const CHUNK: usize = 32 * 1024;
/// How much of stderr is kept for the error message.
const STDERR_TAIL: usize = 2048;

/// Starts `command` with stdout piped to the decoder; `workdir` lives as long as the
/// program runs.
pub fn spawn(
    command: Command,
    workdir: tempfile::TempDir,
    runtime: &Handle,
    cancel: Arc<AtomicBool>,
    stalls: Counter,
) -> io::Result<PushedStream> {
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
    let (tx, stream) = PushedStream::channel(CHUNKS_AHEAD, runtime, cancel, stalls);
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
    Ok(stream)
}

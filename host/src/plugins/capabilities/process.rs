//! `mesastream:plugin/process`: runs granted programs only, without a shell, with an empty
//! environment (PATH aside), closed stdin, a timeout and capped output.

use std::process::Stdio;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::{Capabilities, bounded};
use crate::plugins::engine::PluginState;
use crate::plugins::resolver::bindings::mesastream::plugin::process::{Error, Host, Output};

impl Host for PluginState {
    fn run(&mut self, program: String, args: Vec<String>, timeout_ms: Option<u32>) -> Result<Output, Error> {
        let Some(caps) = self.caps.clone() else {
            return Err(Error::Denied("process is not available to filters".into()));
        };
        self.in_host(|| run(&caps, &program, &args, timeout_ms))
    }
}

/// Whether `program` may be run by the plugin behind `caps`.
pub fn check(caps: &Capabilities, program: &str) -> Result<(), String> {
    if caps.grants.process.iter().any(|p| p == program) {
        Ok(())
    } else {
        Err(format!("program {program:?} is not granted"))
    }
}

/// A command for a granted program, as the process capability runs it.
pub fn command(program: &str, args: &[String]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(program);
    command.args(args).env_clear().stdin(Stdio::null()).kill_on_drop(true);
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command
}

fn run(caps: &Capabilities, program: &str, args: &[String], timeout_ms: Option<u32>) -> Result<Output, Error> {
    check(caps, program).map_err(Error::Denied)?;
    caps.services
        .metrics
        .plugin_process_runs
        .get_or_create(&crate::telemetry::metrics::ProcessLabels {
            plugin: caps.plugin_id.clone(),
            program: program.to_string(),
        })
        .inc();
    let timeout = bounded(timeout_ms, caps.limits.process_timeout);
    let cap = caps.limits.process_max_output;
    caps.services.runtime.block_on(async move {
        let mut child = command(program, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Failed(format!("cannot start {program}: {e}")))?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let work = async {
            let (out, err) = tokio::join!(read_capped(stdout, cap), read_capped(stderr, cap));
            let status = child.wait().await;
            (out, err, status)
        };
        match tokio::time::timeout(timeout, work).await {
            Err(_) => Err(Error::Timeout),
            Ok(((stdout, cut_out), (stderr, cut_err), status)) => {
                let status = status.map_err(|e| Error::Failed(e.to_string()))?;
                Ok(Output { status: status.code(), stdout, stderr, truncated: cut_out || cut_err })
            }
        }
    })
}

/// Reads everything, keeping at most `cap` bytes; the flag says whether some were dropped.
async fn read_capped(reader: Option<impl AsyncRead + Unpin>, cap: usize) -> (Vec<u8>, bool) {
    let Some(mut reader) = reader else { return (Vec::new(), false) };
    let mut kept = Vec::new();
    let mut cut = false;
    let mut buf = [0u8; 16 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return (kept, cut),
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                cut |= n > room;
            }
        }
    }
}

//! `mesastream:plugin/process`: runs granted programs only, without a shell, with an empty
//! environment (PATH aside), closed stdin, a timeout and capped output.

use std::process::Stdio;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::{Capabilities, bounded};
use crate::plugins::engine::PluginState;
use crate::plugins::grants::Grants;
use crate::plugins::resolver::bindings::mesastream::plugin::process::{Error, Host, Output};
use crate::telemetry::metrics::{Metrics, ProcessLabels};

impl Host for PluginState {
    fn run(&mut self, program: String, args: Vec<String>, timeout_ms: Option<u32>) -> Result<Output, Error> {
        let Some(caps) = self.caps.clone() else {
            return Err(Error::Denied("process is not available to filters".into()));
        };
        self.in_host(|| run(&caps, &program, &args, timeout_ms))
    }
}

/// Whether `program` may be run by a plugin with these grants.
pub fn check(grants: &Grants, program: &str) -> Result<(), String> {
    if grants.process.iter().any(|p| p == program) {
        Ok(())
    } else {
        Err(format!("program {program:?} is not granted"))
    }
}

/// A command for a granted program, as the process capability runs it: no shell, closed
/// stdin, an empty environment but PATH. Counts the run.
pub fn command(metrics: &Metrics, plugin: &str, program: &str, args: &[String]) -> std::process::Command {
    metrics
        .plugin_process_runs
        .get_or_create(&ProcessLabels { plugin: plugin.to_string(), program: program.to_string() })
        .inc();
    let mut command = std::process::Command::new(program);
    command.args(args).env_clear().stdin(Stdio::null());
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command
}

fn run(caps: &Capabilities, program: &str, args: &[String], timeout_ms: Option<u32>) -> Result<Output, Error> {
    check(&caps.grants, program).map_err(Error::Denied)?;
    let command = command(&caps.services.metrics, &caps.plugin_id, program, args);
    let timeout = bounded(timeout_ms, caps.limits.process_timeout);
    let cap = caps.limits.process_max_output;
    caps.services.runtime.block_on(async move {
        let mut child = tokio::process::Command::from(command)
            .kill_on_drop(true)
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

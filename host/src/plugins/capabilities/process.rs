//! `mesastream:plugin/process`: runs granted programs only, and confines each run: the
//! program's option policy is checked first; it runs without a shell, in a private working
//! directory removed afterwards, with a clean environment (PATH, HOME set to that directory,
//! and the guard proxy for its network), closed stdin, rlimits, a timeout, capped output and
//! a per-plugin cap on runs at once.

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::arguments;
use super::{Capabilities, Services, bounded};
use crate::plugins::engine::PluginState;
use crate::plugins::grants::{Grants, ProgramPolicy};
use crate::plugins::resolver::bindings::mesastream::plugin0_1_0::process::{Error, Host, Output};
use crate::telemetry::metrics::ProcessLabels;

/// RLIMIT defaults, for a program that downloads and streams media.
const CPU_SECONDS: u64 = 600;
const MEMORY_MB: u64 = 2048;
const FILE_SIZE_MB: u64 = 256;
/// Runs at once per plugin through `process.run`.
const CONCURRENCY: usize = 4;

impl Host for PluginState {
    fn run(&mut self, program: String, args: Vec<String>, timeout_ms: Option<u32>) -> Result<Output, Error> {
        let Some(caps) = self.caps.clone() else {
            return Err(Error::Denied("process is not available to filters".into()));
        };
        self.in_host(|| run(&caps, &program, &args, timeout_ms))
    }
}

/// A program ready to start, and the private directory it runs in (removed when dropped).
pub struct PreparedRun {
    pub command: std::process::Command,
    pub workdir: tempfile::TempDir,
}

/// Checks that `plugin` may run `program` with `args` and prepares the confined command.
/// A refusal is logged and counted, and its reason returned for the plugin.
pub fn prepare(
    services: &Services,
    grants: &Grants,
    plugin: &str,
    program: &str,
    args: &[String],
) -> Result<PreparedRun, String> {
    let labels = ProcessLabels { plugin: plugin.to_string(), program: program.to_string() };
    let refuse = |why: String| {
        tracing::warn!(plugin, program, reason = %why, "process run refused");
        services.metrics.plugin_process_refusals.get_or_create(&labels).inc();
        why
    };
    if !grants.grants_program(program) {
        return Err(refuse(format!("program {program:?} is not granted")));
    }
    let defaults = services.program_defaults.get(program).cloned().unwrap_or_default();
    let policy = grants.programs.get(program).map_or_else(|| defaults.clone(), |own| own.over(&defaults));
    arguments::builtin(program)
        .with(&policy.refuse_options, policy.allow_options.as_deref())
        .check(args)
        .map_err(&refuse)?;
    let workdir = tempfile::Builder::new()
        .prefix(&format!("mesastream-{plugin}-"))
        .tempdir()
        .map_err(|e| format!("cannot make a working directory: {e}"))?;
    let mut full_args = Vec::new();
    if let Some(cookies) = &policy.cookies {
        // A copy, so the program (which rewrites its cookie jar) never writes the original.
        let copy = workdir.path().join("cookies.txt");
        std::fs::copy(cookies, &copy).map_err(|e| format!("cannot read the cookies file: {e}"))?;
        full_args.extend(["--cookies".to_string(), copy.display().to_string()]);
    }
    full_args.extend(args.iter().cloned());
    services.metrics.plugin_process_runs.get_or_create(&labels).inc();

    let executable = policy.path.clone().unwrap_or_else(|| program.into());
    let mut command = std::process::Command::new(executable);
    command.args(full_args).env_clear().stdin(Stdio::null()).current_dir(workdir.path());
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command.env("HOME", workdir.path());
    for (name, value) in services.proxy_environment.iter() {
        command.env(name, value);
    }
    limit(&mut command, &policy);
    Ok(PreparedRun { command, workdir })
}

/// Sets the rlimits in the child between fork and exec.
fn limit(command: &mut std::process::Command, policy: &ProgramPolicy) {
    let cpu = policy.cpu_seconds.unwrap_or(CPU_SECONDS);
    let memory = policy.memory_mb.unwrap_or(MEMORY_MB).saturating_mul(1 << 20);
    let file_size = policy.file_size_mb.unwrap_or(FILE_SIZE_MB).saturating_mul(1 << 20);
    let processes = policy.processes;
    macro_rules! set {
        ($resource:expr, $value:expr) => {{
            let value = $value as libc::rlim_t;
            let limit = libc::rlimit { rlim_cur: value, rlim_max: value };
            if libc::setrlimit($resource, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }};
    }
    // SAFETY: the closure runs in the forked child before exec and only calls setrlimit,
    // which is async-signal-safe; it touches no memory shared with the parent.
    unsafe {
        command.pre_exec(move || {
            set!(libc::RLIMIT_CPU, cpu);
            set!(libc::RLIMIT_AS, memory);
            set!(libc::RLIMIT_FSIZE, file_size);
            if let Some(n) = processes {
                set!(libc::RLIMIT_NPROC, n);
            }
            Ok(())
        });
    }
}

/// One of a plugin's run slots, given back when dropped.
pub struct RunSlot {
    plugin: String,
    running: Arc<Mutex<HashMap<String, usize>>>,
}

impl RunSlot {
    fn take(running: &Arc<Mutex<HashMap<String, usize>>>, plugin: &str, cap: usize) -> Option<Self> {
        let mut counts = running.lock();
        let count = counts.entry(plugin.to_string()).or_insert(0);
        if *count >= cap {
            return None;
        }
        *count += 1;
        Some(Self { plugin: plugin.to_string(), running: running.clone() })
    }
}

impl Drop for RunSlot {
    fn drop(&mut self) {
        let mut counts = self.running.lock();
        if let Some(count) = counts.get_mut(&self.plugin) {
            *count = count.saturating_sub(1);
        }
    }
}

fn run(caps: &Capabilities, program: &str, args: &[String], timeout_ms: Option<u32>) -> Result<Output, Error> {
    let cap = caps.grants.limits.process_concurrency.unwrap_or(CONCURRENCY);
    let _slot = RunSlot::take(&caps.services.process_runs, &caps.plugin_id, cap).ok_or_else(|| {
        Error::Failed(format!("{} already runs {cap} programs at once (process-concurrency)", caps.plugin_id))
    })?;
    let prepared = prepare(&caps.services, &caps.grants, &caps.plugin_id, program, args).map_err(Error::Denied)?;
    let timeout = bounded(timeout_ms, caps.limits.process_timeout);
    let max = caps.limits.process_max_output;
    caps.services.runtime.block_on(async move {
        let PreparedRun { command, workdir } = prepared;
        let mut child = tokio::process::Command::from(command)
            .kill_on_drop(true)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Failed(format!("cannot start {program}: {e}")))?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let work = async {
            let (out, err) = tokio::join!(read_capped(stdout, max), read_capped(stderr, max));
            let status = child.wait().await;
            (out, err, status)
        };
        let outcome = match tokio::time::timeout(timeout, work).await {
            Err(_) => Err(Error::Timeout),
            Ok(((stdout, cut_out), (stderr, cut_err), status)) => {
                let status = status.map_err(|e| Error::Failed(e.to_string()))?;
                Ok(Output { status: status.code(), stdout, stderr, truncated: cut_out || cut_err })
            }
        };
        drop(workdir);
        outcome
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

//! The `mesastream` binary as its own process, for restarts, signals and startup checks.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::TOKEN;

/// A running server process; dropping it kills it (SIGKILL).
pub struct Process {
    pub child: Child,
    pub base: String,
    pub port: u16,
    _data: tempfile::TempDir,
}

impl Process {
    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill").args(["-TERM", &self.pid()]).status().expect("kill runs");
        assert!(sent.success());
        self.child.wait().expect("server exits")
    }
}

/// A number from `/proc/<pid>/status` (`pid` may be `self`): `VmRSS:` in KiB, `Threads:` a
/// count; 0 when the process or the field is gone.
pub fn status_field(pid: &str, name: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// What `/proc/<pid>` says of a process: CPU time used (user and system), RSS in bytes,
/// threads.
pub struct Usage {
    pub cpu: std::time::Duration,
    pub rss: u64,
    pub threads: u64,
}

pub fn usage(pid: &str) -> Usage {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    Usage { cpu: stat_cpu(&stat), rss: status_field(pid, "VmRSS:") * 1024, threads: status_field(pid, "Threads:") }
}

/// CPU time (user and system) in a `/proc/…/stat` line.
fn stat_cpu(stat: &str) -> std::time::Duration {
    // Fields after the command (which may hold spaces): utime and stime are 14th and 15th.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    std::time::Duration::from_secs_f64((ticks(11) + ticks(12)) as f64 / 100.0)
}

/// CPU time each of a process's threads used, summed by thread name without its number
/// (`packet-clock-0` and `packet-clock-1` are `packet-clock`).
pub fn cpu_by_thread(pid: &str) -> std::collections::BTreeMap<String, std::time::Duration> {
    let mut by_name = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return by_name };
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let Some((head, _)) = stat.rsplit_once(')') else { continue };
        let name =
            head.split_once('(').map_or("", |(_, n)| n).trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
        *by_name.entry(name.to_string()).or_default() += stat_cpu(&stat);
    }
    by_name
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// The binary with the test token, a private data directory unless `env` names one, and `env`.
pub fn command(env: &[(&str, String)]) -> (Command, tempfile::TempDir) {
    command_at(std::path::Path::new(env!("CARGO_BIN_EXE_mesastream")), env)
}

/// The same for the binary at `exe`.
pub fn command_at(exe: &std::path::Path, env: &[(&str, String)]) -> (Command, tempfile::TempDir) {
    let data = tempfile::tempdir().expect("data dir");
    let mut cmd = Command::new(exe);
    cmd.env("AUTH_TOKEN", TOKEN).env("BIND_ADDRESS", "127.0.0.1").env("RUST_LOG", "warn").env("DATA_DIR", data.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    (cmd, data)
}

/// Starts the server on a free port and returns once `/health` answers.
pub async fn spawn_server(env: &[(&str, String)]) -> Process {
    spawn_at(std::path::Path::new(env!("CARGO_BIN_EXE_mesastream")), env).await
}

/// The same for the binary at `exe`.
pub async fn spawn_at(exe: &std::path::Path, env: &[(&str, String)]) -> Process {
    let port = free_port();
    let (mut cmd, data) = command_at(exe, env);
    let child = cmd
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("server binary");
    let process = Process { child, base: format!("http://127.0.0.1:{port}"), port, _data: data };
    let client = reqwest::Client::new();
    // Polls until the process accepts connections (it has no readiness signal of its own).
    for _ in 0..400 {
        if client.get(format!("{}/health", process.base)).bearer_auth(TOKEN).send().await.is_ok() {
            return process;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("server did not start");
}

//! Hot reload: the plugins directory is checked on an interval (which works on every file
//! system, container volumes included) and what changed is loaded while the host runs.
//! Tracks pick the new version up at their next frame (see `audio::filter_chain`).

use std::sync::Arc;

use super::{Change, PluginHost};

/// Scans every `reload_interval` on its own thread (loading compiles, which is slow) and
/// passes what changed to `report`. Does nothing when the interval is zero.
pub fn spawn_watcher(host: &Arc<PluginHost>, report: impl Fn(Vec<Change>) + Send + 'static) {
    let interval = host.settings().reload_interval;
    if interval.is_zero() || host.settings().dir.is_none() {
        return;
    }
    let weak = Arc::downgrade(host);
    let spawned = std::thread::Builder::new().name("plugin-watch".into()).spawn(move || {
        crate::voice::scheduler::set_thread_nice(super::engine::COMPILE_NICE);
        loop {
            std::thread::sleep(interval);
            let Some(host) = weak.upgrade() else { return };
            let changes = host.scan();
            drop(host);
            if !changes.is_empty() {
                report(changes);
            }
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the plugin watcher; plugins will not reload");
    }
}

//! A live mount: where a source client's audio comes in. The mount decodes and encodes its
//! source once, on the packet clock, and records one packet a tick for every player following
//! it and everyone listening to it. Between sources it records silence, so a source that
//! reconnects within the grace period continues the same track for its followers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::audio::TrackFrames;
use crate::audio::frames::Taken;
use crate::audio::live_follow::LiveFeed;
use crate::audio::recording::Recording;
use crate::voice::{OPUS_SILENCE, TickOutcome, Tickable};

/// Frames a new source has ready before it goes on air: a little slack for the network.
const START_FRAMES: usize = 3;
/// Frames asked of the source's decoder beyond those taken.
const ASK_AHEAD: u64 = 3;

/// What is kept of a mount across restarts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountSettings {
    pub name: String,
    /// SHA-256 of the source key (the key itself is shown once, when made).
    pub key_digest: String,
    /// A source is cut off after this long on air.
    #[serde(default)]
    pub max_duration_secs: Option<u64>,
    /// The formats a source may send (`mp3`, `aac`, `ogg`, `flac`); empty: any.
    #[serde(default)]
    pub formats: Vec<String>,
    pub created_at: u64,
}

/// The source on air.
struct OnAir {
    session: u64,
    frames: TrackFrames,
    /// Frames taken from the source so far.
    taken: u64,
    /// Whether its first frames were ready and it is being recorded.
    started: bool,
    stop: Arc<Notify>,
    content_type: Option<String>,
    stream_name: Option<String>,
    since: u64,
}

impl Drop for OnAir {
    fn drop(&mut self) {
        // Its work stops; its connection sees the decoder gone.
        self.frames.ring.close();
    }
}

pub struct Mount {
    pub name: Arc<str>,
    /// `live:{name}`: what a player's queue calls it.
    track_name: String,
    settings: Mutex<MountSettings>,
    recording: Arc<Recording>,
    on_air: Mutex<Option<OnAir>>,
    /// The last tick a source was connected.
    last_on_air: AtomicU64,
    grace_ticks: u64,
    removed: AtomicBool,
    title: Mutex<Option<Arc<str>>>,
    sessions: AtomicU64,
    /// Why the last source's stream ended, when it failed.
    last_failure: Mutex<Option<String>>,
    pub bytes_in: AtomicU64,
    underruns: Counter,
}

/// A connected source's hold on its mount: dropping it takes the source off air.
pub struct SourceSession {
    mount: Arc<Mount>,
    id: u64,
    /// Told when the source must go (replaced by another, or the mount removed).
    pub stop: Arc<Notify>,
}

impl Drop for SourceSession {
    fn drop(&mut self) {
        let mut on_air = self.mount.on_air.lock();
        if on_air.as_ref().is_some_and(|a| a.session == self.id) {
            *on_air = None;
        }
    }
}

/// What the API shows of a mount (never its key).
#[derive(Debug, Clone, Serialize)]
pub struct MountView {
    pub name: String,
    /// Whether a source is connected.
    pub live: bool,
    pub content_type: Option<String>,
    /// The source's stream name (`ice-name`), when it sent one.
    pub stream_name: Option<String>,
    /// When the current source connected (Unix seconds).
    pub live_since: Option<u64>,
    pub title: Option<String>,
    pub bytes_in: u64,
    pub max_duration_secs: Option<u64>,
    pub formats: Vec<String>,
    pub created_at: u64,
    /// Where a source client sends to (the API port; `INGEST_PORT` takes `/{name}` too).
    pub ingest_path: String,
    pub listen_path: String,
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Mount {
    pub fn new(settings: MountSettings, recording: Arc<Recording>, grace_ticks: u64, underruns: Counter) -> Self {
        let name: Arc<str> = settings.name.as_str().into();
        Self {
            track_name: format!("live:{name}"),
            name,
            settings: Mutex::new(settings),
            recording,
            on_air: Mutex::new(None),
            last_on_air: AtomicU64::new(0),
            grace_ticks,
            removed: AtomicBool::new(false),
            title: Mutex::new(None),
            sessions: AtomicU64::new(0),
            last_failure: Mutex::new(None),
            bytes_in: AtomicU64::new(0),
            underruns,
        }
    }

    pub fn settings(&self) -> MountSettings {
        self.settings.lock().clone()
    }

    pub fn set_key_digest(&self, digest: String) {
        self.settings.lock().key_digest = digest;
    }

    pub fn recording(&self) -> &Arc<Recording> {
        &self.recording
    }

    /// Puts a source's frames on air, taking over from a source still connected (told to go).
    /// True when one was replaced.
    pub fn go_on_air(
        self: &Arc<Self>,
        frames: TrackFrames,
        content_type: Option<String>,
        stream_name: Option<String>,
    ) -> (SourceSession, bool) {
        let id = self.sessions.fetch_add(1, Ordering::AcqRel) + 1;
        let stop = Arc::new(Notify::new());
        let air = OnAir {
            session: id,
            frames,
            taken: 0,
            started: false,
            stop: stop.clone(),
            content_type,
            stream_name,
            since: unix_now(),
        };
        *self.last_failure.lock() = None;
        let old = self.on_air.lock().replace(air);
        let replaced = old.is_some();
        if let Some(old) = old {
            old.stop.notify_one();
        }
        (SourceSession { mount: self.clone(), id, stop }, replaced)
    }

    /// Why the last source's stream ended early, if it did.
    pub fn last_failure(&self) -> Option<String> {
        self.last_failure.lock().clone()
    }

    /// The title listeners and followers see from now on.
    pub fn set_title(&self, title: &str) {
        let title: Arc<str> = title.into();
        self.recording.mark_title(self.recording.end(), title.clone());
        *self.title.lock() = Some(title);
    }

    pub fn title(&self) -> Option<Arc<str>> {
        self.title.lock().clone()
    }

    /// Removed through the API: the source is told to go, followers end, listeners finish.
    pub fn remove(&self) {
        self.removed.store(true, Ordering::Release);
        if let Some(air) = self.on_air.lock().take() {
            air.stop.notify_one();
        }
        self.recording.close();
    }

    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    pub fn view(&self) -> MountView {
        let settings = self.settings();
        let on_air = self.on_air.lock();
        let air = on_air.as_ref();
        MountView {
            live: air.is_some(),
            content_type: air.and_then(|a| a.content_type.clone()),
            stream_name: air.and_then(|a| a.stream_name.clone()),
            live_since: air.map(|a| a.since),
            title: self.title().map(|t| t.to_string()),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            max_duration_secs: settings.max_duration_secs,
            formats: settings.formats,
            created_at: settings.created_at,
            ingest_path: format!("/live/{}", self.name),
            listen_path: format!("/live/{}/listen", self.name),
            name: settings.name,
        }
    }

    /// The next packet of the source on air, if it has one ready; its stream's end takes it
    /// off air.
    fn take_frame(air: &mut Option<OnAir>, failure: &Mutex<Option<String>>) -> Option<Vec<u8>> {
        let current = air.as_mut()?;
        let ring = &current.frames.ring;
        ring.ask_up_to(current.taken + ASK_AHEAD);
        if !current.started {
            if ring.ready() < START_FRAMES {
                return None;
            }
            current.started = true;
        }
        match ring.take() {
            Taken::Audio(packet) => {
                current.taken += 1;
                Some(packet)
            }
            Taken::Empty => None,
            Taken::End(result) => {
                if let Err(e) = result {
                    *failure.lock() = Some(e);
                }
                // The source's connection sees its reader gone and closes.
                if let Some(gone) = air.take() {
                    gone.stop.notify_one();
                }
                None
            }
        }
    }
}

impl Tickable for Mount {
    fn on_tick(&self, tick: u64, retry: bool) -> TickOutcome {
        let Some(mut on_air) = self.on_air.try_lock() else {
            if !retry {
                return TickOutcome::Retry;
            }
            self.recording.record(tick, &OPUS_SILENCE);
            return TickOutcome::Done;
        };
        if on_air.is_some() {
            self.last_on_air.store(tick, Ordering::Release);
        }
        let started = on_air.as_ref().is_some_and(|a| a.started);
        match Self::take_frame(&mut on_air, &self.last_failure) {
            Some(packet) => {
                self.recording.record(tick, &packet);
                if let Some(air) = on_air.as_ref() {
                    air.frames.ring.recycle(packet);
                }
            }
            None => {
                if started && on_air.is_some() {
                    self.underruns.inc();
                }
                self.recording.record(tick, &OPUS_SILENCE);
            }
        }
        TickOutcome::Done
    }
}

impl LiveFeed for Mount {
    fn name(&self) -> &str {
        &self.track_name
    }

    fn recording(&self) -> &Arc<Recording> {
        &self.recording
    }

    fn over(&self, started: u64, end: u64) -> Option<String> {
        if self.removed.load(Ordering::Acquire) || self.recording.is_closed() {
            return Some(format!("{} was removed", self.track_name));
        }
        let since = self.last_on_air.load(Ordering::Acquire).max(started);
        let away = end.saturating_sub(since);
        (away > self.grace_ticks).then(|| {
            let failure = self.last_failure().map(|e| format!(" (its stream failed: {e})")).unwrap_or_default();
            format!("the source of {} has been away for over {} s{failure}", self.track_name, self.grace_ticks / 50)
        })
    }
}

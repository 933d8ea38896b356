//! A live mount: where a source client's audio comes in. The mount decodes and encodes its
//! source once, on the packet clock, and records one packet a tick for every player following
//! it and everyone listening to it. Between sources it records silence, so a source that
//! reconnects within the grace period continues the same track for its followers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::stop_reason::SourceStop;

mod on_air;
use crate::audio::TrackFrames;
use crate::audio::encode::{EncoderSettings, OpusEncoder};
use crate::audio::frames::Taken;
use crate::audio::live_follow::LiveFeed;
use crate::audio::opus_packets::PacketDecoder;
use crate::audio::recording::Recording;

/// Frames a new source has ready before it goes on air (200 ms): slack for the network and
/// for a busy media worker, so a moment's delay in decoding is not heard as a gap.
const START_FRAMES: usize = 10;
/// Frames over which one stage DJ hands over to the next (100 ms): both are heard, the one
/// fading out while the other fades in.
pub const CROSSFADE_FRAMES: u32 = 5;
/// Frames asked of the source's decoder beyond those taken: the start's slack, kept.
const ASK_AHEAD: u64 = START_FRAMES as u64;

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
    /// A stage's mount: its DJs take turns (see `stage`), and followers wait through the
    /// gaps between them however long.
    #[serde(default)]
    pub stage: bool,
    pub created_at: u64,
}

/// A connected source: on air, or (on a stage) waiting its turn, decoded all the same so its
/// audio is current when its turn comes.
struct OnAir {
    session: u64,
    frames: TrackFrames,
    /// Frames taken from the source so far.
    taken: u64,
    /// Whether its first frames were ready and it is being recorded.
    started: bool,
    stop: Arc<Notify>,
    /// Why it was told to go.
    reason: Arc<Mutex<Option<SourceStop>>>,
    /// Its recent packets (no codec state until a crossfade needs its PCM).
    decoder: PacketDecoder,
    content_type: Option<String>,
    stream_name: Option<String>,
    since: u64,
}

impl OnAir {
    fn tell_to_go(&self, reason: SourceStop) {
        self.reason.lock().get_or_insert(reason);
        self.stop.notify_one();
    }
}

/// The sources connected to a mount, and which one is recorded.
#[derive(Default)]
struct Sources {
    connected: Vec<OnAir>,
    current: Option<u64>,
    /// The tick at which the current source goes off (a stage's slot end).
    until_tick: Option<u64>,
    /// Who takes over then, when ready.
    next: Option<u64>,
    fade: Option<Fade>,
    /// Recorded while no source is current (a stage's fallback track).
    fallback: Option<u64>,
}

/// A handover in progress: `from` fades out under the current source.
struct Fade {
    from: u64,
    done: u32,
    /// Made for the handover (a mount that never hands over holds none).
    encoder: Option<OpusEncoder>,
    /// Why `from` goes once the fade is over, if it was told to go meanwhile.
    then_stop: Option<SourceStop>,
}

impl Sources {
    fn current(&self) -> Option<&OnAir> {
        let id = self.current?;
        self.connected.iter().find(|a| a.session == id)
    }

    fn is_started(&self, session: u64) -> bool {
        self.connected.iter().any(|a| a.session == session && a.started)
    }

    /// Takes a source off the mount (and off air).
    fn detach(&mut self, session: u64) -> Option<OnAir> {
        if self.current == Some(session) {
            self.current = None;
        }
        let at = self.connected.iter().position(|a| a.session == session)?;
        Some(self.connected.swap_remove(at))
    }

    /// Takes a source off and tells it why.
    fn remove(&mut self, session: u64, reason: SourceStop) {
        if let Some(gone) = self.detach(session) {
            gone.tell_to_go(reason);
        }
    }
}

/// What a source had for one tick.
enum Frame {
    Packet(Vec<u8>),
    Nothing,
    Ended(Result<(), String>),
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
    sources: Mutex<Sources>,
    /// Told when the current source's time is up (a stage's slot ended on the clock).
    pub slot_over: Arc<Notify>,
    /// How a handover is encoded, and where its decodes are counted.
    encoder: EncoderSettings,
    decodes: Counter,
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
    /// Told when the source must go (replaced by another, its turn over, the mount removed).
    pub stop: Arc<Notify>,
    reason: Arc<Mutex<Option<SourceStop>>>,
}

impl SourceSession {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Why the source was told to go, once it was.
    pub fn reason(&self) -> Option<SourceStop> {
        self.reason.lock().clone()
    }
}

impl Drop for SourceSession {
    fn drop(&mut self) {
        self.mount.sources.lock().detach(self.id);
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

/// What a mount counts, and how it encodes a handover.
pub struct MountCounters {
    pub underruns: Counter,
    pub encoder: EncoderSettings,
    pub decodes: Counter,
}

impl Mount {
    pub fn new(settings: MountSettings, recording: Arc<Recording>, grace_ticks: u64, counters: MountCounters) -> Self {
        let name: Arc<str> = settings.name.as_str().into();
        Self {
            track_name: format!("live:{name}"),
            name,
            settings: Mutex::new(settings),
            recording,
            sources: Mutex::default(),
            slot_over: Arc::new(Notify::new()),
            last_on_air: AtomicU64::new(0),
            grace_ticks,
            removed: AtomicBool::new(false),
            title: Mutex::new(None),
            sessions: AtomicU64::new(0),
            last_failure: Mutex::new(None),
            bytes_in: AtomicU64::new(0),
            underruns: counters.underruns,
            encoder: counters.encoder,
            decodes: counters.decodes,
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

    /// Connects a source's frames. `exclusive` (a plain mount): it goes on air at once, taking
    /// over from any source still connected (told to go; true is returned then). Otherwise (a
    /// stage) it waits until [`Self::put_on_air`] names it.
    pub fn connect(
        self: &Arc<Self>,
        frames: TrackFrames,
        content_type: Option<String>,
        stream_name: Option<String>,
        exclusive: bool,
    ) -> (SourceSession, bool) {
        let id = self.sessions.fetch_add(1, Ordering::AcqRel) + 1;
        let stop = Arc::new(Notify::new());
        let reason = Arc::new(Mutex::new(None));
        let air = OnAir {
            session: id,
            frames,
            taken: 0,
            started: false,
            stop: stop.clone(),
            reason: reason.clone(),
            decoder: PacketDecoder::counted(self.decodes.clone()),
            content_type,
            stream_name,
            since: crate::wall_clock::unix_secs(),
        };
        let mut sources = self.sources.lock();
        let mut replaced = false;
        if exclusive {
            *self.last_failure.lock() = None;
            for old in sources.connected.drain(..) {
                old.tell_to_go(SourceStop::Replaced);
                replaced = true;
            }
            sources.current = Some(id);
            sources.until_tick = None;
        }
        sources.connected.push(air);
        drop(sources);
        (SourceSession { mount: self.clone(), id, stop, reason }, replaced)
    }

    /// Records source `session` from the next tick (none: silence) until tick `until`; then
    /// `next` takes over with a crossfade when it is ready, and [`Self::slot_over`] is told.
    pub fn put_on_air(&self, session: Option<u64>, until: Option<u64>, next: Option<u64>) {
        let mut sources = self.sources.lock();
        sources.current = session;
        sources.until_tick = until;
        sources.next = next;
    }

    /// Whether source `session` has its first frames decoded (a turn given now is heard now).
    pub fn is_ready(&self, session: u64) -> bool {
        self.sources.lock().is_started(session)
    }

    /// The source recorded while none is current (a stage's fallback).
    pub fn set_fallback(&self, session: Option<u64>) {
        self.sources.lock().fallback = session;
    }

    /// Whether source `session` is still connected (its stream has not ended).
    pub fn is_connected(&self, session: u64) -> bool {
        self.sources.lock().connected.iter().any(|a| a.session == session)
    }

    /// Tells a connected source to go, saying why (once it has faded out, when it is).
    pub fn stop_source(&self, session: u64, reason: SourceStop) {
        let mut sources = self.sources.lock();
        if let Some(fade) = sources.fade.as_mut().filter(|f| f.from == session) {
            fade.then_stop = Some(reason.clone());
            return;
        }
        sources.remove(session, reason);
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
        let mut sources = self.sources.lock();
        for air in sources.connected.drain(..) {
            air.tell_to_go(SourceStop::Removed);
        }
        sources.current = None;
        drop(sources);
        self.recording.close();
    }

    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    pub fn view(&self) -> MountView {
        let settings = self.settings();
        let sources = self.sources.lock();
        let air = sources.current();
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

    /// The next packet of a connected source, if it has one ready.
    fn take_frame(air: &mut OnAir) -> Frame {
        let ring = &air.frames.ring;
        ring.ask_up_to(air.taken + ASK_AHEAD);
        if !air.started {
            if ring.ready() < START_FRAMES {
                return Frame::Nothing;
            }
            air.started = true;
        }
        match ring.take() {
            Taken::Audio(packet) => {
                air.taken += 1;
                Frame::Packet(packet)
            }
            Taken::Empty => Frame::Nothing,
            Taken::End(result) => Frame::Ended(result),
        }
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
        if self.settings.lock().stage {
            return None;
        }
        let since = self.last_on_air.load(Ordering::Acquire).max(started);
        let away = end.saturating_sub(since);
        (away > self.grace_ticks).then(|| {
            let failure = self.last_failure().map(|e| format!(" (its stream failed: {e})")).unwrap_or_default();
            format!("the source of {} has been away for over {} s{failure}", self.track_name, self.grace_ticks / 50)
        })
    }
}

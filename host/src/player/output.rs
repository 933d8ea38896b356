//! Where a player meets the packet clock. Each tick it sends the frames that are due on its
//! RTP schedule through the current voice connection; when audio stops it sends five silence
//! frames and stops speaking. It never blocks the clock: a frame that cannot go out now (E2EE
//! state busy, decoder a little behind) keeps its timestamp and goes out on a later tick, a
//! few per tick, so listeners get every frame in order; only a player more than half a second
//! behind skips ahead. A frame without an E2EE key is never sent in the clear: it waits.
//! Each tick it asks the track's work for the frames it owes and one more, so encoding runs
//! just ahead of the clock and a volume or filter change is heard on the next frame.
//! Passed-through packets are already in the track's ring: the clock reads them itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, watch};

use crate::audio::TrackFrames;
use crate::audio::frames::Taken;
use crate::audio::pipeline::START_FRAMES;
use crate::audio::recording::Recording;
use crate::voice::{OPUS_SILENCE, PacketSender, SendOutcome, TickOutcome, Tickable};

const SILENCE_FRAMES: u8 = 5;
/// Behind its schedule by more than this many ticks, a player skips ahead (an audible gap).
const MAX_LAG_TICKS: u64 = 25;
/// Frames one player may send in a single tick while catching up.
const MAX_BURST: u64 = 4;
/// A new track starts once its first frames are ready, or after this many ticks: starting with
/// a lead absorbs the burst of work when many tracks start at once.
const START_WAIT_TICKS: u8 = 3;
/// Frames asked for beyond those due: the one for the next tick.
const ASK_AHEAD: u64 = 1;
/// No schedule yet: the next frame is due at the current tick.
const UNSCHEDULED: u64 = u64::MAX;
/// No end marker: the track plays to its end.
const NO_END: u64 = u64::MAX;

/// What the output tells its player.
#[derive(Debug)]
pub enum OutputSignal {
    /// The track with this token ended (an error says why it ended early).
    TrackFinished { token: u64, result: Result<(), String> },
}

/// Counters every output bumps (shared with the metrics registry).
#[derive(Debug, Clone, Default)]
pub struct OutputCounters {
    pub frames_sent: Counter,
    pub underruns: Counter,
    /// Ticks a player skipped because it fell too far behind its schedule.
    pub skipped: Counter,
}

struct Feed {
    token: u64,
    track: TrackFrames,
    held: Option<Vec<u8>>,
    /// Frames of this track sent so far.
    sent: u64,
    /// Ticks a new track may still wait for its first frames before it starts.
    start_wait: u8,
    /// What listeners over HTTP see as the stream title while it plays.
    title: Arc<str>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.track.ring.close();
    }
}

/// What the current track did with one due frame.
enum Audio {
    Sent,
    /// A track is playing but its next frame is not ready or cannot go out yet.
    Waiting,
    /// The E2EE state is locked right now.
    Busy,
    /// No track, it just ended, or it is still filling its buffer to start.
    Idle,
}

pub struct PlayerOutput {
    feed: Mutex<Option<Feed>>,
    /// Whether `feed` holds a track; changed only with `feed` locked. With no track and the
    /// silence tail sent, a tick costs two atomic loads: idle players stay cheap on the clock.
    has_feed: AtomicBool,
    sender: Mutex<Option<Arc<PacketSender>>>,
    paused: AtomicBool,
    position_frames: AtomicU64,
    /// The position (in frames) at which the track ends early, as if it were over.
    end_frame: AtomicU64,
    /// The position (in frames) from which another node plays the track: nothing more is
    /// sent from there, and nothing is signalled (a migration's hand-over).
    cut_frame: AtomicU64,
    /// Frames this player sent, and ticks it owed a frame and had none (its own lines, read by
    /// protocols' statistics; the shared counters are `counters`).
    sent_frames: AtomicU64,
    missed_frames: AtomicU64,
    silence_left: AtomicU8,
    /// The tick whose timestamp the next audio frame carries.
    due: AtomicU64,
    signals: mpsc::UnboundedSender<OutputSignal>,
    /// True while nothing is left to send (no audio, silence tail done).
    quiet: watch::Sender<bool>,
    counters: OutputCounters,
    /// Every packet sent, for listeners over HTTP.
    recording: Arc<Recording>,
}

impl PlayerOutput {
    pub fn new(
        signals: mpsc::UnboundedSender<OutputSignal>,
        counters: OutputCounters,
        recording: Arc<Recording>,
    ) -> Self {
        Self {
            feed: Mutex::new(None),
            has_feed: AtomicBool::new(false),
            sender: Mutex::new(None),
            paused: AtomicBool::new(false),
            position_frames: AtomicU64::new(0),
            end_frame: AtomicU64::new(NO_END),
            cut_frame: AtomicU64::new(NO_END),
            sent_frames: AtomicU64::new(0),
            missed_frames: AtomicU64::new(0),
            silence_left: AtomicU8::new(0),
            due: AtomicU64::new(UNSCHEDULED),
            signals,
            quiet: watch::channel(true).0,
            counters,
            recording,
        }
    }

    /// What this player sent lately.
    pub fn recording(&self) -> &Arc<Recording> {
        &self.recording
    }

    /// Switches to a new track's frames, starting the position at `start_frames`.
    pub fn play(&self, token: u64, track: TrackFrames, start_frames: u64, title: Arc<str>) {
        let mut feed = self.feed.lock();
        *feed = Some(Feed { token, track, held: None, sent: 0, start_wait: START_WAIT_TICKS, title });
        self.has_feed.store(true, Ordering::Release);
        self.end_frame.store(NO_END, Ordering::Release);
        drop(feed);
        self.position_frames.store(start_frames, Ordering::Release);
    }

    /// Ends the current track when its position reaches `ms` (none: at its own end).
    pub fn set_end(&self, ms: Option<u64>) {
        self.end_frame.store(ms.map_or(NO_END, |ms| ms / 20), Ordering::Release);
    }

    /// Stops sending at position `ms` (none: goes on), for another node takes over there.
    pub fn cut_at(&self, ms: Option<u64>) {
        self.cut_frame.store(ms.map_or(NO_END, |ms| ms / 20), Ordering::Release);
    }

    /// Whether the position set by [`Self::cut_at`] was reached.
    pub fn cut_reached(&self) -> bool {
        let cut = self.cut_frame.load(Ordering::Acquire);
        cut != NO_END && self.position_frames.load(Ordering::Acquire) >= cut
    }

    pub fn end_ms(&self) -> Option<u64> {
        let end = self.end_frame.load(Ordering::Acquire);
        (end != NO_END).then(|| end * 20)
    }

    /// Frames sent, and frames owed that were not ready, since the player was made.
    pub fn frame_counts(&self) -> (u64, u64) {
        (self.sent_frames.load(Ordering::Relaxed), self.missed_frames.load(Ordering::Relaxed))
    }

    /// Drops the current track's frames (stop, skip).
    pub fn clear(&self) {
        let mut feed = self.feed.lock();
        self.has_feed.store(false, Ordering::Release);
        if feed.take().is_some() {
            self.silence_left.store(SILENCE_FRAMES, Ordering::Release);
        }
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
        if paused {
            self.silence_left.store(SILENCE_FRAMES, Ordering::Release);
        }
    }

    pub fn set_sender(&self, sender: Option<Arc<PacketSender>>) {
        *self.sender.lock() = sender;
        // A new connection has its own timestamps: start its schedule now.
        self.due.store(UNSCHEDULED, Ordering::Release);
    }

    /// Resolves once the silence tail after the last audio has gone out.
    pub async fn wait_quiet(&self) {
        let mut rx = self.quiet.subscribe();
        let _ = rx.wait_for(|quiet| *quiet).await;
    }

    /// Whether a track is playing or waiting to start (paused included).
    pub fn has_track(&self) -> bool {
        self.has_feed.load(Ordering::Acquire)
    }

    pub fn position_ms(&self) -> u64 {
        self.position_frames.load(Ordering::Acquire) * 20
    }

    /// Sends the current track's next frame stamped for tick `stamp`.
    fn send_audio(&self, sender: &PacketSender, stamp: u64) -> Audio {
        let mut guard = self.feed.lock();
        let Some(feed) = guard.as_mut() else { return Audio::Idle };
        if self.cut_reached() {
            // Another node sends from here on; no silence tail from this one.
            self.silence_left.store(0, Ordering::Release);
            return Audio::Idle;
        }
        if feed.start_wait > 0 {
            if (feed.track.ring.ready() as u64) < START_FRAMES {
                feed.start_wait -= 1;
                // Not scheduled yet: nothing is owed, so this is not an underrun.
                return Audio::Idle;
            }
            feed.start_wait = 0;
        }
        let mut ended = None;
        let end = self.end_frame.load(Ordering::Acquire);
        if end != NO_END && self.position_frames.load(Ordering::Acquire) >= end {
            // The end marker: over, as if the track had ended there.
            ended = Some(Ok(()));
        }
        let frame = if ended.is_some() {
            None
        } else {
            feed.held.take().or_else(|| match feed.track.ring.take() {
                Taken::Audio(packet) => Some(packet),
                Taken::End(result) => {
                    ended = Some(result);
                    None
                }
                Taken::Empty => {
                    self.counters.underruns.inc();
                    self.missed_frames.fetch_add(1, Ordering::Relaxed);
                    None
                }
            })
        };
        if let Some(result) = ended {
            let token = feed.token;
            *guard = None;
            self.has_feed.store(false, Ordering::Release);
            self.silence_left.store(SILENCE_FRAMES, Ordering::Release);
            let _ = self.signals.send(OutputSignal::TrackFinished { token, result });
            return Audio::Idle;
        }
        let Some(packet) = frame else { return Audio::Waiting };
        sender.set_speaking(true);
        match sender.send(stamp, &packet) {
            SendOutcome::Sent => {
                if feed.sent == 0 {
                    self.recording.mark_title(stamp, feed.title.clone());
                }
                self.recording.record(stamp, &packet);
                feed.track.ring.recycle(packet);
                feed.sent += 1;
                self.position_frames.fetch_add(1, Ordering::AcqRel);
                self.sent_frames.fetch_add(1, Ordering::Relaxed);
                self.counters.frames_sent.inc();
                self.silence_left.store(SILENCE_FRAMES, Ordering::Release);
                self.quiet.send_if_modified(|q| std::mem::replace(q, false));
                Audio::Sent
            }
            SendOutcome::Busy => {
                feed.held = Some(packet);
                Audio::Busy
            }
            SendOutcome::NotReady | SendOutcome::Failed => {
                feed.held = Some(packet);
                Audio::Waiting
            }
        }
    }

    /// Sends the frames due up to `tick`; `None` when no track is playing.
    fn send_due(&self, sender: &PacketSender, tick: u64, retry: bool) -> Option<TickOutcome> {
        let mut due = self.due.load(Ordering::Acquire);
        if due == UNSCHEDULED || due > tick {
            due = tick;
        }
        if tick - due > MAX_LAG_TICKS {
            self.counters.skipped.inc_by(tick - due);
            due = tick;
        }
        let mut outcome = Some(TickOutcome::Done);
        for _ in 0..MAX_BURST {
            if due > tick {
                break;
            }
            match self.send_audio(sender, due) {
                Audio::Sent => due += 1,
                Audio::Waiting => break,
                Audio::Busy => {
                    outcome = Some(if retry { TickOutcome::Done } else { TickOutcome::Retry });
                    break;
                }
                Audio::Idle => {
                    outcome = None;
                    break;
                }
            }
        }
        self.due.store(if outcome.is_none() { UNSCHEDULED } else { due }, Ordering::Release);
        if outcome.is_some() {
            self.ask_ahead((tick + 1).saturating_sub(due));
        }
        outcome
    }

    /// Asks the encoder for the `owed` frames due and not yet sent, and the next one.
    fn ask_ahead(&self, owed: u64) {
        if let Some(feed) = self.feed.lock().as_ref() {
            feed.track.ring.ask_up_to(feed.sent + owed.min(MAX_BURST) + ASK_AHEAD);
        }
    }

    fn send_silence(&self, sender: &PacketSender, tick: u64, retry: bool) -> TickOutcome {
        let left = self.silence_left.load(Ordering::Acquire);
        if left == 0 {
            return TickOutcome::Done;
        }
        match sender.send(tick, &OPUS_SILENCE) {
            // Still owed: it goes out later in this tick or on the next one.
            SendOutcome::Busy => return if retry { TickOutcome::Done } else { TickOutcome::Retry },
            SendOutcome::NotReady => return TickOutcome::Done,
            // A connection that refuses packets is not waited for.
            SendOutcome::Sent | SendOutcome::Failed => {}
        }
        self.silence_left.store(left - 1, Ordering::Release);
        if left == 1 {
            self.recording.flush();
            sender.set_speaking(false);
            self.quiet.send_replace(true);
        }
        TickOutcome::Done
    }
}

impl Drop for PlayerOutput {
    fn drop(&mut self) {
        self.recording.close();
    }
}

impl Tickable for PlayerOutput {
    fn on_tick(&self, tick: u64, retry: bool) -> TickOutcome {
        if self.silence_left.load(Ordering::Acquire) == 0 && !self.has_feed.load(Ordering::Acquire) {
            // Nothing to send: the schedule restarts with the next track.
            return TickOutcome::Done;
        }
        let Some(sender) = self.sender.lock().clone() else { return TickOutcome::Done };
        if !self.paused.load(Ordering::Acquire) {
            match sender.ready() {
                None => return if retry { TickOutcome::Done } else { TickOutcome::Retry },
                // No E2EE key yet, or the connection is down: frames wait where they are.
                Some(false) => return TickOutcome::Done,
                Some(true) => {}
            }
            if let Some(outcome) = self.send_due(&sender, tick, retry) {
                return outcome;
            }
        } else {
            self.due.store(UNSCHEDULED, Ordering::Release);
        }
        self.send_silence(&sender, tick, retry)
    }
}

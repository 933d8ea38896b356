//! Where a player meets the packet clock. Each tick it takes the next frame of the current
//! track and sends it through the current voice connection; when audio stops it sends five
//! silence frames and stops speaking. It never blocks: a busy E2EE state defers it to the end
//! of the tick, a not-yet-ready one holds the frame (nothing is lost, nothing leaks in clear).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use crossbeam_channel::{Receiver, TryRecvError};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, watch};

use crate::audio::Frame;
use crate::voice::{OPUS_SILENCE, PacketSender, SendOutcome, TickOutcome, Tickable};

const SILENCE_FRAMES: u8 = 5;

/// What the output tells its player.
#[derive(Debug)]
pub enum OutputSignal {
    /// The track with this token ended (an error says why it ended early).
    TrackFinished { token: u64, result: Result<(), String> },
}

struct Feed {
    token: u64,
    frames: Receiver<Frame>,
    held: Option<Vec<u8>>,
}

pub struct PlayerOutput {
    feed: Mutex<Option<Feed>>,
    sender: Mutex<Option<Arc<PacketSender>>>,
    paused: AtomicBool,
    position_frames: AtomicU64,
    silence_left: AtomicU8,
    signals: mpsc::UnboundedSender<OutputSignal>,
    /// True while nothing is left to send (no audio, silence tail done).
    quiet: watch::Sender<bool>,
    counters: OutputCounters,
}

/// Counters every output bumps (shared with the metrics registry).
#[derive(Debug, Clone, Default)]
pub struct OutputCounters {
    pub frames_sent: Counter,
    pub underruns: Counter,
}

impl PlayerOutput {
    pub fn new(signals: mpsc::UnboundedSender<OutputSignal>, counters: OutputCounters) -> Self {
        Self {
            feed: Mutex::new(None),
            sender: Mutex::new(None),
            paused: AtomicBool::new(false),
            position_frames: AtomicU64::new(0),
            silence_left: AtomicU8::new(0),
            signals,
            quiet: watch::channel(true).0,
            counters,
        }
    }

    /// Switches to a new track's frames, starting the position at `start_frames`.
    pub fn play(&self, token: u64, frames: Receiver<Frame>, start_frames: u64) {
        *self.feed.lock() = Some(Feed { token, frames, held: None });
        self.position_frames.store(start_frames, Ordering::Release);
    }

    /// Drops the current track's frames (stop, skip).
    pub fn clear(&self) {
        if self.feed.lock().take().is_some() {
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
    }

    /// Resolves once the silence tail after the last audio has gone out.
    pub async fn wait_quiet(&self) {
        let mut rx = self.quiet.subscribe();
        let _ = rx.wait_for(|quiet| *quiet).await;
    }

    pub fn position_ms(&self) -> u64 {
        self.position_frames.load(Ordering::Acquire) * 20
    }

    /// Sends what is due for `tick`; returns whether audio went out.
    fn send_audio(&self, sender: &PacketSender, tick: u64, wait: bool) -> Result<bool, TickOutcome> {
        let mut guard = self.feed.lock();
        let Some(feed) = guard.as_mut() else { return Ok(false) };
        let mut ended = None;
        let frame = feed.held.take().or_else(|| match feed.frames.try_recv() {
            Ok(Frame::Audio(packet)) => Some(packet),
            Ok(Frame::End(result)) => {
                ended = Some(result);
                None
            }
            Err(TryRecvError::Empty) => {
                self.counters.underruns.inc();
                None
            }
            Err(TryRecvError::Disconnected) => {
                ended = Some(Err("the track's decoder stopped".to_string()));
                None
            }
        });
        if let Some(result) = ended {
            let token = feed.token;
            *guard = None;
            self.silence_left.store(SILENCE_FRAMES, Ordering::Release);
            let _ = self.signals.send(OutputSignal::TrackFinished { token, result });
            return Ok(false);
        }
        let Some(packet) = frame else { return Ok(false) };
        sender.set_speaking(true);
        match sender.send(tick, &packet, wait) {
            SendOutcome::Sent => {
                self.position_frames.fetch_add(1, Ordering::AcqRel);
                self.counters.frames_sent.inc();
                self.silence_left.store(SILENCE_FRAMES, Ordering::Release);
                self.quiet.send_if_modified(|q| std::mem::replace(q, false));
                Ok(true)
            }
            SendOutcome::Busy => {
                feed.held = Some(packet);
                Err(TickOutcome::Retry)
            }
            SendOutcome::NotReady | SendOutcome::Failed => {
                feed.held = Some(packet);
                Ok(false)
            }
        }
    }

    fn send_silence(&self, sender: &PacketSender, tick: u64, wait: bool) -> TickOutcome {
        let left = self.silence_left.load(Ordering::Acquire);
        if left == 0 {
            return TickOutcome::Done;
        }
        match sender.send(tick, &OPUS_SILENCE, wait) {
            SendOutcome::Busy => return TickOutcome::Retry,
            SendOutcome::Sent | SendOutcome::NotReady | SendOutcome::Failed => {}
        }
        self.silence_left.store(left - 1, Ordering::Release);
        if left == 1 {
            sender.set_speaking(false);
            self.quiet.send_replace(true);
        }
        TickOutcome::Done
    }
}

impl Tickable for PlayerOutput {
    fn on_tick(&self, tick: u64, wait: bool) -> TickOutcome {
        let Some(sender) = self.sender.lock().clone() else { return TickOutcome::Done };
        if !self.paused.load(Ordering::Acquire) {
            match sender.ready() {
                None if !wait => return TickOutcome::Retry,
                // No E2EE key yet, or the connection is down: frames wait where they are.
                Some(false) => return TickOutcome::Done,
                _ => {}
            }
            match self.send_audio(&sender, tick, wait) {
                Ok(true) => return TickOutcome::Done,
                Ok(false) => {}
                Err(retry) => return retry,
            }
        }
        self.send_silence(&sender, tick, wait)
    }
}

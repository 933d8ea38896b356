//! One track's work on the media workers. Each time it runs it takes back passed-through
//! packets the clock found stale, tops up its decoded input, and moves units on to the
//! clock's ring: passed-through packets up to half a second ahead, encoded frames only as
//! the clock asks for them. It never waits on the network: a source that has not enough
//! queued asks to be woken when it has, and the work returns.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::controls::Controls;
use super::filter_chain::FilterChain;
use super::frames::{FrameRing, PASS_AHEAD};
use super::live_follow::{LiveFollower, LiveNext};
use super::opening::{OpenedStream, PipelineConfig, open_stream};
use super::transcode::{Outcome, Transcoder, Unit};
use super::workers::{Urgency, Work, WorkSlot};
use crate::cache::ogg_opus::OggOpusReader;
use crate::cache::store::{CachedTrack, FillFollower, FillNext};
use crate::plugins::resolver::Locator;

mod decoding;
pub use decoding::Decoding;

/// Consecutive Opus packets that fail to decode before the track is given up.
const MAX_UNDECODABLE: u32 = 20;
/// Opus packets read ahead of the ring in one go.
const OPUS_AHEAD: usize = 8;

/// Where a track's units come from.
pub enum Source {
    /// Being opened (or opened again) on the blocking pool.
    Opening,
    Cached(CachedTrack),
    /// Another player's fill of the same track, read as it grows.
    Follow {
        fill: FillFollower,
        position_ms: u64,
        locator: Locator,
        duration_hint_ms: Option<u64>,
    },
    Decoding(Box<Decoding>),
    /// A live mount's packets, read behind its live edge.
    Live(LiveFollower),
    Ended,
}

impl Source {
    /// An opened stream, to be decoded with the pipeline's encoder settings.
    pub fn decoding(opened: OpenedStream, config: &PipelineConfig) -> Self {
        let OpenedStream { decoder, readiness, fill } = opened;
        Self::Decoding(Box::new(Decoding::new(decoder, readiness, fill, config.encoder.clone())))
    }
}

/// What a source did when asked for more.
enum Produced {
    /// It added what it could without waiting.
    Some,
    /// Nothing more now; it wakes the work when there is.
    Waiting,
    Ended(Result<(), String>),
    /// The fill being followed broke: stream the rest from here.
    Reopen {
        locator: Locator,
        position_ms: u64,
        duration_hint_ms: Option<u64>,
    },
}

type Waker = Arc<dyn Fn() + Send + Sync>;

impl Source {
    fn produce(&mut self, pending: &mut VecDeque<Unit>, target: usize, wake: &Waker) -> Produced {
        match self {
            Source::Opening => Produced::Waiting,
            Source::Ended => Produced::Ended(Ok(())),
            Source::Cached(cached) => read_cached(&mut cached.reader, pending, target.max(OPUS_AHEAD)),
            Source::Follow { fill, position_ms, locator, duration_hint_ms } => {
                while pending.len() < target.max(OPUS_AHEAD) {
                    let wake = wake.clone();
                    match fill.poll_packet(move || wake()) {
                        FillNext::Packet(packet) => {
                            pending.push_back(Unit::Opus(packet, None));
                            *position_ms += 20;
                        }
                        FillNext::Pending => return Produced::Waiting,
                        FillNext::End => return Produced::Ended(Ok(())),
                        FillNext::Broken(e) => {
                            // The player filling it stopped (skipped, seeked, cut off).
                            tracing::debug!(error = %e, position_ms, "shared fill ended early; streaming the rest");
                            return Produced::Reopen {
                                locator: locator.clone(),
                                position_ms: *position_ms,
                                duration_hint_ms: *duration_hint_ms,
                            };
                        }
                    }
                }
                Produced::Some
            }
            Source::Decoding(decoding) => decoding.produce(pending, target, wake),
            Source::Live(follower) => {
                let wake = wake.clone();
                match follower.read(pending, target.max(OPUS_AHEAD), move || wake()) {
                    LiveNext::Some => Produced::Some,
                    LiveNext::Waiting => Produced::Waiting,
                    LiveNext::Over(reason) => Produced::Ended(Err(reason)),
                }
            }
        }
    }
}

fn read_cached(
    reader: &mut OggOpusReader<std::io::BufReader<std::fs::File>>,
    pending: &mut VecDeque<Unit>,
    target: usize,
) -> Produced {
    while pending.len() < target {
        match reader.next_packet() {
            Ok(Some(packet)) => pending.push_back(Unit::Opus(packet, None)),
            Ok(None) => return Produced::Ended(Ok(())),
            Err(e) => return Produced::Ended(Err(e.to_string())),
        }
    }
    Produced::Some
}

/// What a run ended with.
enum Flow {
    /// Nothing more to do until woken.
    Idle,
    Finished(Result<(), String>),
}

struct Running {
    source: Source,
    pending: VecDeque<Unit>,
    out: Transcoder,
    undecodable: u32,
    /// Units kept decoded ahead of the transcoder.
    frames_ahead: usize,
    /// The source can give more without waiting.
    may_produce: bool,
    /// A run is queued to top up the pending units.
    top_up: bool,
}

impl Running {
    fn step(&mut self, work: &TrackWork) -> Result<Flow, String> {
        let ring = &work.ring;
        let back = ring.reclaim_stale(ring.version());
        if !back.is_empty() {
            let pcm = self.out.take_back(back.len());
            for (packet, pcm) in back.into_iter().zip(pcm).rev() {
                self.pending.push_front(Unit::Opus(packet, pcm));
            }
        }
        if std::mem::take(&mut self.top_up) {
            self.produce(work, self.frames_ahead);
        }
        loop {
            if self.pending.is_empty() {
                // Just what the next frame needs: the rest is topped up after the clock's
                // urgent work (below).
                self.produce(work, 1);
            }
            let version = ring.version();
            let Some(front) = self.pending.front() else { break };
            let passes = match front {
                Unit::Opus(packet, _) => self.out.passes_through(packet),
                _ => false,
            };
            // Packets that pass run ahead of the clock; anything that needs encoding waits
            // until its frame is asked for, so changes reach the next frame.
            let run_ahead = passes && self.out.is_aligned() && ring.passed() < PASS_AHEAD;
            if !run_ahead && ring.asked() <= self.out.made {
                break;
            }
            let Some(unit) = self.pending.pop_front() else { break };
            if let Unit::End(result) = unit {
                self.out.unit(Unit::End(Ok(())), false, version)?;
                return Ok(Flow::Finished(result));
            }
            match self.out.unit(unit, passes, version)? {
                Outcome::Done => self.undecodable = 0,
                Outcome::Undecodable(e) => {
                    self.undecodable += 1;
                    if self.undecodable > MAX_UNDECODABLE {
                        return Err(format!("too many undecodable packets ({e})"));
                    }
                }
            }
        }
        // Half a buffer at a time: one top-up run every few frames, not one per frame.
        if self.pending.len() <= self.frames_ahead / 2 && self.may_produce {
            self.top_up = true;
            work.wake(Urgency::Ahead);
        }
        Ok(Flow::Idle)
    }

    /// Asks the source for units until `target` are pending or it has to wait.
    fn produce(&mut self, work: &TrackWork, target: usize) {
        if matches!(self.pending.back(), Some(Unit::End(_))) {
            return;
        }
        match self.source.produce(&mut self.pending, target.max(1), &work.waker()) {
            Produced::Some => self.may_produce = true,
            // Its waker runs this work again when there is more.
            Produced::Waiting => self.may_produce = false,
            Produced::Ended(result) => {
                self.pending.push_back(Unit::End(result));
                self.source = Source::Ended;
                self.may_produce = false;
            }
            Produced::Reopen { locator, position_ms, duration_hint_ms } => {
                self.source = Source::Opening;
                self.may_produce = false;
                work.reopen(locator, position_ms, duration_hint_ms);
            }
        }
    }
}

enum Stage {
    Ready(Box<Running>),
    Done,
}

pub struct TrackWork {
    slot: WorkSlot,
    me: Weak<TrackWork>,
    ring: Arc<FrameRing>,
    config: PipelineConfig,
    cancel: Arc<AtomicBool>,
    span: tracing::Span,
    stage: Mutex<Stage>,
}

impl TrackWork {
    pub fn new(
        ring: Arc<FrameRing>,
        config: &PipelineConfig,
        controls: Arc<Controls>,
        cancel: Arc<AtomicBool>,
        span: tracing::Span,
    ) -> Arc<Self> {
        let chain = FilterChain::new(config.plugins.clone(), controls.on_filter_failure.clone());
        let out = Transcoder::new(config.encoder.clone(), config.decodes.clone(), chain, controls, ring.clone());
        let running = Running {
            source: Source::Opening,
            pending: VecDeque::new(),
            out,
            undecodable: 0,
            frames_ahead: config.frames_ahead.max(2),
            may_produce: true,
            top_up: false,
        };
        let work = Arc::new_cyclic(|me: &Weak<TrackWork>| Self {
            slot: WorkSlot::default(),
            me: me.clone(),
            ring: ring.clone(),
            config: config.clone(),
            cancel,
            span,
            stage: Mutex::new(Stage::Ready(Box::new(running))),
        });
        let me = Arc::downgrade(&work);
        ring.set_waker(move |urgency| {
            if let Some(work) = me.upgrade() {
                work.wake(urgency);
            }
        });
        work
    }

    fn wake(&self, urgency: Urgency) {
        if let Some(me) = self.me.upgrade() {
            let work: Arc<dyn Work> = me;
            self.config.workers.wake(&work, urgency);
        }
    }

    /// Wakes this work from a source that has more.
    fn waker(&self) -> Waker {
        let me = self.me.clone();
        Arc::new(move || {
            if let Some(work) = me.upgrade() {
                work.wake(Urgency::Now);
            }
        })
    }

    /// The source is open (or could not be opened).
    pub fn opened(&self, source: Result<Source, String>) {
        let mut stage = self.stage.lock();
        if let Stage::Ready(running) = &mut *stage {
            match source {
                Ok(source) => running.source = source,
                Err(e) => {
                    running.pending.push_back(Unit::End(Err(e)));
                    running.source = Source::Ended;
                }
            }
        }
        drop(stage);
        self.wake(Urgency::Now);
    }

    /// Opens the track's media again from `position_ms`, on the blocking pool.
    fn reopen(&self, locator: Locator, position_ms: u64, duration_hint_ms: Option<u64>) {
        let (Some(me), config, cancel) = (self.me.upgrade(), self.config.clone(), self.cancel.clone()) else {
            return;
        };
        self.config.fetch.runtime.spawn_blocking(move || {
            let span = me.span.clone();
            let opened = span
                .in_scope(|| open_stream(&locator, duration_hint_ms, position_ms, None, &config, &cancel, |_| {}))
                .map(|opened| Source::decoding(opened, &config));
            me.opened(opened);
        });
    }

    fn stopped(&self) -> bool {
        self.cancel.load(Ordering::Acquire) || self.ring.is_closed()
    }
}

impl Work for TrackWork {
    fn slot(&self) -> &WorkSlot {
        &self.slot
    }

    fn run(&self) {
        let mut stage = self.stage.lock();
        let Stage::Ready(running) = &mut *stage else { return };
        if self.stopped() {
            // Dropping the source stops its download or kills its program.
            *stage = Stage::Done;
            return;
        }
        let flow = self.span.in_scope(|| running.step(self));
        let result = match flow {
            Ok(Flow::Idle) => return,
            Ok(Flow::Finished(result)) => result,
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            self.span.in_scope(|| tracing::warn!(error = %e, "track failed"));
        }
        if !self.cancel.load(Ordering::Acquire) {
            self.ring.finish(result);
        }
        *stage = Stage::Done;
    }
}

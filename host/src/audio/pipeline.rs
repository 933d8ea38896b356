//! One track's production line on two threads. The decoder thread fetches, decodes and
//! resamples to 48 kHz stereo, keeping up to `frames_ahead` 20 ms blocks of PCM ready. The
//! encoder thread takes a block only when the clock asks for another frame (see `demand`),
//! runs the filter chain and the volume, and encodes Opus, so a filter or volume change is
//! heard from the next frame the clock asks for. An Opus source's packets are not decoded at all
//! while no filter works and the volume is 1: they go to the transport as they are
//! (passthrough), and the encoder thread decodes them from the packet where that stops
//! being true. A dropped receiver or the cancel flag ends both.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crossbeam_channel::{Receiver, Sender, bounded};
use symphonia::core::io::MediaSource;

use super::decode::{SourceDecoder, Unit};
use super::demand::Demand;
use super::encode::{FRAME_LEN, OpusEncoder};
use super::fetch::{FetchOptions, HttpSource};
use super::filter_chain::{ChainControl, FailureReport, FilterChain};
use super::opus_packets::{self, OpusDecodeError, PacketDecoder};
use super::process_stream::ProcessStream;
use super::resample::To48k;
use crate::cache::store::{AudioCache, FillWriter, Plan};
use crate::plugins::PluginHost;
use crate::plugins::resolver::{Locator, ResolvedTrack};

/// Frames asked for before a track starts: the clock starts it once they are ready.
pub const START_FRAMES: u64 = 2;
/// Room for every frame the clock may ask for while catching up.
const FRAMES_CAPACITY: usize = 16;
/// Consecutive Opus packets that fail to decode before the track is given up.
const MAX_UNDECODABLE: u32 = 20;

/// What the clock takes from a track.
#[derive(Debug)]
pub enum Frame {
    Audio(Vec<u8>),
    /// The track is over; an error says why it ended early.
    End(Result<(), String>),
}

/// A running track as the clock sees it: its frames and where to ask for more.
pub struct TrackFrames {
    pub frames: Receiver<Frame>,
    pub demand: Arc<Demand>,
}

/// Settings shared by every track.
#[derive(Clone)]
pub struct PipelineConfig {
    pub fetch: FetchOptions,
    pub bitrate_kbps: u32,
    /// Decoded 20 ms blocks kept ready ahead of the encoder.
    pub frames_ahead: usize,
    /// Where filters come from; none runs every chain empty.
    pub plugins: Option<Arc<PluginHost>>,
    /// Where played tracks are kept; none streams every time.
    pub cache: Option<Arc<AudioCache>>,
}

/// Facts learned when the source opens.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackInfo {
    pub duration_ms: Option<u64>,
}

/// Linear gain shared with the player so volume changes reach the next encoded frame.
#[derive(Debug)]
pub struct Gain(AtomicU32);

impl Gain {
    pub fn new(v: f32) -> Self {
        Self(AtomicU32::new(v.to_bits()))
    }
    pub fn get(&self) -> f32 {
        f32::from_bits(self.0.load(Ordering::Relaxed))
    }
    pub fn set(&self, v: f32) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
}

/// What a player lets its track pipeline read while it runs.
pub struct Controls {
    pub gain: Gain,
    pub filters: ChainControl,
    /// Told when a filter fails and is taken out of the chain.
    pub on_filter_failure: FailureReport,
}

impl Default for Gain {
    fn default() -> Self {
        Self::new(1.0)
    }
}

/// Where a track's media comes from.
#[derive(Debug, Clone)]
pub enum TrackSource {
    /// Already known: a URL with request headers, or a program a resolver named (run under
    /// that plugin's grants) whose stdout is the media.
    Located(Locator),
    /// Resolved through the resolver plugins first (tracks restored after a restart,
    /// playlist entries), for the guild when there is one.
    Resolve { query: String, guild_id: Option<String> },
}

/// Where to start and what to play.
pub struct TrackRequest {
    pub source: TrackSource,
    /// What the track is cached under, when known before it is resolved.
    pub cache_key: Option<String>,
    /// The duration the track's metadata claims, for a track followed from another's fill.
    pub duration_hint_ms: Option<u64>,
    pub start_ms: u64,
    /// The track's span; the pipeline's work is recorded under it.
    pub span: tracing::Span,
}

/// What the decoder thread hands the encoder thread.
enum Block {
    Pcm(Vec<f32>),
    /// A packet from an Opus source: sent on as it is when nothing needs the samples.
    Opus(Vec<u8>),
    End(Result<(), String>),
}

/// Starts producing frames. `on_open` runs once the source is probed.
pub fn spawn(
    request: TrackRequest,
    config: PipelineConfig,
    controls: Arc<Controls>,
    cancel: Arc<AtomicBool>,
    on_open: impl FnOnce(TrackInfo) + Send + 'static,
) -> std::io::Result<TrackFrames> {
    let (pcm_tx, pcm_rx) = bounded(config.frames_ahead.max(2));
    let (tx, rx) = bounded(FRAMES_CAPACITY);
    let demand = Arc::new(Demand::new(START_FRAMES));
    let encoder_demand = demand.clone();
    let span = request.span.clone();
    let encoder_cancel = cancel.clone();
    let bitrate = config.bitrate_kbps;
    let chain = FilterChain::new(config.plugins.clone(), controls.on_filter_failure.clone());
    std::thread::Builder::new().name("track-encode".into()).spawn(move || {
        let ended = span.in_scope(|| encode(bitrate, chain, &controls, &encoder_demand, &encoder_cancel, &pcm_rx, &tx));
        let ended = match ended {
            Ok(None) => return,
            Ok(Some(result)) => result,
            Err(e) => Err(e),
        };
        if let Err(e) = &ended {
            span.in_scope(|| tracing::warn!(error = %e, "track failed"));
        }
        if !encoder_cancel.load(Ordering::Acquire) {
            let _ = tx.send(Frame::End(ended));
        }
    })?;
    std::thread::Builder::new().name("track-decode".into()).spawn(move || {
        let span = request.span.clone();
        let result = span.in_scope(|| decode(&request, &config, &cancel, &pcm_tx, on_open));
        let _ = pcm_tx.send(Block::End(result));
    })?;
    Ok(TrackFrames { frames: rx, demand })
}

/// Fetches, decodes and resamples into 20 ms blocks (the last one may be shorter).
fn decode(
    request: &TrackRequest,
    config: &PipelineConfig,
    cancel: &Arc<AtomicBool>,
    tx: &Sender<Block>,
    on_open: impl FnOnce(TrackInfo) + 'static,
) -> Result<(), String> {
    let mut on_open: Box<dyn FnOnce(TrackInfo)> = Box::new(on_open);
    let mut start_ms = request.start_ms;
    let (locator, key) = match &request.source {
        TrackSource::Located(locator) => (locator.clone(), request.cache_key.clone()),
        TrackSource::Resolve { query, guild_id } => locate(config, query, guild_id.clone())?,
    };
    let plan = match (&config.cache, key) {
        // Only a track played from its start can fill the cache.
        (Some(cache), Some(key)) => cache.plan(&key, request.start_ms == 0),
        _ => Plan::Stream,
    };
    let mut feed = Feed { tx, cancel, bitrate_kbps: config.bitrate_kbps, fill: None, encoder: None };
    match plan {
        Plan::Hit(mut cached) => {
            on_open(TrackInfo { duration_ms: Some(cached.index.duration_ms()) });
            cached.reader.seek_ms(start_ms).map_err(|e| e.to_string())?;
            while let Some(packet) = cached.reader.next_packet().map_err(|e| e.to_string())? {
                if !feed.opus(packet) {
                    return Ok(());
                }
            }
            return Ok(());
        }
        Plan::Follow(mut fill) => {
            on_open(TrackInfo { duration_ms: request.duration_hint_ms });
            fill.skip_ms(start_ms);
            loop {
                match fill.next_packet(|| cancel.load(Ordering::Acquire)) {
                    Ok(Some(packet)) => {
                        if !feed.opus(packet.to_vec()) {
                            return Ok(());
                        }
                        start_ms += 20;
                    }
                    Ok(None) => return Ok(()),
                    // The player filling it stopped (skipped, seeked, cut off): fetch the
                    // rest ourselves from where we are.
                    Err(e) => {
                        tracing::debug!(error = %e, start_ms, "shared fill ended early; streaming the rest");
                        break;
                    }
                }
            }
            on_open = Box::new(|_| {});
        }
        Plan::Fill(writer) => feed.fill = Some(writer),
        Plan::Stream => {}
    }
    // Whether the source says where it ends: a length, or (for a program's output) a
    // duration its resolver gave. Without one it may be live and never end.
    let (media, content_type, sized): (Box<dyn MediaSource>, Option<String>, bool) = match locator {
        Locator::Process { plugin, program, args } => {
            let host = config.plugins.as_ref().ok_or("process streams need the plugin host")?;
            let run = host.stream_command(&plugin, &program, &args)?;
            let stream = ProcessStream::spawn(run.command, run.workdir, cancel.clone())
                .map_err(|e| format!("cannot start {program}: {e}"))?;
            (Box::new(stream), None, request.duration_hint_ms.is_some())
        }
        Locator::Http { url, headers } => {
            let http =
                HttpSource::open(&url, headers, config.fetch.clone(), cancel.clone()).map_err(|e| e.to_string())?;
            let content_type = http.content_type().map(str::to_string);
            let sized = http.byte_len().is_some();
            (Box::new(http), content_type, sized)
        }
    };
    let mut decoder = SourceDecoder::open(media, content_type.as_deref()).map_err(|e| e.to_string())?;
    on_open(TrackInfo { duration_ms: decoder.duration_ms() });
    if feed.fill.is_some() && !sized && decoder.duration_ms().is_none() {
        // A live or endless stream is played, not cached: a fill would grow without end in
        // memory and on disk. Dropping it keeps nothing; anyone following streams for itself.
        tracing::info!("the source has no known end; it is not cached");
        feed.fill = None;
    }
    if start_ms > 0 {
        decoder.seek_ms(start_ms);
    }
    let mut resampler: Option<To48k> = None;
    let mut pcm: Vec<f32> = Vec::with_capacity(FRAME_LEN * 8);
    loop {
        if cancel.load(Ordering::Acquire) {
            return Ok(());
        }
        let (rate, block) = match decoder.next_unit().map_err(|e| e.to_string())? {
            None => break,
            Some(Unit::Opus(packet)) => {
                if !feed.opus(packet) {
                    return Ok(());
                }
                continue;
            }
            Some(Unit::Pcm { rate, samples }) => (rate, samples),
        };
        let resampler = match resampler.as_mut() {
            Some(r) => r,
            None => resampler.insert(To48k::new(rate).map_err(|e| e.to_string())?),
        };
        resampler.push(block, &mut pcm).map_err(|e| e.to_string())?;
        if !feed.pcm_blocks(&mut pcm, false)? {
            return Ok(());
        }
    }
    if let Some(r) = resampler.as_mut() {
        r.finish(&mut pcm).map_err(|e| e.to_string())?;
    }
    if feed.pcm_blocks(&mut pcm, true)? {
        // The source ended by itself: what was filled is the whole track.
        feed.finish();
    }
    Ok(())
}

/// Where the decoder thread's output goes: to the encoder thread and, while the track fills
/// the cache, into the fill.
struct Feed<'a> {
    tx: &'a Sender<Block>,
    cancel: &'a AtomicBool,
    bitrate_kbps: u32,
    fill: Option<FillWriter>,
    /// Encodes a PCM source once while it fills the cache: the packets are both what is
    /// kept and what is played (passed through, or decoded again for filters).
    encoder: Option<OpusEncoder>,
}

impl Feed<'_> {
    fn send(&self, block: Block) -> bool {
        !self.cancel.load(Ordering::Acquire) && self.tx.send(block).is_ok()
    }

    fn opus(&mut self, packet: Vec<u8>) -> bool {
        if let Some(fill) = self.fill.as_mut() {
            fill.push(&packet);
        }
        self.send(Block::Opus(packet))
    }

    /// Sends the whole 20 ms blocks of `pcm` (all of it when `all`, the last one short or
    /// padded). False when the track was stopped.
    fn pcm_blocks(&mut self, pcm: &mut Vec<f32>, all: bool) -> Result<bool, String> {
        let mut start = 0;
        while pcm.len() - start >= FRAME_LEN || (all && start < pcm.len()) {
            let end = (start + FRAME_LEN).min(pcm.len());
            let block = pcm[start..end].to_vec();
            start = end;
            let sent = if self.fill.is_some() {
                let encoder = match self.encoder.as_mut() {
                    Some(e) => e,
                    None => self.encoder.insert(OpusEncoder::new(self.bitrate_kbps).map_err(|e| e.to_string())?),
                };
                let mut frame = block;
                frame.resize(FRAME_LEN, 0.0);
                let packet = encoder.encode(&frame).map_err(|e| e.to_string())?;
                self.opus(packet)
            } else {
                self.send(Block::Pcm(block))
            };
            if !sent {
                return Ok(false);
            }
        }
        pcm.drain(..start);
        Ok(true)
    }

    fn finish(self) {
        if let Some(fill) = self.fill {
            fill.finish();
        }
    }
}

/// Resolves a query to where its first track's media is, and the key it is cached under.
fn locate(config: &PipelineConfig, query: &str, guild_id: Option<String>) -> Result<(Locator, Option<String>), String> {
    let Some(host) = config.plugins.as_ref() else {
        return Ok((Locator::Http { url: query.to_string(), headers: Vec::new() }, Some(direct_cache_key(query))));
    };
    let resolved = host.resolve(query, guild_id, None, 0).map_err(|e| format!("cannot resolve {query}: {e}"))?;
    let track = resolved.into_tracks().into_iter().next();
    let key = track.as_ref().map(cache_key);
    let locator = track.and_then(|t| t.locator).ok_or_else(|| format!("{query} resolved to nothing playable"))?;
    Ok((locator, key))
}

/// The cache key of a resolved track: its resolver and the resolver's own id for it.
pub fn cache_key(track: &ResolvedTrack) -> String {
    format!("{}:{}", track.plugin, track.identifier)
}

/// The cache key of a direct link played without resolvers: the link is its identity.
pub fn direct_cache_key(url: &str) -> String {
    format!("http:{url}")
}

/// Filters, applies the volume and encodes. Returns none when it stopped early (cancelled
/// or nobody listening), else how the decoder ended.
fn encode(
    bitrate_kbps: u32,
    chain: FilterChain,
    controls: &Controls,
    demand: &Demand,
    cancel: &AtomicBool,
    rx: &Receiver<Block>,
    tx: &Sender<Frame>,
) -> Result<Option<Result<(), String>>, String> {
    let encoder = OpusEncoder::new(bitrate_kbps).map_err(|e| e.to_string())?;
    let lookahead = encoder.lookahead();
    let mut out =
        Output { encoder, chain, controls, cancel, tx, ready: Vec::with_capacity(FRAME_LEN * 4), offset: 0, made: 0 };
    let mut opus: Option<PacketDecoder> = None;
    let mut undecodable = 0u32;
    loop {
        // The next block is filtered and encoded only once the clock wants its frame.
        if !demand.wait_beyond(out.made, cancel) {
            return Ok(None);
        }
        let Ok(block) = rx.recv() else { return Ok(None) };
        let more = match block {
            Block::Pcm(pcm) => out.transcode(pcm, false)?,
            Block::Opus(packet) => {
                let decoder = match opus.as_mut() {
                    Some(d) => d,
                    None => opus.insert(PacketDecoder::new().map_err(|e| e.to_string())?),
                };
                let decoded = if out.passes_through(&packet) {
                    out.pass_through(decoder, packet)
                } else if out.offset == 0 {
                    out.start_transcoding(decoder, &packet, lookahead)
                } else {
                    decoder.decode(&packet).map(|pcm| out.transcode(pcm, false))
                };
                match decoded {
                    Ok(more) => {
                        undecodable = 0;
                        more?
                    }
                    Err(e) => {
                        undecodable += 1;
                        if undecodable > MAX_UNDECODABLE {
                            return Err(format!("too many undecodable packets ({e})"));
                        }
                        true
                    }
                }
            }
            Block::End(result) => {
                let tail = out.chain.flush(&controls.filters);
                return Ok(out.transcode(tail, true)?.then_some(result));
            }
        };
        if !more {
            return Ok(None);
        }
    }
}

/// The encoder thread's side of a track: the filter chain, the volume, the Opus encoder
/// and the samples waiting to be encoded.
struct Output<'a> {
    encoder: OpusEncoder,
    chain: FilterChain,
    controls: &'a Controls,
    cancel: &'a AtomicBool,
    tx: &'a Sender<Frame>,
    ready: Vec<f32>,
    /// While re-encoding an Opus source: the encoder's lookahead, in samples per channel.
    /// Each frame is encoded from that far ahead so the encoder's delay is cancelled and the
    /// re-encoded frames line up with the source's packets (switching is seamless).
    offset: usize,
    /// Audio frames sent so far.
    made: u64,
}

impl Output<'_> {
    /// Whether an Opus packet can reach the transport untouched: a 20 ms packet, no filter
    /// working and the volume at 1.
    fn passes_through(&mut self, packet: &[u8]) -> bool {
        opus_packets::frame_samples(packet) == Some(FRAME_LEN / 2)
            && (self.controls.gain.get() - 1.0).abs() <= f32::EPSILON
            && !self.chain.is_active(&self.controls.filters)
    }

    /// Sends `packet` as it is, after the frame still owed from re-encoding, if any. The
    /// outer error is a packet that does not decode; the inner result is `send`'s.
    fn pass_through(
        &mut self,
        decoder: &mut PacketDecoder,
        packet: Vec<u8>,
    ) -> Result<Result<bool, String>, OpusDecodeError> {
        if self.offset > 0 {
            // The last re-encoded frame needs the start of this packet as its lookahead.
            let pcm = decoder.decode(&packet)?;
            self.ready.extend_from_slice(&pcm[..pcm.len().min(self.offset * 2)]);
            match self.send(false) {
                Ok(true) => {}
                stop => return Ok(stop),
            }
            self.ready.clear();
            self.offset = 0;
        } else {
            decoder.pass(&packet);
        }
        Ok(Ok(self.deliver(packet)))
    }

    /// Switches an Opus source to decoding at `packet`. The encoder is first fed (output
    /// dropped) the frame that ends `lookahead` samples into the packet, so its history is
    /// what the listener just heard and its first frame continues it.
    fn start_transcoding(
        &mut self,
        decoder: &mut PacketDecoder,
        packet: &[u8],
        lookahead: usize,
    ) -> Result<Result<bool, String>, OpusDecodeError> {
        let previous = decoder.resume().unwrap_or_default();
        let pcm = decoder.decode(packet)?;
        let previous = self.chain.process(&self.controls.filters, previous);
        self.ready.clear();
        self.ready.resize(FRAME_LEN.saturating_sub(previous.len()), 0.0);
        self.ready.extend_from_slice(&previous);
        let here = self.ready.len();
        let mut pcm = self.chain.process(&self.controls.filters, pcm);
        self.ready.append(&mut pcm);
        let end = here + lookahead * 2;
        let mut prime = self.ready[end - FRAME_LEN..end.min(self.ready.len())].to_vec();
        prime.resize(FRAME_LEN, 0.0);
        self.apply_gain(&mut prime);
        if let Err(e) = self.encoder.encode(&prime) {
            return Ok(Err(e.to_string()));
        }
        self.ready.drain(..here);
        self.offset = lookahead;
        Ok(self.send(false))
    }

    /// Filters `pcm`, then encodes and sends every whole frame ready. `flush` sends the
    /// rest too, padded with silence. False when nobody listens any more.
    fn transcode(&mut self, pcm: Vec<f32>, flush: bool) -> Result<bool, String> {
        let mut filtered = if flush { pcm } else { self.chain.process(&self.controls.filters, pcm) };
        self.ready.append(&mut filtered);
        self.send(flush)
    }

    fn apply_gain(&self, frame: &mut [f32]) {
        scale(frame, self.controls.gain.get());
    }

    fn send(&mut self, flush: bool) -> Result<bool, String> {
        let ahead = self.offset * 2;
        if flush {
            // The tail shorter than a frame is played, padded with silence.
            self.ready.resize(self.ready.len() + ahead, 0.0);
            let body = self.ready.len() - ahead;
            self.ready.resize(body.next_multiple_of(FRAME_LEN) + ahead, 0.0);
        }
        let mut start = 0;
        while self.ready.len() - start >= FRAME_LEN + ahead {
            // In place: each sample belongs to exactly one frame.
            let frame = &mut self.ready[start + ahead..start + ahead + FRAME_LEN];
            scale(frame, self.controls.gain.get());
            let packet = self.encoder.encode(frame).map_err(|e| e.to_string())?;
            start += FRAME_LEN;
            if !self.deliver(packet) {
                return Ok(false);
            }
        }
        self.ready.drain(..start);
        Ok(true)
    }

    /// Hands one frame to the clock. False when nobody listens any more.
    fn deliver(&mut self, packet: Vec<u8>) -> bool {
        if self.cancel.load(Ordering::Acquire) || self.tx.send(Frame::Audio(packet)).is_err() {
            return false;
        }
        self.made += 1;
        true
    }
}

/// Applies a linear gain, clipped to full scale; 1 leaves the samples alone.
fn scale(frame: &mut [f32], gain: f32) {
    if (gain - 1.0).abs() > f32::EPSILON {
        frame.iter_mut().for_each(|s| *s = (*s * gain).clamp(-1.0, 1.0));
    }
}

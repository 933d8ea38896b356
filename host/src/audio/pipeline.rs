//! One track's production line, on its own thread: fetch → decode → 48 kHz stereo → gain →
//! 20 ms frames → Opus. Frames wait in a small bounded buffer for the packet clock; a full
//! buffer pauses the thread, a dropped receiver or the cancel flag ends it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crossbeam_channel::{Receiver, Sender, bounded};

use super::decode::SourceDecoder;
use super::encode::{FRAME_LEN, OpusEncoder};
use super::equalizer::{EqualizerControl, ThreeBand};
use super::fetch::{FetchOptions, HttpSource};
use super::resample::To48k;

/// What the clock takes from a track.
#[derive(Debug)]
pub enum Frame {
    Audio(Vec<u8>),
    /// The track is over; an error says why it ended early.
    End(Result<(), String>),
}

/// Settings shared by every track.
#[derive(Clone)]
pub struct PipelineConfig {
    pub fetch: FetchOptions,
    pub bitrate_kbps: u32,
    /// Frames buffered ahead of the clock (20 ms each).
    pub frames_ahead: usize,
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
#[derive(Debug, Default)]
pub struct Controls {
    pub gain: Gain,
    pub equalizer: EqualizerControl,
}

impl Default for Gain {
    fn default() -> Self {
        Self::new(1.0)
    }
}

/// Where to start and what to play.
pub struct TrackRequest {
    pub url: String,
    pub start_ms: u64,
    /// The track's span; the pipeline's work is recorded under it.
    pub span: tracing::Span,
}

/// Starts producing frames. `on_open` runs once the source is probed.
pub fn spawn(
    request: TrackRequest,
    config: PipelineConfig,
    controls: Arc<Controls>,
    cancel: Arc<AtomicBool>,
    on_open: impl FnOnce(TrackInfo) + Send + 'static,
) -> std::io::Result<Receiver<Frame>> {
    let (tx, rx) = bounded(config.frames_ahead.max(2));
    std::thread::Builder::new().name("track-pipeline".into()).spawn(move || {
        let span = request.span.clone();
        let result = span.in_scope(|| produce(&request, &config, &controls, &cancel, &tx, on_open));
        if let Err(e) = &result {
            span.in_scope(|| tracing::warn!(error = %e, "track failed"));
        }
        if !cancel.load(Ordering::Acquire) {
            let _ = tx.send(Frame::End(result));
        }
    })?;
    Ok(rx)
}

fn produce(
    request: &TrackRequest,
    config: &PipelineConfig,
    controls: &Controls,
    cancel: &Arc<AtomicBool>,
    tx: &Sender<Frame>,
    on_open: impl FnOnce(TrackInfo),
) -> Result<(), String> {
    let source = HttpSource::open(&request.url, config.fetch.clone(), cancel.clone()).map_err(|e| e.to_string())?;
    let content_type = source.content_type().map(str::to_string);
    let mut decoder = SourceDecoder::open(Box::new(source), content_type.as_deref()).map_err(|e| e.to_string())?;
    on_open(TrackInfo { duration_ms: decoder.duration_ms() });
    if request.start_ms > 0 {
        decoder.seek_ms(request.start_ms);
    }
    let mut equalizer = ThreeBand::default();
    let mut encoder = OpusEncoder::new(config.bitrate_kbps).map_err(|e| e.to_string())?;
    let mut resampler: Option<To48k> = None;
    let mut pcm: Vec<f32> = Vec::with_capacity(FRAME_LEN * 8);

    let mut emit = |pcm: &mut Vec<f32>, flush: bool| -> Result<bool, String> {
        if flush && !pcm.len().is_multiple_of(FRAME_LEN) {
            // The tail shorter than a frame is played, padded with silence.
            let padded = pcm.len().next_multiple_of(FRAME_LEN);
            pcm.resize(padded, 0.0);
        }
        let mut start = 0;
        while pcm.len() - start >= FRAME_LEN {
            let frame = &mut pcm[start..start + FRAME_LEN];
            equalizer.process(&controls.equalizer, frame);
            let g = controls.gain.get();
            if (g - 1.0).abs() > f32::EPSILON {
                frame.iter_mut().for_each(|s| *s = (*s * g).clamp(-1.0, 1.0));
            }
            let packet = encoder.encode(frame).map_err(|e| e.to_string())?;
            start += FRAME_LEN;
            if cancel.load(Ordering::Acquire) || tx.send(Frame::Audio(packet)).is_err() {
                return Ok(false);
            }
        }
        pcm.drain(..start);
        Ok(true)
    };

    loop {
        if cancel.load(Ordering::Acquire) {
            return Ok(());
        }
        let Some((rate, block)) = decoder.next_block().map_err(|e| e.to_string())? else { break };
        let resampler = match resampler.as_mut() {
            Some(r) => r,
            None => resampler.insert(To48k::new(rate).map_err(|e| e.to_string())?),
        };
        resampler.push(block, &mut pcm).map_err(|e| e.to_string())?;
        if !emit(&mut pcm, false)? {
            return Ok(());
        }
    }
    if let Some(r) = resampler.as_mut() {
        r.finish(&mut pcm).map_err(|e| e.to_string())?;
    }
    emit(&mut pcm, true)?;
    Ok(())
}

//! A source being decoded: a container read through symphonia, resampled to 48 kHz, and
//! (while it fills the cache) encoded once for the cache and the listener alike.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{Produced, Waker};
use crate::audio::decode::{SourceDecoder, Unit as Decoded};
use crate::audio::encode::{EncoderSettings, FRAME_LEN, OpusEncoder};
use crate::audio::inflow::Readiness;
use crate::audio::resample::To48k;
use crate::audio::transcode::Unit;
use crate::cache::store::FillWriter;

/// A source being decoded: a container read through symphonia, resampled to 48 kHz.
pub struct Decoding {
    decoder: SourceDecoder,
    readiness: Arc<Readiness>,
    resampler: Option<To48k>,
    pcm: Vec<f32>,
    fill: Option<FillWriter>,
    /// Encodes a PCM source once while it fills the cache: the cache keeps those packets,
    /// and the listener hears them too unless a filter or the volume needs the PCM.
    fill_encoder: Option<OpusEncoder>,
    encoder: EncoderSettings,
    /// The end of the last block, by the fill encoder's delay: what a packet's decoded
    /// audio starts with.
    delayed: Vec<f32>,
}

impl Decoding {
    pub fn new(
        decoder: SourceDecoder,
        readiness: Arc<Readiness>,
        fill: Option<FillWriter>,
        encoder: EncoderSettings,
    ) -> Self {
        Self {
            decoder,
            readiness,
            resampler: None,
            pcm: Vec::with_capacity(FRAME_LEN * 8),
            fill,
            fill_encoder: None,
            encoder,
            delayed: Vec::new(),
        }
    }

    pub(super) fn produce(&mut self, pending: &mut VecDeque<Unit>, target: usize, wake: &Waker) -> Produced {
        while pending.len() < target {
            let wake = wake.clone();
            if !self.readiness.is_ready() && !self.readiness.notify_when_ready(move || wake()) {
                return Produced::Waiting;
            }
            let (rate, samples) = match self.decoder.next_unit() {
                Err(e) => return Produced::Ended(Err(e.to_string())),
                Ok(None) => return self.finish(pending),
                Ok(Some(Decoded::Opus(packet))) => {
                    if let Some(fill) = self.fill.as_mut() {
                        fill.push(&packet);
                    }
                    pending.push_back(Unit::Opus(packet, None));
                    continue;
                }
                Ok(Some(Decoded::Pcm { rate, samples })) => (rate, samples),
            };
            if let Err(e) = resample(&mut self.resampler, rate, samples, &mut self.pcm) {
                return Produced::Ended(Err(e.to_string()));
            }
            if let Err(e) = self.blocks(pending, false) {
                return Produced::Ended(Err(e));
            }
        }
        Produced::Some
    }

    /// The source ended by itself: the rest of the audio, and the fill is the whole track.
    fn finish(&mut self, pending: &mut VecDeque<Unit>) -> Produced {
        if let Some(r) = self.resampler.as_mut()
            && let Err(e) = r.finish(&mut self.pcm)
        {
            return Produced::Ended(Err(e.to_string()));
        }
        if let Err(e) = self.blocks(pending, true) {
            return Produced::Ended(Err(e));
        }
        if let Some(fill) = self.fill.take() {
            fill.finish();
        }
        Produced::Ended(Ok(()))
    }

    /// Queues the whole 20 ms blocks of the resampled PCM (all of it when `all`, the last
    /// one short or padded).
    fn blocks(&mut self, pending: &mut VecDeque<Unit>, all: bool) -> Result<(), String> {
        let mut start = 0;
        while self.pcm.len() - start >= FRAME_LEN || (all && start < self.pcm.len()) {
            let end = (start + FRAME_LEN).min(self.pcm.len());
            let mut block = self.pcm[start..end].to_vec();
            start = end;
            if self.fill.is_none() {
                pending.push_back(Unit::Pcm(block));
                continue;
            }
            let encoder = match self.fill_encoder.as_mut() {
                Some(e) => e,
                None => {
                    let encoder = OpusEncoder::with(&self.encoder).map_err(|e| e.to_string())?;
                    self.delayed = vec![0.0; encoder.lookahead() * 2];
                    self.fill_encoder.insert(encoder)
                }
            };
            block.resize(FRAME_LEN, 0.0);
            let packet = encoder.encode(&block).map_err(|e| e.to_string())?;
            if let Some(fill) = self.fill.as_mut() {
                fill.push(&packet);
            }
            // The packet decodes to the block delayed by the encoder's lookahead.
            let keep = self.delayed.len();
            let mut heard = Vec::with_capacity(FRAME_LEN);
            heard.extend_from_slice(&self.delayed);
            heard.extend_from_slice(&block[..FRAME_LEN - keep]);
            self.delayed.copy_from_slice(&block[FRAME_LEN - keep..]);
            pending.push_back(Unit::Opus(packet, Some(heard)));
        }
        self.pcm.drain(..start);
        Ok(())
    }
}

/// Appends `samples` at `rate` to `pcm` at 48 kHz. A stream that changes its rate mid-way
/// (concatenated MP3s do) gets a resampler for the new rate once the old one is flushed.
fn resample(
    resampler: &mut Option<To48k>,
    rate: u32,
    samples: &[f32],
    pcm: &mut Vec<f32>,
) -> Result<(), crate::audio::resample::ResampleError> {
    if let Some(old) = resampler.as_mut().filter(|r| r.input_rate() != rate) {
        old.finish(pcm)?;
        *resampler = None;
    }
    let resampler = match resampler {
        Some(r) => r,
        None => resampler.insert(To48k::new(rate)?),
    };
    resampler.push(samples, pcm)
}

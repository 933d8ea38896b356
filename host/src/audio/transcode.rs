//! The last stage of a track: the filter chain, the volume and the Opus encoder, and the
//! decision, packet by packet, whether an Opus packet can go to the transport untouched.
//! Switching between passing through and re-encoding is seamless: re-encoded frames line up
//! with the source's packets (see `offset`), and the encoder is primed with the audio the
//! listener just heard.
//!
//! A unit may carry the PCM its packet was encoded from (a track filling the cache: the cache
//! gets that encode). Then re-encoding uses that PCM instead of decoding the packet, so what
//! the listener hears passes through one lossy encode, never two.

use std::collections::VecDeque;
use std::sync::Arc;

use super::controls::Controls;
use super::encode::{EncoderSettings, FRAME_LEN, OpusEncoder};
use super::filter_chain::FilterChain;
use super::frames::{FrameRing, PASS_AHEAD};
use super::opus_packets::{self, OpusDecodeError, PacketDecoder};
use prometheus_client::metrics::counter::Counter;

/// One unit of a track's decoded input, in order.
pub enum Unit {
    /// An Opus packet, with the PCM it stands for when that is known (the same timeline as
    /// decoding the packet would give).
    Opus(Vec<u8>, Option<Vec<f32>>),
    /// Up to 20 ms of interleaved stereo at 48 kHz.
    Pcm(Vec<f32>),
    End(Result<(), String>),
}

/// An Opus source's packets on their way to PCM, when PCM is needed.
pub struct OpusUnits {
    decoder: PacketDecoder,
}

impl OpusUnits {
    fn new(decodes: Counter) -> Self {
        Self { decoder: PacketDecoder::counted(decodes) }
    }

    fn decode(&mut self, packet: &[u8], pcm: Option<Vec<f32>>) -> Result<Vec<f32>, OpusDecodeError> {
        match pcm {
            Some(pcm) => Ok(pcm),
            None => self.decoder.decode(packet),
        }
    }
}

/// Filters, applies the volume, encodes, and hands frames to the clock's ring.
pub struct Transcoder {
    encoder: Option<OpusEncoder>,
    settings: EncoderSettings,
    decodes: Counter,
    pub chain: FilterChain,
    controls: Arc<Controls>,
    ring: Arc<FrameRing>,
    opus: Option<OpusUnits>,
    /// The PCM each recently passed unit carried (none for a bare packet), oldest first: the
    /// audio before a switch to re-encoding, and what goes back with a packet taken back.
    passed_pcm: VecDeque<Option<Vec<f32>>>,
    ready: Vec<f32>,
    /// While re-encoding an Opus source: the encoder's lookahead, in samples per channel.
    /// Each frame is encoded from that far ahead so the encoder's delay is cancelled and the
    /// re-encoded frames line up with the source's packets (switching is seamless).
    offset: usize,
    /// Frames handed to the ring so far (taken back ones excluded).
    pub made: u64,
}

/// What became of a unit.
pub enum Outcome {
    Done,
    /// A packet that would not decode (counted by the caller).
    Undecodable(OpusDecodeError),
}

impl Transcoder {
    pub fn new(
        settings: EncoderSettings,
        decodes: Counter,
        chain: FilterChain,
        controls: Arc<Controls>,
        ring: Arc<FrameRing>,
    ) -> Self {
        Self {
            encoder: None,
            settings,
            decodes,
            chain,
            controls,
            ring,
            opus: None,
            passed_pcm: VecDeque::new(),
            ready: Vec::new(),
            offset: 0,
            made: 0,
        }
    }

    /// Whether an Opus packet can reach the transport untouched: a 20 ms packet, nothing
    /// owed from re-encoding, no filter working and the volume at 1.
    pub fn passes_through(&mut self, packet: &[u8]) -> bool {
        opus_packets::frame_samples(packet) == Some(FRAME_LEN / 2)
            && (self.controls.gain.get() - 1.0).abs() <= f32::EPSILON
            && !self.chain.is_active(&self.controls.filters)
    }

    /// Whether nothing is owed from re-encoding, so a passed packet may go out on its own.
    pub fn is_aligned(&self) -> bool {
        self.offset == 0
    }

    /// The last `n` passed packets were taken back from the ring unheard: they are decided
    /// again. Returns the PCM they carried, oldest first.
    pub fn take_back(&mut self, n: usize) -> Vec<Option<Vec<f32>>> {
        self.made -= n as u64;
        let first = self.passed_pcm.len().saturating_sub(n);
        let mut pcm: Vec<Option<Vec<f32>>> = self.passed_pcm.drain(first..).collect();
        let bare = pcm.iter().filter(|p| p.is_none()).count() + (n - pcm.len());
        if let Some(opus) = self.opus.as_mut() {
            opus.decoder.unpass(bare);
        }
        pcm.splice(0..0, std::iter::repeat_n(None, n - pcm.len()));
        pcm
    }

    fn encoder(&mut self) -> Result<&mut OpusEncoder, String> {
        match self.encoder {
            Some(ref mut e) => Ok(e),
            None => Ok(self.encoder.insert(OpusEncoder::with(&self.settings).map_err(|e| e.to_string())?)),
        }
    }

    fn opus(&mut self) -> &mut OpusUnits {
        self.opus.get_or_insert_with(|| OpusUnits::new(self.decodes.clone()))
    }

    /// Handles one unit; `passes` is [`Self::passes_through`]'s answer for an Opus unit and
    /// `version` the controls' version it was given under.
    pub fn unit(&mut self, unit: Unit, passes: bool, version: u64) -> Result<Outcome, String> {
        match unit {
            Unit::Pcm(pcm) => self.transcode(pcm, false).map(|()| Outcome::Done),
            Unit::Opus(packet, pcm) => {
                let decoded = if passes {
                    self.pass_through(&packet, pcm, version)
                } else if self.offset == 0 {
                    self.start_transcoding(&packet, pcm)
                } else {
                    match self.opus().decode(&packet, pcm) {
                        Ok(pcm) => Ok(self.transcode(pcm, false)),
                        Err(e) => Err(e),
                    }
                };
                match decoded {
                    Ok(sent) => sent.map(|()| Outcome::Done),
                    Err(e) => Ok(Outcome::Undecodable(e)),
                }
            }
            Unit::End(_) => {
                let tail = self.chain.flush(&self.controls.filters);
                self.transcode(tail, true).map(|()| Outcome::Done)
            }
        }
    }

    /// Sends `packet` as it is, after the frame still owed from re-encoding, if any.
    fn pass_through(
        &mut self,
        packet: &[u8],
        pcm: Option<Vec<f32>>,
        version: u64,
    ) -> Result<Result<(), String>, OpusDecodeError> {
        let offset = self.offset;
        let opus = self.opus();
        if offset > 0 {
            // The last re-encoded frame needs the start of this packet as its lookahead.
            let pcm = opus.decode(packet, pcm)?;
            self.ready.extend_from_slice(&pcm[..pcm.len().min(offset * 2)]);
            if let Err(e) = self.send(false) {
                return Ok(Err(e));
            }
            self.ready.clear();
            self.offset = 0;
        } else {
            if pcm.is_none() {
                opus.decoder.pass(packet);
            }
            if self.passed_pcm.len() > PASS_AHEAD {
                self.passed_pcm.pop_front();
            }
            self.passed_pcm.push_back(pcm);
        }
        self.ring.push_passed(packet, version);
        self.made += 1;
        Ok(Ok(()))
    }

    /// Switches an Opus source to re-encoding at `packet`. The encoder is first fed (output
    /// dropped) the frame that ends `lookahead` samples into the packet, so its history is
    /// what the listener just heard and its first frame continues it.
    fn start_transcoding(
        &mut self,
        packet: &[u8],
        pcm: Option<Vec<f32>>,
    ) -> Result<Result<(), String>, OpusDecodeError> {
        let lookahead = match self.encoder() {
            Ok(e) => e.lookahead(),
            Err(e) => return Ok(Err(e)),
        };
        // The audio just heard: the PCM the fill's packet was made from, or the packets
        // passed undecoded, caught up with now.
        let heard = self.passed_pcm.pop_back().flatten();
        self.passed_pcm.clear();
        let opus = self.opus();
        let previous = heard.or_else(|| opus.decoder.resume()).unwrap_or_default();
        let pcm = opus.decode(packet, pcm)?;
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
        scale(&mut prime, self.controls.gain.get());
        let primed = self.encoder().and_then(|e| e.encode_in_place(&prime).map(|_| ()).map_err(|e| e.to_string()));
        if let Err(e) = primed {
            return Ok(Err(e));
        }
        self.ready.drain(..here);
        self.offset = lookahead;
        Ok(self.send(false))
    }

    /// Filters `pcm`, then encodes and sends every whole frame ready. `flush` sends the rest
    /// too, padded with silence.
    fn transcode(&mut self, pcm: Vec<f32>, flush: bool) -> Result<(), String> {
        let mut filtered = if flush { pcm } else { self.chain.process(&self.controls.filters, pcm) };
        self.ready.append(&mut filtered);
        self.send(flush)
    }

    fn send(&mut self, flush: bool) -> Result<(), String> {
        if self.ready.is_empty() {
            // Nothing to encode (a passed-through track's end): no encoder is made for it.
            return Ok(());
        }
        self.encoder()?;
        let ahead = self.offset * 2;
        if flush {
            // The tail shorter than a frame is played, padded with silence.
            self.ready.resize(self.ready.len() + ahead, 0.0);
            let body = self.ready.len() - ahead;
            self.ready.resize(body.next_multiple_of(FRAME_LEN) + ahead, 0.0);
        }
        let gain = self.controls.gain.get();
        let Some(encoder) = self.encoder.as_mut() else { return Ok(()) };
        let mut start = 0;
        let mut result = Ok(());
        while self.ready.len() - start >= FRAME_LEN + ahead {
            // In place: each sample belongs to exactly one frame.
            let frame = &mut self.ready[start + ahead..start + ahead + FRAME_LEN];
            scale(frame, gain);
            match encoder.encode_in_place(frame) {
                Ok(packet) => {
                    self.ring.push_encoded(packet);
                    self.made += 1;
                }
                Err(e) => {
                    result = Err(e.to_string());
                    break;
                }
            }
            start += FRAME_LEN;
        }
        self.ready.drain(..start);
        result
    }
}

/// Applies a linear gain, clipped to full scale; 1 leaves the samples alone.
fn scale(frame: &mut [f32], gain: f32) {
    if (gain - 1.0).abs() > f32::EPSILON {
        frame.iter_mut().for_each(|s| *s = (*s * gain).clamp(-1.0, 1.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::voice::OPUS_SILENCE;

    #[test]
    fn a_passed_through_track_ends_without_making_an_encoder() {
        let ring = Arc::new(FrameRing::new(0, Arc::new(|| 0)));
        let chain = FilterChain::new(None, Arc::new(|_| {}));
        let mut out = Transcoder::new(EncoderSettings::new(64), Counter::default(), chain, Controls::unchanged(), ring);
        for _ in 0..3 {
            assert!(out.passes_through(&OPUS_SILENCE));
            assert!(matches!(out.unit(Unit::Opus(OPUS_SILENCE.to_vec(), None), true, 0), Ok(Outcome::Done)));
        }
        assert!(matches!(out.unit(Unit::End(Ok(())), false, 0), Ok(Outcome::Done)));
        assert_eq!(out.made, 3);
        assert!(out.encoder.is_none(), "an encoder was made for a track that only passed packets through");
    }
}

//! Opus packets from an Opus source (Ogg or WebM), decoded only when the player needs PCM
//! (a filter or a volume other than 1). While nothing needs it, packets go to the transport
//! untouched; the last few are kept so that switching to decoding mid-track primes the
//! decoder with the audio just before (Opus decoders need a few packets of history to
//! continue without a click).

use std::collections::VecDeque;

use audiopus::coder::Decoder;
use audiopus::{Channels, SampleRate};
use prometheus_client::metrics::counter::Counter;

/// Packets of history replayed into a cold decoder (80 ms at 20 ms packets).
const PRIMING_PACKETS: usize = 4;
/// Packets remembered: the priming ones and as many more as may be taken back (see
/// [`PacketDecoder::unpass`]).
const HISTORY: usize = PRIMING_PACKETS + crate::audio::frames::PASS_AHEAD;
/// The largest Opus packet: 120 ms at 48 kHz, stereo.
const MAX_SAMPLES: usize = 5760 * 2;

/// Samples per channel in `packet` at 48 kHz, when it is a valid Opus packet.
pub fn frame_samples(packet: &[u8]) -> Option<usize> {
    let packet = audiopus::packet::Packet::try_from(packet).ok()?;
    audiopus::packet::nb_samples(packet, SampleRate::Hz48000).ok()
}

#[derive(Debug, thiserror::Error)]
#[error("opus: {0}")]
pub struct OpusDecodeError(String);

pub struct PacketDecoder {
    /// Made for the first packet decoded: a track that only passes packets through holds no
    /// codec state (about 26 KiB for libopus, 46 KiB for the scratch buffer).
    decoder: Option<Decoder>,
    /// Recent packets that went through without decoding.
    history: VecDeque<Vec<u8>>,
    /// Whether the decoder saw every packet since the last one it decoded.
    warm: bool,
    scratch: Vec<f32>,
    decodes: Counter,
}

impl Default for PacketDecoder {
    fn default() -> Self {
        Self::counted(Counter::default())
    }
}

impl PacketDecoder {
    /// A decoder that counts every packet it decodes in `decodes`.
    pub fn counted(decodes: Counter) -> Self {
        Self { decoder: None, history: VecDeque::new(), warm: true, scratch: Vec::new(), decodes }
    }

    /// Notes a packet that went to the transport without being decoded.
    pub fn pass(&mut self, packet: &[u8]) {
        // The oldest buffer is reused: steady passthrough allocates nothing here.
        let mut kept =
            if self.history.len() == HISTORY { self.history.pop_front().unwrap_or_default() } else { Vec::new() };
        kept.clear();
        kept.extend_from_slice(packet);
        self.history.push_back(kept);
        self.warm = false;
    }

    /// Forgets the last `n` packets passed: they were taken back before anyone heard them.
    pub fn unpass(&mut self, n: usize) {
        let keep = self.history.len().saturating_sub(n);
        self.history.truncate(keep);
    }

    /// Catches up with the packets that went past undecoded (their audio was already
    /// heard) and returns the last one's samples; none when there was nothing to catch up.
    pub fn resume(&mut self) -> Option<Vec<f32>> {
        if self.warm {
            return None;
        }
        self.warm = true;
        let mut last = None;
        let history = std::mem::take(&mut self.history);
        for old in history.range(history.len().saturating_sub(PRIMING_PACKETS)..) {
            last = self.decode_one(old).ok().map(|n| self.scratch[..n * 2].to_vec());
        }
        last
    }

    /// Interleaved stereo at 48 kHz for `packet`, continuing from the packets before it.
    pub fn decode(&mut self, packet: &[u8]) -> Result<Vec<f32>, OpusDecodeError> {
        self.resume();
        let n = self.decode_one(packet)?;
        Ok(self.scratch[..n * 2].to_vec())
    }

    fn decode_one(&mut self, packet: &[u8]) -> Result<usize, OpusDecodeError> {
        self.decodes.inc();
        let packet = audiopus::packet::Packet::try_from(packet).map_err(|e| OpusDecodeError(e.to_string()))?;
        let decoder = match &mut self.decoder {
            Some(decoder) => decoder,
            None => self.decoder.insert(
                Decoder::new(SampleRate::Hz48000, Channels::Stereo).map_err(|e| OpusDecodeError(e.to_string()))?,
            ),
        };
        self.scratch.resize(MAX_SAMPLES, 0.0);
        let out = audiopus::MutSignals::try_from(&mut self.scratch[..]).map_err(|e| OpusDecodeError(e.to_string()))?;
        decoder.decode_float(Some(packet), out, false).map_err(|e| OpusDecodeError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::encode::{FRAME_LEN, OpusEncoder, tone_frame};

    fn tone_packets(n: usize) -> Vec<Vec<u8>> {
        let mut encoder = OpusEncoder::new(128).unwrap();
        (0..n).map(|f| encoder.encode(&tone_frame(440.0, 0.5, f * FRAME_LEN / 2)).unwrap()).collect()
    }

    #[test]
    fn packets_passed_through_need_no_codec_state() {
        let mut passing = PacketDecoder::default();
        for p in &tone_packets(40) {
            passing.pass(p);
        }
        assert!(passing.decoder.is_none() && passing.scratch.is_empty());
        assert!(passing.resume().is_some(), "the first decode makes the decoder");
        assert!(passing.decoder.is_some());
    }

    #[test]
    fn decoding_after_passing_packets_continues_as_if_all_were_decoded() {
        let packets = tone_packets(20);
        assert_eq!(frame_samples(&packets[0]), Some(960));
        let mut always = PacketDecoder::default();
        let reference: Vec<Vec<f32>> = packets.iter().map(|p| always.decode(p).unwrap()).collect();
        let mut switching = PacketDecoder::default();
        for p in &packets[..10] {
            switching.pass(p);
        }
        let resumed = switching.decode(&packets[10]).unwrap();
        let mut cold = PacketDecoder::default();
        let unprimed = cold.decode(&packets[10]).unwrap();
        let error = |out: &[f32]| out.iter().zip(&reference[10]).map(|(a, b)| (a - b).abs()).sum::<f32>();
        // Primed with history, the decoder's state comes close to the continuous one; a
        // cold decoder starts from silence.
        let (primed, cold) = (error(&resumed), error(&unprimed));
        assert!(primed * 5.0 < cold, "error primed {primed}, cold {cold}");
    }
}

//! Opus packets to MP3 (LAME, constant bit rate, 48 kHz stereo), for listeners whose players
//! cannot play Opus. One packet in, whatever MP3 frames LAME completed out.

use audiopus::coder::Decoder;
use audiopus::{Channels, SampleRate};
use mp3lame_encoder::{Bitrate, Builder, Encoder, InterleavedPcm, Quality};

/// Interleaved stereo samples in the longest Opus packet (120 ms at 48 kHz).
const MAX_SAMPLES: usize = 5760 * 2;

#[derive(Debug, thiserror::Error)]
#[error("mp3: {0}")]
pub struct Mp3Error(String);

pub struct Mp3Encoder {
    decoder: Decoder,
    lame: Encoder,
    pcm: Vec<f32>,
    out: Vec<u8>,
}

fn bitrate(kbps: u32) -> Result<Bitrate, Mp3Error> {
    Ok(match kbps {
        32 => Bitrate::Kbps32,
        40 => Bitrate::Kbps40,
        48 => Bitrate::Kbps48,
        64 => Bitrate::Kbps64,
        80 => Bitrate::Kbps80,
        96 => Bitrate::Kbps96,
        112 => Bitrate::Kbps112,
        128 => Bitrate::Kbps128,
        160 => Bitrate::Kbps160,
        192 => Bitrate::Kbps192,
        224 => Bitrate::Kbps224,
        256 => Bitrate::Kbps256,
        320 => Bitrate::Kbps320,
        other => return Err(Mp3Error(format!("{other} kbit/s is not an MP3 bit rate"))),
    })
}

impl Mp3Encoder {
    pub fn new(kbps: u32) -> Result<Self, Mp3Error> {
        let error = |e: mp3lame_encoder::BuildError| Mp3Error(e.to_string());
        let mut builder = Builder::new().ok_or_else(|| Mp3Error("LAME could not start".into()))?;
        builder.set_num_channels(2).map_err(error)?;
        builder.set_sample_rate(48_000).map_err(error)?;
        builder.set_brate(bitrate(kbps)?).map_err(error)?;
        // Quality 5 is LAME's speed-for-quality default for streaming.
        builder.set_quality(Quality::Good).map_err(error)?;
        let lame = builder.build().map_err(error)?;
        let decoder = Decoder::new(SampleRate::Hz48000, Channels::Stereo).map_err(|e| Mp3Error(e.to_string()))?;
        Ok(Self { decoder, lame, pcm: vec![0.0; MAX_SAMPLES], out: Vec::with_capacity(16 * 1024) })
    }

    /// Encodes one Opus packet (a packet that does not decode is heard as 20 ms of silence)
    /// and returns the MP3 bytes completed so far.
    pub fn push(&mut self, packet: &[u8]) -> &[u8] {
        self.out.clear();
        let samples = audiopus::packet::Packet::try_from(packet)
            .ok()
            .zip(audiopus::MutSignals::try_from(&mut self.pcm[..]).ok())
            .and_then(|(packet, signals)| self.decoder.decode_float(Some(packet), signals, false).ok())
            .unwrap_or_else(|| {
                self.pcm[..1920].fill(0.0);
                960
            });
        let pcm = &self.pcm[..samples * 2];
        self.out.reserve(mp3lame_encoder::max_required_buffer_size(samples));
        if let Err(e) = self.lame.encode_to_vec(InterleavedPcm(pcm), &mut self.out) {
            tracing::debug!(error = %e, "mp3 encode failed for one packet");
        }
        &self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::encode::{FRAME_LEN, OpusEncoder, tone_frame};

    #[test]
    fn opus_in_mp3_frames_out_at_the_asked_rate() {
        let mut opus = OpusEncoder::new(128).unwrap();
        let mut mp3 = Mp3Encoder::new(128).unwrap();
        let mut bytes = Vec::new();
        for f in 0..250 {
            let packet = opus.encode(&tone_frame(440.0, 0.5, f * FRAME_LEN / 2)).unwrap();
            bytes.extend_from_slice(mp3.push(&packet));
        }
        // 5 s at 128 kbit/s is 80 000 bytes; LAME holds back a frame or two.
        assert!((70_000..=82_000).contains(&bytes.len()), "{} bytes", bytes.len());
        let sync = bytes.windows(2).position(|w| w[0] == 0xff && w[1] & 0xe0 == 0xe0);
        assert_eq!(sync, Some(0), "starts at an MP3 frame");
        assert!(Mp3Encoder::new(100).is_err());
    }
}

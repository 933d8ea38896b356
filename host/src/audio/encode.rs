//! Opus encoding of 20 ms stereo frames at 48 kHz.

use audiopus::coder::Encoder;
use audiopus::{Application, Bitrate, Channels, SampleRate};

/// Interleaved samples in one 20 ms stereo frame at 48 kHz.
pub const FRAME_LEN: usize = 1920;

#[derive(Debug, thiserror::Error)]
#[error("opus: {0}")]
pub struct EncodeError(String);

pub struct OpusEncoder {
    encoder: Encoder,
    out: Vec<u8>,
}

impl OpusEncoder {
    /// `bitrate_kbps` must lie within Opus's 6–510 kbps.
    pub fn new(bitrate_kbps: u32) -> Result<Self, EncodeError> {
        let mut encoder = Encoder::new(SampleRate::Hz48000, Channels::Stereo, Application::Audio)
            .map_err(|e| EncodeError(e.to_string()))?;
        encoder
            .set_bitrate(Bitrate::BitsPerSecond((bitrate_kbps * 1000) as i32))
            .map_err(|e| EncodeError(e.to_string()))?;
        Ok(Self { encoder, out: vec![0; 1500] })
    }

    /// How many samples per channel the encoder's output lags its input.
    pub fn lookahead(&self) -> usize {
        self.encoder.lookahead().map_or(0, |n| n as usize)
    }

    /// Encodes exactly one frame of [`FRAME_LEN`] interleaved samples.
    pub fn encode(&mut self, frame: &[f32]) -> Result<Vec<u8>, EncodeError> {
        let n = self.encoder.encode_float(frame, &mut self.out).map_err(|e| EncodeError(e.to_string()))?;
        Ok(self.out[..n].to_vec())
    }
}

/// One frame of a sine at `hz` with peak `amplitude` in both channels, its first sample
/// being sample `first` of the tone: what unit tests and benchmarks encode.
pub fn tone_frame(hz: f32, amplitude: f32, first: usize) -> Vec<f32> {
    (first..first + FRAME_LEN / 2)
        .flat_map(|i| {
            let s = amplitude * (std::f32::consts::TAU * hz * i as f32 / 48_000.0).sin();
            [s, s]
        })
        .collect()
}

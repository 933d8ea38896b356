//! Opus encoding of 20 ms stereo frames at 48 kHz.

use audiopus::coder::Encoder;
use audiopus::{Application, Bitrate, Channels, SampleRate};
use prometheus_client::metrics::counter::Counter;

/// Interleaved samples in one 20 ms stereo frame at 48 kHz.
pub const FRAME_LEN: usize = 1920;

#[derive(Debug, thiserror::Error)]
#[error("opus: {0}")]
pub struct EncodeError(String);

/// libopus's highest (and default) complexity.
pub const MAX_COMPLEXITY: u8 = 10;

/// How every track's encoders are set up.
#[derive(Debug, Clone)]
pub struct EncoderSettings {
    /// Within Opus's 6–510 kbps.
    pub bitrate_kbps: u32,
    /// libopus complexity, 0–10 (`ENCODING_COMPLEXITY`): lower costs less CPU per frame.
    pub complexity: u8,
    /// Counts every frame encoded.
    pub encodes: Counter,
}

impl EncoderSettings {
    pub fn new(bitrate_kbps: u32) -> Self {
        Self { bitrate_kbps, complexity: MAX_COMPLEXITY, encodes: Counter::default() }
    }
}

pub struct OpusEncoder {
    encoder: Encoder,
    out: Vec<u8>,
    encodes: Counter,
}

impl OpusEncoder {
    /// An encoder at `bitrate_kbps` (within Opus's 6–510 kbps) and the highest complexity.
    pub fn new(bitrate_kbps: u32) -> Result<Self, EncodeError> {
        Self::with(&EncoderSettings::new(bitrate_kbps))
    }

    pub fn with(settings: &EncoderSettings) -> Result<Self, EncodeError> {
        let mut encoder = Encoder::new(SampleRate::Hz48000, Channels::Stereo, Application::Audio)
            .map_err(|e| EncodeError(e.to_string()))?;
        encoder
            .set_bitrate(Bitrate::BitsPerSecond((settings.bitrate_kbps * 1000) as i32))
            .map_err(|e| EncodeError(e.to_string()))?;
        encoder.set_complexity(settings.complexity.min(MAX_COMPLEXITY)).map_err(|e| EncodeError(e.to_string()))?;
        Ok(Self { encoder, out: vec![0; 1500], encodes: settings.encodes.clone() })
    }

    /// How many samples per channel the encoder's output lags its input.
    pub fn lookahead(&self) -> usize {
        self.encoder.lookahead().map_or(0, |n| n as usize)
    }

    /// Encodes exactly one frame of [`FRAME_LEN`] interleaved samples.
    pub fn encode(&mut self, frame: &[f32]) -> Result<Vec<u8>, EncodeError> {
        self.encode_in_place(frame).map(<[u8]>::to_vec)
    }

    /// Encodes one frame into the encoder's own buffer: no allocation.
    pub fn encode_in_place(&mut self, frame: &[f32]) -> Result<&[u8], EncodeError> {
        let n = self.encoder.encode_float(frame, &mut self.out).map_err(|e| EncodeError(e.to_string()))?;
        self.encodes.inc();
        Ok(&self.out[..n])
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

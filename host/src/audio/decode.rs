//! Demuxing and decoding with symphonia. Output is interleaved stereo at the source rate
//! (mono duplicated, more than two channels folded down), except for Opus streams (Ogg,
//! WebM): their packets are handed on as they are, to be passed through or decoded later
//! (see `opus_packets`).

use symphonia::core::codecs::CodecParameters;
use symphonia::core::codecs::audio::CODEC_ID_NULL_AUDIO;
use symphonia::core::codecs::audio::well_known::CODEC_ID_OPUS;
use symphonia::core::codecs::audio::{AudioCodecParameters, AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, SeekMode, SeekTo};
use symphonia::core::io::{MediaSource, MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::units::{Time, TimeBase};

use super::opus_packets;

/// Consecutive undecodable packets tolerated before the track is given up.
const ERROR_BUDGET: u32 = 20;

/// The sample rates a track may have: what real audio uses, from telephony to studio
/// masters. A header can declare anything (1 Hz, 4 GHz); the resampler's and the decoder's
/// memory follow the rate, so nothing outside is opened.
pub const MIN_SAMPLE_RATE: u32 = 8_000;
pub const MAX_SAMPLE_RATE: u32 = 384_000;
/// The most channels a track may have (AAC's 48 and Vorbis's 255 exist on paper only).
pub const MAX_CHANNELS: usize = 32;
/// The most frames one decoded packet may hold (FLAC's largest block is 65535), and the
/// most samples (frames × channels): 4 MiB of `f32`. The decoder's buffers are sized by
/// them, and so is what one packet becomes at 48 kHz (at most 6 × 65536 stereo frames).
pub const MAX_PACKET_FRAMES: u64 = 65_536;
pub const MAX_PACKET_SAMPLES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unrecognised media format: {0}")]
    Format(String),
    #[error("no audio track in the media")]
    NoAudio,
    #[error("unsupported codec: {0}")]
    Codec(String),
    #[error("{0}")]
    Io(String),
    #[error("too many undecodable packets ({0})")]
    Corrupt(String),
    /// The media declares something no real audio has; nothing was allocated for it.
    #[error("{0}")]
    OutOfBounds(#[from] Unplayable),
}

/// What a header declared that is outside what a track may be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unplayable {
    #[error("the media declares a sample rate of {0} Hz; tracks play at {MIN_SAMPLE_RATE}–{MAX_SAMPLE_RATE} Hz")]
    SampleRate(u32),
    #[error("the media declares {0} channels; tracks have 1–{MAX_CHANNELS}")]
    Channels(usize),
    #[error(
        "the media declares packets of {0} frames × {1} channels; at most {MAX_PACKET_FRAMES} frames and {MAX_PACKET_SAMPLES} samples are decoded at once"
    )]
    PacketSize(u64, usize),
}

/// Checks a sample rate and channel count a container or a decoded packet declares.
pub fn check_format(rate: u32, channels: usize) -> Result<(), Unplayable> {
    if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&rate) {
        return Err(Unplayable::SampleRate(rate));
    }
    if !(1..=MAX_CHANNELS).contains(&channels) {
        return Err(Unplayable::Channels(channels));
    }
    Ok(())
}

/// Checks what a container says of its audio before a decoder is made for it (the decoder
/// sizes its buffers by the channels and the largest packet). Unknown fields are checked on
/// the first decoded packet instead.
fn check_params(params: &AudioCodecParameters) -> Result<(), Unplayable> {
    let channels = params.channels.as_ref().map(|c| c.count());
    if let Some(rate) = params.sample_rate {
        check_format(rate, channels.unwrap_or(1))?;
    } else if let Some(channels) = channels {
        check_format(MIN_SAMPLE_RATE, channels)?;
    }
    check_packet(params.max_frames_per_packet.unwrap_or(0), channels.unwrap_or(1))
}

fn check_packet(frames: u64, channels: usize) -> Result<(), Unplayable> {
    if frames > MAX_PACKET_FRAMES || frames.saturating_mul(channels as u64) > MAX_PACKET_SAMPLES {
        return Err(Unplayable::PacketSize(frames, channels));
    }
    Ok(())
}

enum Codec {
    Symphonia(Box<dyn AudioDecoder>),
    Opus,
}

/// What the source yields next.
pub enum Unit<'a> {
    /// Interleaved stereo samples at `rate`.
    Pcm { rate: u32, samples: &'a [f32] },
    /// One Opus packet at 48 kHz, untouched.
    Opus(Vec<u8>),
}

pub struct SourceDecoder {
    format: Box<dyn FormatReader + 'static>,
    track_id: u32,
    codec: Codec,
    rate: u32,
    duration_ms: Option<u64>,
    time_base: Option<TimeBase>,
    /// Output frames still to drop so playback starts exactly at a seek target.
    skip_frames: u64,
    /// A seek target the container could not seek to: decode and drop up to it.
    skip_ms: Option<u64>,
    scratch: Vec<f32>,
    out: Vec<f32>,
}

fn io_error(e: SymphoniaError) -> DecodeError {
    DecodeError::Io(e.to_string())
}

impl SourceDecoder {
    /// Probes the container and sets up the decoder for its first audio track.
    pub fn open(source: Box<dyn MediaSource>, content_type: Option<&str>) -> Result<Self, DecodeError> {
        let mut hint = Hint::new();
        if let Some(ct) = content_type {
            hint.mime_type(ct);
        }
        let mss = MediaSourceStream::new(source, MediaSourceStreamOptions::default());
        let format = symphonia::default::get_probe()
            .probe(&hint, mss, FormatOptions::default(), MetadataOptions::default())
            .map_err(|e| match e {
                SymphoniaError::IoError(io) => DecodeError::Io(io.to_string()),
                other => DecodeError::Format(other.to_string()),
            })?;
        let (track_id, params, duration_ms, time_base) = format
            .tracks()
            .iter()
            .find_map(|t| match &t.codec_params {
                Some(CodecParameters::Audio(p)) if p.codec != CODEC_ID_NULL_AUDIO => {
                    let rate = u128::from(p.sample_rate.unwrap_or(48_000).max(1));
                    // A declared length is a number to show, never a size to allocate.
                    let duration_ms =
                        t.num_frames.map(|n| u64::try_from(u128::from(n) * 1000 / rate).unwrap_or(u64::MAX));
                    Some((t.id, p.clone(), duration_ms, t.time_base))
                }
                _ => None,
            })
            .ok_or(DecodeError::NoAudio)?;
        // Opus's pre-skip is not applied: passed-through packets cannot drop it either, and
        // both ways must line up sample for sample to switch between them.
        let (codec, rate) = if params.codec == CODEC_ID_OPUS {
            // Decoded (when it is) by libopus at 48 kHz stereo, whatever the header says.
            (Codec::Opus, 48_000)
        } else {
            check_params(&params)?;
            let decoder = symphonia::default::get_codecs()
                .make_audio_decoder(&params, &AudioDecoderOptions::default())
                .map_err(|e| DecodeError::Codec(e.to_string()))?;
            (Codec::Symphonia(decoder), params.sample_rate.unwrap_or(0))
        };
        Ok(Self {
            format,
            track_id,
            codec,
            rate,
            duration_ms,
            time_base,
            skip_frames: 0,
            skip_ms: None,
            scratch: Vec::new(),
            out: Vec::new(),
        })
    }

    /// Positions the decoder so the next block starts at `ms`. Containers that can seek do;
    /// otherwise the audio before `ms` is decoded and dropped.
    pub fn seek_ms(&mut self, ms: u64) {
        let to = SeekTo::Time { time: Time::from_millis_u64(ms), track_id: Some(self.track_id) };
        match self.format.seek(SeekMode::Accurate, to) {
            Ok(seeked) => {
                let behind = seeked.required_ts.get().saturating_sub(seeked.actual_ts.get()).max(0) as u64;
                // Timestamps are in the track's time base; turn the difference into frames.
                let seconds = self
                    .time_base
                    .map(|tb| behind as f64 * f64::from(tb.numer.get()) / f64::from(tb.denom.get()))
                    .unwrap_or(behind as f64 / f64::from(self.rate.max(1)));
                self.skip_ms = Some((seconds * 1000.0).round() as u64);
                if let Codec::Symphonia(decoder) = &mut self.codec {
                    decoder.reset();
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "container cannot seek; decoding up to the target");
                self.skip_ms = Some(ms);
            }
        }
    }

    pub fn duration_ms(&self) -> Option<u64> {
        self.duration_ms
    }

    /// The next block of samples or Opus packet, or `None` at the end of the track.
    pub fn next_unit(&mut self) -> Result<Option<Unit<'_>>, DecodeError> {
        let mut failures = 0u32;
        let mut fail = |why: String| {
            failures += 1;
            if failures > ERROR_BUDGET { Err(DecodeError::Corrupt(why)) } else { Ok(()) }
        };
        loop {
            let packet = match self.format.next_packet() {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(None),
                Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e @ SymphoniaError::IoError(_)) => return Err(io_error(e)),
                Err(e) => {
                    fail(e.to_string())?;
                    continue;
                }
            };
            if packet.track_id != self.track_id {
                continue;
            }
            let decoder = match &mut self.codec {
                Codec::Symphonia(decoder) => decoder,
                Codec::Opus => {
                    let Some(samples) = opus_packets::frame_samples(&packet.data) else {
                        fail("packets are not Opus".into())?;
                        continue;
                    };
                    if let Some(ms) = self.skip_ms.take() {
                        self.skip_frames += ms * 48;
                    }
                    // A seek lands on the packet holding its target: within one packet.
                    if self.skip_frames >= samples as u64 && samples > 0 {
                        self.skip_frames -= samples as u64;
                        continue;
                    }
                    self.skip_frames = 0;
                    return Ok(Some(Unit::Opus(packet.data.to_vec())));
                }
            };
            self.out.clear();
            match decoder.decode(&packet) {
                Ok(buf) => {
                    // A stream may change its format mid-way (MP3 frames each carry theirs).
                    let channels = buf.spec().channels().count();
                    check_format(buf.spec().rate(), channels)?;
                    check_packet(buf.frames() as u64, channels)?;
                    self.rate = buf.spec().rate();
                    buf.copy_to_vec_interleaved(&mut self.scratch);
                    to_stereo(&self.scratch, channels, &mut self.out);
                }
                Err(SymphoniaError::IoError(e)) => return Err(DecodeError::Io(e.to_string())),
                Err(e) => {
                    fail(e.to_string())?;
                    continue;
                }
            }
            if let Some(ms) = self.skip_ms.take() {
                self.skip_frames += ms * u64::from(self.rate) / 1000;
            }
            let drop = (self.skip_frames as usize).min(self.out.len() / 2);
            self.skip_frames -= drop as u64;
            self.out.drain(..drop * 2);
            if self.out.is_empty() {
                continue;
            }
            return Ok(Some(Unit::Pcm { rate: self.rate, samples: &self.out }));
        }
    }
}

/// Interleaved `channels`-channel audio to interleaved stereo.
fn to_stereo(input: &[f32], channels: usize, out: &mut Vec<f32>) {
    match channels {
        1 => out.extend(input.iter().flat_map(|s| [*s, *s])),
        2 => out.extend_from_slice(input),
        n => {
            // Fold extra channels into both sides at -3 dB: front pair kept, the rest shared.
            for frame in input.chunks_exact(n) {
                let shared: f32 = frame[2..].iter().sum::<f32>() * std::f32::consts::FRAC_1_SQRT_2 / (n - 2) as f32;
                out.push(frame[0] + shared);
                out.push(frame[1] + shared);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::to_stereo;

    #[test]
    fn mono_is_duplicated_and_surround_folded() {
        let mut out = Vec::new();
        to_stereo(&[0.1, 0.2], 1, &mut out);
        assert_eq!(out, vec![0.1, 0.1, 0.2, 0.2]);
        out.clear();
        to_stereo(&[1.0, 0.0, 0.0, 0.0, 0.0, 0.0], 6, &mut out);
        assert_eq!(out, vec![1.0, 0.0]);
    }
}

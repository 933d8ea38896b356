//! What the simulated listener heard: packet timing against the RTP schedule, sequence and
//! timestamp continuity, decryption failures, and the decoded audio's frequency and level.

use std::sync::Arc;
use std::time::Instant;

use audiopus::coder::Decoder;
use audiopus::{Channels, SampleRate};
use rustfft::FftPlanner;
use rustfft::num_complex::Complex;

/// Samples per channel in one 20 ms Opus frame at 48 kHz.
pub const FRAME_SAMPLES: usize = 960;
/// The Opus "silence" frame clients send when they stop speaking.
pub const OPUS_SILENCE: [u8; 3] = [0xf8, 0xff, 0xfe];
/// Length of one analysis window, in samples per channel (100 ms).
pub const WINDOW_SAMPLES: usize = 4800;
/// Level below which audio counts as silence when trimming the ends, in dBFS.
const SILENCE_DB: f64 = -60.0;

/// p50 / p99 / max of a series, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(values: &[f64]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        Self { p50: at(0.5), p99: at(0.99), max: sorted[sorted.len() - 1] }
    }
}

/// One analysis window of decoded audio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Start of the window, in ms from the first audible sample.
    pub start_ms: u64,
    /// Dominant frequency of the mono mix, in Hz.
    pub freq_hz: f64,
    /// RMS level of the mono mix, in dBFS.
    pub level_db: f64,
    pub left_db: f64,
    pub right_db: f64,
}

/// A place where the timestamps jumped ahead of the sequence numbers: silence the listener
/// heard inside a talk spurt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gap {
    /// 20 ms ticks missing between the two packets.
    pub ticks: u64,
    /// Arrival of the packet before the jump.
    pub before: Instant,
    /// Arrival of the packet after it.
    pub after: Instant,
}

/// Everything measured for one sender.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// RTP packets that decrypted at the transport layer.
    pub packets: u64,
    /// Packets whose transport decryption failed.
    pub transport_failures: u64,
    /// Opus silence frames (`F8 FF FE`).
    pub silence_packets: u64,
    /// End-to-end (DAVE) frames the listener could not decrypt.
    pub undecryptable: u64,
    /// Audio frames that arrived without DAVE protection while DAVE was on.
    pub plaintext: u64,
    /// Packets missing according to the RTP sequence numbers.
    pub lost_packets: u64,
    /// 20 ms ticks the sender skipped inside a talk spurt (timestamp advanced more than the
    /// sequence number after an audio frame). The PCM does not include them: it holds the
    /// content in order, with lost packets as silence.
    pub skipped_ticks: u64,
    /// Each jump counted in `skipped_ticks`, with when it was heard.
    pub gaps: Vec<Gap>,
    /// Packets whose timestamp went backwards or was not a multiple of 960 after its predecessor.
    pub timestamp_errors: u64,
    /// Arrival lateness against the RTP timestamp schedule, anchored at the earliest packet.
    pub lateness_ms: Percentiles,
    /// Packets more than 5 ms behind the schedule.
    pub late_over_5ms: u64,
    /// Of those, the ones among the first 50 packets (the first second of a talk).
    pub late_in_first_second: u64,
    /// Time between consecutive arrivals.
    pub interarrival_ms: Percentiles,
    /// Full 100 ms windows between the first and last audible sample.
    pub windows: Vec<Window>,
    /// Duration of audio between the first and last audible sample, in ms.
    pub audible_ms: u64,
}

impl Report {
    /// Windows whose dominant frequency is more than `tolerance_hz` away from `expected_hz`.
    pub fn windows_off_frequency(&self, expected_hz: f64, tolerance_hz: f64) -> Vec<Window> {
        self.windows.iter().filter(|w| (w.freq_hz - expected_hz).abs() > tolerance_hz).copied().collect()
    }

    /// One line of the timing figures, for test output and benchmarks.
    pub fn timing_line(&self) -> String {
        format!(
            "packets={} lost={} skipped_ticks={} lateness p50={:.2}ms p99={:.2}ms max={:.2}ms late>5ms={} ({:.2}%) interarrival p50={:.2}ms p99={:.2}ms max={:.2}ms",
            self.packets,
            self.lost_packets,
            self.skipped_ticks,
            self.lateness_ms.p50,
            self.lateness_ms.p99,
            self.lateness_ms.max,
            self.late_over_5ms,
            if self.packets == 0 { 0.0 } else { 100.0 * self.late_over_5ms as f64 / self.packets as f64 },
            self.interarrival_ms.p50,
            self.interarrival_ms.p99,
            self.interarrival_ms.max,
        )
    }
}

/// What the listener made of one packet's payload after transport decryption.
pub enum Payload {
    Opus(Vec<u8>),
    Undecryptable,
    Plaintext,
    /// Audio of a session the listener only times (load mode): not decrypted end to end.
    Unverified,
}

/// Accumulates packets from one SSRC.
pub struct Analyzer {
    keep_pcm: bool,
    decoder: Option<Decoder>,
    epoch: Option<(Instant, u32)>,
    /// Arrival, sequence, timestamp and whether it was a silence frame, of the last packet.
    last: Option<(Instant, u16, u32, bool)>,
    offsets_ms: Vec<f64>,
    interarrival_ms: Vec<f64>,
    report: Report,
    /// Interleaved stereo PCM at 48 kHz, gaps filled with zeros.
    pcm: Vec<f32>,
    /// Every Opus payload as received (kept with the PCM).
    payloads: Vec<Vec<u8>>,
    scratch: Vec<f32>,
}

impl Analyzer {
    pub fn new(keep_pcm: bool) -> Self {
        Self {
            keep_pcm,
            decoder: Decoder::new(SampleRate::Hz48000, Channels::Stereo).ok(),
            epoch: None,
            last: None,
            offsets_ms: Vec::new(),
            interarrival_ms: Vec::new(),
            report: Report::default(),
            pcm: Vec::new(),
            payloads: Vec::new(),
            scratch: vec![0.0; 5760 * 2],
        }
    }

    pub fn transport_failure(&mut self) {
        self.report.transport_failures += 1;
    }

    pub fn packets(&self) -> u64 {
        self.report.packets
    }

    /// Records one packet that decrypted at the transport layer.
    pub fn on_packet(&mut self, arrival: Instant, sequence: u16, timestamp: u32, payload: Payload) {
        self.report.packets += 1;
        let (t0, ts0) = *self.epoch.get_or_insert((arrival, timestamp));
        let media_ms = timestamp.wrapping_sub(ts0) as f64 / 48.0;
        self.offsets_ms.push(arrival.duration_since(t0).as_secs_f64() * 1000.0 - media_ms);

        let silence = matches!(&payload, Payload::Opus(opus) if *opus == OPUS_SILENCE);
        let mut missing_frames = 0usize;
        if let Some((prev_arrival, prev_seq, prev_ts, prev_silence)) = self.last {
            self.interarrival_ms.push(arrival.duration_since(prev_arrival).as_secs_f64() * 1000.0);
            let seq_step = sequence.wrapping_sub(prev_seq) as u64;
            let ts_step = timestamp.wrapping_sub(prev_ts) as u64;
            if seq_step == 0 || seq_step > 30_000 || ts_step > u32::MAX as u64 / 2 || !ts_step.is_multiple_of(960) {
                self.report.timestamp_errors += 1;
            } else {
                self.report.lost_packets += seq_step - 1;
                let ticks = ts_step / 960;
                // After a silence frame the sender had stopped talking (pause, end of a
                // track): the time since then is silence it meant. Inside a talk spurt a jump
                // is a gap; the PCM keeps the content contiguous and the gap is reported.
                missing_frames = if prev_silence { ticks.saturating_sub(1) } else { seq_step - 1 } as usize;
                if ticks > seq_step && !prev_silence {
                    self.report.skipped_ticks += ticks - seq_step;
                    self.report.gaps.push(Gap { ticks: ticks - seq_step, before: prev_arrival, after: arrival });
                }
            }
        }
        self.last = Some((arrival, sequence, timestamp, silence));

        if self.keep_pcm {
            self.pcm.resize(self.pcm.len() + missing_frames * FRAME_SAMPLES * 2, 0.0);
        }
        match payload {
            Payload::Opus(opus) => {
                if opus == OPUS_SILENCE {
                    self.report.silence_packets += 1;
                }
                self.decode(&opus);
                if self.keep_pcm {
                    self.payloads.push(opus);
                }
            }
            Payload::Undecryptable => {
                self.report.undecryptable += 1;
                self.push_silence();
            }
            Payload::Plaintext => {
                self.report.plaintext += 1;
                self.push_silence();
            }
            Payload::Unverified => {}
        }
    }

    fn push_silence(&mut self) {
        if self.keep_pcm {
            self.pcm.resize(self.pcm.len() + FRAME_SAMPLES * 2, 0.0);
        }
    }

    fn decode(&mut self, opus: &[u8]) {
        if !self.keep_pcm {
            return;
        }
        let Some(decoder) = self.decoder.as_mut() else { return };
        let decoded = audiopus::packet::Packet::try_from(opus).ok().and_then(|packet| {
            let out = audiopus::MutSignals::try_from(&mut self.scratch[..]).ok()?;
            decoder.decode_float(Some(packet), out, false).ok()
        });
        match decoded {
            Some(samples) => self.pcm.extend_from_slice(&self.scratch[..samples * 2]),
            None => {
                self.report.undecryptable += 1;
                self.push_silence();
            }
        }
    }

    /// The decoded audio so far, interleaved stereo at 48 kHz.
    pub fn pcm(&self) -> &[f32] {
        &self.pcm
    }

    /// The Opus payloads received so far, in arrival order.
    pub fn payloads(&self) -> &[Vec<u8>] {
        &self.payloads
    }

    pub fn report(&self) -> Report {
        let mut report = self.report.clone();
        if let Some(min) = self.offsets_ms.iter().copied().reduce(f64::min) {
            let lateness: Vec<f64> = self.offsets_ms.iter().map(|o| o - min).collect();
            report.late_over_5ms = lateness.iter().filter(|l| **l > 5.0).count() as u64;
            report.late_in_first_second = lateness.iter().take(50).filter(|l| **l > 5.0).count() as u64;
            report.lateness_ms = Percentiles::of(&lateness);
        }
        report.interarrival_ms = Percentiles::of(&self.interarrival_ms);
        let (windows, audible_ms) = analyse_windows(&self.pcm);
        report.windows = windows;
        report.audible_ms = audible_ms;
        report
    }
}

fn rms_db(samples: impl Iterator<Item = f32>) -> f64 {
    let (sum, n) = samples.fold((0.0f64, 0usize), |(s, n), x| (s + (x as f64).powi(2), n + 1));
    if n == 0 || sum == 0.0 {
        return -200.0;
    }
    10.0 * (sum / n as f64).log10()
}

/// Splits the audible part of `pcm` into full windows and measures each.
pub fn analyse_windows(pcm: &[f32]) -> (Vec<Window>, u64) {
    let frames = pcm.len() / 2;
    let block = 480; // 10 ms blocks for trimming the silent ends
    let loud = |b: usize| rms_db(pcm[b * block * 2..((b + 1) * block * 2).min(pcm.len())].iter().copied()) > SILENCE_DB;
    let blocks = frames / block;
    let Some(first) = (0..blocks).find(|b| loud(*b)) else {
        return (Vec::new(), 0);
    };
    let last = (0..blocks).rev().find(|b| loud(*b)).unwrap_or(first);
    let start = first * block;
    let end = (last + 1) * block;
    let audible_ms = ((end - start) / 48) as u64;

    let fft_len = 16384;
    let fft = FftPlanner::<f64>::new().plan_fft_forward(fft_len);
    let hann: Arc<Vec<f64>> = Arc::new(
        (0..WINDOW_SAMPLES)
            .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / (WINDOW_SAMPLES - 1) as f64).cos())
            .collect(),
    );
    let mut windows = Vec::new();
    let mut at = start;
    while at + WINDOW_SAMPLES <= end {
        let slice = &pcm[at * 2..(at + WINDOW_SAMPLES) * 2];
        let mut buf: Vec<Complex<f64>> = vec![Complex::new(0.0, 0.0); fft_len];
        for (i, pair) in slice.chunks_exact(2).enumerate() {
            let mono = (pair[0] as f64 + pair[1] as f64) / 2.0;
            buf[i] = Complex::new(mono * hann[i], 0.0);
        }
        fft.process(&mut buf);
        let mags: Vec<f64> = buf[..fft_len / 2].iter().map(|c| c.norm()).collect();
        let peak = (1..mags.len() - 1).max_by(|a, b| mags[*a].total_cmp(&mags[*b])).unwrap_or(1);
        // Parabolic interpolation on log magnitudes around the peak bin.
        let (a, b, c) = (mags[peak - 1].max(1e-12).ln(), mags[peak].max(1e-12).ln(), mags[peak + 1].max(1e-12).ln());
        let denom = a - 2.0 * b + c;
        let delta = if denom.abs() > 1e-12 { 0.5 * (a - c) / denom } else { 0.0 };
        let freq_hz = (peak as f64 + delta) * 48_000.0 / fft_len as f64;
        windows.push(Window {
            start_ms: ((at - start) / 48) as u64,
            freq_hz,
            level_db: rms_db(slice.chunks_exact(2).map(|p| (p[0] + p[1]) / 2.0)),
            left_db: rms_db(slice.iter().step_by(2).copied()),
            right_db: rms_db(slice.iter().skip(1).step_by(2).copied()),
        });
        at += WINDOW_SAMPLES;
    }
    (windows, audible_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, seconds: f64) -> Vec<f32> {
        let n = (48_000.0 * seconds) as usize;
        (0..n)
            .flat_map(|i| {
                let v = (0.5 * (2.0 * std::f64::consts::PI * freq * i as f64 / 48_000.0).sin()) as f32;
                [v, v]
            })
            .collect()
    }

    #[test]
    fn finds_the_frequency_of_a_tone_within_half_a_hertz() {
        for freq in [100.0, 440.0, 1000.0, 1234.5, 8000.0] {
            let (windows, ms) = analyse_windows(&tone(freq, 1.0));
            assert_eq!(ms, 1000);
            assert_eq!(windows.len(), 10);
            for w in windows {
                assert!((w.freq_hz - freq).abs() < 0.5, "{freq}: {w:?}");
                assert!((w.level_db - (-9.03)).abs() < 0.1, "{w:?}");
            }
        }
    }

    #[test]
    fn trims_silence_at_both_ends() {
        let mut pcm = vec![0.0; 48_000];
        pcm.extend(tone(440.0, 0.5));
        pcm.extend(vec![0.0; 48_000]);
        let (windows, ms) = analyse_windows(&pcm);
        assert_eq!(ms, 500);
        assert_eq!(windows.len(), 5);
    }

    #[test]
    fn a_jump_after_audio_is_a_gap_and_a_jump_after_silence_is_a_new_spurt() {
        let mut a = Analyzer::new(false);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + std::time::Duration::from_millis(ms);
        let audio = || Payload::Opus(vec![0xFC, 0x01, 0x02]);
        a.on_packet(at(0), 1, 0, audio());
        a.on_packet(at(20), 2, 960, audio());
        // Three ticks missing while talking: a gap.
        a.on_packet(at(100), 3, 960 * 5, audio());
        a.on_packet(at(120), 4, 960 * 6, Payload::Opus(OPUS_SILENCE.to_vec()));
        // Resumed a second later after the silence frame: not a gap.
        a.on_packet(at(1120), 5, 960 * 56, audio());
        let report = a.report();
        assert_eq!((report.skipped_ticks, report.lost_packets), (3, 0));
        assert_eq!(report.gaps, vec![Gap { ticks: 3, before: at(20), after: at(100) }]);
    }

    #[test]
    fn percentiles_pick_ranks() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = Percentiles::of(&values);
        assert_eq!((p.p50, p.p99, p.max), (51.0, 99.0, 100.0));
    }
}

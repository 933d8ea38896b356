//! Lavalink's timescale: `speed` changes the tempo and keeps the pitch, `pitch` changes the
//! pitch and keeps the tempo, `rate` changes both (like playing a record faster).
//!
//! Done in two stages: a resampler by `pitch · rate` (which shifts pitch and tempo
//! together), then a WSOLA time-stretcher by `speed / pitch` (which fixes the tempo back):
//! the result lasts 1 / (speed · rate) of the input at pitch × pitch · rate.

use serde::Deserialize;

use crate::{Filter, check_range, parse};

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub speed: f64,
    pub pitch: f64,
    pub rate: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self { speed: 1.0, pitch: 1.0, rate: 1.0 }
    }
}

#[derive(Debug, Default)]
pub struct Timescale {
    resample: Option<Resample>,
    stretch: Option<Stretch>,
}

impl Filter for Timescale {
    fn process(&mut self, samples: &mut Vec<f32>) {
        if let Some(r) = self.resample.as_mut() {
            *samples = r.push(samples);
        }
        if let Some(s) = self.stretch.as_mut() {
            *samples = s.push(samples);
        }
    }

    fn flush(&mut self) -> Vec<f32> {
        let mut tail = Vec::new();
        if let Some(r) = self.resample.as_mut() {
            tail = r.push(&[0.0; 4]);
        }
        if let Some(s) = self.stretch.as_mut() {
            tail = s.finish(&tail);
        }
        tail
    }

    fn update(&mut self, config: &str) -> Result<(), String> {
        let c: Config = parse(config)?;
        check_range("speed", c.speed, 0.1, 10.0)?;
        check_range("pitch", c.pitch, 0.1, 10.0)?;
        check_range("rate", c.rate, 0.1, 10.0)?;
        let step = c.pitch * c.rate;
        let tempo = c.speed / c.pitch;
        self.resample = ((step - 1.0).abs() > 1e-6).then(|| Resample::new(step));
        self.stretch = ((tempo - 1.0).abs() > 1e-6).then(|| Stretch::new(tempo));
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(r) = self.resample.as_mut() {
            *r = Resample::new(r.step);
        }
        if let Some(s) = self.stretch.as_mut() {
            *s = Stretch::new(s.tempo);
        }
    }
}

/// Linear-interpolation resampler reading the input `step` frames per output frame.
#[derive(Debug)]
struct Resample {
    step: f64,
    /// Position of the next output frame, in frames from the start of `held`.
    pos: f64,
    held: Vec<f32>,
}

impl Resample {
    fn new(step: f64) -> Self {
        Self { step, pos: 0.0, held: Vec::new() }
    }

    fn push(&mut self, input: &[f32]) -> Vec<f32> {
        self.held.extend_from_slice(input);
        let frames = self.held.len() / 2;
        let mut out = Vec::with_capacity((input.len() as f64 / self.step) as usize + 4);
        while self.pos + 1.0 < frames as f64 {
            let i = self.pos as usize;
            let f = (self.pos - i as f64) as f32;
            for ch in 0..2 {
                let a = self.held[2 * i + ch];
                let b = self.held[2 * i + 2 + ch];
                out.push(a + (b - a) * f);
            }
            self.pos += self.step;
        }
        let used = (self.pos as usize).min(frames);
        self.held.drain(..2 * used);
        self.pos -= used as f64;
        out
    }
}

/// Window length in frames (40 ms); output advances half of it per step.
const WINDOW: usize = 1_920;
const HOP: usize = WINDOW / 2;
/// How far from the nominal position a segment may be taken to line up the waveforms.
const SEEK: usize = 240;

/// WSOLA: overlap-adds Hann-windowed input segments every `HOP` output frames, taking
/// each from near `tempo · HOP` further into the input, at the offset whose waveform best
/// continues the previous segment.
#[derive(Debug)]
struct Stretch {
    tempo: f64,
    input: Vec<f32>,
    /// Where the next segment nominally starts, in frames from the start of `input`.
    nominal: f64,
    /// Where the previous segment started.
    previous: Option<usize>,
    overlap: Vec<f32>,
    window: Vec<f32>,
}

impl Stretch {
    fn new(tempo: f64) -> Self {
        let window = (0..WINDOW)
            .map(|i| (0.5 - 0.5 * (std::f64::consts::TAU * i as f64 / WINDOW as f64).cos()) as f32)
            .collect();
        // Start SEEK frames into a run of silence so the first segment can search both ways.
        Self {
            tempo,
            input: vec![0.0; 2 * SEEK],
            nominal: SEEK as f64,
            previous: None,
            overlap: vec![0.0; 2 * WINDOW],
            window,
        }
    }

    fn push(&mut self, samples: &[f32]) -> Vec<f32> {
        self.input.extend_from_slice(samples);
        let mut out = Vec::with_capacity((samples.len() as f64 / self.tempo) as usize + 2 * HOP);
        loop {
            let nominal = self.nominal.round() as usize;
            if nominal + SEEK + WINDOW > self.input.len() / 2 {
                return out;
            }
            let start = match self.previous {
                None => nominal,
                Some(previous) => self.best_match(previous + HOP, nominal),
            };
            for (i, w) in self.window.iter().enumerate() {
                self.overlap[2 * i] += self.input[2 * (start + i)] * w;
                self.overlap[2 * i + 1] += self.input[2 * (start + i) + 1] * w;
            }
            out.extend_from_slice(&self.overlap[..2 * HOP]);
            self.overlap.copy_within(2 * HOP.., 0);
            self.overlap[2 * (WINDOW - HOP)..].fill(0.0);
            self.previous = Some(start);
            self.nominal += HOP as f64 * self.tempo;
            // Drop input nothing will read again.
            let keep_from = start.min((self.nominal as usize).saturating_sub(SEEK));
            self.input.drain(..2 * keep_from);
            self.previous = Some(start - keep_from);
            self.nominal -= keep_from as f64;
        }
    }

    /// Pushes the last samples and enough silence to play out everything held.
    fn finish(&mut self, samples: &[f32]) -> Vec<f32> {
        let held = self.input.len() / 2 + samples.len() / 2;
        let expected = ((held as f64 - self.nominal) / self.tempo).max(0.0) as usize;
        let mut out = self.push(samples);
        out.extend(self.push(&vec![0.0; 2 * (WINDOW + SEEK + HOP)]));
        out.truncate(2 * expected.min(out.len() / 2));
        out
    }

    /// The start near `nominal` whose waveform best matches the input at `natural`.
    fn best_match(&self, natural: usize, nominal: usize) -> usize {
        let mono = |frame: usize| self.input[2 * frame] + self.input[2 * frame + 1];
        let mut best = (f32::MIN, nominal);
        let lo = nominal.saturating_sub(SEEK);
        for candidate in (lo..=nominal + SEEK).step_by(4) {
            let (mut dot, mut energy) = (0f32, 1e-9f32);
            for k in (0..HOP).step_by(4) {
                let c = mono(candidate + k);
                dot += mono(natural + k) * c;
                energy += c * c;
            }
            let score = dot / energy.sqrt();
            if score > best.0 {
                best = (score, candidate);
            }
        }
        best.1
    }
}

#[cfg(test)]
mod tests {
    use crate::test_signal::{level_db, run, tone};

    /// Frequency from zero crossings of the left channel.
    fn frequency(samples: &[f32]) -> f64 {
        let left: Vec<f32> = samples.iter().step_by(2).copied().collect();
        let crossings = left.windows(2).filter(|w| w[0] <= 0.0 && w[1] > 0.0).count();
        crossings as f64 / (left.len() as f64 / crate::RATE)
    }

    #[test]
    fn speed_shortens_and_keeps_the_pitch() {
        let input = tone(440.0, 0.5, 2.0);
        let mut f = crate::create("timescale", r#"{"speed":1.25}"#).unwrap();
        let out = run(f.as_mut(), &input);
        let ratio = out.len() as f64 / input.len() as f64;
        assert!((ratio - 0.8).abs() < 0.01, "length ratio {ratio}");
        let middle = &out[9_600..out.len() - 9_600];
        assert!((frequency(middle) - 440.0).abs() < 3.0, "pitch {}", frequency(middle));
        assert!(level_db(middle, 0, 0.5).abs() < 1.0);
    }

    #[test]
    fn pitch_and_rate_move_the_frequency() {
        let input = tone(440.0, 0.5, 2.0);
        let mut f = crate::create("timescale", r#"{"pitch":1.5}"#).unwrap();
        let out = run(f.as_mut(), &input);
        assert!((out.len() as f64 / input.len() as f64 - 1.0).abs() < 0.01);
        assert!((frequency(&out[9_600..out.len() - 9_600]) - 660.0).abs() < 4.0);
        let mut f = crate::create("timescale", r#"{"rate":0.5}"#).unwrap();
        let out = run(f.as_mut(), &input);
        assert!((out.len() as f64 / input.len() as f64 - 2.0).abs() < 0.01);
        assert!((frequency(&out[9_600..out.len() - 9_600]) - 220.0).abs() < 3.0);
    }
}

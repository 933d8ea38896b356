//! Lavalink's tremolo (the level wobbles) and vibrato (the pitch wobbles), each at
//! `frequency` Hz with `depth` 0–1.

use std::f64::consts::TAU;

use serde::Deserialize;

use crate::{Filter, RATE, parse};

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub frequency: f64,
    pub depth: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self { frequency: 2.0, depth: 0.5 }
    }
}

fn checked(config: &str, max_frequency: f64) -> Result<Config, String> {
    let c: Config = parse(config)?;
    if !(c.frequency > 0.0 && c.frequency <= max_frequency) {
        return Err(format!("frequency must be greater than 0 and at most {max_frequency}, got {}", c.frequency));
    }
    if !(c.depth > 0.0 && c.depth <= 1.0) {
        return Err(format!("depth must be greater than 0 and at most 1, got {}", c.depth));
    }
    Ok(c)
}

/// Gain between 1 - depth and 1, starting at 1.
#[derive(Debug, Default)]
pub struct Tremolo {
    config: Config,
    phase: f64,
}

impl Tremolo {
    /// The gain at `seconds` into the effect, for checks against measurements.
    pub fn gain_at(frequency: f64, depth: f64, seconds: f64) -> f64 {
        1.0 - depth * 0.5 * (1.0 - (TAU * frequency * seconds).cos())
    }
}

impl Filter for Tremolo {
    fn process(&mut self, samples: &mut Vec<f32>) {
        let step = TAU * self.config.frequency / RATE;
        for pair in samples.chunks_exact_mut(2) {
            let gain = (1.0 - self.config.depth * 0.5 * (1.0 - self.phase.cos())) as f32;
            pair[0] *= gain;
            pair[1] *= gain;
            self.phase = (self.phase + step) % TAU;
        }
    }

    fn update(&mut self, config: &str) -> Result<(), String> {
        self.config = checked(config, 1_000.0)?;
        Ok(())
    }

    fn reset(&mut self) {
        self.phase = 0.0;
    }
}

/// Largest delay swing: 4 ms at depth 1.
const VIBRATO_WIDTH: f64 = 0.004 * RATE;
const VIBRATO_LEN: usize = VIBRATO_WIDTH as usize + 4;

/// A delay line whose length swings with a sine, which bends the pitch up and down.
#[derive(Debug)]
pub struct Vibrato {
    config: Config,
    phase: f64,
    ring: [[f32; 2]; VIBRATO_LEN],
    write: usize,
}

impl Default for Vibrato {
    fn default() -> Self {
        Self { config: Config::default(), phase: 0.0, ring: [[0.0; 2]; VIBRATO_LEN], write: 0 }
    }
}

impl Filter for Vibrato {
    fn process(&mut self, samples: &mut Vec<f32>) {
        let step = TAU * self.config.frequency / RATE;
        let swing = VIBRATO_WIDTH * self.config.depth;
        for pair in samples.chunks_exact_mut(2) {
            self.ring[self.write] = [pair[0], pair[1]];
            let delay = 1.0 + swing * 0.5 * (1.0 + self.phase.sin());
            let back = delay.floor() as usize;
            let frac = (delay - delay.floor()) as f32;
            let a = self.ring[(self.write + VIBRATO_LEN - back) % VIBRATO_LEN];
            let b = self.ring[(self.write + VIBRATO_LEN - back - 1) % VIBRATO_LEN];
            pair[0] = a[0] + (b[0] - a[0]) * frac;
            pair[1] = a[1] + (b[1] - a[1]) * frac;
            self.write = (self.write + 1) % VIBRATO_LEN;
            self.phase = (self.phase + step) % TAU;
        }
    }

    fn update(&mut self, config: &str) -> Result<(), String> {
        self.config = checked(config, 14.0)?;
        Ok(())
    }

    fn reset(&mut self) {
        *self = Self { config: self.config, ..Self::default() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_signal::{level_db, run, tone};

    #[test]
    fn tremolo_follows_its_envelope() {
        let mut f = crate::create("tremolo", r#"{"frequency":4,"depth":0.8}"#).unwrap();
        let out = run(f.as_mut(), &tone(1_000.0, 0.5, 1.0));
        // Trough at 1/8 s: gain 0.2; crest at 1/4 s: gain 1.
        let at = |s: f64| level_db(&out[(s * RATE) as usize * 2 - 480..(s * RATE) as usize * 2 + 480], 0, 0.5);
        assert!((at(0.125) - 20.0 * Tremolo::gain_at(4.0, 0.8, 0.125).log10()).abs() < 0.5);
        assert!(at(0.25).abs() < 0.3);
        assert!(crate::create("vibrato", r#"{"frequency":20}"#).unwrap_err().contains("frequency"));
    }

    #[test]
    fn vibrato_keeps_the_level() {
        let mut f = crate::create("vibrato", r#"{"frequency":5,"depth":1}"#).unwrap();
        let out = run(f.as_mut(), &tone(440.0, 0.5, 1.0));
        assert!(level_db(&out[4_800..], 0, 0.5).abs() < 0.3);
    }
}

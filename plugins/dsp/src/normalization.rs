//! Loudness normalization: a slow automatic gain that brings the RMS level towards
//! `targetDb` (dBFS), boosting by at most `maxGainDb`, with a peak guard so the result
//! never clips. Near-silence (below -60 dBFS) leaves the gain where it is.

use serde::Deserialize;

use crate::{Filter, check_range, parse};

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    pub target_db: f64,
    pub max_gain_db: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self { target_db: -14.0, max_gain_db: 12.0 }
    }
}

/// How much of the way to the new level each 20 ms block moves (about a 1 s time constant).
const SMOOTHING: f64 = 0.02;
const SILENCE: f64 = 1e-3;
const CEILING: f64 = 0.98;

#[derive(Debug, Default)]
pub struct Normalization {
    target: f64,
    max_gain: f64,
    /// Smoothed mean square; none until sound arrives.
    power: Option<f64>,
    gain: f64,
}

impl Filter for Normalization {
    fn process(&mut self, samples: &mut Vec<f32>) {
        if samples.is_empty() {
            return;
        }
        let ms = samples.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / samples.len() as f64;
        if ms.sqrt() > SILENCE {
            let p = self.power.get_or_insert(ms);
            *p += (ms - *p) * SMOOTHING;
        }
        let wanted = self.power.map_or(1.0, |p| (self.target / p.sqrt()).min(self.max_gain));
        let peak = samples.iter().fold(0f64, |m, s| m.max(f64::from(s.abs())));
        let end = if peak * wanted > CEILING { CEILING / peak } else { wanted };
        // Ramp across the block so gain changes never click.
        let start =
            if self.gain == 0.0 { end } else { self.gain.min(if peak > 0.0 { CEILING / peak } else { f64::MAX }) };
        let frames = samples.len() / 2;
        for (i, pair) in samples.chunks_exact_mut(2).enumerate() {
            let g = (start + (end - start) * (i + 1) as f64 / frames as f64) as f32;
            pair[0] *= g;
            pair[1] *= g;
        }
        self.gain = end;
    }

    fn update(&mut self, config: &str) -> Result<(), String> {
        let c: Config = parse(config)?;
        check_range("targetDb", c.target_db, -60.0, 0.0)?;
        check_range("maxGainDb", c.max_gain_db, 0.0, 40.0)?;
        self.target = 10f64.powf(c.target_db / 20.0);
        self.max_gain = 10f64.powf(c.max_gain_db / 20.0);
        Ok(())
    }

    fn reset(&mut self) {}
}

#[cfg(test)]
mod tests {
    use crate::test_signal::{level_db, run, tone};

    #[test]
    fn brings_quiet_and_loud_towards_the_target() {
        // A sine's RMS is its amplitude / √2; target -14 dBFS RMS.
        let target_amp = 10f64.powf(-14.0 / 20.0) * 2f64.sqrt();
        for amp in [0.1, 0.9] {
            let mut f = crate::create("normalization", "{}").unwrap();
            let out = run(f.as_mut(), &tone(440.0, amp, 6.0));
            let db = level_db(&out[out.len() - 48_000..], 0, target_amp);
            assert!(db.abs() < 1.0, "amplitude {amp} ends {db} dB from the target");
            assert!(out.iter().all(|s| s.abs() <= 0.99));
        }
    }
}

//! Lavalink's lowPass: a one-pole smoother, y += (x - y) / smoothing. Smoothing ≤ 1 passes
//! the signal through; higher values cut more of the highs.

use serde::Deserialize;

use crate::{Filter, parse};

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub smoothing: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self { smoothing: 20.0 }
    }
}

#[derive(Debug, Default)]
pub struct LowPass {
    /// 1 / smoothing, or none when disabled.
    alpha: Option<f32>,
    last: [f32; 2],
}

impl LowPass {
    /// The amplitude response at `freq` Hz for `smoothing`, for checks against measurements.
    pub fn response(smoothing: f64, freq: f64) -> f64 {
        if smoothing <= 1.0 {
            return 1.0;
        }
        let a = 1.0 / smoothing;
        let w = std::f64::consts::TAU * freq / crate::RATE;
        let re = 1.0 - (1.0 - a) * w.cos();
        let im = (1.0 - a) * w.sin();
        a / (re * re + im * im).sqrt()
    }
}

impl Filter for LowPass {
    fn process(&mut self, samples: &mut Vec<f32>) {
        let Some(alpha) = self.alpha else { return };
        for pair in samples.chunks_exact_mut(2) {
            for (ch, s) in pair.iter_mut().enumerate() {
                self.last[ch] += (*s - self.last[ch]) * alpha;
                *s = self.last[ch];
            }
        }
    }

    fn update(&mut self, config: &str) -> Result<(), String> {
        let c: Config = parse(config)?;
        if !c.smoothing.is_finite() || c.smoothing > 1e6 {
            return Err(format!("smoothing must be a number up to 1000000, got {}", c.smoothing));
        }
        self.alpha = (c.smoothing > 1.0).then(|| (1.0 / c.smoothing) as f32);
        Ok(())
    }

    fn reset(&mut self) {
        self.last = [0.0; 2];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_signal::{level_db, run, tone};

    #[test]
    fn attenuates_as_the_one_pole_response_says() {
        let mut f = crate::create("lowPass", r#"{"smoothing":20}"#).unwrap();
        let out = run(f.as_mut(), &tone(8_000.0, 0.5, 1.0));
        let measured = level_db(&out[9_600..], 0, 0.5);
        let expected = 20.0 * LowPass::response(20.0, 8_000.0).log10();
        assert!((measured - expected).abs() < 0.3, "{measured} dB, expected {expected} dB");
        assert!(expected < -20.0);
    }
}

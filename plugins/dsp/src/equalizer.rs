//! Lavalink's 15-band equalizer: bands at 25 Hz … 16 kHz, each with a gain from -0.25
//! (band muted) through 0 (unchanged) to 1.0. A gain g scales its band's amplitude by
//! 1 + 4g (so 0.25 doubles it), realised as a peaking bell about 2/3 octave wide.

use serde::Deserialize;

use crate::biquad::{Cascade, Coeffs, Shape};
use crate::{Filter, check_range, parse};

pub const BANDS_HZ: [f64; 15] = [
    25.0, 40.0, 63.0, 100.0, 160.0, 250.0, 400.0, 630.0, 1_000.0, 1_600.0, 2_500.0, 4_000.0, 6_300.0, 10_000.0,
    16_000.0,
];

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct Band {
    band: i64,
    gain: f64,
}

#[derive(Debug, Default)]
pub struct Equalizer {
    cascade: Cascade,
}

impl Filter for Equalizer {
    fn process(&mut self, samples: &mut Vec<f32>) {
        if !self.cascade.is_empty() {
            self.cascade.process(samples);
        }
    }

    fn update(&mut self, config: &str) -> Result<(), String> {
        let bands: Vec<Band> = parse(config)?;
        let mut gains = [0.0; 15];
        for b in bands {
            let index = usize::try_from(b.band)
                .ok()
                .filter(|i| *i < BANDS_HZ.len())
                .ok_or_else(|| format!("band must be between 0 and 14, got {}", b.band))?;
            check_range("gain", b.gain, -0.25, 1.0)?;
            gains[index] = b.gain;
        }
        let coeffs = BANDS_HZ
            .iter()
            .zip(gains)
            .filter(|(_, g)| g.abs() > 1e-6)
            .map(|(hz, g)| Coeffs::new(Shape::Peak, *hz, 2.0, 1.0 + 4.0 * g))
            .collect();
        self.cascade.set(coeffs);
        Ok(())
    }

    fn reset(&mut self) {
        self.cascade.reset();
    }
}

#[cfg(test)]
mod tests {
    use crate::test_signal::{level_db, run, tone};

    #[test]
    fn a_band_moves_its_own_frequency() {
        let mut f = crate::create("equalizer", r#"[{"band":8,"gain":0.25}]"#).unwrap();
        let out = run(f.as_mut(), &tone(1_000.0, 0.25, 1.0));
        let db = level_db(&out[48_000..], 0, 0.25);
        assert!((db - 6.0).abs() < 0.5, "gain 0.25 at 1 kHz gives {db} dB");
        let mut f = crate::create("equalizer", r#"[{"band":3,"gain":-0.25}]"#).unwrap();
        let out = run(f.as_mut(), &tone(100.0, 0.25, 1.0));
        assert!(level_db(&out[48_000..], 0, 0.25) < -30.0);
        assert!(crate::create("equalizer", r#"[{"band":15,"gain":0}]"#).unwrap_err().contains("band"));
        assert!(crate::create("equalizer", r#"[{"band":1,"gain":1.5}]"#).unwrap_err().contains("gain"));
    }
}

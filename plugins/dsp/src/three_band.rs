//! mesastream's 3-band equalizer: low shelf 250 Hz, peak 1.5 kHz, high shelf 4 kHz. Each
//! band's multiplier (0–2) is its linear gain; 0 is floored at -80 dB.

use serde::Deserialize;

use crate::biquad::{Cascade, Coeffs, Shape};
use crate::{Filter, check_range, parse};

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub bass: f64,
    pub mid: f64,
    pub treble: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self { bass: 1.0, mid: 1.0, treble: 1.0 }
    }
}

#[derive(Debug, Default)]
pub struct ThreeBand {
    cascade: Cascade,
}

impl Filter for ThreeBand {
    fn process(&mut self, samples: &mut Vec<f32>) {
        if !self.cascade.is_empty() {
            self.cascade.process(samples);
        }
    }

    fn update(&mut self, config: &str) -> Result<(), String> {
        let c: Config = parse(config)?;
        check_range("bass", c.bass, 0.0, 2.0)?;
        check_range("mid", c.mid, 0.0, 2.0)?;
        check_range("treble", c.treble, 0.0, 2.0)?;
        let flat = [c.bass, c.mid, c.treble].iter().all(|v| (v - 1.0).abs() < 1e-3);
        self.cascade.set(if flat {
            Vec::new()
        } else {
            vec![
                Coeffs::new(Shape::LowShelf, 250.0, 0.7, c.bass),
                Coeffs::new(Shape::Peak, 1_500.0, 1.0, c.mid),
                Coeffs::new(Shape::HighShelf, 4_000.0, 0.7, c.treble),
            ]
        });
        Ok(())
    }

    fn reset(&mut self) {
        self.cascade.reset();
    }
}

#[cfg(test)]
mod tests {
    use crate::test_signal::{level_db, run, tone};

    fn level_after(config: &str, freq: f64) -> f64 {
        let mut f = crate::create("threeBandEqualizer", config).unwrap();
        let out = run(f.as_mut(), &tone(freq, 0.5, 1.0));
        level_db(&out[48_000..], 0, 0.5)
    }

    #[test]
    fn bands_follow_their_multipliers_without_nan() {
        assert!(level_after("{}", 100.0).abs() < 0.01);
        let db = level_after(r#"{"bass":0}"#, 60.0);
        assert!(db < -40.0, "bass 0 leaves {db} dB at 60 Hz");
        assert!(level_after(r#"{"bass":0}"#, 8_000.0).abs() < 0.5);
        let db = level_after(r#"{"treble":2}"#, 12_000.0);
        assert!((db - 6.02).abs() < 0.5, "treble 2 gives {db} dB");
        assert!(level_after(r#"{"bass":0,"mid":0,"treble":0}"#, 1_000.0).is_finite());
        assert!(crate::create("threeBandEqualizer", r#"{"mid":2.5}"#).unwrap_err().contains("mid"));
    }
}

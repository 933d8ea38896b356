//! Lavalink's rotation ("8D audio"): the sound circles between the ears `rotationHz` times
//! per second. Equal-power panning: at the centre both channels keep their level.

use std::f64::consts::{FRAC_PI_4, SQRT_2, TAU};

use serde::Deserialize;

use crate::{Filter, RATE, check_range, parse};

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    pub rotation_hz: f64,
}

#[derive(Debug, Default)]
pub struct Rotation {
    hz: f64,
    phase: f64,
}

impl Rotation {
    /// The (left, right) gains at `seconds` into the effect.
    pub fn gains_at(hz: f64, seconds: f64) -> (f64, f64) {
        let angle = (1.0 + (TAU * hz * seconds).sin()) * FRAC_PI_4;
        (angle.cos() * SQRT_2, angle.sin() * SQRT_2)
    }
}

impl Filter for Rotation {
    fn process(&mut self, samples: &mut Vec<f32>) {
        if self.hz == 0.0 {
            return;
        }
        let step = TAU * self.hz / RATE;
        for pair in samples.chunks_exact_mut(2) {
            let angle = (1.0 + self.phase.sin()) * FRAC_PI_4;
            pair[0] = (f64::from(pair[0]) * angle.cos() * SQRT_2).clamp(-1.0, 1.0) as f32;
            pair[1] = (f64::from(pair[1]) * angle.sin() * SQRT_2).clamp(-1.0, 1.0) as f32;
            self.phase = (self.phase + step) % TAU;
        }
    }

    fn update(&mut self, config: &str) -> Result<(), String> {
        let c: Config = parse(config)?;
        check_range("rotationHz", c.rotation_hz, 0.0, 100.0)?;
        self.hz = c.rotation_hz;
        Ok(())
    }

    fn reset(&mut self) {
        self.phase = 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_signal::{level_db, run, tone};

    #[test]
    fn swings_between_the_ears() {
        let mut f = crate::create("rotation", r#"{"rotationHz":1}"#).unwrap();
        let out = run(f.as_mut(), &tone(1_000.0, 0.25, 1.0));
        // A quarter turn in, all of it is on the right.
        let quarter = &out[2 * 12_000 - 480..2 * 12_000 + 480];
        assert!(level_db(quarter, 0, 0.25) < -20.0);
        assert!((level_db(quarter, 1, 0.25) - 3.01).abs() < 0.3);
        let (l, r) = Rotation::gains_at(1.0, 0.75);
        assert!(l > 1.4 && r < 0.01);
    }
}

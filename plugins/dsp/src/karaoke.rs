//! Lavalink's karaoke: removes what is mixed to the centre (usually the vocals). `level`
//! removes the centre outside the band around `filterBand` (width `filterWidth` Hz);
//! `monoLevel` removes it inside that band too. What differs between the channels stays.

use serde::Deserialize;

use crate::biquad::{Coeffs, Shape, State};
use crate::{Filter, check_range, parse};

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    pub level: f64,
    pub mono_level: f64,
    pub filter_band: f64,
    pub filter_width: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self { level: 1.0, mono_level: 1.0, filter_band: 220.0, filter_width: 100.0 }
    }
}

#[derive(Debug, Default)]
pub struct Karaoke {
    level: f64,
    mono_level: f64,
    band: Coeffs,
    state: State,
}

impl Filter for Karaoke {
    fn process(&mut self, samples: &mut Vec<f32>) {
        for pair in samples.chunks_exact_mut(2) {
            let (l, r) = (f64::from(pair[0]), f64::from(pair[1]));
            let mid = (l + r) / 2.0;
            let side = (l - r) / 2.0;
            let in_band = self.state.run(&self.band, mid);
            let kept = (mid - in_band) * (1.0 - self.level) + in_band * (1.0 - self.mono_level);
            pair[0] = (kept + side) as f32;
            pair[1] = (kept - side) as f32;
        }
    }

    fn update(&mut self, config: &str) -> Result<(), String> {
        let c: Config = parse(config)?;
        check_range("level", c.level, 0.0, 1.0)?;
        check_range("monoLevel", c.mono_level, 0.0, 1.0)?;
        check_range("filterBand", c.filter_band, 1.0, 20_000.0)?;
        check_range("filterWidth", c.filter_width, 1.0, 20_000.0)?;
        self.level = c.level;
        self.mono_level = c.mono_level;
        self.band = Coeffs::new(Shape::BandPass, c.filter_band, c.filter_band / c.filter_width, 1.0);
        Ok(())
    }

    fn reset(&mut self) {
        self.state = State::default();
    }
}

#[cfg(test)]
mod tests {
    use crate::test_signal::{level_db, run, tone};

    #[test]
    fn removes_the_centre_and_keeps_the_sides() {
        let mut f = crate::create("karaoke", "{}").unwrap();
        let out = run(f.as_mut(), &tone(1_000.0, 0.5, 0.5));
        assert!(level_db(&out[4_800..], 0, 0.5) < -40.0);
        // Left only: half of it is "centre", the other half stays on each side in opposite phase.
        let left_only: Vec<f32> = tone(1_000.0, 0.5, 0.5).chunks(2).flat_map(|p| [p[0], 0.0]).collect();
        let mut f = crate::create("karaoke", "{}").unwrap();
        let out = run(f.as_mut(), &left_only);
        assert!((level_db(&out[4_800..], 0, 0.5) + 6.02).abs() < 0.5);
    }
}

//! The contract's 3-band equalizer as RBJ biquads: low shelf 250 Hz, peak 1.5 kHz, high shelf
//! 4 kHz. Each band's multiplier (0–2) is its linear gain; 0 is floored at -80 dB instead of
//! producing NaN coefficients.

use std::f64::consts::PI;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::model::Equalizer;

const RATE: f64 = 48_000.0;
const FLOOR: f64 = 1e-4;

#[derive(Debug, Clone, Copy, Default)]
struct Coeffs {
    b0: f64,
    b1: f64,
    b2: f64,
    a1: f64,
    a2: f64,
}

#[derive(Debug, Clone, Copy)]
enum Band {
    LowShelf,
    Peak,
    HighShelf,
}

fn coeffs(band: Band, freq: f64, q: f64, gain: f64) -> Coeffs {
    let a = gain.max(FLOOR).sqrt();
    let w0 = 2.0 * PI * freq / RATE;
    let (sin, cos) = w0.sin_cos();
    let alpha = sin / (2.0 * q);
    let sa = 2.0 * a.sqrt() * alpha;
    let (b0, b1, b2, a0, a1, a2) = match band {
        Band::LowShelf => (
            a * ((a + 1.0) - (a - 1.0) * cos + sa),
            2.0 * a * ((a - 1.0) - (a + 1.0) * cos),
            a * ((a + 1.0) - (a - 1.0) * cos - sa),
            (a + 1.0) + (a - 1.0) * cos + sa,
            -2.0 * ((a - 1.0) + (a + 1.0) * cos),
            (a + 1.0) + (a - 1.0) * cos - sa,
        ),
        Band::HighShelf => (
            a * ((a + 1.0) + (a - 1.0) * cos + sa),
            -2.0 * a * ((a - 1.0) + (a + 1.0) * cos),
            a * ((a + 1.0) + (a - 1.0) * cos - sa),
            (a + 1.0) - (a - 1.0) * cos + sa,
            2.0 * ((a - 1.0) - (a + 1.0) * cos),
            (a + 1.0) - (a - 1.0) * cos - sa,
        ),
        Band::Peak => (1.0 + alpha * a, -2.0 * cos, 1.0 - alpha * a, 1.0 + alpha / a, -2.0 * cos, 1.0 - alpha / a),
    };
    Coeffs { b0: b0 / a0, b1: b1 / a0, b2: b2 / a0, a1: a1 / a0, a2: a2 / a0 }
}

/// Settings shared between the player (writer) and its track pipeline (reader).
#[derive(Debug, Default)]
pub struct EqualizerControl {
    version: AtomicU64,
    bands: Mutex<Equalizer>,
}

impl EqualizerControl {
    pub fn set(&self, eq: Equalizer) {
        *self.bands.lock() = eq;
        self.version.fetch_add(1, Ordering::Release);
    }

    pub fn get(&self) -> Equalizer {
        *self.bands.lock()
    }
}

/// Per-track filter state.
#[derive(Debug, Default)]
pub struct ThreeBand {
    seen_version: Option<u64>,
    flat: bool,
    coeffs: [Coeffs; 3],
    /// [channel][band] = (x1, x2, y1, y2)
    state: [[(f64, f64, f64, f64); 3]; 2],
}

impl ThreeBand {
    fn refresh(&mut self, control: &EqualizerControl) {
        let version = control.version.load(Ordering::Acquire);
        if self.seen_version == Some(version) {
            return;
        }
        let eq = control.get();
        self.seen_version = Some(version);
        let near = |v: f32| (v - 1.0).abs() < 1e-3;
        self.flat = near(eq.bass) && near(eq.mid) && near(eq.treble);
        self.coeffs = [
            coeffs(Band::LowShelf, 250.0, 0.7, f64::from(eq.bass)),
            coeffs(Band::Peak, 1_500.0, 1.0, f64::from(eq.mid)),
            coeffs(Band::HighShelf, 4_000.0, 0.7, f64::from(eq.treble)),
        ];
    }

    /// Filters interleaved stereo in place with the current settings.
    pub fn process(&mut self, control: &EqualizerControl, samples: &mut [f32]) {
        self.refresh(control);
        if self.flat {
            return;
        }
        for frame in samples.chunks_exact_mut(2) {
            for (ch, sample) in frame.iter_mut().enumerate() {
                let mut x = f64::from(*sample);
                for (band, c) in self.coeffs.iter().enumerate() {
                    let (x1, x2, y1, y2) = &mut self.state[ch][band];
                    let y = c.b0 * x + c.b1 * *x1 + c.b2 * *x2 - c.a1 * *y1 - c.a2 * *y2;
                    (*x2, *x1, *y2, *y1) = (*x1, x, *y1, y);
                    x = y;
                }
                *sample = x as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level_after(eq: Equalizer, freq: f64) -> f64 {
        let control = EqualizerControl::default();
        control.set(eq);
        let mut filter = ThreeBand::default();
        let mut samples: Vec<f32> =
            (0..48_000).flat_map(|i| [(0.5 * (2.0 * PI * freq * i as f64 / RATE).sin()) as f32; 2]).collect();
        filter.process(&control, &mut samples);
        let tail = &samples[48_000..];
        let rms = (tail.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / tail.len() as f64).sqrt();
        20.0 * (rms / (0.5 / 2f64.sqrt())).log10()
    }

    #[test]
    fn bands_follow_their_multipliers_without_nan() {
        let flat = Equalizer::default();
        assert!(level_after(flat, 100.0).abs() < 0.01);
        let no_bass = Equalizer { bass: 0.0, ..flat };
        let db = level_after(no_bass, 60.0);
        assert!(db < -40.0, "bass 0 leaves {db} dB at 60 Hz");
        assert!(level_after(no_bass, 8_000.0).abs() < 0.5);
        let treble_boost = Equalizer { treble: 2.0, ..flat };
        let db = level_after(treble_boost, 12_000.0);
        assert!((db - 6.02).abs() < 0.5, "treble 2 gives {db} dB");
        let all_zero = Equalizer { bass: 0.0, mid: 0.0, treble: 0.0 };
        assert!(level_after(all_zero, 1_000.0).is_finite());
    }
}

//! RBJ "Audio EQ Cookbook" biquads in f64, one state per channel.

use std::f64::consts::PI;

use crate::RATE;

/// Gains below this (-80 dB) are treated as this, so a band at 0 never yields NaN.
const FLOOR: f64 = 1e-4;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coeffs {
    b0: f64,
    b1: f64,
    b2: f64,
    a1: f64,
    a2: f64,
}

impl Default for Coeffs {
    /// Passes the signal through.
    fn default() -> Self {
        Self { b0: 1.0, b1: 0.0, b2: 0.0, a1: 0.0, a2: 0.0 }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Shape {
    LowShelf,
    HighShelf,
    /// Peaking bell.
    Peak,
    /// Band-pass with 0 dB peak gain (the gain is ignored).
    BandPass,
}

impl Coeffs {
    /// A filter of `shape` at `freq` Hz with quality `q` and linear amplitude `gain`.
    pub fn new(shape: Shape, freq: f64, q: f64, gain: f64) -> Self {
        let a = gain.max(FLOOR).sqrt();
        let w0 = 2.0 * PI * freq.clamp(1.0, RATE * 0.49) / RATE;
        let (sin, cos) = w0.sin_cos();
        let alpha = sin / (2.0 * q.max(1e-3));
        let sa = 2.0 * a.sqrt() * alpha;
        let (b0, b1, b2, a0, a1, a2) = match shape {
            Shape::LowShelf => (
                a * ((a + 1.0) - (a - 1.0) * cos + sa),
                2.0 * a * ((a - 1.0) - (a + 1.0) * cos),
                a * ((a + 1.0) - (a - 1.0) * cos - sa),
                (a + 1.0) + (a - 1.0) * cos + sa,
                -2.0 * ((a - 1.0) + (a + 1.0) * cos),
                (a + 1.0) + (a - 1.0) * cos - sa,
            ),
            Shape::HighShelf => (
                a * ((a + 1.0) + (a - 1.0) * cos + sa),
                -2.0 * a * ((a - 1.0) + (a + 1.0) * cos),
                a * ((a + 1.0) + (a - 1.0) * cos - sa),
                (a + 1.0) - (a - 1.0) * cos + sa,
                2.0 * ((a - 1.0) - (a + 1.0) * cos),
                (a + 1.0) - (a - 1.0) * cos - sa,
            ),
            Shape::Peak => (1.0 + alpha * a, -2.0 * cos, 1.0 - alpha * a, 1.0 + alpha / a, -2.0 * cos, 1.0 - alpha / a),
            Shape::BandPass => (alpha, 0.0, -alpha, 1.0 + alpha, -2.0 * cos, 1.0 - alpha),
        };
        Self { b0: b0 / a0, b1: b1 / a0, b2: b2 / a0, a1: a1 / a0, a2: a2 / a0 }
    }
}

/// One biquad's memory for one channel (direct form I).
#[derive(Debug, Clone, Copy, Default)]
pub struct State {
    x1: f64,
    x2: f64,
    y1: f64,
    y2: f64,
}

impl State {
    #[inline]
    pub fn run(&mut self, c: &Coeffs, x: f64) -> f64 {
        let y = c.b0 * x + c.b1 * self.x1 + c.b2 * self.x2 - c.a1 * self.y1 - c.a2 * self.y2;
        self.x2 = self.x1;
        self.x1 = x;
        self.y2 = self.y1;
        self.y1 = y;
        y
    }
}

/// A series of biquads applied to both channels of interleaved stereo.
#[derive(Debug, Clone, Default)]
pub struct Cascade {
    coeffs: Vec<Coeffs>,
    /// `[stage][channel]`
    states: Vec<[State; 2]>,
}

impl Cascade {
    /// Replaces the stages, keeping the memory of stages that remain so changes are smooth.
    pub fn set(&mut self, coeffs: Vec<Coeffs>) {
        self.states.resize(coeffs.len(), [State::default(); 2]);
        self.coeffs = coeffs;
    }

    pub fn is_empty(&self) -> bool {
        self.coeffs.is_empty()
    }

    pub fn reset(&mut self) {
        self.states.iter_mut().for_each(|s| *s = [State::default(); 2]);
    }

    pub fn process(&mut self, samples: &mut [f32]) {
        for pair in samples.chunks_exact_mut(2) {
            for (ch, sample) in pair.iter_mut().enumerate() {
                let mut x = f64::from(*sample);
                for (c, state) in self.coeffs.iter().zip(self.states.iter_mut()) {
                    x = state[ch].run(c, x);
                }
                *sample = x as f32;
            }
        }
    }
}

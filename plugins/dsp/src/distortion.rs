//! Lavalink's distortion: y = offset + scale · Σ f(x · fScale + fOffset) over f in sin, cos
//! and tan. A term whose scale is 0 is left out; with no terms the input itself is used.
//! The result is clamped to [-1, 1], and a non-finite result (tan's poles) becomes 0.

use serde::Deserialize;

use crate::{Filter, check_range, parse};

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    pub sin_offset: f64,
    pub sin_scale: f64,
    pub cos_offset: f64,
    pub cos_scale: f64,
    pub tan_offset: f64,
    pub tan_scale: f64,
    pub offset: f64,
    pub scale: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            sin_offset: 0.0,
            sin_scale: 1.0,
            cos_offset: 0.0,
            cos_scale: 0.0,
            tan_offset: 0.0,
            tan_scale: 0.0,
            offset: 0.0,
            scale: 1.0,
        }
    }
}

#[derive(Debug, Default)]
pub struct Distortion {
    config: Config,
}

impl Distortion {
    fn shape(&self, x: f64) -> f64 {
        let c = &self.config;
        let mut sum = 0.0;
        let mut any = false;
        for (scale, offset, f) in [
            (c.sin_scale, c.sin_offset, f64::sin as fn(f64) -> f64),
            (c.cos_scale, c.cos_offset, f64::cos),
            (c.tan_scale, c.tan_offset, f64::tan),
        ] {
            if scale != 0.0 {
                sum += f(x * scale + offset);
                any = true;
            }
        }
        let y = c.offset + c.scale * if any { sum } else { x };
        if y.is_finite() { y.clamp(-1.0, 1.0) } else { 0.0 }
    }
}

impl Filter for Distortion {
    fn process(&mut self, samples: &mut Vec<f32>) {
        for s in samples.iter_mut() {
            *s = self.shape(f64::from(*s)) as f32;
        }
    }

    fn update(&mut self, config: &str) -> Result<(), String> {
        let c: Config = parse(config)?;
        for (name, v) in [
            ("sinOffset", c.sin_offset),
            ("sinScale", c.sin_scale),
            ("cosOffset", c.cos_offset),
            ("cosScale", c.cos_scale),
            ("tanOffset", c.tan_offset),
            ("tanScale", c.tan_scale),
            ("offset", c.offset),
            ("scale", c.scale),
        ] {
            check_range(name, v, -100.0, 100.0)?;
        }
        self.config = c;
        Ok(())
    }

    fn reset(&mut self) {}
}

#[cfg(test)]
mod tests {
    #[test]
    fn shapes_and_never_leaves_range() {
        let mut f = crate::create("distortion", r#"{"tanScale":50,"sinScale":0,"scale":3}"#).unwrap();
        let mut s: Vec<f32> = (0..2000).map(|i| (i as f32 / 1000.0) - 1.0).collect();
        f.process(&mut s);
        assert!(s.iter().all(|v| v.is_finite() && (-1.0..=1.0).contains(v)));
        let mut f = crate::create("distortion", r#"{"sinScale":0,"offset":0.5,"scale":0.5}"#).unwrap();
        let mut s = vec![0.2, -0.2];
        f.process(&mut s);
        assert_eq!(s, vec![0.6, 0.4]);
    }
}

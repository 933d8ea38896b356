//! Lavalink's channelMix: each output channel is a weighted sum of both inputs.

use serde::Deserialize;

use crate::{Filter, check_range, parse};

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    pub left_to_left: f64,
    pub left_to_right: f64,
    pub right_to_left: f64,
    pub right_to_right: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self { left_to_left: 1.0, left_to_right: 0.0, right_to_left: 0.0, right_to_right: 1.0 }
    }
}

#[derive(Debug, Default)]
pub struct ChannelMix {
    config: Config,
}

impl Filter for ChannelMix {
    fn process(&mut self, samples: &mut Vec<f32>) {
        let c = self.config;
        let (ll, lr, rl, rr) =
            (c.left_to_left as f32, c.left_to_right as f32, c.right_to_left as f32, c.right_to_right as f32);
        for pair in samples.chunks_exact_mut(2) {
            let (l, r) = (pair[0], pair[1]);
            pair[0] = (l * ll + r * rl).clamp(-1.0, 1.0);
            pair[1] = (l * lr + r * rr).clamp(-1.0, 1.0);
        }
    }

    fn update(&mut self, config: &str) -> Result<(), String> {
        let c: Config = parse(config)?;
        check_range("leftToLeft", c.left_to_left, 0.0, 1.0)?;
        check_range("leftToRight", c.left_to_right, 0.0, 1.0)?;
        check_range("rightToLeft", c.right_to_left, 0.0, 1.0)?;
        check_range("rightToRight", c.right_to_right, 0.0, 1.0)?;
        self.config = c;
        Ok(())
    }

    fn reset(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_channels() {
        let mut f = crate::create("channelMix", r#"{"leftToLeft":0,"leftToRight":1,"rightToLeft":1,"rightToRight":0}"#)
            .unwrap();
        let mut s = vec![0.1, 0.2, 0.3, 0.4];
        f.process(&mut s);
        assert_eq!(s, vec![0.2, 0.1, 0.4, 0.3]);
        let _ = ChannelMix::default();
    }
}

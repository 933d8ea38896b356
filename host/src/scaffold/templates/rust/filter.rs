//! {{id}}: a filter plugin for mesastream. `{{filter}}` multiplies every sample by `gain`
//! (0 to 4); replace `Gain` with your own processing.

// The bindings of the `filter` world of mesastream:plugin@0.2.0 (in `wit/`). 0.2.0 includes
// 0.1.0, so the generated modules carry the version of the package each interface is in.
wit_bindgen::generate!({ world: "filter", path: "wit", generate_all });

use std::cell::Cell;

use exports::mesastream::plugin0_1_0::filters::{Guest, GuestInstance, Instance};
use mesastream::plugin0_1_0::log::{Level, log};

/// The gain a JSON config asks for; an error names the field, as API clients see it.
pub fn parse_gain(config: &str) -> Result<f32, String> {
    let value: serde_json::Value = serde_json::from_str(config).map_err(|e| format!("config: {e}"))?;
    match value.get("gain") {
        None => Ok(1.0),
        Some(gain) => match gain.as_f64() {
            Some(g) if (0.0..=4.0).contains(&g) => Ok(g as f32),
            _ => Err("gain: a number from 0 to 4".into()),
        },
    }
}

struct Gain {
    gain: Cell<f32>,
}

impl GuestInstance for Gain {
    /// 20 ms of 48 kHz stereo, interleaved (left, right, ...).
    fn process(&self, mut samples: Vec<f32>) -> Vec<f32> {
        let gain = self.gain.get();
        samples.iter_mut().for_each(|s| *s *= gain);
        samples
    }

    fn flush(&self) -> Vec<f32> {
        Vec::new()
    }

    fn update(&self, config: String) -> Result<(), String> {
        self.gain.set(parse_gain(&config)?);
        Ok(())
    }

    fn reset(&self) {}
}

struct Component;

impl Guest for Component {
    type Instance = Gain;

    fn create(name: String, config: String) -> Result<Instance, String> {
        if name != "{{filter}}" {
            return Err(format!("no filter named {name}"));
        }
        let gain = parse_gain(&config)?;
        log(Level::Debug, &format!("{name} created at gain {gain}"));
        Ok(Instance::new(Gain { gain: Cell::new(gain) }))
    }
}

export!(Component);

#[cfg(test)]
mod tests {
    use super::parse_gain;

    #[test]
    fn gain_is_read_and_checked() {
        assert_eq!(parse_gain(r#"{"gain":0.5}"#), Ok(0.5));
        assert_eq!(parse_gain("{}"), Ok(1.0));
        assert!(parse_gain(r#"{"gain":9}"#).is_err_and(|e| e.starts_with("gain")));
    }
}

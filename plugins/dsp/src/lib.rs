//! The DSP behind mesastream's first-party filters.
//!
//! Every filter works on 48 kHz interleaved stereo f32 and is configured from JSON with the
//! field names API clients send (Lavalink's for its filter set). The same code runs natively
//! (benchmarks compare against it) and inside the filter components through
//! [`filter_component!`].

mod biquad;
mod channel_mix;
mod distortion;
mod equalizer;
mod karaoke;
mod low_pass;
mod modulation;
mod normalization;
mod rotation;
mod three_band;
mod timescale;

use serde::de::DeserializeOwned;

pub use channel_mix::ChannelMix;
pub use distortion::Distortion;
pub use equalizer::Equalizer;
pub use karaoke::Karaoke;
pub use low_pass::LowPass;
pub use modulation::{Tremolo, Vibrato};
pub use normalization::Normalization;
pub use rotation::Rotation;
pub use three_band::ThreeBand;
pub use timescale::Timescale;

/// Samples per second per channel.
pub const RATE: f64 = 48_000.0;

/// One running filter.
pub trait Filter: Send + std::fmt::Debug {
    /// Filters interleaved stereo. May change the number of samples (always whole pairs).
    fn process(&mut self, samples: &mut Vec<f32>);
    /// What the filter still holds at the end of a track.
    fn flush(&mut self) -> Vec<f32> {
        Vec::new()
    }
    /// Applies a new JSON configuration.
    fn update(&mut self, config: &str) -> Result<(), String>;
    /// Forgets all state (after a seek).
    fn reset(&mut self);
}

/// Every filter name this crate implements, as clients write them.
pub const NAMES: &[&str] = &[
    "threeBandEqualizer",
    "equalizer",
    "karaoke",
    "timescale",
    "tremolo",
    "vibrato",
    "rotation",
    "distortion",
    "channelMix",
    "lowPass",
    "normalization",
];

/// Creates filter `name` from a JSON configuration.
pub fn create(name: &str, config: &str) -> Result<Box<dyn Filter>, String> {
    fn make<F: Filter + Default + 'static>(config: &str) -> Result<Box<dyn Filter>, String> {
        let mut filter = F::default();
        filter.update(config)?;
        Ok(Box::new(filter))
    }
    match name {
        "threeBandEqualizer" => make::<ThreeBand>(config),
        "equalizer" => make::<Equalizer>(config),
        "karaoke" => make::<Karaoke>(config),
        "timescale" => make::<Timescale>(config),
        "tremolo" => make::<Tremolo>(config),
        "vibrato" => make::<Vibrato>(config),
        "rotation" => make::<Rotation>(config),
        "distortion" => make::<Distortion>(config),
        "channelMix" => make::<ChannelMix>(config),
        "lowPass" => make::<LowPass>(config),
        "normalization" => make::<Normalization>(config),
        other => Err(format!("unknown filter {other:?}")),
    }
}

/// Parses a JSON configuration; an empty string or `null` means every field's default.
pub(crate) fn parse<T: DeserializeOwned + Default>(config: &str) -> Result<T, String> {
    let trimmed = config.trim();
    if trimmed.is_empty() || trimmed == "null" {
        return Ok(T::default());
    }
    serde_json::from_str(trimmed).map_err(|e| format!("invalid config: {e}"))
}

/// Checks that `value` lies in `[min, max]`, naming the field when it does not.
pub(crate) fn check_range(field: &str, value: f64, min: f64, max: f64) -> Result<(), String> {
    if value.is_finite() && (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(format!("{field} must be between {min} and {max}, got {value}"))
    }
}

/// Implements the `filter` world of `mesastream:plugin` for the named filters of this crate.
///
/// Use in a `cdylib` crate that depends on `wit-bindgen` and sits two folders below the
/// repository root (the macro reads `../../wit/deps/plugin-0.1.0`: these filters target
/// `mesastream:plugin@0.1.0`, which every host that links 0.2.0 still links).
#[macro_export]
macro_rules! filter_component {
    ($($name:literal),+ $(,)?) => {
        ::wit_bindgen::generate!({ world: "filter", path: "../../wit/deps/plugin-0.1.0" });

        use exports::mesastream::plugin::filters::{Guest, GuestInstance, Instance as InstanceHandle};

        struct Component;

        struct Instance(::std::cell::RefCell<Box<dyn $crate::Filter>>);

        impl Guest for Component {
            type Instance = Instance;

            fn create(name: String, config: String) -> Result<InstanceHandle, String> {
                if ![$($name),+].contains(&name.as_str()) {
                    return Err(format!("unknown filter {name:?}"));
                }
                let filter = $crate::create(&name, &config)?;
                Ok(InstanceHandle::new(Instance(::std::cell::RefCell::new(filter))))
            }
        }

        impl GuestInstance for Instance {
            fn process(&self, samples: Vec<f32>) -> Vec<f32> {
                let mut samples = samples;
                self.0.borrow_mut().process(&mut samples);
                samples
            }
            fn flush(&self) -> Vec<f32> {
                self.0.borrow_mut().flush()
            }
            fn update(&self, config: String) -> Result<(), String> {
                self.0.borrow_mut().update(&config)
            }
            fn reset(&self) {
                self.0.borrow_mut().reset()
            }
        }

        export!(Component);
    };
}

#[cfg(test)]
pub(crate) mod test_signal {
    use std::f64::consts::TAU;

    /// `seconds` of a stereo sine at `freq` with amplitude `amp` in both channels.
    pub fn tone(freq: f64, amp: f64, seconds: f64) -> Vec<f32> {
        let n = (seconds * super::RATE) as usize;
        (0..n).flat_map(|i| [(amp * (TAU * freq * i as f64 / super::RATE).sin()) as f32; 2]).collect()
    }

    /// RMS level of one channel (0 = left) in dB relative to full-scale sine amplitude `reference`.
    pub fn level_db(samples: &[f32], channel: usize, reference: f64) -> f64 {
        let values: Vec<f64> = samples.iter().skip(channel).step_by(2).map(|s| f64::from(*s)).collect();
        let rms = (values.iter().map(|v| v * v).sum::<f64>() / values.len().max(1) as f64).sqrt();
        20.0 * (rms / (reference / 2f64.sqrt())).log10()
    }

    /// Runs `filter` over `input` in 20 ms blocks, as the host does, and flushes it.
    pub fn run(filter: &mut dyn super::Filter, input: &[f32]) -> Vec<f32> {
        let mut out = Vec::new();
        for block in input.chunks(1920) {
            let mut b = block.to_vec();
            filter.process(&mut b);
            out.extend(b);
        }
        out.extend(filter.flush());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_builds_with_defaults_and_rejects_garbage() {
        for name in NAMES {
            assert!(create(name, "").is_ok(), "{name} with defaults");
            assert!(create(name, "{\"nope\": 1}").is_err(), "{name} accepted an unknown field");
        }
        assert!(create("reverb", "").is_err());
    }

    #[test]
    fn defaults_leave_audio_alone() {
        let input = test_signal::tone(440.0, 0.5, 0.5);
        // The filters whose defaults are neutral (the others default to an audible effect, as in Lavalink).
        for name in ["threeBandEqualizer", "equalizer", "timescale", "rotation", "channelMix"] {
            let mut filter = create(name, "").unwrap();
            let out = test_signal::run(filter.as_mut(), &input);
            let db = test_signal::level_db(&out[..input.len().min(out.len())], 0, 0.5);
            assert!(db.abs() < 0.2, "{name} at defaults changed the level by {db} dB");
        }
    }
}

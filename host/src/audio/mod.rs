//! From a URL to 20 ms Opus frames: fetch, decode, resample, encode.

pub mod decode;
pub mod encode;
pub mod equalizer;
pub mod fetch;
pub mod pipeline;
pub mod resample;

pub use pipeline::{Controls, Frame, Gain, PipelineConfig, TrackInfo, TrackRequest};

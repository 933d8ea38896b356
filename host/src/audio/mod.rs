//! From a URL to 20 ms Opus frames: fetch, decode, resample, filter, encode.

pub mod decode;
pub mod demand;
pub mod encode;
pub mod fetch;
pub mod filter_chain;
pub mod opus_packets;
pub mod pipeline;
pub mod process_stream;
pub mod resample;

pub use pipeline::{Controls, Frame, Gain, PipelineConfig, TrackFrames, TrackInfo, TrackRequest, TrackSource};

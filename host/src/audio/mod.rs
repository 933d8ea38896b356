//! From a URL to 20 ms Opus frames: fetch, decode, resample, filter, encode.

pub mod controls;
pub mod decode;
pub mod encode;
pub mod fetch;
pub mod filter_chain;
pub mod frames;
pub mod inflow;
pub mod live_follow;
pub mod mp3;
pub mod opening;
pub mod opus_packets;
pub mod pipeline;
pub mod process_stream;
pub mod pushed;
pub mod recording;
pub mod resample;
pub mod track_work;
pub mod transcode;
pub mod workers;

pub use controls::{Controls, Gain};
pub use opening::{PipelineConfig, TrackInfo};
pub use pipeline::{TrackFrames, TrackRequest, TrackSource};

//! Baselines the benchmarks measure in their own run, so a figure is read against what the
//! same machine did that minute.

use std::time::Instant;

use mesastream::audio::encode::{OpusEncoder, tone_frame};

/// libopus alone, at the server's default settings (128 kbit/s, complexity 10): µs per
/// 20 ms stereo frame.
pub fn encode_only_us_per_frame() -> f64 {
    let mut encoder = OpusEncoder::new(128).expect("encoder");
    let frame = tone_frame(440.0, 0.4, 0);
    for _ in 0..200 {
        std::hint::black_box(encoder.encode(&frame).expect("encode"));
    }
    let frames = 3000;
    let start = Instant::now();
    for _ in 0..frames {
        std::hint::black_box(encoder.encode(&frame).expect("encode"));
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(frames)
}

//! Per-frame cost of every first-party filter: the WASM component as the host runs it
//! (instance call, samples copied in and out) against the same DSP compiled natively, in
//! one run on one thread. Also an identity filter, which is the bare cost of a call, and the
//! gain examples written in Python and JavaScript against a gain in native Rust.
//!
//!     cargo bench --bench filters
//!
//! Builds the plugins with scripts/build-plugins.sh and scripts/build-language-plugins.sh
//! first (the Python and JavaScript toolchains come from `scripts/setup.sh --tests`). Prints a
//! table; see BENCHMARKS.md.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesastream::plugins::filter::FilterInstance;
use mesastream::plugins::{PluginHost, PluginSettings, Services};
use mesastream::store::StateStore;

/// 20 ms of 48 kHz stereo.
const FRAME: usize = 1920;
const WARMUP_FRAMES: usize = 200;
const FRAMES: usize = 3000;
const ROUNDS: usize = 3;

/// Each filter with a config that makes it do real work.
const CASES: &[(&str, &str)] = &[
    ("threeBandEqualizer", r#"{"bass":1.5,"mid":0.8,"treble":1.2}"#),
    ("equalizer", r#"[{"band":0,"gain":0.25},{"band":3,"gain":-0.1},{"band":9,"gain":0.1},{"band":14,"gain":0.2}]"#),
    ("karaoke", r#"{"level":1.0,"monoLevel":1.0,"filterBand":220.0,"filterWidth":100.0}"#),
    ("timescale", r#"{"speed":1.25,"pitch":1.1,"rate":1.0}"#),
    ("tremolo", r#"{"frequency":4.0,"depth":0.5}"#),
    ("vibrato", r#"{"frequency":4.0,"depth":0.5}"#),
    ("rotation", r#"{"rotationHz":0.2}"#),
    ("distortion", r#"{"sinScale":1.0,"cosScale":1.0,"tanScale":1.0,"scale":0.8}"#),
    ("channelMix", r#"{"leftToLeft":0.5,"leftToRight":0.5,"rightToLeft":0.5,"rightToRight":0.5}"#),
    ("lowPass", r#"{"smoothing":20.0}"#),
    ("normalization", r#"{"targetDb":-14.0,"maxGainDb":12.0}"#),
];

/// The filters written in other languages: (filter, language, config); each multiplies by `gain`.
const LANGUAGE_CASES: &[(&str, &str, &str)] =
    &[("pythonGain", "Python", r#"{"gain":0.5}"#), ("jsGain", "JavaScript", r#"{"gain":0.5}"#)];

/// ComponentizeJS 0.23 never frees the block written into each call (see plugins/README.md):
/// the bench's 9200 calls need about 70 MiB more than the default 32.
const GRANTS: &str = "[plugins.js-gain]\nlimits = { memory-mb = 256 }\n";

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().expect("plugins dir");
    let status = std::process::Command::new("bash")
        .arg(root.join("scripts/build-plugins.sh"))
        .arg(dir.path())
        .args(["equalizer", "lavalink-filters", "misbehaving"])
        .status()
        .expect("run scripts/build-plugins.sh");
    assert!(status.success(), "building the plugins failed");
    let status = std::process::Command::new("bash")
        .arg(root.join("scripts/build-language-plugins.sh"))
        .arg(dir.path())
        .args(["python-gain", "js-gain"])
        .status()
        .expect("run scripts/build-language-plugins.sh");
    assert!(status.success(), "building the Python and JavaScript plugins failed (scripts/setup.sh --tests)");
    let grants = dir.path().join("plugins.toml");
    std::fs::write(&grants, GRANTS).expect("grants");

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let settings = PluginSettings {
        dir: Some(dir.path().to_path_buf()),
        config: Some(grants),
        cache_dir: None,
        reload_interval: Duration::ZERO,
        pool_instances: 16,
    };
    let store = StateStore::in_memory("bench").expect("store");
    let services = Services::offline(runtime.handle().clone(), store).expect("services");
    let host = PluginHost::new(settings, services).expect("plugin host");
    host.scan();

    let input = tone_frames();
    println!("filter cost per 20 ms frame (48 kHz stereo), {FRAMES} frames x {ROUNDS} rounds, best round");
    println!("{:<20} {:>12} {:>12} {:>8} {:>12}", "filter", "native µs", "wasm µs", "ratio", "wasm % of 20ms");
    // Samples an identity filter returns untouched: the bare price of a component call.
    let identity = wasm_cost(&host, "trap", r#"{"afterFrames":1000000000}"#, &input);
    println!("{:<20} {:>12} {:>12.2} {:>8} {:>12.3}", "identity (call)", "-", identity, "-", identity / 200.0);
    for (name, config) in CASES {
        let native = native_cost(name, config, &input);
        let wasm = wasm_cost(&host, name, config, &input);
        println!(
            "{:<20} {:>12.2} {:>12.2} {:>8.2} {:>12.3}",
            name,
            native,
            wasm,
            wasm / native.max(f64::EPSILON),
            wasm / 200.0
        );
    }
    for (name, language, config) in LANGUAGE_CASES {
        let native = native_gain_cost(&input);
        let wasm = wasm_cost(&host, name, config, &input);
        println!(
            "{:<20} {:>12.2} {:>12.2} {:>8.1} {:>12.3}",
            format!("{name} ({language})"),
            native,
            wasm,
            wasm / native.max(f64::EPSILON),
            wasm / 200.0
        );
    }
}

/// One second of a 440 Hz tone plus a 3 kHz overtone, as 50 frames.
fn tone_frames() -> Vec<Vec<f32>> {
    let samples: Vec<f32> = (0..48_000)
        .flat_map(|i| {
            let t = i as f32 / 48_000.0;
            let s = 0.4 * (std::f32::consts::TAU * 440.0 * t).sin() + 0.1 * (std::f32::consts::TAU * 3000.0 * t).sin();
            [s, s * 0.9]
        })
        .collect();
    samples.chunks(FRAME).map(<[f32]>::to_vec).collect()
}

/// Best of `ROUNDS` rounds, in microseconds per frame.
fn best(mut round: impl FnMut() -> Duration) -> f64 {
    (0..ROUNDS).map(|_| round().as_secs_f64() * 1e6 / FRAMES as f64).fold(f64::INFINITY, f64::min)
}

fn native_cost(name: &str, config: &str, input: &[Vec<f32>]) -> f64 {
    let mut filter = mesastream_dsp::create(name, config).expect("native filter");
    native_block_cost(input, |block| filter.process(block))
}

/// The gain the language examples compute, in native Rust.
fn native_gain_cost(input: &[Vec<f32>]) -> f64 {
    native_block_cost(input, |block| block.iter_mut().for_each(|s| *s *= 0.5))
}

/// Per frame, `process` over the input's blocks (each copied in first, as the host does).
fn native_block_cost(input: &[Vec<f32>], mut process: impl FnMut(&mut Vec<f32>)) -> f64 {
    let mut block = Vec::with_capacity(FRAME * 2);
    let mut run = |frames: usize| {
        for i in 0..frames {
            block.clear();
            block.extend_from_slice(&input[i % input.len()]);
            process(&mut block);
            black_box(&block);
        }
    };
    run(WARMUP_FRAMES);
    best(|| {
        let start = Instant::now();
        run(FRAMES);
        start.elapsed()
    })
}

fn wasm_cost(host: &Arc<PluginHost>, name: &str, config: &str, input: &[Vec<f32>]) -> f64 {
    let plugin = host.filter(name).unwrap_or_else(|| panic!("no plugin provides {name}"));
    let mut instance = FilterInstance::create(&plugin, name, config).expect("wasm filter");
    let mut run = |frames: usize| {
        for i in 0..frames {
            black_box(instance.process(&input[i % input.len()]).expect("filter call"));
        }
    };
    run(WARMUP_FRAMES);
    best(|| {
        let start = Instant::now();
        run(FRAMES);
        start.elapsed()
    })
}

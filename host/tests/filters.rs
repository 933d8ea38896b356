//! Filter plugins, built from `plugins/`, heard through the fake voice server's listener.

mod support;

use fake_voice::{FakeVoiceConfig, Report};
use mesastream_dsp::{LowPass, Rotation, Tremolo};
use serde_json::{Value, json};
use support::media::tone;
use support::{Harness, play_filtered};

const FILTERS: &[&str] = &["equalizer", "lavalink-filters"];

async fn harness() -> Harness {
    Harness::with_plugins(FakeVoiceConfig::default(), FILTERS, |_| {}).await
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = values.collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// The window starting nearest `ms`.
fn window_at(report: &Report, ms: u64) -> &fake_voice::Window {
    report.windows.iter().min_by_key(|w| w.start_ms.abs_diff(ms)).expect("windows")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_are_listed_and_chains_validated() {
    let h = harness().await;
    let plugins = h.get("/plugins").await;
    let ids: Vec<&str> = plugins.body.as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["lavalink-filters", "mesastream-equalizer"]);
    let lavalink = &plugins.body[0];
    assert_eq!((lavalink["kind"].as_str(), lavalink["wit_version"].as_str()), (Some("filter"), Some("0.1.0")));
    assert_eq!(lavalink["granted"], json!(["log"]));
    assert_eq!(lavalink["filters"].as_array().unwrap().len(), 10);
    assert_eq!(lavalink["filters"][3]["parameters"]["depth"]["max"], 1.0);

    let (guild, _session) = h.new_player().await;
    let path = format!("/players/{guild}/filters");
    let put = |chain: Value| h.call(reqwest::Method::PUT, &path, Some(chain));
    let unknown = put(json!([{"name": "reverb", "config": {}}])).await;
    assert_eq!(unknown.status, 400);
    assert!(
        unknown.body["message"].as_str().unwrap().starts_with("bad request: unknown filter \"reverb\""),
        "{unknown:?}"
    );
    let out_of_range = put(json!([{"name": "tremolo", "config": {"depth": 2}}])).await;
    assert_eq!(out_of_range.status, 400);
    assert_eq!(out_of_range.body["code"], "bad_request");
    assert!(
        out_of_range.body["message"].as_str().unwrap().contains("filter tremolo: depth must be"),
        "{out_of_range:?}"
    );
    let not_json = put(json!({"name": "lowPass"})).await;
    assert_eq!(not_json.status, 400);
    // A refused chain changes nothing.
    assert_eq!(h.get(&path).await.body, json!([]));

    // The equalizer route keeps its own shape and drives the 3-band filter in the chain.
    let chain = json!([{"name": "lowPass", "config": {"smoothing": 10}}]);
    assert_eq!(put(chain.clone()).await.body, chain);
    let eq = h.post(&format!("/players/{guild}/equalizer"), json!({"bass": 0.5, "mid": 1.0, "treble": 1.5})).await;
    assert_eq!(eq.body["equalizer"], json!({"bass": 0.5, "mid": 1.0, "treble": 1.5}));
    let now = h.get(&path).await.body;
    assert_eq!(now[0], json!({"name": "threeBandEqualizer", "config": {"bass": 0.5, "mid": 1.0, "treble": 1.5}}));
    assert_eq!(now[1], chain[0]);
    // Flat again: the filter leaves the chain.
    h.post(&format!("/players/{guild}/equalizer"), json!({"bass": 1.0, "mid": 1.0, "treble": 1.0})).await;
    assert_eq!(h.get(&path).await.body, chain);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_pass_attenuates_by_its_response() {
    let h = harness().await;
    let plain = play_filtered(&h, "tone-8000.wav", json!([])).await;
    let smoothed = play_filtered(&h, "tone-8000.wav", json!([{"name": "lowPass", "config": {"smoothing": 20}}])).await;
    let level = |r: &Report| mean(r.windows.iter().skip(1).map(|w| w.level_db));
    let measured = level(&smoothed) - level(&plain);
    let expected = 20.0 * LowPass::response(20.0, 8_000.0).log10();
    assert!((measured - expected).abs() < 1.5, "lowPass 20 at 8 kHz: {measured:.1} dB, expected {expected:.1} dB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_mix_swaps_the_channels() {
    let h = harness().await;
    let swap = json!([{"name": "channelMix", "config": {"leftToLeft": 0, "leftToRight": 1, "rightToLeft": 1, "rightToRight": 0}}]);
    let plain = play_filtered(&h, "tone-1000-left.wav", json!([])).await;
    let swapped = play_filtered(&h, "tone-1000-left.wav", swap).await;
    let side = |r: &Report| (mean(r.windows.iter().map(|w| w.left_db)), mean(r.windows.iter().map(|w| w.right_db)));
    let (pl, pr) = side(&plain);
    let (sl, sr) = side(&swapped);
    assert!(pl - pr > 30.0, "the fixture is left only: {pl:.1} / {pr:.1} dB");
    assert!(sr - sl > 30.0, "swapped to the right: {sl:.1} / {sr:.1} dB");
    assert!((sr - pl).abs() < 1.0, "same level on the other side: {pl:.1} → {sr:.1} dB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_swings_the_balance_at_its_rate() {
    let h = harness().await;
    let t = tone("tone-100.wav");
    let report = play_filtered(&h, t.file, json!([{"name": "rotation", "config": {"rotationHz": 0.5}}])).await;
    // Period 2 s: all right at 0.5 s, centred at 1 s, all left at 1.5 s.
    for (ms, seconds) in [(450, 0.5), (950, 1.0), (1_450, 1.5), (2_450, 2.5), (3_450, 3.5)] {
        let w = window_at(&report, ms);
        let (l, r) = Rotation::gains_at(0.5, seconds);
        let expected = 20.0 * (l.max(1e-3) / r.max(1e-3)).log10();
        let measured = w.left_db - w.right_db;
        let agrees = if expected.abs() > 20.0 {
            measured.signum() == expected.signum() && measured.abs() > 15.0
        } else {
            (measured - expected).abs() < 3.0
        };
        assert!(agrees, "at {ms} ms: balance {measured:.1} dB, expected {expected:.1} dB");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timescale_speed_shortens_and_keeps_the_pitch() {
    let h = harness().await;
    let t = tone("tone-440.mp3");
    let report = play_filtered(&h, t.file, json!([{"name": "timescale", "config": {"speed": 1.25}}])).await;
    let expected_ms = t.seconds * 1000.0 / 1.25;
    assert!(
        (report.audible_ms as f64 - expected_ms).abs() <= 60.0,
        "heard {} ms, expected {expected_ms} ms",
        report.audible_ms
    );
    let off = report.windows_off_frequency(440.0, 3.0);
    assert!(off.is_empty(), "pitch moved: {off:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tremolo_modulates_the_level_at_its_frequency() {
    let h = harness().await;
    let t = tone("tone-100.wav");
    let report =
        play_filtered(&h, t.file, json!([{"name": "tremolo", "config": {"frequency": 2, "depth": 0.8}}])).await;
    // Crests (gain 1) every 0.5 s, troughs (gain 0.2) a quarter period later.
    let crests = mean([500, 1_000, 1_500, 2_000].iter().map(|ms| window_at(&report, ms - 50).level_db));
    let troughs = mean([250, 750, 1_250, 1_750].iter().map(|ms| window_at(&report, ms - 50).level_db));
    // A 100 ms window averages the envelope: compute what that average should be.
    let window_db = |centre: f64| {
        let power = mean((0..100).map(|i| Tremolo::gain_at(2.0, 0.8, centre - 0.05 + f64::from(i) / 1000.0).powi(2)));
        10.0 * power.log10()
    };
    let expected = window_db(0.5) - window_db(0.25);
    assert!(
        (crests - troughs - expected).abs() < 2.0,
        "crest-trough {:.1} dB, expected {expected:.1} dB",
        crests - troughs
    );
}

//! Filter plugins written in Python (componentize-py) and JavaScript (ComponentizeJS), built
//! from `examples/plugins/` by the project's own script with the toolchains `setup.sh`
//! installs, loaded like any plugin and heard through the fake voice server's listener.

mod support;

use fake_voice::{FakeVoiceConfig, Report};
use serde_json::json;
use support::{Harness, play_filtered};

/// Builds the examples into a fresh plugins directory.
fn build_examples() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("plugins dir");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = std::process::Command::new("bash")
        .arg(root.join("scripts/build-language-plugins.sh"))
        .arg(dir.path())
        .status()
        .expect("run scripts/build-language-plugins.sh");
    assert!(
        status.success(),
        "building the Python and JavaScript plugins failed (scripts/setup.sh --tests installs their toolchains)"
    );
    dir
}

/// The mean level of the heard windows, the first one (cut mid-window) aside.
fn level(report: &Report) -> f64 {
    let levels: Vec<f64> = report.windows.iter().skip(1).map(|w| w.level_db).collect();
    levels.iter().sum::<f64>() / levels.len().max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_filters_are_heard_at_their_gain() {
    let plugins = build_examples();
    let dir = plugins.path().to_path_buf();
    let h = Harness::start_with(FakeVoiceConfig::default(), |c| c.plugins_dir = Some(dir)).await;
    let listed = h.get("/plugins").await;
    let text = listed.body.to_string();
    assert!(text.contains("pythonGain") && text.contains("jsGain"), "{listed:?}");
    let plain = level(&play_filtered(&h, "tone-440.mp3", json!([])).await);
    for (name, gain) in [("pythonGain", 0.5), ("jsGain", 0.25)] {
        let chain = json!([{ "name": name, "config": { "gain": gain } }]);
        let heard = play_filtered(&h, "tone-440.mp3", chain).await;
        let measured = level(&heard) - plain;
        let expected = 20.0 * f64::log10(gain);
        assert!((measured - expected).abs() < 0.5, "{name} {gain}: {measured:.2} dB, expected {expected:.2} dB");
        assert!(heard.windows_off_frequency(440.0, 2.0).is_empty(), "{name} kept the pitch");
    }
    // A config out of the manifest's range is refused with the field named.
    let (guild, _session) = h.new_player().await;
    let refused = json!([{ "name": "pythonGain", "config": { "gain": 9 } }]);
    let reply = h.call(reqwest::Method::PUT, &format!("/players/{guild}/filters"), Some(refused)).await;
    assert_eq!((reply.status, reply.body["code"].as_str()), (400, Some("bad_request")), "{reply:?}");
    assert!(reply.body["message"].as_str().is_some_and(|m| m.contains("gain")), "{reply:?}");
}

//! Plugins written in Python (componentize-py) and JavaScript (ComponentizeJS), built from
//! `examples/plugins/` by the project's own script with the toolchains `setup.sh` installs,
//! loaded like any plugin (beside Rust plugins built against the older WIT 0.1.0) and heard
//! through the fake voice server's listener.

mod support;

use std::path::Path;

use fake_voice::{FakeVoiceConfig, Report};
use serde_json::{Value, json};
use support::media::tone;
use support::{Harness, assert_heard, play_filtered, play_query};

/// Builds `examples` (names under `examples/plugins/`, or folders) into `dir`.
fn build_into(dir: &Path, examples: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = std::process::Command::new("bash")
        .arg(root.join("scripts/build-language-plugins.sh"))
        .arg(dir)
        .args(examples)
        .status()
        .expect("run scripts/build-language-plugins.sh");
    assert!(
        status.success(),
        "building {examples:?} failed (scripts/setup.sh --tests installs the Python and JavaScript toolchains)"
    );
}

/// Builds `examples` into a fresh plugins directory.
fn build_examples(examples: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("plugins dir");
    build_into(dir.path(), examples);
    dir
}

/// The mean level of the heard windows, the first one (cut mid-window) aside.
fn level(report: &Report) -> f64 {
    let levels: Vec<f64> = report.windows.iter().skip(1).map(|w| w.level_db).collect();
    levels.iter().sum::<f64>() / levels.len().max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_filters_are_heard_at_their_gain() {
    let plugins = build_examples(&["python-gain", "js-gain"]);
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

/// The `wit_version` `GET /plugins` shows for plugin `id`.
fn wit_version<'a>(plugins: &'a Value, id: &str) -> Option<&'a str> {
    plugins.as_array()?.iter().find(|p| p["id"] == id)?["wit_version"].as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_resolver_finds_radio_stations_beside_a_wit_0_1_resolver() {
    let plugins = build_examples(&["python-radio"]);
    support::plugins::install_into(plugins.path(), &["direct"]);
    let dir = plugins.path().to_path_buf();
    let h = Harness::start_with_media(FakeVoiceConfig::default(), |c, media| {
        // The directory is the media server (its Radio Browser routes), named by the
        // operator's `settings`, a WIT 0.2.0 interface; `direct` was built against 0.1.0.
        let grants = format!(
            "[plugins.python-radio]\nhttp = {{ hosts = [\"127.0.0.1\"] }}\nsettings = {{ directory = \"{}\" }}\n\n\
             [plugins.direct]\nhttp = {{ hosts = [\"127.0.0.1\"] }}\n",
            media.url("").trim_end_matches('/')
        );
        support::plugins::grant(&dir, &grants);
        c.plugins_dir = Some(dir.clone());
        c.plugins_config = Some(dir.join("plugins.toml"));
    })
    .await;
    let listed = h.get("/plugins").await.body;
    assert_eq!(wit_version(&listed, "python-radio"), Some("0.2.0"), "{listed}");
    assert_eq!(wit_version(&listed, "direct"), Some("0.1.0"), "{listed}");
    assert!(!listed.to_string().contains(&h.media.url("")), "settings are not shown: {listed}");

    // A search: the stations whose name matches, as live tracks; the first is played.
    let (track, report) = play_query(&h, "radio:classics").await;
    assert_eq!(track["metadata"]["title"], "Tone Classics 660", "{track}");
    assert_eq!(
        (track["source"].as_str(), track["source_url"].as_str()),
        (Some("radio"), Some("radio:station:5a1e-660"))
    );
    assert_eq!(
        (track["metadata"]["artist"].as_str(), track["metadata"]["duration_ms"].as_u64()),
        (Some("Fixtureland, tones"), Some(0))
    );
    assert_eq!(track["stream_url"], h.media.url("tone-660.flac"), "{track}");
    let t = tone("tone-660.flac");
    assert_heard(&report, t.freq_hz, t.seconds);
    // The 0.1.0 resolver answers on the same server.
    let t = tone("tone-770.ogg");
    let (track, report) = play_query(&h, &h.media.url(t.file)).await;
    assert_eq!(track["source"], "http", "{track}");
    assert_heard(&report, t.freq_hz, t.seconds);

    // Nothing found, and a directory that fails, are the contract's errors.
    let (guild, _session) = h.new_player().await;
    let none = h.enqueue(guild, "radio:no such station").await;
    assert_eq!((none.status, none.body["code"].as_str()), (404, Some("source_unavailable")), "{none:?}");
    let gone = h.enqueue(guild, "radio:station:0000").await;
    assert_eq!(gone.status, 404, "{gone:?}");
    assert!(gone.body["message"].as_str().is_some_and(|m| m.contains("no station 0000")), "{gone:?}");
}

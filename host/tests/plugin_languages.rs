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

/// Builds `examples` (names under `examples/plugins/`, or folders) into `dir`, at the lowest
/// priority: a build next to a playing server stands for one on the author's own machine.
fn build_into(dir: &Path, examples: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = std::process::Command::new("nice")
        .args(["-n", "19", "bash"])
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

/// A copy of example `name` (its sources, not its node_modules) at version 0.1.1, with `from`
/// replaced by `to` in `file`: the next build an author drops in while the server runs.
fn variant(name: &str, file: &str, from: &str, to: &str) -> tempfile::TempDir {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/plugins").join(name);
    let dir = tempfile::tempdir().expect("variant dir");
    let copy = dir.path().join(name);
    std::fs::create_dir_all(&copy).expect("variant folder");
    for entry in std::fs::read_dir(&root).expect("example folder").flatten() {
        if entry.path().is_file() {
            std::fs::copy(entry.path(), copy.join(entry.file_name())).expect("copy source");
        }
    }
    let edit = |file: &str, from: &str, to: &str| {
        let text = std::fs::read_to_string(copy.join(file)).expect("source");
        assert!(text.contains(from), "{file} of {name} has no {from:?}");
        std::fs::write(copy.join(file), text.replacen(from, to, 1)).expect("edited source");
    };
    edit(file, from, to);
    edit("plugin.toml", "\nversion = \"0.1.0\"", "\nversion = \"0.1.1\"");
    dir
}

/// Builds `variants` into the running server's plugins directory `into` (off the runtime's
/// threads: a build takes seconds).
async fn drop_in(into: &Path, variants: &[&tempfile::TempDir]) {
    let into = into.to_path_buf();
    let folders: Vec<String> = variants
        .iter()
        .flat_map(|v| std::fs::read_dir(v.path()).expect("variant").flatten().map(|e| e.path().display().to_string()))
        .collect();
    tokio::task::spawn_blocking(move || build_into(&into, &folders.iter().map(String::as_str).collect::<Vec<_>>()))
        .await
        .expect("build");
}

/// How long a new build may take to load: compiling a Python or JavaScript component takes
/// tens of CPU seconds here, in the background behind playback.
const COMPILE_LIMIT: std::time::Duration = std::time::Duration::from_secs(180);

/// Waits for plugin `id` at `version` to be loaded.
async fn loaded(events: &mut support::Events, id: &str, version: &str) {
    let what = format!("{id} {version}");
    events
        .wait_within(COMPILE_LIMIT, &what, |e| {
            e["type"] == "PluginLoaded" && e["data"]["id"] == id && e["data"]["version"] == version
        })
        .await;
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
    let directory = h.media.url("");
    assert!(!listed.to_string().contains(directory.trim_end_matches('/')), "settings are not shown: {listed}");

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

    // A new build lands while a station plays: the stream goes on, new queries get the new code.
    let next = variant("python-radio", "app.py", "source_name=\"radio\"", "source_name=\"radio-v2\"");
    let mut events = h.events().await;
    let (guild, session) = h.new_player().await;
    let playing = h.enqueue(guild, "radio:tone fm").await;
    assert_eq!(playing.body["current_track"]["metadata"]["title"], "Tone FM 440", "{playing:?}");
    session.wait(support::LIMIT, |c| c.packets >= 50).await.expect("the station plays");
    drop_in(plugins.path(), &[&next]).await;
    loaded(&mut events, "python-radio", "0.1.1").await;
    let swapped = session.report().packets;
    session.wait(support::LIMIT, |c| c.packets >= swapped + 100).await.expect("the station plays on");
    support::assert_no_gaps(&session.report());
    let still = h.get(&format!("/players/{guild}")).await.body;
    assert_eq!(still["current_track"]["metadata"]["title"], "Tone FM 440", "{still}");
    let (other, _session) = h.new_player().await;
    let again = h.enqueue(other, "radio:tone fm").await;
    assert_eq!(again.body["current_track"]["source"], "radio-v2", "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_filters_are_replaced_while_a_stream_plays_through_them() {
    let plugins = build_examples(&["python-gain", "js-gain"]);
    let dir = plugins.path().to_path_buf();
    let h = Harness::start_with(FakeVoiceConfig::default(), |c| c.plugins_dir = Some(dir.clone())).await;
    let plain = level(&play_filtered(&h, "tone-440.mp3", json!([])).await);
    // Versions that halve once more, built before the swap only to keep the test short.
    let python = variant("python-gain", "app.py", "s * gain for s", "s * gain * 0.5 for s");
    let js = variant("js-gain", "gain.js", "samples[i] *= this.gain", "samples[i] *= this.gain * 0.5");

    // An endless stream through both filters, each at half: 12 dB down.
    let (guild, session) = h.new_player().await;
    let chain =
        json!([{ "name": "pythonGain", "config": { "gain": 0.5 } }, { "name": "jsGain", "config": { "gain": 0.5 } }]);
    let set = h.call(reqwest::Method::PUT, &format!("/players/{guild}/filters"), Some(chain)).await;
    assert_eq!(set.status, 200, "{set:?}");
    assert_eq!(h.enqueue(guild, &h.media.url("live.mp3")).await.status, 200);
    session.wait(support::LIMIT, |c| c.packets >= 100).await.expect("two seconds played");
    let mut events = h.events().await;
    let before_swap = session.report().packets;
    drop_in(&dir, &[&python, &js]).await;
    loaded(&mut events, "python-gain", "0.1.1").await;
    loaded(&mut events, "js-gain", "0.1.1").await;
    let swapped = session.report().packets;
    session.wait(support::LIMIT, |c| c.packets >= swapped + 150).await.expect("three seconds more");

    // The same stream, never interrupted: 12 dB down before, 24 dB down after (each window
    // nearer its side's level than the other's; the median at it, the stream's loop seams
    // every 2 s aside).
    let report = session.report();
    support::assert_no_gaps(&report);
    assert_eq!(report.lost_packets, 0, "{report:?}");
    let windows = |from: u64, to: u64| -> Vec<f64> {
        report.windows[(from / 5) as usize..(to / 5) as usize].iter().map(|w| w.level_db - plain).collect()
    };
    for (name, down, mut heard) in
        [("before", 12.04, windows(10, before_swap)), ("after", 24.08, windows(swapped + 50, swapped + 140))]
    {
        heard.sort_by(f64::total_cmp);
        let median = heard.get(heard.len() / 2).copied().unwrap_or(0.0);
        assert!(
            heard.len() >= 10 && (median + down).abs() < 0.5 && heard.iter().all(|l| (l + down).abs() < 6.0),
            "{name} the swap, expected -{down} dB: {heard:?}"
        );
    }
    assert_eq!(support::counter(&h.metrics().await, "mesastream_filters_bypassed_total", &[]), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_exceptions_are_quoted_where_the_failure_is_reported() {
    // Builds whose `process` raises an exception: a bug in a filter, mid-track.
    let python =
        variant("python-gain", "app.py", "return [s * gain for s in samples]", "raise ValueError('no gain today')");
    let js = variant(
        "js-gain",
        "gain.js",
        "for (let i = 0; i < samples.length; i++) samples[i] *= this.gain;",
        "throw new TypeError('no gain today');",
    );
    let plugins = tempfile::tempdir().expect("plugins dir");
    drop_in(plugins.path(), &[&python, &js]).await;
    let dir = plugins.path().to_path_buf();
    let h = Harness::start_with(FakeVoiceConfig::default(), |c| c.plugins_dir = Some(dir)).await;
    let mut events = h.events().await;
    // Python's traceback ends with the exception; ComponentizeJS prints the message and the
    // stack, with the line in the plugin's source.
    let said: [(&str, &[&str]); 2] =
        [("pythonGain", &["ValueError: no gain today"]), ("jsGain", &["no gain today", "process@gain.js:"])];
    for (filter, said) in said {
        let (guild, session) = h.new_player().await;
        let chain = json!([{ "name": filter, "config": { "gain": 0.5 } }]);
        let set = h.call(reqwest::Method::PUT, &format!("/players/{guild}/filters"), Some(chain)).await;
        assert_eq!(set.status, 200, "{set:?}");
        assert_eq!(h.enqueue(guild, &h.media.url("tone-440.mp3")).await.status, 200);
        let failed = events.wait(filter, |e| e["type"] == "FilterFailed" && e["data"]["filter"] == filter).await;
        let reason = failed["data"]["reason"].as_str().unwrap_or_default();
        assert_eq!(failed["data"]["kind"], "trap", "{failed}");
        assert!(reason.contains("wasm trap") && said.iter().all(|s| reason.contains(s)), "{reason}");
        // The track plays on without the filter.
        session.wait(support::LIMIT, |c| c.packets >= 75).await.expect("the track goes on");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_filter_plays_on_past_its_memory() {
    // ComponentizeJS 0.23 keeps every block it is given (7.5 KiB a frame): with 12 MiB, an
    // instance runs out about every ten seconds, and each time a fresh one takes over.
    let plugins = build_examples(&["js-gain"]);
    let dir = plugins.path().to_path_buf();
    support::plugins::grant(&dir, "[plugins.js-gain]\nlimits = { memory-mb = 12 }\n");
    let h = Harness::start_with(FakeVoiceConfig::default(), |c| {
        c.plugins_dir = Some(dir.clone());
        c.plugins_config = Some(dir.join("plugins.toml"));
    })
    .await;
    let plain = level(&play_filtered(&h, "tone-440.mp3", json!([])).await);
    let (guild, session) = h.new_player().await;
    let chain = json!([{ "name": "jsGain", "config": { "gain": 0.5 } }]);
    let set = h.call(reqwest::Method::PUT, &format!("/players/{guild}/filters"), Some(chain)).await;
    assert_eq!(set.status, 200, "{set:?}");
    assert_eq!(h.enqueue(guild, &h.media.url("live.mp3")).await.status, 200);
    session.wait(std::time::Duration::from_secs(60), |c| c.packets >= 1500).await.expect("thirty seconds played");

    let metrics = h.metrics().await;
    let restarts = support::counter(&metrics, "mesastream_filter_restarts_total", &["filter=\"jsGain\""]);
    assert!(restarts >= 2, "{restarts} restarts in 30 s");
    // Each successor was made ahead, off the track's thread: no restart waited for one, and
    // none is heard.
    let waits = support::counter(&metrics, "mesastream_filter_restart_waits_total", &["filter=\"jsGain\""]);
    assert_eq!(waits, 0, "{waits} of {restarts} restarts made their instance on the track's thread");
    support::assert_no_gaps(&session.report());
    assert_eq!(support::counter(&metrics, "mesastream_filters_bypassed_total", &["filter=\"jsGain\""]), 0);
    let report = session.report();
    support::assert_no_gaps(&report);
    let mut heard: Vec<f64> = report.windows.iter().skip(2).map(|w| w.level_db - plain).collect();
    heard.sort_by(f64::total_cmp);
    let median = heard.get(heard.len() / 2).copied().unwrap_or(0.0);
    assert!((median + 6.02).abs() < 0.5 && heard.iter().all(|l| (l + 6.02).abs() < 6.0), "{heard:?}");
}

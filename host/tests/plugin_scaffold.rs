//! `mesastream plugins new` in each language, as an author uses it: the new folder's own
//! build.sh builds it, its own test passes with the language's runner, `plugins check`
//! accepts it, and a server with it in its plugins directory plays what the resolver finds
//! through the filter at its gain.

mod support;

use std::path::Path;
use std::process::Command;

use fake_voice::{FakeVoiceConfig, Report};
use serde_json::json;
use support::media::tone;
use support::{Harness, assert_heard, play_query, play_query_filtered};

/// Runs `program` in `dir` at the lowest priority (a build beside a playing server stands for
/// one on the author's own machine, and must not take the CPU from other tests' playback);
/// panics with its output when it fails.
fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let output = Command::new("nice")
        .args(["-n", "19", program])
        .args(args)
        .current_dir(dir)
        // The Rust plugins share one target directory, so each test compiles wit-bindgen once.
        .env("CARGO_TARGET_DIR", Path::new(env!("CARGO_TARGET_TMPDIR")).join("scaffolded-plugins"))
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{program} {args:?} in {}:\n{text}", dir.display());
    text
}

/// `plugins new`, the folder's build and test, and `plugins check`, for `id`.
fn scaffold(parent: &Path, id: &str, kind: &str, lang: &str, test: (&str, &[&str])) {
    let mesastream = env!("CARGO_BIN_EXE_mesastream");
    let parent_arg = parent.to_str().expect("utf-8 path");
    run(parent, mesastream, &["plugins", "new", id, "--kind", kind, "--lang", lang, "--dir", parent_arg]);
    let folder = parent.join(id);
    if lang == "js" {
        // The versions package.json pins, already installed for the example (build.sh runs
        // `npm install` when they are missing).
        let modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/plugins/js-gain/node_modules");
        std::os::unix::fs::symlink(modules, folder.join("node_modules")).expect("node_modules");
    }
    run(&folder, "bash", &["build.sh"]);
    run(&folder, test.0, test.1);
    let checked = run(&folder, mesastream, &["plugins", "check", "."]);
    assert!(checked.contains(&format!("ok: {id} 0.1.0 would load")), "{checked}");
}

/// The mean level of the heard windows, the first (cut mid-window) aside.
fn level(report: &Report) -> f64 {
    let levels: Vec<f64> = report.windows.iter().skip(1).map(|w| w.level_db).collect();
    levels.iter().sum::<f64>() / levels.len().max(1) as f64
}

/// A resolver and a filter in `lang`, scaffolded, built, checked, then heard together.
async fn new_plugins_play(lang: &str, test: (&str, &[&str]), filter: &str) {
    let plugins = tempfile::tempdir().expect("plugins dir");
    let (finder, echo) = (format!("{lang}-finder"), format!("{lang}-echo"));
    scaffold(plugins.path(), &finder, "resolver", lang, test);
    scaffold(plugins.path(), &echo, "filter", lang, test);
    let dir = plugins.path().to_path_buf();
    let h = Harness::start_with_media(FakeVoiceConfig::default(), |c, media| {
        // The new resolver's `base-url` setting points at the media server.
        let base = media.url("");
        let grants = format!("[plugins.{finder}]\nsettings = {{ base-url = \"{}\" }}\n", base.trim_end_matches('/'));
        support::plugins::grant(&dir, &grants);
        c.plugins_dir = Some(dir.clone());
        c.plugins_config = Some(dir.join("plugins.toml"));
    })
    .await;
    let t = tone("tone-440.mp3");
    let query = format!("{finder}:{}", t.file);
    let (track, plain) = play_query(&h, &query).await;
    assert_eq!((track["source"].as_str(), track["metadata"]["title"].as_str()), (Some(finder.as_str()), Some(t.file)));
    assert_heard(&plain, t.freq_hz, t.seconds);
    let halved = play_query_filtered(&h, &query, json!([{ "name": filter, "config": { "gain": 0.5 } }])).await;
    let down = level(&plain) - level(&halved);
    assert!((down - 6.02).abs() < 0.5, "{filter} at 0.5 is {down:.2} dB down, not 6.02");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_rust_resolver_and_filter_build_check_and_play() {
    new_plugins_play("rust", ("cargo", &["test", "--quiet"]), "rustEcho").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_python_resolver_and_filter_build_check_and_play() {
    new_plugins_play("python", ("python3", &["-m", "unittest", "test_app"]), "pythonEcho").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_javascript_resolver_and_filter_build_check_and_play() {
    new_plugins_play("js", ("node", &["--test"]), "jsEcho").await;
}

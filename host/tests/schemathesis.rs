//! schemathesis (from PyPI, installed by `scripts/setup.sh`) generates requests from
//! `openapi.yaml` (valid and invalid bodies, paths, headers, and sequences of calls) against
//! a live server with a real player: no answer may be a server error, and every answer must
//! match its documented schema. `SCHEMATHESIS_MAX_EXAMPLES` (default 25 per operation) sets
//! the volume; a longer run is
//! `SCHEMATHESIS_MAX_EXAMPLES=1000 cargo nextest run -p mesastream --test schemathesis`.

mod support;

use fake_voice::FakeVoiceConfig;
use support::{Harness, TOKEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_get_documented_answers_and_never_a_server_error() {
    // As deployed: the first-party filters and resolvers loaded.
    let plugins = ["equalizer", "lavalink-filters", "direct", "playlist"];
    let h = Harness::with_plugins(FakeVoiceConfig::default(), &plugins, |_| {}).await;
    let (guild, _session) = h.new_player().await;
    assert_eq!(h.enqueue(guild, &h.media.url("tone-523-long.mp3")).await.status, 200);

    // Path ids name the real player, so operations reach past "player not found".
    let dir = tempfile::tempdir().expect("config dir");
    let config = dir.path().join("schemathesis.toml");
    let toml =
        format!("headers = {{ Authorization = \"Bearer {TOKEN}\" }}\n\n[parameters]\n\"path.id\" = \"{guild}\"\n");
    std::fs::write(&config, toml).expect("config");
    let examples = std::env::var("SCHEMATHESIS_MAX_EXAMPLES").unwrap_or_else(|_| "25".into());
    let spec = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi.yaml");
    let output = tokio::process::Command::new("st")
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(&spec)
        .args(["--url", &h.base_url()])
        // Lavalink's routes keep Lavalink's status codes, some of them 500 for a client's
        // mistake (a blob that does not decode, a voice server that cannot be reached), which
        // this fuzzer counts as failures; `tests/lavalink.rs` and `tests/openapi.rs` cover them.
        // A listen stream never ends by design; `tests/listen.rs` reads it with ffmpeg.
        .args(["--exclude-path-regex", "^/(v4/|v3/|version$|$)|/listen$"])
        .args(["--checks", "not_a_server_error,response_schema_conformance"])
        .args(["--max-examples", &examples, "--request-timeout", "20", "--no-color"])
        .current_dir(dir.path())
        .output()
        .await
        .expect("schemathesis runs (scripts/setup.sh installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary: Vec<&str> = stdout.lines().skip_while(|l| !l.contains("SUMMARY")).collect();
    println!("{}", summary.join("\n"));
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(" passed"), "schemathesis ran no case:\n{stdout}");
}

//! Real Lavalink client libraries (lavalink.py, Shoukaku, lavalink-client), as published and
//! unmodified, against this node: each runs a bot's steps (connect, hand over the voice
//! events, load a direct URL, search with `ytsearch:` through the real yt-dlp, play the
//! search's first result, volume, a filter, pause, seek, a finished track and a broken one)
//! while the fake voice server listens. The libraries are installed by `scripts/setup.sh`
//! from their registries.
//!
//! YouTube is not reachable from the tests, so yt-dlp runs with a plugin of the tests
//! (`tests/clients/ytdlp-plugins`) that answers YouTube's search from the local media server;
//! everything else (the node's yt-dlp resolver, the process grant, yt-dlp's own search-key
//! parsing, its HTTP through the node's egress guard, its JSON) is what runs in production.

mod support;

use std::path::Path;
use std::process::Stdio;

use fake_voice::FakeVoiceConfig;
use support::{BOT_USER, Harness, LIMIT};

const PASSWORD: &str = "youshallnotpass";
/// What each client searches for (with `ytsearch:`): the media server lists the 6 s 523 Hz
/// mp3, the direct URL the clients also load.
const SEARCH: &str = "tone 523 long";

/// A node with the Lavalink routes, the filters and the yt-dlp resolver, its yt-dlp answering
/// YouTube searches from the media server. The returned directory holds the yt-dlp wrapper.
async fn node() -> (Harness, tempfile::TempDir) {
    let voice = FakeVoiceConfig { tls: true, ..Default::default() };
    let wrapper_dir = tempfile::tempdir().expect("wrapper dir");
    let wrapper = wrapper_dir.path().join("yt-dlp");
    let h = Harness::with_plugins(voice, &["lavalink-filters", "ytdlp"], |c| {
        c.lavalink_password = Some(PASSWORD.into());
        c.yt_dlp_path = Some(wrapper.clone());
        support::plugins::grant(
            c.plugins_dir.as_deref().expect("plugins dir"),
            "[plugins.ytdlp]\nprocess = [\"yt-dlp\"]\n",
        );
    })
    .await;
    support::plugins::write_ytdlp_wrapper(&wrapper, &[("MESASTREAM_TEST_SEARCH", &h.media.url("search"))]);
    (h, wrapper_dir)
}

/// Runs `program args` with the call's settings in its environment until it exits; its
/// output is shown either way.
async fn drive(h: &Harness, guild: u64, program: &str, args: &[&Path]) {
    let channel = guild + 1_000;
    h.fake.register_call(&guild.to_string(), channel);
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env("NODE_PORT", h.addr.port().to_string())
        .env("PASSWORD", PASSWORD)
        .env("BOT_ID", BOT_USER.to_string())
        .env("GUILD_ID", guild.to_string())
        .env("CHANNEL_ID", channel.to_string())
        .env("VOICE_SESSION", format!("session-{guild}"))
        .env("VOICE_TOKEN", format!("token-{guild}"))
        .env("VOICE_ENDPOINT", h.fake.endpoint())
        .env("TRACK_URL", h.media.url("tone-523-long.mp3"))
        .env("SEARCH", SEARCH)
        .env("BROKEN_URL", h.media.url("noise.bin"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().unwrap_or_else(|e| panic!("{program} runs (scripts/setup.sh installs it): {e}"));
    let output =
        tokio::time::timeout(LIMIT * 3, child.wait_with_output()).await.expect("the client finishes").expect("output");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    eprintln!("{program} said:\n{stdout}\n{stderr}");
    assert!(output.status.success(), "{program} failed ({}):\n{stdout}\n{stderr}", output.status);
    assert!(stdout.lines().any(|l| l == "done"), "{stdout}");
}

/// What the fake listener heard of the call: the tone and nothing else, none of it in the
/// clear or undecryptable, and the part after the seek (3 s of the 6 s track) at least.
fn assert_heard_the_track(h: &Harness, guild: u64) {
    let session = h.fake.session(&guild.to_string()).expect("the node joined the call");
    let report = session.report();
    assert_eq!((report.undecryptable, report.plaintext, report.transport_failures), (0, 0, 0), "{report:?}");
    assert!(session.counters().transitions >= 1, "DAVE was on: {:?}", session.counters());
    // The client changes volume and filter and seeks while it plays: a window that holds one
    // of those changes reads a little off the tone's pitch; no window is another tone.
    let wrong_tone = report.windows_off_frequency(523.0, 30.0);
    assert!(wrong_tone.is_empty(), "windows of another tone: {wrong_tone:?}");
    let off = report.windows_off_frequency(523.0, 2.0);
    assert!(off.len() <= 3, "windows off 523 Hz: {off:?} of {}", report.windows.len());
    assert!(report.audible_ms >= 2_900, "heard {} ms", report.audible_ms);
}

/// Runs the client program `script` (under `program`) on a node of its own and checks what
/// the listener heard.
async fn plays_through_the_node(program: &str, script: &str, guild: u64) {
    let (h, _wrapper) = node().await;
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients")).join(script);
    drive(&h, guild, program, &[&path]).await;
    assert_heard_the_track(&h, guild);
    let runs = support::counter(&h.metrics().await, "mesastream_plugin_process_runs_total", &["program=\"yt-dlp\""]);
    assert!(runs >= 1, "the search ran yt-dlp ({runs} runs)");
    assert_eq!(h.media.requests("/search"), 1, "yt-dlp searched the media server once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lavalink_py_plays_through_the_node() {
    plays_through_the_node("python3", "lavalink_py.py", 400_000_000_000_000_001).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shoukaku_plays_through_the_node() {
    plays_through_the_node("node", "shoukaku.cjs", 400_000_000_000_000_002).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lavalink_client_plays_through_the_node() {
    plays_through_the_node("node", "lavalink_client.cjs", 400_000_000_000_000_003).await;
}

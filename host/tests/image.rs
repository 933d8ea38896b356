//! The server as the container image runs it: installed by `scripts/install.sh` (the image's
//! own build step), started with the original mesastream's variables, the first-party
//! plugins found beside the binary with their default grants. yt-dlp is the one from
//! `YT_DLP_PATH`, and the cookies of `YT_DLP_COOKIES` reach the site.

mod support;

use fake_voice::FakeVoiceConfig;
use support::{Harness, LIMIT, assert_heard, counter, enqueued_track_id, media::tone};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_installed_server_plays_a_page_through_ytdlp_with_the_operators_cookies() {
    let yt_dlp = std::process::Command::new("sh").args(["-c", "command -v yt-dlp"]).output().expect("sh");
    let yt_dlp = String::from_utf8(yt_dlp.stdout).expect("path").trim().to_string();
    assert!(!yt_dlp.is_empty(), "yt-dlp is installed by scripts/setup.sh");
    let secrets = tempfile::tempdir().expect("dir");
    let cookies = secrets.path().join("cookies.txt");
    let jar = "# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t0\tsession\topensesame\n";
    std::fs::write(&cookies, jar).expect("cookies");
    let cache = tempfile::tempdir().expect("cache dir");
    let env = [
        ("YT_DLP_PATH", yt_dlp),
        ("YT_DLP_COOKIES", cookies.display().to_string()),
        ("AUDIO_CACHE_PATH", cache.path().display().to_string()),
    ];
    let h = Harness::installed(FakeVoiceConfig::default(), &env).await;
    let mut events = h.events().await;
    let (guild, session) = h.new_player().await;

    // A web page: the direct resolver declines it, yt-dlp's generic extractor finds the audio.
    let reply = h.enqueue(guild, &h.media.url("player.html")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let ended = events.track_ended(guild, &enqueued_track_id(&reply.body)).await;
    assert!(ended["data"].get("error").is_none(), "{ended}");
    session.wait(LIMIT, |c| c.silence_packets >= 5).await.expect("silence tail");
    let t = tone("tone-440.mp3");
    assert_heard(&session.report(), t.freq_hz, t.seconds);

    let runs = counter(&h.metrics().await, "mesastream_plugin_process_runs_total", &["program=\"yt-dlp\""]);
    assert!(runs >= 1, "yt-dlp resolved the page");
    assert_eq!(h.media.cookie("/player.html").as_deref(), Some("session=opensesame"), "the cookies reached the site");
    assert_eq!(std::fs::read_to_string(&cookies).expect("cookies"), jar, "the operator's cookies file is untouched");
    assert!(std::fs::read_dir(cache.path()).expect("cache").next().is_some(), "AUDIO_CACHE_PATH holds the track");
}

//! The audio cache, against the local media server (which counts requests) and the fake
//! listener: a track is fetched once and then played from an Ogg Opus file byte for byte,
//! fills are shared, never kept when cut off, evicted least recently played first, checked
//! before use and found again by a new server.

mod support;

use std::path::{Path, PathBuf};

use fake_voice::FakeVoiceConfig;
use mesastream::cache::ogg_opus::{OggOpusReader, verify};
use serde_json::json;
use support::media::tone;
use support::{Harness, assert_heard, counter, enqueued_track_id, heard_packets};

async fn cached_harness(dir: &Path, max_bytes: u64) -> Harness {
    let dir = dir.to_path_buf();
    Harness::start_with(FakeVoiceConfig::default(), move |c| {
        c.audio_cache_path = Some(dir);
        c.audio_cache_max_bytes = max_bytes;
    })
    .await
}

/// The files in the cache directory that present themselves as complete tracks.
fn cached_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|entries| entries.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "opus"));
    files.sort();
    files
}

fn packets_of(file: &Path) -> Vec<Vec<u8>> {
    let mut reader = OggOpusReader::open(std::fs::File::open(file).expect("cached file")).expect("ogg opus");
    std::iter::from_fn(|| reader.next_packet().expect("packet")).collect()
}

async fn lookups(h: &Harness, outcome: &str) -> u64 {
    counter(&h.metrics().await, "mesastream_audio_cache_lookups_total", &[&format!("outcome=\"{outcome}\"")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_track_played_twice_is_fetched_once_and_replayed_byte_for_byte() {
    let dir = tempfile::tempdir().expect("cache dir");
    let h = cached_harness(dir.path(), 1 << 30).await;
    let t = tone("tone-440.mp3");
    let (_, _, first) = support::play_to_end(&h, t.file).await;
    assert_heard(&first, t.freq_hz, t.seconds);
    let fetched = h.media.requests("/tone-440.mp3");
    assert!(fetched >= 1);
    let files = cached_files(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let index = verify(std::fs::File::open(&files[0]).expect("file")).expect("a complete Ogg Opus file");
    assert!((index.duration_ms() as i64 - 2000).abs() <= 20, "{index:?}");

    let (_, session, second) = support::play_to_end(&h, t.file).await;
    assert_heard(&second, t.freq_hz, t.seconds);
    assert_eq!(h.media.requests("/tone-440.mp3"), fetched, "the second play made no request");
    assert_eq!(lookups(&h, "hit").await, 1);
    assert!(heard_packets(&session) == packets_of(&files[0]), "the cached packets went out untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_cut_off_half_way_is_not_kept() {
    let dir = tempfile::tempdir().expect("cache dir");
    let h = cached_harness(dir.path(), 1 << 30).await;
    for _ in 0..2 {
        let mut events = h.events().await;
        let (guild, _session) = h.new_player().await;
        let reply = h.enqueue(guild, &h.media.truncated_url("tone-523-long.mp3")).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let ended = events.track_ended(guild, &enqueued_track_id(&reply.body)).await;
        assert!(ended["data"]["error"].as_str().is_some_and(|e| e.contains("connection closed")), "{ended}");
        assert!(cached_files(dir.path()).is_empty(), "{:?}", cached_files(dir.path()));
    }
    assert_eq!((lookups(&h, "miss").await, lookups(&h, "hit").await), (2, 0), "nothing was ever served from it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_players_starting_the_same_track_share_one_fill() {
    let dir = tempfile::tempdir().expect("cache dir");
    let h = cached_harness(dir.path(), 1 << 30).await;
    let t = tone("tone-523-long.mp3");
    let mut first = support::start_track(&h, t.file).await;
    first.heard(10).await;
    let one_play = h.media.requests("/tone-523-long.mp3");
    let mut second = support::start_track(&h, t.file).await;
    let (a, b) = (first.finish().await, second.finish().await);
    assert_heard(&a, t.freq_hz, t.seconds);
    assert_heard(&b, t.freq_hz, t.seconds);
    assert_eq!((lookups(&h, "miss").await, lookups(&h, "follow").await), (1, 1));
    assert_eq!(h.media.requests("/tone-523-long.mp3"), one_play, "the second player asked the server nothing");
    assert_eq!(cached_files(dir.path()).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_size_cap_evicts_the_least_recently_played() {
    let dir = tempfile::tempdir().expect("cache dir");
    // Room for two of these 2 s tracks (about 35 kB each at 128 kbit/s), not three.
    let h = cached_harness(dir.path(), 90_000).await;
    let play = |file: &'static str| {
        let h = &h;
        async move {
            let (_, _, report) = support::play_to_end(h, file).await;
            assert!(!report.windows.is_empty());
        }
    };
    play("tone-440.mp3").await;
    let one_play = h.media.requests("/tone-440.mp3");
    play("tone-660.flac").await;
    play("tone-440.mp3").await; // played again: now the most recent
    play("tone-770.ogg").await; // over the cap: the least recently played (660) goes
    assert_eq!(cached_files(dir.path()).len(), 2);
    play("tone-440.mp3").await;
    play("tone-660.flac").await;
    assert_eq!(h.media.requests("/tone-440.mp3"), one_play, "kept: fetched once");
    assert_eq!(h.media.requests("/tone-660.flac"), 2 * one_play, "evicted: fetched again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seek_into_a_cached_track_lands_on_the_packet_of_its_target() {
    let dir = tempfile::tempdir().expect("cache dir");
    let h = cached_harness(dir.path(), 1 << 30).await;
    let t = tone("tone-523-long.mp3");
    support::play_to_end(&h, t.file).await;
    let cached = packets_of(&cached_files(dir.path())[0]);

    let mut playing = support::start_track(&h, t.file).await;
    playing.heard(20).await;
    let seek = h.post(&format!("/players/{}/seek", playing.guild), json!({ "position_ms": 3000 })).await;
    assert_eq!(seek.status, 200, "{seek:?}");
    playing.finish().await;
    let heard = heard_packets(&playing.session);
    // What followed the seek is the cached track from the packet at 3.000 s on.
    let tail = cached.len() - 150;
    assert!(heard.len() > tail);
    assert!(heard[heard.len() - tail..] == cached[150..], "the seek did not land on packet 150");
    assert!(heard[heard.len() - tail - 1] != cached[149], "packet 149 played right before the seek target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_cache_file_is_discarded_and_fetched_again() {
    let dir = tempfile::tempdir().expect("cache dir");
    let h = cached_harness(dir.path(), 1 << 30).await;
    let t = tone("tone-440.mp3");
    support::play_to_end(&h, t.file).await;
    let one_play = h.media.requests("/tone-440.mp3");
    let file = cached_files(dir.path()).remove(0);
    let mut bytes = std::fs::read(&file).expect("cached file");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(&file, bytes).expect("corrupt it");

    let (_, _, report) = support::play_to_end(&h, t.file).await;
    assert_heard(&report, t.freq_hz, t.seconds);
    assert_eq!(lookups(&h, "corrupt").await, 1);
    // Downloaded once more (no enqueue check: the entry looked cached until it was opened).
    assert_eq!(h.media.requests("/tone-440.mp3"), one_play + 1, "fetched again");
    assert!(verify(std::fs::File::open(&file).expect("refilled")).is_ok(), "the refill replaced it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_server_finds_what_the_last_one_cached() {
    let dir = tempfile::tempdir().expect("cache dir");
    let first = cached_harness(dir.path(), 1 << 30).await;
    let t = tone("tone-440.mp3");
    support::play_to_end(&first, t.file).await;
    let one_play = first.media.requests("/tone-440.mp3");
    let url = first.media.url(t.file);

    // Another server process over the same directory: it knows the track from the file alone.
    let second = cached_harness(dir.path(), 1 << 30).await;
    let mut events = second.events().await;
    let (guild, session) = second.new_player().await;
    let reply = second.enqueue(guild, &url).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    events.track_ended(guild, &enqueued_track_id(&reply.body)).await;
    session.wait(support::LIMIT, |c| c.silence_packets >= 5).await.expect("silence tail");
    assert_heard(&session.report(), t.freq_hz, t.seconds);
    assert_eq!(lookups(&second, "hit").await, 1);
    assert_eq!(first.media.requests("/tone-440.mp3"), one_play, "not fetched again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_cache_directory_degrades_to_streaming() {
    let blocker = tempfile::NamedTempFile::new().expect("a file where the directory should be");
    let h = cached_harness(&blocker.path().join("audio"), 1 << 30).await;
    let t = tone("tone-440.mp3");
    let (_, _, report) = support::play_to_end(&h, t.file).await;
    assert_heard(&report, t.freq_hz, t.seconds);
    let text = h.metrics().await;
    assert!(text.lines().any(|l| l == "mesastream_audio_cache_disabled 1"), "{text}");
    assert_eq!(lookups(&h, "off").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_track_older_than_the_ttl_is_fetched_again() {
    let dir = tempfile::tempdir().expect("cache dir");
    let path = dir.path().to_path_buf();
    // A TTL of zero: anything cached is already too old when asked for again.
    let h = Harness::start_with(FakeVoiceConfig::default(), move |c| {
        c.audio_cache_path = Some(path);
        c.audio_cache_ttl_secs = 0;
    })
    .await;
    let t = tone("tone-440.mp3");
    support::play_to_end(&h, t.file).await;
    let one_play = h.media.requests("/tone-440.mp3");
    let (_, _, report) = support::play_to_end(&h, t.file).await;
    assert_heard(&report, t.freq_hz, t.seconds);
    assert_eq!(lookups(&h, "expired").await, 1);
    assert_eq!(h.media.requests("/tone-440.mp3"), one_play + 1, "downloaded again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_whose_program_is_killed_half_way_is_not_kept() {
    let dir = tempfile::tempdir().expect("cache dir");
    let cache = dir.path().to_path_buf();
    let h = Harness::with_plugins(FakeVoiceConfig::default(), &["prober"], move |c| {
        c.audio_cache_path = Some(cache);
        let plugins = c.plugins_dir.as_deref().expect("plugins dir");
        support::plugins::grant(plugins, "[plugins.prober]\nprocess = [\"sh\"]\n");
    })
    .await;
    // A track streamed from a program that dies by SIGKILL after a third of the file.
    let file = support::media::fixtures().join("tone-523-long.mp3");
    let query = format!("probe:stream:sh|-c|head -c 48000 \"$0\"; kill -9 $$|{}", file.display());
    for attempt in 1..=2 {
        let mut events = h.events().await;
        let (guild, _session) = h.new_player().await;
        let reply = h.enqueue(guild, &query).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let ended = events.track_ended(guild, &enqueued_track_id(&reply.body)).await;
        let error = ended["data"]["error"].as_str().unwrap_or_default().to_string();
        assert!(error.contains("sh exited with signal: 9"), "attempt {attempt}: {ended}");
        assert!(cached_files(dir.path()).is_empty(), "{:?}", cached_files(dir.path()));
    }
    assert_eq!((lookups(&h, "miss").await, lookups(&h, "hit").await), (2, 0), "nothing was ever served from it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_plays_and_nothing_of_it_is_cached() {
    let dir = tempfile::tempdir().expect("cache dir");
    let h = cached_harness(dir.path(), 1 << 30).await;
    let (guild, session) = h.new_player().await;
    let reply = h.enqueue(guild, &h.media.url("live.mp3")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    session.wait(support::LIMIT, |c| c.packets >= 150).await.expect("three seconds of the stream heard");
    let present = |dir: &Path| std::fs::read_dir(dir).map(|e| e.flatten().count()).unwrap_or(0);
    assert_eq!(present(dir.path()), 0, "a stream without an end is not being written to the cache");
    let report = session.report();
    assert!(
        report.windows.iter().filter(|w| (w.freq_hz - 440.0).abs() <= 2.0).count() >= 20,
        "{}",
        report.timing_line()
    );
    assert_eq!(h.call(reqwest::Method::DELETE, &format!("/players/{guild}"), None).await.status, 204);
    assert_eq!(present(dir.path()), 0);
    assert_eq!(counter(&h.metrics().await, "mesastream_audio_cache_bytes", &[]), 0);
}

/// The server process's resident memory.
fn server_rss(h: &Harness) -> u64 {
    support::process::status_field(&h.server_pid(), "VmRSS:") * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_served_as_fast_as_it_is_read_is_read_at_the_pace_it_plays() {
    // The media server hands out the endless stream as fast as the reader takes it: a server
    // that buffered or cached it without bound would read megabytes a second and grow by as
    // much. The server runs as its own process, so its memory is measured alone.
    let dir = tempfile::tempdir().expect("cache dir");
    let env = [("AUDIO_CACHE_PATH", dir.path().display().to_string())];
    let h = Harness::binary(FakeVoiceConfig::default(), &env).await;
    let (guild, session) = h.new_player().await;
    let reply = h.enqueue(guild, &h.media.url("live.mp3")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    session.wait(support::LIMIT, |c| c.packets >= 150).await.expect("three seconds heard");
    let (rss_before, sent_before) = (server_rss(&h), h.media.live_bytes_sent());
    session.wait(support::LIMIT, |c| c.packets >= 650).await.expect("ten seconds more heard");
    let (rss_after, sent_after) = (server_rss(&h), h.media.live_bytes_sent());
    eprintln!("RSS {} KiB → {} KiB; stream bytes read {sent_before} → {sent_after}", rss_before >> 10, rss_after >> 10);
    // Ten seconds of a 128 kbit/s stream is 160 kB; loopback socket buffers may hold a few
    // MiB more than what was played.
    assert!(sent_after - sent_before < 8 << 20, "read {} bytes in ten seconds of play", sent_after - sent_before);
    assert!(rss_after < rss_before + (8 << 20), "RSS grew from {rss_before} to {rss_after} bytes");
    assert_eq!(cached_files(dir.path()), Vec::<PathBuf>::new(), "nothing of it is cached");
    assert_eq!(counter(&h.metrics().await, "mesastream_audio_cache_bytes", &[]), 0);
}

//! Resolver plugins, built from `plugins/`: the direct-URL resolver and the yt-dlp resolver
//! (running the real yt-dlp) against media on a local HTTP server, with their grants.

mod support;

use fake_voice::FakeVoiceConfig;
use serde_json::Value;
use support::media::tone;
use support::{Harness, assert_heard, counter, enqueued_track_id, play_query};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_resolver_plays_a_listed_host_and_declines_a_web_page() {
    // The default grants: any host, private addresses refused; the media server on loopback
    // is reachable only because the operator listed it (MEDIA_ALLOW_HOSTS).
    let h = Harness::with_plugins(FakeVoiceConfig::default(), &["direct"], |_| {}).await;
    let url = h.media.url("tone-440.mp3");
    let t = tone("tone-440.mp3");
    let (track, report) = play_query(&h, &url).await;
    assert_eq!((track["source"].as_str(), track["metadata"]["title"].as_str()), (Some("http"), Some(t.file)));
    assert_eq!(track["source_url"], url.as_str());
    assert_heard(&report, t.freq_hz, t.seconds);

    // A web page is declined (a page reader such as yt-dlp may take it; none is loaded
    // here), with the contract's error.
    let (guild, _session) = h.new_player().await;
    let html = h.enqueue(guild, &h.media.url("page.html")).await;
    assert_eq!((html.status, html.body["code"].as_str()), (404, Some("source_unavailable")), "{html:?}");
    assert_eq!(html.body["message"], "source unavailable: no source supports this URL", "{html:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ytdlp_resolver_runs_real_ytdlp_and_plays_what_it_finds() {
    let grants = "[plugins.ytdlp]\nprocess = [\"yt-dlp\"]\npatterns = [\"http://127.0.0.1:*/**\"]\n";
    let h = Harness::with_plugins(FakeVoiceConfig::default(), &["ytdlp"], |c| {
        support::plugins::grant(c.plugins_dir.as_deref().expect("plugins dir"), grants)
    })
    .await;

    let t = tone("tone-550.m4a");
    let url = h.media.url(t.file);
    let (track, report) = play_query(&h, &url).await;
    assert_eq!(track["source"], "http");
    assert_eq!(track["metadata"]["title"], "tone-550", "yt-dlp names a direct file by its stem: {track}");
    assert_heard(&report, t.freq_hz, t.seconds);
    let runs =
        || async { counter(&h.metrics().await, "mesastream_plugin_process_runs_total", &["program=\"yt-dlp\""]) };
    assert_eq!(runs().await, 1, "one yt-dlp run resolves a plain HTTP file; the host fetches it");

    // HLS is something only yt-dlp follows: the track streams from yt-dlp's stdout.
    let t = tone("tone-440.mp3");
    let (track, report) = play_query(&h, &h.media.url("hls/tone-440.m3u8")).await;
    assert_eq!(track["metadata"]["title"], "tone-440", "{track}");
    assert_heard(&report, t.freq_hz, t.seconds);
    assert_eq!(runs().await, 3, "one run resolves the playlist, one streams it");

    // yt-dlp's own failure comes back as the contract's error.
    let (guild, _session) = h.new_player().await;
    let missing = h.enqueue(guild, &h.media.url("nothing-here.mp3")).await;
    assert_eq!((missing.status, missing.body["code"].as_str()), (404, Some("source_unavailable")), "{missing:?}");
    assert!(missing.body["message"].as_str().unwrap().contains("yt-dlp: ERROR"), "{missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolver_cannot_run_a_program_it_was_not_granted() {
    let grants = "[plugins.ytdlp]\npatterns = [\"http://127.0.0.1:*/**\"]\n";
    let h = Harness::with_plugins(FakeVoiceConfig::default(), &["ytdlp"], |c| {
        support::plugins::grant(c.plugins_dir.as_deref().expect("plugins dir"), grants)
    })
    .await;
    let (guild, _session) = h.new_player().await;
    let refused = h.enqueue(guild, &h.media.url("tone-440.mp3")).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(refused.body["message"].as_str().unwrap().contains("program \"yt-dlp\" is not granted"), "{refused:?}");
    assert_eq!(counter(&h.metrics().await, "mesastream_plugin_process_runs_total", &["yt-dlp"]), 0);
}

/// Titles of the tracks in a snapshot's queue.
fn queue_titles(snapshot: &Value) -> Vec<String> {
    let queue = snapshot["queue"].as_array().cloned().unwrap_or_default();
    queue.iter().map(|t| t["metadata"]["title"].as_str().unwrap_or_default().to_string()).collect()
}

fn windows_near(report: &fake_voice::Report, freq_hz: f64) -> usize {
    report.windows.iter().filter(|w| (w.freq_hz - freq_hz).abs() <= 2.0).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_playlists_round_trip_through_the_playlist_resolver() {
    let grants = "[plugins.direct]\nhttp = { hosts = [\"127.0.0.1\"], private = true }\n\
                  [plugins.playlist]\nkv = true\nlibrary = true\ndelegate = true\n";
    let h = Harness::with_plugins(FakeVoiceConfig::default(), &["playlist", "direct"], |c| {
        support::plugins::grant(c.plugins_dir.as_deref().expect("plugins dir"), grants)
    })
    .await;
    let mut events = h.events().await;
    let (guild, session) = h.new_player().await;
    for file in ["tone-440.mp3", "tone-660.flac", "tone-770.ogg"] {
        assert_eq!(h.enqueue(guild, &h.media.url(file)).await.status, 200);
    }
    let saved = h.post_bare(&format!("/players/{guild}/playlists/road%20trip")).await;
    assert_eq!(saved.status, 200, "{saved:?}");
    assert_eq!(saved.body["name"], "road trip");
    let saved_titles: Vec<&str> =
        saved.body["tracks"].as_array().unwrap().iter().map(|t| t["metadata"]["title"].as_str().unwrap()).collect();
    assert_eq!(saved_titles, ["tone-660.flac", "tone-770.ogg"]);

    // Playlists belong to their guild: another guild finds nothing, by either route.
    let (other, _other_session) = h.new_player().await;
    let missing = h.post_bare(&format!("/players/{other}/playlists/road%20trip/enqueue")).await;
    assert_eq!((missing.status, missing.body["code"].as_str()), (404, Some("not_found")), "{missing:?}");
    assert_eq!(missing.body["message"], "not found: playlist road trip not found");
    let missing = h.enqueue(other, "playlist:road trip").await;
    assert_eq!(missing.status, 404, "{missing:?}");
    assert!(missing.body["message"].as_str().unwrap().contains("playlist road trip not found"), "{missing:?}");

    // The contract's route and the `playlist:` identifier both come back with the saved tracks.
    let saved_pair = vec!["tone-660.flac".to_string(), "tone-770.ogg".to_string()];
    assert_eq!(h.call(reqwest::Method::DELETE, &format!("/players/{guild}/queue"), None).await.status, 200);
    let loaded = h.post_bare(&format!("/players/{guild}/playlists/road%20trip/enqueue")).await;
    assert_eq!((loaded.status, queue_titles(&loaded.body)), (200, saved_pair.clone()), "{loaded:?}");
    assert_eq!(loaded.body["queue"][0]["source_url"], h.media.url("tone-660.flac").as_str());
    assert_eq!(h.call(reqwest::Method::DELETE, &format!("/players/{guild}/queue"), None).await.status, 200);
    let loaded = h.enqueue(guild, "playlist:road trip").await;
    assert_eq!((loaded.status, queue_titles(&loaded.body)), (200, saved_pair), "{loaded:?}");
    let last = enqueued_track_id(&loaded.body);

    // And they play: each entry is resolved again (by the direct resolver) when it starts.
    assert_eq!(h.post_bare(&format!("/players/{guild}/skip")).await.status, 200);
    let ended = events.track_ended(guild, &last).await;
    assert!(ended["data"].get("error").is_none(), "{ended}");
    session.wait(support::LIMIT, |c| c.silence_packets >= 5).await.expect("silence tail");
    let report = session.report();
    assert!(windows_near(&report, 660.0) >= 18, "660 Hz heard for {} windows", windows_near(&report, 660.0));
    assert!(windows_near(&report, 770.0) >= 18, "770 Hz heard for {} windows", windows_near(&report, 770.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_playlist_is_expanded_once_then_served_from_the_cache() {
    let grants = "[plugins.ytdlp]\nprocess = [\"yt-dlp\"]\npatterns = [\"http://127.0.0.1:*/**\"]\n\
                  [plugins.playlist]\nkv = true\ndelegate = true\npatterns = [\"http://127.0.0.1:*/*.rss\"]\n";
    let h = Harness::with_plugins(FakeVoiceConfig::default(), &["playlist", "ytdlp"], |c| {
        support::plugins::grant(c.plugins_dir.as_deref().expect("plugins dir"), grants)
    })
    .await;
    let feed = h.media.url("feed.rss");
    let (guild, _session) = h.new_player().await;
    let first = h.enqueue(guild, &feed).await;
    assert_eq!(first.status, 200, "{first:?}");
    let current = first.body["current_track"]["metadata"]["title"].as_str().map(String::from);
    let titles: Vec<String> = current.into_iter().chain(queue_titles(&first.body)).collect();
    assert_eq!(titles, ["Episode 660", "Episode 770"]);
    assert_eq!(h.media.requests("/feed.rss"), 1, "yt-dlp read the feed once");

    let again = h.enqueue(guild, &feed).await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(queue_titles(&again.body)[1..], ["Episode 660".to_string(), "Episode 770".to_string()]);
    assert_eq!(h.media.requests("/feed.rss"), 1, "the second enqueue came from the cache, not from yt-dlp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_named_like_a_youtube_id_never_stands_in_for_the_video_in_the_cache() {
    const VIDEO: &str = "dQw4w9WgXcQ";
    let cache = tempfile::tempdir().expect("cache dir");
    let wrapper_dir = tempfile::tempdir().expect("wrapper dir");
    let wrapper = wrapper_dir.path().join("yt-dlp");
    let grants = "[plugins.ytdlp]\nprocess = [\"yt-dlp\"]\n\
                  patterns = [\"http://127.0.0.1:*/**\", \"https://www.youtube.com/**\"]\n";
    let h = Harness::with_plugins(FakeVoiceConfig::default(), &["ytdlp"], |c| {
        c.audio_cache_path = Some(cache.path().to_path_buf());
        c.yt_dlp_path = Some(wrapper.clone());
        support::plugins::grant(c.plugins_dir.as_deref().expect("plugins dir"), grants)
    })
    .await;
    // The video is the 440 Hz tone; a stranger's page, named after the video's id, is 660 Hz.
    let video = tone("tone-440.mp3");
    support::plugins::write_ytdlp_wrapper(&wrapper, &[("MESASTREAM_TEST_YOUTUBE", &h.media.url(video.file))]);
    let page = tone("tone-660.flac");
    let page_file = format!("{VIDEO}.flac");
    let bytes = std::fs::read(support::media::fixtures().join(page.file)).expect("fixture");
    support::media::publish_fixture(&page_file, &bytes);

    let (track, report) = play_query(&h, &h.media.url(&page_file)).await;
    assert_eq!(track["source"], "http", "{track}");
    assert_heard(&report, page.freq_hz, page.seconds);
    let youtube = format!("https://www.youtube.com/watch?v={VIDEO}");
    let (track, report) = play_query(&h, &youtube).await;
    assert_eq!(track["source"], "youtube", "{track}");
    assert_heard(&report, video.freq_hz, video.seconds);

    // Each is cached under its own name: played again, both come from the cache as they are.
    let fetched = h.media.requests(&format!("/{}", video.file));
    let (_, report) = play_query(&h, &youtube).await;
    assert_heard(&report, video.freq_hz, video.seconds);
    let (_, report) = play_query(&h, &h.media.url(&page_file)).await;
    assert_heard(&report, page.freq_hz, page.seconds);
    assert_eq!(h.media.requests(&format!("/{}", video.file)), fetched, "the video came from the cache");
}

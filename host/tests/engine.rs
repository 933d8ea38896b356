//! The media engine's shape as a user would check it: players share a fixed set of threads,
//! and a filtered track that fills the cache is encoded once for the listener, never decoded
//! and encoded again.

mod support;

use std::collections::BTreeMap;

use fake_voice::FakeVoiceConfig;
use serde_json::json;
use support::*;

/// This process's threads by name (the kernel keeps the first 15 bytes of a name).
fn threads() -> BTreeMap<String, usize> {
    let mut names = BTreeMap::new();
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task").flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default().trim().to_string();
        *names.entry(name).or_insert(0) += 1;
    }
    names
}

/// Threads other than the async runtimes' own: their blocking pools (the media runtime's
/// opens tracks, a few at a time) keep idle threads for a while, so their number moves
/// within the runtimes' bounds whatever the players do.
fn fixed_threads() -> BTreeMap<String, usize> {
    threads().into_iter().filter(|(name, _)| name != "media" && !name.starts_with("tokio-")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dozen_more_players_play_on_the_same_threads() {
    let h = Harness::start(FakeVoiceConfig::default()).await;
    let first = start_track(&h, "tone-523-long.mp3?player=0").await;
    first.heard(10).await;
    let before = fixed_threads();
    // Each plays a different URL, so each decodes, encodes and fills the cache on its own.
    let mut playing = Vec::new();
    for n in 1..=12 {
        playing.push(start_track(&h, &format!("tone-523-long.mp3?player={n}")).await);
    }
    for p in &playing {
        p.heard(10).await;
    }
    let after = fixed_threads();
    eprintln!("threads with 1 player: {before:?}\nthreads with 13 players: {after:?}\nall: {:?}", threads());
    assert_eq!(after, before, "threads changed as 12 players started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_track_filling_the_cache_with_the_volume_changed_is_encoded_once_for_the_listener() {
    let h = Harness::start(FakeVoiceConfig::default()).await;
    let mut events = h.events().await;
    let player_at_half_volume = async || {
        let (guild, session) = h.new_player().await;
        let v = h.post(&format!("/players/{guild}/volume"), json!({"volume": 0.5})).await;
        assert_eq!(v.status, 200, "{v:?}");
        (guild, session)
    };
    let (guild, session) = player_at_half_volume().await;
    let url = h.media.url("tone-440.mp3");
    let track = enqueued_track_id(&h.enqueue(guild, &url).await.body);
    let ended = events.track_ended(guild, &track).await;
    assert!(ended["data"].get("error").is_none(), "{ended}");
    session.wait(LIMIT, |c| c.silence_packets >= 5).await.expect("silence tail after the track");
    let report = session.report();
    assert_heard(&report, 440.0, 2.0);
    let metrics = h.metrics().await;
    let (encodes, decodes) = (
        counter(&metrics, "mesastream_opus_encodes_total", &[]),
        counter(&metrics, "mesastream_opus_decodes_total", &[]),
    );
    // One encode for the cache and one for the listener per frame, both from the same PCM.
    let frames = report.packets - report.silence_packets;
    assert_eq!(decodes, 0, "the first play decoded Opus it had just encoded");
    assert!(encodes >= 2 * frames - 2 && encodes <= 2 * frames + 4, "{encodes} encodes for {frames} frames heard");

    // Played again, it comes from the cache as Opus: with the volume at 0.5 that is decoded.
    let (guild, _session) = player_at_half_volume().await;
    let track = enqueued_track_id(&h.enqueue(guild, &url).await.body);
    let ended = events.track_ended(guild, &track).await;
    assert!(ended["data"].get("error").is_none(), "{ended}");
    let metrics = h.metrics().await;
    assert!(counter(&metrics, "mesastream_opus_decodes_total", &[]) >= frames - 2, "the cached play decoded");
    assert_eq!(counter(&metrics, "mesastream_audio_cache_lookups_total", &["outcome=\"hit\""]), 1, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_player_beyond_the_instance_pool_plays_unfiltered_and_says_why() {
    let h = Harness::with_plugins(FakeVoiceConfig::default(), &["lavalink-filters"], |c| c.plugin_instances = 16).await;
    let mut events = h.events().await;
    let chain = json!([{ "name": "lowPass", "config": { "smoothing": 20.0 } }]);
    let mut players = Vec::new();
    for _ in 0..17 {
        let (guild, session) = h.new_player().await;
        let set = h.call(reqwest::Method::PUT, &format!("/players/{guild}/filters"), Some(chain.clone())).await;
        assert_eq!(set.status, 200, "{set:?}");
        players.push((guild, session));
    }
    let mut tracks = Vec::new();
    for (guild, _) in &players {
        let reply = h.enqueue(*guild, &h.media.url("tone-523-long.mp3")).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        tracks.push(enqueued_track_id(&reply.body));
    }
    let failed = events.wait("FilterFailed", |e| e["type"] == "FilterFailed").await;
    assert_eq!(failed["data"]["kind"], "pool_full", "{failed}");
    let reason = failed["data"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("PLUGIN_INSTANCES"), "the reason says what to change: {reason}");
    for ((guild, _), track) in players.iter().zip(&tracks) {
        let ended = events.track_ended(*guild, track).await;
        assert!(ended["data"].get("error").is_none(), "every player played its track: {ended}");
    }
    let failures: Vec<_> = events.seen.iter().filter(|e| e["type"] == "FilterFailed").collect();
    assert_eq!(failures.len(), 1, "only the player beyond the pool lost its filter: {failures:?}");
    let m = h.metrics().await;
    assert_eq!(counter(&m, "mesastream_filters_bypassed_total", &["reason=\"pool_full\""]), 1, "{m}");
}

//! The media engine's shape as a user would check it: a filtered track that fills the cache
//! is encoded once for the listener, never decoded and encoded again. (That players share a
//! fixed set of threads is `engine_threads`, alone in its process so no other test's
//! threads are counted.)

mod support;

use fake_voice::FakeVoiceConfig;
use serde_json::json;
use support::*;

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

//! Player controls act at once, the status tells the truth, and the listener hears it.

mod support;

use std::time::{Duration, Instant};

use fake_voice::FakeVoiceConfig;
use mesastream::audio::encode::OpusEncoder;
use serde_json::{Value, json};
use support::{Harness, LIMIT, enqueued_track_id, media::tone, stalls};

fn audio_packets(report: &fake_voice::Report) -> i64 {
    (report.packets - report.silence_packets) as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_hold_the_position_and_lose_nothing() {
    let h = Harness::start(FakeVoiceConfig::default()).await;
    let mut events = h.events().await;
    let (guild, session) = h.new_player().await;
    let t = tone("tone-523-long.mp3");
    let track_id = enqueued_track_id(&h.enqueue(guild, &h.media.url(t.file)).await.body);
    session.wait(LIMIT, |c| c.packets >= 50).await.expect("playing");

    let paused = h.post(&format!("/players/{guild}/pause"), Value::Null).await;
    assert_eq!(paused.body["status"], "paused");
    let silent = session.wait(LIMIT, |c| c.silence_packets >= 5 && !c.speaking).await.expect("silence tail on pause");
    let held = h.get(&format!("/players/{guild}")).await.body["position_ms"].clone();
    let still = h.get(&format!("/players/{guild}")).await;
    assert_eq!(still.body["position_ms"], held, "position holds while paused");
    assert_eq!(session.counters().packets, silent.packets, "nothing is sent while paused");

    let resumed = h.post(&format!("/players/{guild}/resume"), Value::Null).await;
    assert_eq!(resumed.body["status"], "playing");
    events.track_ended(guild, &track_id).await;
    session.wait(LIMIT, |c| c.silence_packets >= 10).await.expect("silence tail at the end");
    let report = session.report();
    assert_eq!(report.undecryptable + report.plaintext + report.lost_packets, 0, "{report:?}");
    assert!((audio_packets(&report) - 300).abs() <= 1, "the whole track, once: {} frames", audio_packets(&report));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_ends_the_track_and_plays_the_next() {
    let h = Harness::start(FakeVoiceConfig::default()).await;
    let mut events = h.events().await;
    let (guild, session) = h.new_player().await;
    let first = enqueued_track_id(&h.enqueue(guild, &h.media.url("tone-523-long.mp3")).await.body);
    let next = tone("tone-440.mp3");
    let second = enqueued_track_id(&h.enqueue(guild, &h.media.url(next.file)).await.body);
    session.wait(LIMIT, |c| c.packets >= 25).await.expect("playing");

    let skipped = h.post(&format!("/players/{guild}/skip"), Value::Null).await;
    assert_eq!(skipped.body["current_track"]["id"], first.as_str(), "the answer shows the player before the skip");
    events.track_ended(guild, &first).await;
    let now = h.get(&format!("/players/{guild}")).await;
    assert_eq!(now.body["current_track"]["id"], second.as_str());
    assert_eq!(now.body["status"], "playing");
    events.track_ended(guild, &second).await;
    let g = guild.to_string();
    events
        .wait("PlayerDestroyed", move |v| {
            v["type"] == "PlayerDestroyed" && v["data"]["player_id"] == g && v["data"]["was_stopped"] == false
        })
        .await;
    assert_eq!(h.get(&format!("/players/{guild}")).await.status, 404, "a drained player is gone");
    let report = session.report();
    let last = report.windows.last().expect("audio");
    assert!((last.freq_hz - next.freq_hz).abs() < 2.0, "{last:?}");
    assert!(audio_packets(&report) < 150, "the skipped track stopped early");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_jumps_and_refuses_positions_past_the_end() {
    let h = Harness::start(FakeVoiceConfig::default()).await;
    let mut events = h.events().await;
    let (guild, session) = h.new_player().await;
    let track_id = enqueued_track_id(&h.enqueue(guild, &h.media.url("tone-523-long.mp3")).await.body);
    session.wait(LIMIT, |c| c.packets >= 10).await.expect("playing");
    let current = h.get(&format!("/players/{guild}/current")).await;
    assert_eq!(current.body["duration_ms"], 6000, "{current:?}");
    assert_eq!(current.body["duration"], "0:06");

    let too_far = h.post(&format!("/players/{guild}/seek"), json!({"position_ms": 7000})).await;
    assert_eq!(too_far.status, 400);
    assert_eq!(too_far.body["message"], "bad request: seek position 0:07 exceeds track duration 0:06");

    let seeked = h.post(&format!("/players/{guild}/seek"), json!({"position_ms": 4000})).await;
    assert_eq!(seeked.status, 200, "{seeked:?}");
    assert!(seeked.body["position_ms"].as_u64().unwrap_or(0) >= 4000, "{seeked:?}");
    events.track_ended(guild, &track_id).await;
    session.wait(LIMIT, |c| c.silence_packets >= 5).await.expect("silence tail");
    let report = session.report();
    let frames = audio_packets(&report);
    assert!((100..=160).contains(&frames), "about 2 s after the seek plus what played before: {frames} frames");
    assert!(report.windows_off_frequency(523.0, 2.0).len() <= 2, "{:?}", report.windows);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_and_equalizer_change_what_is_heard() {
    let h = Harness::with_plugins(FakeVoiceConfig::default(), &["equalizer"], |_| {}).await;
    let mut events = h.events().await;

    // Out-of-range values are refused before the player lookup.
    let bad_volume = h.post("/players/999/volume", json!({"volume": 2.5})).await;
    assert_eq!(
        (bad_volume.status, bad_volume.body["message"].clone()),
        (400, json!("bad request: volume must be between 0.0 and 2.0"))
    );
    let bad_eq = h.post("/players/999/equalizer", json!({"bass": -1.0, "mid": 1.0, "treble": 1.0})).await;
    assert_eq!(bad_eq.body["message"], "bad request: equalizer bands must be between 0.0 and 2.0");
    let missing_band = h.post("/players/999/equalizer", json!({"bass": 1.0})).await;
    assert_eq!(missing_band.status, 400);

    let (guild, session) = h.new_player().await;
    let t = tone("tone-100.wav");
    let track_id = enqueued_track_id(&h.enqueue(guild, &h.media.url(t.file)).await.body);
    session.wait(LIMIT, |c| c.packets >= 50).await.expect("playing");
    let v = h.post(&format!("/players/{guild}/volume"), json!({"volume": 0.5})).await;
    assert_eq!(v.body["volume"], 0.5);
    session.wait(LIMIT, |c| c.packets >= 110).await.expect("playing");
    let e = h.post(&format!("/players/{guild}/equalizer"), json!({"bass": 0.0, "mid": 1.0, "treble": 1.0})).await;
    assert_eq!(e.body["equalizer"], json!({"bass": 0.0, "mid": 1.0, "treble": 1.0}));
    events.track_ended(guild, &track_id).await;
    session.wait(LIMIT, |c| c.silence_packets >= 5).await.expect("silence tail");

    let pcm = session.pcm();
    let level = |from_s: f64, to_s: f64| {
        let (a, b) = ((from_s * 96_000.0) as usize, ((to_s * 96_000.0) as usize).min(pcm.len()));
        let slice = &pcm[a..b];
        10.0 * (slice.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / slice.len() as f64).log10()
    };
    // Timeline from the first packet: full level, then half (-6 dB), then bass cut.
    let full = level(0.2, 0.9);
    let half = level(1.6, 2.0);
    let cut = level(3.0, 3.6);
    assert!((full - half - 6.02).abs() < 1.0, "volume 0.5: {full:.1} dB → {half:.1} dB");
    assert!(half - cut > 30.0, "bass 0 removes the 100 Hz tone: {half:.1} dB → {cut:.1} dB");
}

/// The level of the left channel in 2 ms windows every 1 ms, in dB, from where the decoded
/// audio lines up with the track's frames (the encoder's delay in).
fn left_levels(pcm: &[f32]) -> Vec<f64> {
    let lookahead = OpusEncoder::new(64).expect("encoder").lookahead();
    let left: Vec<f32> = pcm.iter().step_by(2).skip(lookahead).copied().collect();
    left.windows(96)
        .step_by(48)
        .map(|w| 10.0 * (w.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / 96.0).max(1e-12).log10())
        .collect()
}

/// Frames between the last one the player had sent when a change was answered and the
/// first frame that carries it: 1 means the next frame but one (the next one was made
/// before the change came). The change starts where the level first steps down by 3 dB;
/// the codec smears a step up to 2.5 ms into the frame before, which is allowed for.
fn frames_until_heard(levels: &[f64], answered_ms: u64) -> i64 {
    let answered = (answered_ms / 20) as usize;
    let ms = |frame: usize| frame * 20;
    let before = &levels[ms(answered.saturating_sub(10))..ms(answered.saturating_sub(5))];
    let old = before.iter().sum::<f64>() / before.len() as f64;
    let from = ms(answered.saturating_sub(5));
    let step = levels[from..].iter().position(|l| *l < old - 3.0).expect("the change is heard");
    // Window centre, in samples per channel, plus the smear allowance.
    let at = (from + step) * 48 + 48 + 120;
    (at / 960) as i64 - answered as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_and_filter_changes_are_heard_on_the_next_frame_made() {
    let h = Harness::with_plugins(FakeVoiceConfig::default(), &["lavalink-filters"], |_| {}).await;
    let mut events = h.events().await;
    let (guild, session) = h.new_player().await;
    let t = tone("tone-1000-left.wav");
    let track_id = enqueued_track_id(&h.enqueue(guild, &h.media.url(t.file)).await.body);
    // Each change is timed by the frames the player had sent when it answered, and by the
    // machine: a stall just before a change leaves the player owing frames it then makes
    // at once, all with the old setting.
    let change = async |method: reqwest::Method, path: &str, body: Value| {
        let asked = Instant::now();
        let reply = h.call(method, &format!("/players/{guild}/{path}"), Some(body)).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let at = reply.body["position_ms"].as_u64();
        (at, stalls::stalled_between(asked - Duration::from_millis(100), Instant::now()))
    };
    session.wait(LIMIT, |c| c.packets >= 30).await.expect("playing");
    let (volume_at, volume_stall) = change(reqwest::Method::POST, "volume", json!({"volume": 0.5})).await;
    session.wait(LIMIT, |c| c.packets >= 60).await.expect("playing");
    // A level change through a filter (a change of stereo image would be smoothed over a few
    // frames by the codec itself, hiding where it started).
    let quarter = json!([{"name": "channelMix", "config": {"leftToLeft": 0.25}}]);
    let (_, filter_stall) = change(reqwest::Method::PUT, "filters", quarter).await;
    // The chain's answer is the chain, not a snapshot: the position comes from the player.
    let filter_at = h.get(&format!("/players/{guild}")).await.body["position_ms"].as_u64();
    events.track_ended(guild, &track_id).await;
    session.wait(LIMIT, |c| c.silence_packets >= 5).await.expect("silence tail");
    let report = session.report();
    assert_eq!(report.lost_packets, 0, "{report:?}");
    support::assert_no_gaps(&report);

    let levels = left_levels(&session.pcm());
    let check = |what: &str, late: i64, stalled: Duration| {
        if late > 1 && stalled > Duration::from_millis(20) {
            eprintln!("{what} heard {late} frames late while the machine stalled for {stalled:?}");
        } else {
            assert!(late <= 1, "{what} heard {late} frames after the answer");
        }
    };
    // The track fills the cache as it plays, so it reaches the encoder as Opus packets: a
    // filter acts on them decoded, which starts its change a lookahead into the frame.
    check("volume 0.5", frames_until_heard(&levels, volume_at.expect("position")), volume_stall);
    check("channelMix 0.25", frames_until_heard(&levels, filter_at.expect("position")), filter_stall);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_status_and_current_report_the_truth() {
    let h = Harness::start(FakeVoiceConfig::default()).await;
    let (guild, session) = h.new_player().await;
    assert_eq!(h.get(&format!("/players/{guild}/current")).await.body, Value::Null);
    let stopped = h.post(&format!("/players/{guild}/stop"), Value::Null).await;
    assert_eq!(stopped.body["status"], "stopped");
    h.enqueue(guild, &h.media.url("tone-440.mp3")).await;
    let queued = h.enqueue(guild, &h.media.url("tone-523-long.mp3")).await;
    assert_eq!(queued.body["status"], "stopped", "a stopped player waits for /play");
    assert_eq!(h.get(&format!("/players/{guild}/queue")).await.body.as_array().map(Vec::len), Some(2));
    let resumed = h.post(&format!("/players/{guild}/resume"), Value::Null).await;
    assert_eq!(resumed.body["status"], "stopped", "resume does not pretend to play");
    let playing = h.post(&format!("/players/{guild}/play"), Value::Null).await;
    assert_eq!(playing.body["status"], "playing");
    assert_eq!(playing.body["queue"].as_array().map(Vec::len), Some(1));
    session.wait(LIMIT, |c| c.packets >= 10).await.expect("playing");
    let current = h.get(&format!("/players/{guild}/current")).await.body;
    assert_eq!(current["track"]["metadata"]["title"], "tone-440.mp3");
    assert!(current["position"].as_str().is_some_and(|p| p.starts_with("0:0")), "{current}");
    assert_eq!(h.get(&format!("/players/{guild}/status")).await.body["status"], "playing");
    let cleared = h.call(reqwest::Method::DELETE, &format!("/players/{guild}/queue"), None).await;
    assert_eq!(cleared.body["queue"], json!([]));
    assert_eq!(cleared.body["current_track"]["metadata"]["title"], "tone-440.mp3", "the current track keeps playing");
    let all = h.get("/players").await;
    assert_eq!(all.body.as_array().map(Vec::len), Some(1));
    let gone = h.call(reqwest::Method::DELETE, &format!("/players/{guild}"), None).await;
    assert_eq!(gone.status, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_the_connection_keeps_the_track_playing() {
    let h = Harness::start(FakeVoiceConfig::default()).await;
    let mut events = h.events().await;
    let (guild, payload) = h.new_call();
    assert_eq!(h.post("/players", payload.clone()).await.status, 201);
    let old = h.fake.session(&guild.to_string()).expect("first session");
    let t = tone("tone-523-long.mp3");
    let track_id = enqueued_track_id(&h.enqueue(guild, &h.media.url(t.file)).await.body);
    old.wait(LIMIT, |c| c.packets >= 100).await.expect("playing");

    let mut moved = payload.clone();
    moved["session_id"] = json!(format!("moved-{guild}"));
    let reply = h.call(reqwest::Method::PUT, &format!("/players/{guild}/connection"), Some(moved)).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["connection"]["session_id"], format!("moved-{guild}"));
    assert_eq!(reply.body["voice_connected"], true);
    let sessions = h.fake.sessions(&guild.to_string());
    let new = sessions.last().expect("second session").clone();
    assert_ne!(new.ssrc, old.ssrc);

    events.track_ended(guild, &track_id).await;
    new.wait(LIMIT, |c| c.silence_packets >= 5).await.expect("silence tail on the new session");
    let (a, b) = (old.report(), new.report());
    let total = audio_packets(&a) + audio_packets(&b);
    assert!((total - 300).abs() <= 1, "old {} + new {} frames", audio_packets(&a), audio_packets(&b));
    assert_eq!(b.undecryptable + b.plaintext + b.lost_packets, 0, "{b:?}");
    support::assert_no_gaps(&b);
}

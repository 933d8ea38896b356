//! The voice transport against the fake server: transport modes, TLS, DAVE membership changes
//! mid-track, group re-creation, invalid-commit recovery, resume and final close codes.

mod support;

use std::time::Duration;

use fake_voice::{Committer, FakeVoiceConfig};
use support::{Harness, LIMIT, assert_heard, media::tone, play_to_end, start_track};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xchacha_over_tls_is_heard_whole() {
    let config =
        FakeVoiceConfig { tls: true, modes: vec!["aead_xchacha20_poly1305_rtpsize".into()], ..Default::default() };
    let h = Harness::start(config).await;
    assert!(h.fake.gateway_url().starts_with("wss://"));
    let t = tone("tone-440.mp3");
    let (_, session, report) = play_to_end(&h, t.file).await;
    assert_eq!(session.mode().as_deref(), Some("aead_xchacha20_poly1305_rtpsize"));
    assert_heard(&report, t.freq_hz, t.seconds);
}

/// Plays the long fixture while `during` changes the call, then checks nothing was lost.
async fn membership_changes_lose_nothing(committer: Committer) {
    let config = FakeVoiceConfig { committer, member_delay: Duration::from_millis(100), ..Default::default() };
    let h = Harness::start(config).await;
    let t = tone("tone-523-long.mp3");
    let mut playing = start_track(&h, t.file).await;
    let session = playing.session.clone();

    playing.heard(40).await;
    session.add_member(800_000_000_000_000_001).await.expect("member joins");
    playing.heard(90).await;
    session.add_member(800_000_000_000_000_002).await.expect("second member joins");
    playing.heard(140).await;
    session.remove_member(800_000_000_000_000_001).await.expect("member leaves");
    playing.heard(190).await;
    session.remove_member(800_000_000_000_000_002).await.expect("second member leaves");

    let report = playing.finish().await;
    println!("{committer:?} committing: {}", report.timing_line());
    assert_eq!(session.counters().transitions, 5, "initial group plus four membership changes");
    assert_heard(&report, t.freq_hz, t.seconds);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_joining_and_leaving_lose_no_frame_when_the_host_commits() {
    membership_changes_lose_nothing(Committer::Client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_joining_and_leaving_lose_no_frame_when_another_member_commits() {
    membership_changes_lose_nothing(Committer::Listener).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_recreation_and_invalid_commit_recovery_keep_audio_flowing() {
    let h = Harness::start(FakeVoiceConfig::default()).await;
    let t = tone("tone-523-long.mp3");
    let mut playing = start_track(&h, t.file).await;
    let session = playing.session.clone();

    playing.heard(40).await;
    session.prepare_epoch().await.expect("group re-created after opcode 24");
    playing.heard(120).await;
    session.send_bad_commit().await.expect("client recovers from an invalid commit");
    assert!(session.received_ops().contains(&31), "the client reported the invalid commit (opcode 31)");
    assert_heard(&playing.finish().await, t.freq_hz, t.seconds);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_4015_is_resumed_without_losing_audio() {
    let h = Harness::start(FakeVoiceConfig::default()).await;
    let t = tone("tone-523-long.mp3");
    let mut playing = start_track(&h, t.file).await;
    let (guild, session) = (playing.guild, playing.session.clone());

    playing.heard(50).await;
    session.close(4015);
    session.wait(LIMIT, |c| c.resumes >= 1 && c.connected).await.expect("client resumed with opcode 7");
    let snapshot = h.get(&format!("/players/{guild}")).await;
    assert_eq!(snapshot.body["voice_connected"], true);

    assert_heard(&playing.finish().await, t.freq_hz, t.seconds);
    let seen = &playing.events.seen;
    assert!(seen.iter().all(|e| e["type"] != "VoiceDisconnected"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_4006_reports_voice_disconnected_with_the_code() {
    let h = Harness::start(FakeVoiceConfig::default()).await;
    let mut events = h.events().await;
    let (guild, session) = h.new_player().await;
    let t = tone("tone-523-long.mp3");
    h.enqueue(guild, &h.media.url(t.file)).await;
    session.wait(LIMIT, |c| c.packets >= 25).await.expect("audio flowing");
    session.close(4006);
    let g = guild.to_string();
    let event =
        events.wait("VoiceDisconnected", |v| v["type"] == "VoiceDisconnected" && v["data"]["player_id"] == g).await;
    let reason = event["data"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("4006") && reason.contains("session no longer valid"), "{reason}");
    let snapshot = h.get(&format!("/players/{guild}")).await;
    assert_eq!(snapshot.body["voice_connected"], false, "{snapshot:?}");
    assert!(!session.received_ops().contains(&7), "a final close code is not resumed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_voice_token_answers_503_with_the_messages_the_bot_retries_on() {
    let h = Harness::start(FakeVoiceConfig::default()).await;
    let (guild, payload) = h.new_call();
    h.fake.reject_token(payload["token"].as_str().unwrap_or_default());
    let reply = h.post("/players", payload).await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(reply.body["code"], "service_unavailable");
    let message = reply.body["message"].as_str().unwrap_or_default();
    for needle in ["4006", "session no longer valid", "stale voice token"] {
        assert!(message.contains(needle), "{message}");
    }
    assert_eq!(h.get(&format!("/players/{guild}")).await.status, 404, "no player is left behind");
}

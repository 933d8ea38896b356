//! Packet timing as the fake listener measures it, for 1 and for 50 concurrent players.
//! The figures are printed (run with --nocapture), not asserted: timing depends on the machine.

mod support;

use fake_voice::FakeVoiceConfig;
use futures_util::future::join_all;
use support::{Harness, LIMIT, enqueued_track_id, media::tone};

async fn run(players: usize) {
    let config = FakeVoiceConfig { keep_pcm: false, ..Default::default() };
    // Every player enqueues at once: the node's resolve limit is not what is measured here.
    let h = Harness::start_with(config, |c| c.limits.resolves_per_node = players.max(32)).await;
    let mut events = h.events().await;
    let mut sessions = Vec::new();
    for _ in 0..players {
        sessions.push(h.new_player().await);
    }
    let t = tone("tone-523-long.mp3");
    let url = h.media.url(t.file);
    let replies = join_all(sessions.iter().map(|(guild, _)| h.enqueue(*guild, &url))).await;
    for ((guild, session), reply) in sessions.iter().zip(replies) {
        assert_eq!(reply.status, 200, "{reply:?}");
        events.track_ended(*guild, &enqueued_track_id(&reply.body)).await;
        session.wait(LIMIT, |c| c.silence_packets >= 5).await.expect("silence tail");
    }
    let reports: Vec<_> = sessions.iter().map(|(_, s)| s.report()).collect();
    let packets: u64 = reports.iter().map(|r| r.packets).sum();
    let late: u64 = reports.iter().map(|r| r.late_over_5ms).sum();
    let skipped: u64 = reports.iter().map(|r| r.skipped_ticks).sum();
    let lost: u64 = reports.iter().map(|r| r.lost_packets).sum();
    let p50 = reports.iter().map(|r| r.lateness_ms.p50).fold(0.0, f64::max);
    let p99 = reports.iter().map(|r| r.lateness_ms.p99).fold(0.0, f64::max);
    let max = reports.iter().map(|r| r.lateness_ms.max).fold(0.0, f64::max);
    let ia99 = reports.iter().map(|r| r.interarrival_ms.p99).fold(0.0, f64::max);
    println!(
        "players={players:<3} packets={packets} lost={lost} late>5ms={late} ({:.2}%) skipped_ticks={skipped} worst-player lateness p50={p50:.2}ms p99={p99:.2}ms max={max:.2}ms interarrival p99={ia99:.2}ms",
        100.0 * late as f64 / packets.max(1) as f64
    );
    for r in &reports {
        assert_eq!(r.undecryptable + r.plaintext + r.transport_failures, 0, "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timing_with_one_player() {
    run(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timing_with_fifty_players() {
    run(50).await;
}

//! Opus passthrough: with no filter working and the volume at 1, an Opus source's packets
//! reach the listener byte for byte; changing the volume mid-track switches to decoding and
//! re-encoding at that packet and back again, with every packet of the source heard once.

mod support;

use fake_voice::FakeVoiceConfig;
use mesastream::audio::decode::{SourceDecoder, Unit};
use serde_json::json;
use support::media::{fixtures, tone};
use support::{Harness, assert_heard, heard_packets};

/// The Opus packets of a fixture, as its container holds them.
fn source_packets(file: &str) -> Vec<Vec<u8>> {
    let media = std::fs::File::open(fixtures().join(file)).expect("fixture");
    let mut source = SourceDecoder::open(Box::new(media), Some("audio/ogg")).expect("opens");
    let mut packets = Vec::new();
    while let Some(unit) = source.next_unit().expect("reads") {
        match unit {
            Unit::Opus(p) => packets.push(p),
            Unit::Pcm { .. } => panic!("{file} is not Opus"),
        }
    }
    packets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opus_sources_reach_the_listener_byte_for_byte() {
    let h = Harness::start(FakeVoiceConfig::default()).await;
    let t = tone("tone-880.opus");
    let (_, session, report) = support::play_to_end(&h, t.file).await;
    assert_heard(&report, t.freq_hz, t.seconds);
    let source = source_packets(t.file);
    assert!(source.len() >= 100, "{} packets", source.len());
    assert!(heard_packets(&session) == source, "the listener got other packets than the file holds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_volume_switches_out_of_passthrough_and_back_without_a_gap() {
    let h = Harness::start(FakeVoiceConfig::default()).await;
    let t = tone("tone-600-long.opus");
    let mut playing = support::start_track(&h, t.file).await;
    let guild = playing.guild;
    let path = format!("/players/{guild}/volume");
    let volume = |v: f64| h.post(&path, json!({ "volume": v }));

    playing.heard(60).await;
    assert_eq!(volume(0.5).await.status, 200);
    let switched_at = playing.session.report().packets;
    playing.heard(switched_at + 80).await;
    assert_eq!(volume(1.0).await.status, 200);
    let back_at = playing.session.report().packets;
    let report = playing.finish().await;

    let source = source_packets(t.file);
    let heard = heard_packets(&playing.session);
    // Every packet of the source became exactly one frame: nothing lost, nothing repeated.
    assert_eq!(heard.len(), source.len());
    assert_heard(&report, t.freq_hz, t.seconds);
    // Untouched before the change and after the return (a few frames of slack for the two
    // frames the encoder keeps ready), re-encoded at half volume in between.
    let same = |i: &usize| heard[*i] == source[*i];
    let untouched_before = (0..heard.len()).take_while(same).count();
    let untouched_after = (0..heard.len()).rev().take_while(same).count();
    assert!(untouched_before as u64 >= switched_at.saturating_sub(5), "{untouched_before} of {switched_at}");
    assert!(untouched_after as u64 >= (heard.len() as u64).saturating_sub(back_at + 5), "{untouched_after}");
    let loudest = report.windows.iter().map(|w| w.level_db).fold(f64::MIN, f64::max);
    let quieter = report.windows.iter().filter(|w| w.level_db < loudest - 5.0).count();
    assert!(quieter >= 10, "{quieter} windows at half volume: {:?}", report.windows);
}

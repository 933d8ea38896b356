//! End to end: HTTP → fetch → decode → Opus → voice transport with DAVE → a listener in the
//! call that decrypts, decodes and measures. Real sockets throughout.

mod support;

use fake_voice::FakeVoiceConfig;
use support::{Harness, assert_heard, media::TONES, play_to_end};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_is_heard_whole_through_dave() {
    let h = Harness::start(FakeVoiceConfig::default()).await;
    for tone in TONES.iter().filter(|t| t.seconds <= 2.0 && t.freq_hz > 200.0) {
        let (_, session, report) = play_to_end(&h, tone.file).await;
        assert_eq!(session.mode().as_deref(), Some("aead_aes256_gcm_rtpsize"));
        println!("{:<20} {}", tone.file, report.timing_line());
        assert_heard(&report, tone.freq_hz, tone.seconds);
    }
}

//! Players share a fixed set of threads: more players, the same threads. The only test in
//! its process, because it counts the process's threads.

mod support;

use std::collections::BTreeMap;

use fake_voice::FakeVoiceConfig;
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

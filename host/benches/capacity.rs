//! Capacity: what the server process alone spends as passthrough players grow, read from
//! outside it. The server is the release binary in its own process; the fake voice listener
//! runs in this process in load mode (the kernel timestamps every packet of every session;
//! one session in `VERIFY_ONE_IN` is also decrypted end to end and decoded, every packet of
//! it). The server's CPU time, RSS and threads come from `/proc/<pid>`. The physical
//! baseline, measured in the same run, is the work one packet needs in a tight loop: DAVE's
//! frame encryption (the server's own library, in a formed group), the transport seal
//! (AES-256-GCM with the RTP header as associated data) and one UDP send to a loopback
//! socket a thread keeps reading. The transcode modes' baseline is libopus encoding the
//! benchmark track's own audio, frame after frame, at the server's settings. The passthrough
//! ramp also reports the listener's own CPU per packet and the ceiling it leaves the server.
//!
//!     cargo bench --bench capacity               # the passthrough ramp
//!     cargo bench --bench capacity -- idle       # 10 000 idle voice connections
//!     cargo bench --bench capacity -- transcode  # mp3 → WASM lowPass → Opus, cache filling
//!     cargo bench --bench capacity -- transcode-cached  # the same mp3 for all, cached first
//!
//! `CAPACITY_STEPS=500,1000` runs only those steps (to profile one load, for example).
//!
//! Prints tables (see BENCHMARKS.md); asserts nothing about time.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fake_voice::FakeVoiceConfig;
use futures_util::future::join_all;
use serde_json::json;
use support::process::{cpu_by_thread, usage};
use support::{Harness, LIMIT, enqueued_track_id};

/// Players tried, in order, until more than 1 % of packets arrive > 5 ms late.
const STEPS: &[usize] = &[100, 250, 500, 750, 1000, 1500, 2000, 3000, 4000, 5000];
const LATE_BUDGET: f64 = 0.01;
/// One session in this many is decrypted end to end and decoded by the listener.
const VERIFY_ONE_IN: u32 = 25;
/// The harness waits on packet counts that are multiples of this (50 and `STEADY_UNTIL`), so
/// the listener wakes it twice a second per session instead of on every packet.
const WAKE_EVERY: u64 = 25;
/// Players created (or removed) at once.
const BATCH: usize = 50;
const TRACK: &str = "tone-600-long.opus";
/// Transcode steps' source: a 6 s mp3.
const TRANSCODE_TRACK: &str = "tone-523-long.mp3";
const TRANSCODE_STEPS: &[usize] = &[10, 25, 50, 75, 100, 150, 200];
/// Packets every player has heard when the steady window ends (the track has 300).
const STEADY_UNTIL: u64 = 200;
const IDLE_PLAYERS: usize = 10_000;

type Players = Vec<(u64, std::sync::Arc<fake_voice::Session>)>;

async fn players(h: &Harness, n: usize) -> Players {
    let mut all = Vec::with_capacity(n);
    while all.len() < n {
        let batch = BATCH.min(n - all.len());
        all.extend(join_all((0..batch).map(|_| h.new_player())).await);
    }
    all
}

async fn destroy(h: &Harness, all: &Players) {
    for chunk in all.chunks(BATCH) {
        let paths: Vec<String> = chunk.iter().map(|(g, _)| format!("/players/{g}")).collect();
        join_all(paths.iter().map(|path| h.call(reqwest::Method::DELETE, path, None))).await;
    }
}

struct Step {
    players: usize,
    packets: u64,
    late: u64,
    p99: f64,
    server_cpu: Duration,
    /// Server CPU and packets sent while every player was in the middle of its track: what
    /// a packet costs once playing, without starting and ending tracks.
    steady_cpu: Duration,
    steady_packets: u64,
    /// The steady window's server CPU by kind of thread: the packet clock's lanes, the media
    /// workers, the async runtimes, the rest.
    steady_by_thread: [Duration; 4],
    /// This process's CPU in the same window: the listener receiving, timestamping and
    /// verifying (the harness is idle then).
    listener_cpu: Duration,
    rss_idle: u64,
    rss_playing: u64,
    threads: u64,
    verified_failures: u64,
}

impl Step {
    fn late_share(&self) -> f64 {
        self.late as f64 / self.packets.max(1) as f64
    }
    fn cpu_us_per_packet(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / self.packets.max(1) as f64
    }
    fn steady_us_per_packet(&self) -> f64 {
        self.steady_cpu.as_secs_f64() * 1e6 / self.steady_packets.max(1) as f64
    }
    fn listener_us_per_packet(&self) -> f64 {
        self.listener_cpu.as_secs_f64() * 1e6 / self.steady_packets.max(1) as f64
    }
}

/// The steps to run: `CAPACITY_STEPS` (comma-separated player counts) when set, else `default`.
fn steps(default: &[usize]) -> Vec<usize> {
    match std::env::var("CAPACITY_STEPS") {
        Ok(list) => list.split(',').map(|n| n.trim().parse().expect("CAPACITY_STEPS: player counts")).collect(),
        Err(_) => default.to_vec(),
    }
}

/// What every player of a step plays.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The same cached Opus track, passed through.
    Passthrough,
    /// An mp3 of its own (each decodes and fills the cache) through one WASM filter, encoded
    /// to Opus at complexity 10.
    Transcode,
    /// The same mp3 for every player, already in the cache (a popular track): each decodes
    /// the cached Opus, filters and encodes once.
    TranscodeCached,
}

/// `n` players each start their track at once.
async fn step(h: &Harness, pid: &str, base_rss: u64, n: usize, mode: Mode) -> Step {
    let all = players(h, n).await;
    if mode != Mode::Passthrough {
        let chain = json!([{ "name": "lowPass", "config": { "smoothing": 20.0 } }]);
        let paths: Vec<String> = all.iter().map(|(g, _)| format!("/players/{g}/filters")).collect();
        join_all(paths.iter().map(|path| h.call(reqwest::Method::PUT, path, Some(chain.clone())))).await;
    }
    let idle = usage(pid);
    let urls: Vec<String> = all
        .iter()
        .map(|(g, _)| match mode {
            Mode::Passthrough => h.media.url(TRACK),
            Mode::Transcode => h.media.url(&format!("{TRANSCODE_TRACK}?player={g}")),
            Mode::TranscodeCached => h.media.url(TRANSCODE_TRACK),
        })
        .collect();
    join_all(all.iter().zip(&urls).map(|((g, _), url)| h.enqueue(*g, url))).await;
    join_all(all.iter().map(|(_, s)| s.wait(LIMIT, |c| c.packets >= 50))).await;
    let playing = usage(pid);
    let threads_playing = cpu_by_thread(pid);
    let listener_playing = usage("self");
    let heard = |all: &Players| all.iter().map(|(_, s)| s.counters().packets).sum::<u64>();
    let heard_at_playing = heard(&all);
    // Every player past 4 of the track's 6 seconds, none yet at its end.
    join_all(all.iter().map(|(_, s)| s.wait(LIMIT, |c| c.packets >= STEADY_UNTIL))).await;
    let steady = usage(pid);
    let threads_steady = cpu_by_thread(pid);
    let listener_steady = usage("self");
    let steady_packets = heard(&all) - heard_at_playing;
    // The silence after each track says it ended (not the event stream: past capacity, a
    // client that falls behind loses events, by design). Together, under one time limit: an
    // overloaded listener may have lost some sessions' silence frames, and each must not
    // cost a time limit of its own.
    join_all(all.iter().map(|(_, s)| s.wait(LIMIT, |c| c.silence_packets >= 5))).await;
    let done = usage(pid);
    let reports: Vec<_> = all.iter().map(|(_, s)| s.report()).collect();
    destroy(h, &all).await;
    let per_player = |rss: u64| rss.saturating_sub(base_rss) / n as u64;
    Step {
        players: n,
        packets: reports.iter().map(|r| r.packets).sum(),
        late: reports.iter().map(|r| r.late_over_5ms).sum(),
        p99: reports.iter().map(|r| r.lateness_ms.p99).fold(0.0, f64::max),
        server_cpu: done.cpu.saturating_sub(idle.cpu),
        steady_cpu: steady.cpu.saturating_sub(playing.cpu),
        steady_packets,
        steady_by_thread: by_kind(&threads_playing, &threads_steady),
        listener_cpu: listener_steady.cpu.saturating_sub(listener_playing.cpu),
        rss_idle: per_player(idle.rss),
        rss_playing: per_player(playing.rss),
        threads: playing.threads,
        verified_failures: reports.iter().map(|r| r.undecryptable + r.plaintext + r.transport_failures).sum(),
    }
}

/// CPU spent between two looks, by kind of server thread (see [`Step::steady_by_thread`]).
fn by_kind(before: &BTreeMap<String, Duration>, after: &BTreeMap<String, Duration>) -> [Duration; 4] {
    let mut kinds = [Duration::ZERO; 4];
    for (name, cpu) in after {
        let spent = cpu.saturating_sub(before.get(name).copied().unwrap_or_default());
        let kind = match name.as_str() {
            "packet-clock" => 0,
            "media-worker" => 1,
            "tokio-rt-worker" | "media" => 2,
            _ => 3,
        };
        kinds[kind] += spent;
    }
    kinds
}

async fn server(max_players: usize, plugins: Option<&std::path::Path>) -> (Harness, String, std::path::PathBuf) {
    let cache = tempfile::tempdir().expect("cache dir").keep();
    let voice = FakeVoiceConfig {
        keep_pcm: false,
        verify_one_in: VERIFY_ONE_IN,
        wake_every_packets: WAKE_EVERY,
        ..Default::default()
    };
    let plugins_dir = plugins.map_or_else(|| "none".to_string(), |p| p.display().to_string());
    let env = [
        ("AUDIO_CACHE_PATH", cache.display().to_string()),
        ("MAX_PLAYERS", max_players.to_string()),
        ("RESOLVES_PER_NODE", "4096".to_string()),
        // Every player's requests come from this one address, as a big bot's would.
        ("MAX_CONNECTIONS_PER_ADDRESS", "65536".to_string()),
        ("PLUGINS_DIR", plugins_dir),
    ];
    let h = Harness::binary(voice, &env).await;
    let pid = h.server_pid();
    (h, pid, cache)
}

/// Waits until the cache directory holds a complete file (the writer publishes it just after
/// the track that filled it ends).
async fn cached(dir: &std::path::Path) {
    let has_file =
        || std::fs::read_dir(dir).is_ok_and(|d| d.flatten().any(|e| e.path().extension().is_some_and(|x| x == "opus")));
    let deadline = Instant::now() + LIMIT;
    while !has_file() {
        assert!(Instant::now() < deadline, "the warm-up play was not cached");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One play of `track` to its end, so it is in the cache for every step after.
async fn warm_cache(h: &Harness, cache: &std::path::Path, track: &str) {
    let warm = players(h, 1).await;
    let mut events = h.events().await;
    let reply = h.enqueue(warm[0].0, &h.media.url(track)).await;
    events.track_ended(warm[0].0, &enqueued_track_id(&reply.body)).await;
    destroy(h, &warm).await;
    cached(cache).await;
}

async fn ramp(baseline_us: f64) {
    let (h, pid, cache) = server(*STEPS.last().unwrap_or(&5000), None).await;
    // Every step then passes the cached Opus through.
    warm_cache(&h, &cache, TRACK).await;
    let base = usage(&pid);
    println!("server threads with no player: {}; RSS {} MiB", base.threads, base.rss >> 20);
    println!();
    println!(
        "| players | packets > 5 ms late | p99 ms (worst player) | server CPU µs per packet, steady | ÷ physical baseline | whole tracks, µs per packet | server CPU ms per player-second | players per core by CPU | OS threads (server) | RSS per idle player | RSS per playing player | verified sessions' failures | listener CPU µs per packet, steady | server µs per packet, steady: lanes / media workers / runtimes / other |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    // The listener's cost at the largest step sustained (the first step's when none was).
    let mut listener_us: f64 = 0.0;
    for n in steps(STEPS) {
        let s = step(&h, &pid, base.rss, n, Mode::Passthrough).await;
        let (per_packet, steady) = (s.cpu_us_per_packet(), s.steady_us_per_packet());
        println!(
            "| {} | {:.2} % | {:.2} | {:.1} | {:.1} | {:.1} | {:.2} | {:.0} | {} | {} KiB | {} KiB | {} | {:.1} | {} |",
            s.players,
            100.0 * s.late_share(),
            s.p99,
            steady,
            steady / baseline_us,
            per_packet,
            per_packet * 50.0 / 1000.0,
            1e6 / (per_packet * 50.0),
            s.threads,
            s.rss_idle >> 10,
            s.rss_playing >> 10,
            s.verified_failures,
            s.listener_us_per_packet(),
            s.steady_by_thread
                .iter()
                .map(|cpu| format!("{:.1}", cpu.as_secs_f64() * 1e6 / s.steady_packets.max(1) as f64))
                .collect::<Vec<_>>()
                .join(" / "),
        );
        let over = s.late_share() > LATE_BUDGET;
        if !over || listener_us == 0.0 {
            listener_us = s.listener_us_per_packet();
        }
        if over {
            break;
        }
    }
    // The listener shares the machine: even a server that cost only the physical baseline
    // could not carry more players than the cores left over allow.
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get()) as f64;
    println!();
    println!(
        "ceiling on this machine: {cores} cores ÷ 50 packets a second ÷ (physical baseline {baseline_us:.2} + listener {listener_us:.2} µs) = {:.0} players with a server at 1× the baseline, {:.0} at 2×, {:.0} at 3×",
        ceiling(cores, baseline_us, listener_us, 1.0),
        ceiling(cores, baseline_us, listener_us, 2.0),
        ceiling(cores, baseline_us, listener_us, 3.0),
    );
}

/// Players `cores` carry when each packet costs the server `ratio` times the physical
/// baseline and the listener `listener_us`, with nothing else running.
fn ceiling(cores: f64, baseline_us: f64, listener_us: f64, ratio: f64) -> f64 {
    cores * 1e6 / 50.0 / (ratio * baseline_us + listener_us)
}

/// Idle players that fit: each holds two descriptors in the server (voice WebSocket and UDP
/// socket), and the open-file limit may be lower than 10 000 of them need.
fn idle_players(open_files: u64) -> usize {
    let fit = (open_files.saturating_sub(512) / 2) as usize;
    if fit < IDLE_PLAYERS {
        println!(
            "the open-file limit ({open_files}, which this process could not raise) fits {fit} idle players, not {IDLE_PLAYERS}"
        );
    }
    fit.min(IDLE_PLAYERS)
}

async fn idle(open_files: u64) {
    let count = idle_players(open_files);
    let (h, pid, _) = server(count, None).await;
    let base = usage(&pid);
    let start = Instant::now();
    let all = players(&h, count).await;
    let created = start.elapsed();
    let before = usage(&pid);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = usage(&pid);
    println!("| idle voice connections | {count} |");
    println!("|---|---:|");
    println!("| time to create them (batches of {BATCH}) | {:.1} s |", created.as_secs_f64());
    println!("| server RSS | {} MiB |", after.rss >> 20);
    println!(
        "| server RSS per idle player | {} KiB |",
        (after.rss.saturating_sub(base.rss) / count.max(1) as u64) >> 10
    );
    println!(
        "| server CPU while idle, share of one core | {:.1} % |",
        100.0 * (after.cpu - before.cpu).as_secs_f64() / 10.0
    );
    println!("| server OS threads | {} |", after.threads);
    destroy(&h, &all).await;
}

/// libopus alone on the transcode track's audio: the encode (and, for a cached track, the
/// decode) no transcoding player can avoid, µs per frame.
struct CodecBaseline {
    encode: f64,
    decode: f64,
}

impl CodecBaseline {
    fn measure() -> Self {
        let frames = support::baseline::track_frames(&support::media::fixtures().join(TRANSCODE_TRACK));
        let synthetic = support::baseline::encode_only_us_per_frame();
        let encode = support::baseline::encode_us_per_frame(&frames);
        let decode = support::baseline::decode_us_per_frame(&frames);
        println!(
            "libopus on the track's audio: encode {encode:.1} µs per 20 ms frame ({:.0} players per core), decode {decode:.1} µs; one synthetic frame encoded over and over: {synthetic:.1} µs",
            per_core(encode)
        );
        Self { encode, decode }
    }
}

/// Players one core carries at `us` per 20 ms frame.
fn per_core(us: f64) -> f64 {
    1e6 / (us * 50.0)
}

async fn transcode_ramp(mode: Mode) {
    let codec = CodecBaseline::measure();
    // What a player must spend at least: a filling track decodes the mp3 (not counted) and
    // encodes twice (the cache's unfiltered and the listener's filtered), a cached one decodes
    // the cached Opus and encodes once.
    let floor_us = match mode {
        Mode::TranscodeCached => codec.decode + codec.encode,
        _ => 2.0 * codec.encode,
    };
    println!("libopus floor for this mode: {floor_us:.1} µs per frame ({:.0} players per core)", per_core(floor_us));
    let plugins = support::plugins::install(&["lavalink-filters"]);
    let (h, pid, cache) = server(1000, Some(plugins.path())).await;
    if mode == Mode::TranscodeCached {
        warm_cache(&h, &cache, TRANSCODE_TRACK).await;
    }
    let base = usage(&pid);
    println!("server threads with no player: {}; RSS {} MiB", base.threads, base.rss >> 20);
    println!();
    println!(
        "| players | packets > 5 ms late | p99 ms (worst player) | server CPU ms per player-second, whole tracks | steady | players per core by CPU (steady) | ÷ encode-only | ÷ libopus floor | OS threads (server) | RSS per playing player | verified sessions' failures |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut sustained = 0;
    for n in steps(TRANSCODE_STEPS) {
        let s = step(&h, &pid, base.rss, n, mode).await;
        let steady_us = s.steady_us_per_packet();
        println!(
            "| {} | {:.2} % | {:.2} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {} | {} KiB | {} |",
            s.players,
            100.0 * s.late_share(),
            s.p99,
            s.cpu_us_per_packet() * 50.0 / 1000.0,
            steady_us * 50.0 / 1000.0,
            per_core(steady_us),
            codec.encode / steady_us,
            floor_us / steady_us,
            s.threads,
            s.rss_playing >> 10,
            s.verified_failures,
        );
        if s.late_share() > LATE_BUDGET {
            break;
        }
        sustained = n;
    }
    // Players sustained per core against the encode-only players per core.
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get()) as f64;
    println!();
    println!(
        "sustained: {sustained} players, {:.0} per core, {:.2} of the encode-only baseline, {:.2} of the libopus floor",
        sustained as f64 / cores,
        sustained as f64 / cores / per_core(codec.encode),
        sustained as f64 / cores / per_core(floor_us),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let open_files = mesastream::open_files::raise().unwrap_or(1024);
    let mode = std::env::args().skip(1).find(|a| ["idle", "transcode", "transcode-cached"].contains(&a.as_str()));
    let packet = support::baseline::packet_us();
    println!(
        "physical baseline: {:.2} µs per packet (DAVE encrypt {:.2} + transport seal {:.2} + UDP send to a reading socket {:.2}); a send to a socket nobody reads: {:.2}; sends over {} sockets one call each: {:.2}, 16 per io_uring submission: {:.2}",
        packet.total(),
        packet.dave,
        packet.transport,
        packet.send,
        packet.send_unread,
        1000,
        packet.send_many_sockets,
        packet.send_batched,
    );
    let baseline_us = packet.total();
    match mode.as_deref() {
        Some("idle") => idle(open_files).await,
        Some("transcode") => transcode_ramp(Mode::Transcode).await,
        Some("transcode-cached") => transcode_ramp(Mode::TranscodeCached).await,
        _ => ramp(baseline_us).await,
    }
}

//! Listeners: what the server process spends as HTTP listeners of one player grow, read from
//! outside it (the release binary in its own process; `/proc/<pid>` gives CPU time and RSS),
//! and how many HLS segment requests one core answers.
//!
//!     cargo bench --bench listeners                # Ogg and MP3 listener ramps, then HLS
//!     LISTENER_STEPS=100,2000 cargo bench --bench listeners
//!
//! The baseline, measured in the same run, is what a listener cannot avoid: writing its
//! stream's bytes to a loopback TCP socket that a thread keeps reading, in the chunks the
//! server writes (100 ms of audio each), µs per second of audio. The listeners are this
//! process's tasks reading and dropping what they get. Prints tables (see BENCHMARKS.md);
//! asserts nothing about time.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fake_voice::FakeVoiceConfig;
use futures_util::future::join_all;
use support::Harness;
use support::process::usage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const STEPS: &[usize] = &[0, 100, 250, 500, 1000, 2000];
const TRACK: &str = "tone-450-20s.opus";
/// Each step's steady window.
const WINDOW: Duration = Duration::from_secs(5);
/// Listeners connected at once.
const BATCH: usize = 100;

/// µs of CPU to write one second of a stream of `bytes_per_sec` to a loopback socket in ten
/// chunks, the way a listener's stream goes out.
fn baseline_us_per_listener_second(bytes_per_sec: usize) -> f64 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut writer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut reader, _) = listener.accept().unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while reader.read(&mut buf).is_ok_and(|n| n > 0) {}
    });
    let chunk = vec![0x55u8; bytes_per_sec / 10];
    let rounds = 20_000;
    let started = cpu_time::ThreadTime::now();
    for _ in 0..rounds {
        writer.write_all(&chunk).unwrap();
    }
    let per_write = started.elapsed().as_secs_f64() * 1e6 / rounds as f64;
    per_write * 10.0
}

/// A listener: sends the request, then reads and drops whatever comes, counting bytes.
async fn listen(addr: std::net::SocketAddr, path: String, bytes: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("request");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
            bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
    })
}

fn steps() -> Vec<usize> {
    match std::env::var("LISTENER_STEPS") {
        Ok(v) => v.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        Err(_) => STEPS.to_vec(),
    }
}

async fn server() -> (Harness, String) {
    // Every listener comes from this one address.
    let env = [
        ("LISTEN_PUBLIC", "true".to_string()),
        ("PLUGINS_DIR", "none".to_string()),
        ("MAX_LISTENERS_PER_ADDRESS", "10000".to_string()),
        ("MAX_CONNECTIONS_PER_ADDRESS", "65536".to_string()),
    ];
    let h = Harness::binary(FakeVoiceConfig { keep_pcm: false, ..Default::default() }, &env).await;
    let pid = h.server_pid();
    (h, pid)
}

/// A player playing the 20 s track over and over (queued 30 times: ten minutes).
async fn playing(h: &Harness) -> u64 {
    let (guild, session) = h.new_player().await;
    for _ in 0..30 {
        assert_eq!(h.enqueue(guild, &h.media.url(TRACK)).await.status, 200);
    }
    session.wait(support::LIMIT, |c| c.packets >= 100).await.expect("playing");
    std::mem::forget(session);
    guild
}

async fn ramp(format: &str, baseline: f64) {
    let (h, pid) = server().await;
    let guild = playing(&h).await;
    let path = format!("/players/{guild}/listen?format={format}");
    let bytes = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let mut idle_rss = 0;
    println!("\n{format} listeners of one player ({TRACK} looping), {WINDOW:?} per step");
    println!(
        "| listeners | server CPU % of a core | µs CPU per listener-second | ÷ baseline | RSS MB | KB RSS per listener | KB/s per listener received |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let mut base_cpu_per_sec = 0.0;
    for n in steps() {
        while tasks.len() < n {
            let batch = BATCH.min(n - tasks.len());
            let joined = join_all((0..batch).map(|_| listen(h.addr, path.clone(), bytes.clone()))).await;
            tasks.extend(joined);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (before, got_before, at) = (usage(&pid), bytes.load(Ordering::Relaxed), Instant::now());
        tokio::time::sleep(WINDOW).await;
        let (after, got) = (usage(&pid), bytes.load(Ordering::Relaxed) - got_before);
        let secs = at.elapsed().as_secs_f64();
        let cpu_per_sec = (after.cpu - before.cpu).as_secs_f64() / secs;
        if n == 0 {
            base_cpu_per_sec = cpu_per_sec;
            idle_rss = after.rss;
        }
        let per_listener_us = if n == 0 { 0.0 } else { (cpu_per_sec - base_cpu_per_sec) * 1e6 / n as f64 };
        let per_listener_kb =
            if n == 0 { 0.0 } else { (after.rss.saturating_sub(idle_rss)) as f64 / 1024.0 / n as f64 };
        let rate = if n == 0 { 0.0 } else { got as f64 / secs / n as f64 / 1024.0 };
        println!(
            "| {n} | {:.1} | {:.1} | {:.2} | {:.1} | {:.1} | {:.1} |",
            cpu_per_sec * 100.0,
            per_listener_us,
            if n == 0 { 0.0 } else { per_listener_us / baseline },
            after.rss as f64 / 1e6,
            per_listener_kb,
            rate,
        );
    }
    for t in tasks {
        t.abort();
    }
}

/// Segment requests one core answers: `clients` loops fetch the newest live segment (and an
/// on-demand track's segments) as fast as they are answered.
async fn hls() {
    let (h, pid) = server().await;
    let guild = playing(&h).await;
    // Enough track for a few complete segments.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let playlist = h.http.get(h.url(&format!("/players/{guild}/hls/index.m3u8"))).send().await.unwrap();
    let text = playlist.text().await.unwrap();
    let newest = text.lines().rfind(|l| l.ends_with(".m4s")).expect("a live segment").to_string();
    let live = h.url(&format!("/players/{guild}/hls/{newest}"));
    let vod_playlist = h
        .http
        .get(h.url("/tracks/hls/index.m3u8"))
        .query(&[("query", h.media.url(TRACK))])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let vod = h.url(vod_playlist.lines().find(|l| l.ends_with(".m4s")).expect("an on-demand segment"));
    println!("\nHLS segment requests ({WINDOW:?}, 16 clients keeping one request each in flight)");
    println!("| segment | requests/s | server CPU % of a core | requests/s per core | KB per segment |");
    println!("|---|---:|---:|---:|---:|");
    for (what, url) in [("live (player)", live), ("on demand (cached track)", vod)] {
        let count = Arc::new(AtomicU64::new(0));
        let size = Arc::new(AtomicU64::new(0));
        let until = Instant::now() + WINDOW;
        let before = usage(&pid);
        let at = Instant::now();
        let clients = (0..16).map(|_| {
            let (http, url, count, size) = (h.http.clone(), url.clone(), count.clone(), size.clone());
            async move {
                while Instant::now() < until {
                    let body = http.get(&url).send().await.unwrap().bytes().await.unwrap();
                    size.store(body.len() as u64, Ordering::Relaxed);
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        join_all(clients).await;
        let secs = at.elapsed().as_secs_f64();
        let cpu = (usage(&pid).cpu - before.cpu).as_secs_f64() / secs;
        let rate = count.load(Ordering::Relaxed) as f64 / secs;
        println!(
            "| {what} | {rate:.0} | {:.0} | {:.0} | {:.1} |",
            cpu * 100.0,
            rate / cpu.max(1e-9),
            size.load(Ordering::Relaxed) as f64 / 1024.0
        );
    }
}

/// What recording adds to each packet a player sends (the clock's side: append, and publish
/// a chunk every tenth packet), ns per packet, against the work the packet itself needs.
fn recording_cost() {
    use mesastream::audio::recording::{Recording, RewindBudget};
    let recording = Recording::new(15_000, 0, RewindBudget::new(512 << 20));
    let packet = vec![0x5au8; 240]; // a 20 ms packet at 96 kbit/s
    let rounds = 2_000_000u64;
    let started = cpu_time::ThreadTime::now();
    for tick in 0..rounds {
        recording.record(tick, &packet);
    }
    let ns = started.elapsed().as_secs_f64() * 1e9 / rounds as f64;
    let packet_us = support::baseline::packet_us().total();
    println!(
        "recording: {ns:.0} ns per packet sent; the packet's own work (DAVE, transport seal, UDP send) {packet_us:.2} µs: {:.2} % more",
        ns / 10.0 / packet_us
    );
}

#[tokio::main]
async fn main() {
    let _ = mesastream::open_files::raise();
    recording_cost();
    // Ogg at the track's rate (96 kbit/s) and MP3 at 128 kbit/s, in 100 ms writes.
    let ogg = baseline_us_per_listener_second(96_000 / 8);
    let mp3 = baseline_us_per_listener_second(128_000 / 8);
    println!(
        "baseline: writing a listener's second of audio to a loopback socket in 10 writes: {ogg:.1} µs (Ogg, 12 KB/s), {mp3:.1} µs (MP3, 16 KB/s)"
    );
    ramp("ogg", ogg).await;
    ramp("mp3", mp3).await;
    hls().await;
}

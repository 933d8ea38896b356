//! Property tests: media with extreme header fields (sample rates, channel counts, bit
//! depths, block sizes, declared lengths, granule positions), in every container the
//! decoder reads, through the real decode → resample → encode path of a track. Whatever a
//! header says, the track either plays or ends with an error, nothing panics, and what the
//! process allocates for it stays under [`TRACK_MEMORY_BOUND`] (counted by this binary's
//! allocator, every thread included).
//!
//! `PROPTEST_CASES=N` runs N cases per container instead of proptest's default 256.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mesastream::audio::encode::EncoderSettings;
use mesastream::audio::fetch::FetchOptions;
use mesastream::audio::filter_chain::ChainControl;
use mesastream::audio::frames::Taken;
use mesastream::audio::pushed::PushedStream;
use mesastream::audio::workers::Workers;
use mesastream::audio::{Controls, Gain, PipelineConfig, pipeline};
use mesastream::egress::{Egress, EgressSettings};
use prometheus_client::metrics::counter::Counter;
use proptest::prelude::*;
use support::hostile::{CONTAINERS, Container, WavHeader, extremes, float_extremes, wav_payload};

/// What one track may make the process allocate beyond what it held before, at its peak:
/// the README's bound per track ("Security model"), with room for the test's own runtime.
const TRACK_MEMORY_BOUND: usize = 48 << 20;
/// Frames taken from each track (4 s): past its start, where buffers are made.
const FRAMES: u64 = 200;
/// A track that makes no progress for this long is stuck (a lost panic, a wait on nothing).
const STUCK: Duration = Duration::from_secs(20);

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn grew(size: usize) {
    let now = CURRENT.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(now, Ordering::Relaxed);
    LARGEST.fetch_max(size, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The engine a track runs in: a runtime, one media worker, no plugins, no cache.
struct Engine {
    runtime: tokio::runtime::Runtime,
    config: PipelineConfig,
}

/// One case at a time: the allocator's counts are the process's.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::Relaxed);
            previous(info);
        }));
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let egress = runtime.block_on(async { Egress::new(EgressSettings::default()) }).expect("egress");
        let config = PipelineConfig {
            fetch: FetchOptions {
                egress,
                runtime: runtime.handle().clone(),
                channel_capacity: 16,
                max_bytes: u64::MAX,
                stalls: Counter::default(),
            },
            encoder: EncoderSettings { bitrate_kbps: 128, complexity: 10, encodes: Counter::default() },
            frames_ahead: 15,
            plugins: None,
            cache: None,
            workers: Workers::start(1).expect("workers"),
            decodes: Counter::default(),
        };
        Engine { runtime, config }
    })
}

/// What playing `media` did.
#[derive(Debug)]
struct Played {
    frames: u64,
    ended: Option<Result<(), String>>,
    /// The most the process held above where it started, and its largest single allocation.
    peak: usize,
    largest: usize,
}

/// Plays `media` as a track (volume 0.8, so Opus is decoded and every source re-encoded)
/// for up to [`FRAMES`] frames.
fn play(media: Vec<u8>) -> Played {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let engine = engine();
    let before = CURRENT.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    LARGEST.store(0, Ordering::Relaxed);
    let cancel = Arc::new(AtomicBool::new(false));
    let (tx, stream) = PushedStream::channel(16, engine.runtime.handle(), cancel.clone(), Counter::default());
    engine.runtime.spawn(async move {
        for chunk in media.chunks(4096) {
            if !tx.send(Bytes::copy_from_slice(chunk)).await {
                return;
            }
        }
    });
    let controls = Arc::new(Controls {
        gain: Gain::new(0.8),
        filters: ChainControl::default(),
        on_filter_failure: Arc::new(|_| {}),
    });
    let frames =
        pipeline::spawn_pushed(stream, None, engine.config.clone(), controls, cancel.clone(), tracing::Span::none());
    let (mut taken, mut ended, mut progress) = (0u64, None, Instant::now());
    while taken < FRAMES {
        frames.ring.ask_up_to(taken + 10);
        match frames.ring.take() {
            Taken::Audio(packet) => {
                frames.ring.recycle(packet);
                taken += 1;
                progress = Instant::now();
            }
            Taken::End(result) => {
                ended = Some(result);
                break;
            }
            Taken::Empty => {
                assert!(progress.elapsed() < STUCK, "the track is stuck after {taken} frames");
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
    cancel.store(true, Ordering::Release);
    drop(frames);
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    Played { frames: taken, ended, peak, largest: LARGEST.load(Ordering::Relaxed) }
}

/// The property every case must hold.
fn check(what: &str, played: &Played) -> Result<(), TestCaseError> {
    prop_assert_eq!(PANICS.load(Ordering::Relaxed), 0, "{} panicked", what);
    prop_assert!(
        played.peak <= TRACK_MEMORY_BOUND,
        "{}: the track took {} MiB (largest allocation {} MiB): {:?}",
        what,
        played.peak >> 20,
        played.largest >> 20,
        played
    );
    if let Some(Err(reason)) = &played.ended {
        prop_assert!(!reason.is_empty(), "{}: a failure names its reason", what);
    }
    Ok(())
}

/// Any value of `bits` bits, biased to the extremes.
fn value(bits: u32) -> impl Strategy<Value = u64> {
    let max = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
    prop_oneof![3 => proptest::sample::select(extremes(bits)), 1 => 0..=max]
}

fn wav_header() -> impl Strategy<Value = WavHeader> {
    let format = proptest::sample::select(vec![1u16, 3, 6, 7, 2, 0x11, 0xFFFE, 0, 0xFFFF]);
    let extensible = proptest::option::of((value(16), value(32), proptest::sample::select(vec![1u16, 3, 6, 7, 2])));
    (format, value(16), value(32), value(32), value(16), value(16), value(32), extensible).prop_map(
        |(format, channels, rate, byte_rate, block_align, bits, data_len, extensible)| WavHeader {
            format,
            channels: channels as u16,
            rate: rate as u32,
            byte_rate: byte_rate as u32,
            block_align: block_align as u16,
            bits: bits as u16,
            data_len: data_len as u32,
            extensible: extensible.map(|(v, m, s)| (v as u16, m as u32, s)),
        },
    )
}

proptest! {
    #[test]
    fn wav_headers_with_any_fields_play_or_fail_within_bounds(header in wav_header()) {
        let media = header.build(&wav_payload());
        let played = play(media);
        check(&format!("WAV {header:?}"), &played)?;
    }

    #[test]
    fn headers_of_every_container_with_extreme_fields_play_or_fail_within_bounds(
        container in proptest::sample::select(CONTAINERS.to_vec()),
        picks in proptest::collection::vec((any::<proptest::sample::Index>(), any::<proptest::sample::Index>()), 1..4),
        cut in proptest::option::of(64usize..support::hostile::PREFIX),
    ) {
        let mut media = container.base();
        let fields = container.fields(&media);
        prop_assume!(!fields.is_empty());
        let mut edits = Vec::new();
        for (field, pick) in picks {
            let field = *field.get(&fields);
            let floats = container == Container::Webm && field.bits == 64;
            let values = if floats { float_extremes() } else { extremes(field.bits) };
            let value = *pick.get(&values);
            container.edit(&mut media, field, value);
            edits.push((field.name, value));
        }
        if let Some(cut) = cut {
            media.truncate(cut);
        }
        let played = play(media);
        check(&format!("{container:?} with {edits:?}, cut at {cut:?}"), &played)?;
    }
}

#[test]
fn the_reported_bombs_fail_naming_the_rate_and_take_no_memory() {
    use support::hostile::{rate_bomb_flac, rate_bomb_ogg, rate_bomb_wav};
    for (what, media) in [
        ("WAV at 1 Hz", rate_bomb_wav(1)),
        ("WAV at 4294967291 Hz", rate_bomb_wav(4_294_967_291)),
        ("FLAC at 1 Hz", rate_bomb_flac(1)),
        ("FLAC at 1048575 Hz", rate_bomb_flac(1_048_575)),
        ("Ogg Vorbis at 1 Hz", rate_bomb_ogg(1)),
        ("Ogg Vorbis at 4294967291 Hz", rate_bomb_ogg(4_294_967_291)),
    ] {
        let played = play(media);
        eprintln!("{what}: {played:?}");
        let reason = match &played.ended {
            Some(Err(reason)) => reason.clone(),
            other => panic!("{what} must fail, not {other:?}"),
        };
        assert!(reason.contains("sample rate"), "{what}: {reason}");
        assert_eq!(played.frames, 0, "{what}");
        assert!(played.peak < 8 << 20, "{what} took {} MiB", played.peak >> 20);
    }
    // The same header at a real rate plays: 4096 frames at 44.1 kHz are 4.6 frames of 20 ms.
    let played = play(support::hostile::rate_bomb_wav(44_100));
    assert_eq!((played.frames, &played.ended), (5, &Some(Ok(()))), "{played:?}");
}

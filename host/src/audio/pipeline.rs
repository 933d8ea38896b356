//! Starting a track: what it needs, and its opening. Opening (resolving, asking the cache,
//! connecting, probing the format, seeking) may wait on the network, so it runs on the
//! runtime's blocking pool, once per track; everything after runs as work on the media
//! workers (see `track_work`) and reaches the clock through the track's frame ring.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use super::controls::Controls;
use super::decode::SourceDecoder;
use super::frames::FrameRing;
use super::live_follow::{LiveFollower, LiveSource};
use super::opening::{PipelineConfig, TrackInfo, open_stream};
use super::pushed::PushedStream;
use super::track_work::{Decoding, Source, TrackWork};
use crate::cache::store::Plan;
use crate::plugins::resolver::{Locator, ResolvedTrack};

/// Frames asked for before a track starts: the clock starts it once they are ready.
pub const START_FRAMES: u64 = 2;

/// A running track as the clock sees it: its frames, and its work, kept alive while the
/// clock holds it.
pub struct TrackFrames {
    pub ring: Arc<FrameRing>,
    _work: Arc<TrackWork>,
}

/// Where a track's media comes from.
#[derive(Debug, Clone)]
pub enum TrackSource {
    /// Already known: a URL with request headers, or a program a resolver named (run under
    /// that plugin's grants) whose stdout is the media.
    Located(Locator),
    /// Resolved through the resolver plugins first (tracks restored after a restart,
    /// playlist entries), for the guild when there is one.
    Resolve { query: String, guild_id: Option<String> },
    /// A live mount, followed behind its live edge (never cached); why not, when the mount
    /// is unknown.
    Live(Result<LiveSource, String>),
}

/// Where to start and what to play.
pub struct TrackRequest {
    pub source: TrackSource,
    /// What the track is cached under, when known before it is resolved.
    pub cache_key: Option<String>,
    /// The duration the track's metadata claims, for a track followed from another's fill.
    pub duration_hint_ms: Option<u64>,
    pub start_ms: u64,
    /// The track's span; the pipeline's work is recorded under it.
    pub span: tracing::Span,
}

/// Starts a track: its opening is queued on the blocking pool and its frames appear in the
/// returned ring. `on_open` runs once the source is probed.
pub fn spawn(
    request: TrackRequest,
    config: PipelineConfig,
    controls: Arc<Controls>,
    cancel: Arc<AtomicBool>,
    on_open: impl FnOnce(TrackInfo) + Send + 'static,
) -> TrackFrames {
    let span = request.span.clone();
    start(config, controls, cancel, span, move |config, cancel| open(&request, config, cancel, on_open))
}

/// Starts decoding a stream pushed to the host (a live source's upload), typed by its
/// `content_type` when it says.
pub fn spawn_pushed(
    stream: PushedStream,
    content_type: Option<String>,
    config: PipelineConfig,
    controls: Arc<Controls>,
    cancel: Arc<AtomicBool>,
    span: tracing::Span,
) -> TrackFrames {
    start(config, controls, cancel, span, move |config, _| {
        let readiness = stream.readiness();
        let decoder = SourceDecoder::open(Box::new(stream), content_type.as_deref()).map_err(|e| e.to_string())?;
        Ok(Source::Decoding(Box::new(Decoding::new(decoder, readiness, None, config.encoder.clone()))))
    })
}

/// A track's ring and work, its source opened by `open` on the blocking pool.
fn start(
    config: PipelineConfig,
    controls: Arc<Controls>,
    cancel: Arc<AtomicBool>,
    span: tracing::Span,
    open: impl FnOnce(&PipelineConfig, &Arc<AtomicBool>) -> Result<Source, String> + Send + 'static,
) -> TrackFrames {
    let plugins = config.plugins.clone();
    let version_of = controls.clone();
    let ring = Arc::new(FrameRing::new(START_FRAMES, Arc::new(move || version_of.version(plugins.as_deref()))));
    let work = TrackWork::new(ring.clone(), &config, controls, cancel.clone(), span.clone());
    let opening = work.clone();
    let runtime = config.fetch.runtime.clone();
    runtime.spawn_blocking(move || {
        // A container reader that panics on hostile media ends this track, not the opening
        // thread with the track left waiting forever.
        let opened =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| span.in_scope(|| open(&config, &cancel))))
                .unwrap_or_else(|_| Err("the media could not be read (its container reader failed)".into()));
        opening.opened(opened);
    });
    TrackFrames { ring, _work: work }
}

/// Decides where the track's media comes from and opens it.
fn open(
    request: &TrackRequest,
    config: &PipelineConfig,
    cancel: &Arc<AtomicBool>,
    on_open: impl FnOnce(TrackInfo) + 'static,
) -> Result<Source, String> {
    let start_ms = request.start_ms;
    let (locator, key) = match &request.source {
        TrackSource::Located(locator) => (locator.clone(), request.cache_key.clone()),
        TrackSource::Resolve { query, guild_id } => locate(config, query, guild_id.clone())?,
        TrackSource::Live(live) => {
            let live = live.clone()?;
            on_open(TrackInfo { duration_ms: None });
            return Ok(Source::Live(LiveFollower::new(live)));
        }
    };
    let plan = match (&config.cache, key) {
        // Only a track played from its start can fill the cache.
        (Some(cache), Some(key)) => cache.plan(&key, start_ms == 0),
        _ => Plan::Stream,
    };
    match plan {
        Plan::Hit(mut cached) => {
            on_open(TrackInfo { duration_ms: Some(cached.index.duration_ms()) });
            cached.reader.seek_ms(start_ms).map_err(|e| e.to_string())?;
            Ok(Source::Cached(cached))
        }
        Plan::Follow(mut fill) => {
            on_open(TrackInfo { duration_ms: request.duration_hint_ms });
            fill.skip_ms(start_ms);
            Ok(Source::Follow { fill, position_ms: start_ms, locator, duration_hint_ms: request.duration_hint_ms })
        }
        Plan::Fill(writer) => {
            open_stream(&locator, request.duration_hint_ms, start_ms, Some(writer), config, cancel, on_open)
                .map(|opened| Source::decoding(opened, config))
        }
        Plan::Stream => open_stream(&locator, request.duration_hint_ms, start_ms, None, config, cancel, on_open)
            .map(|opened| Source::decoding(opened, config)),
    }
}

/// Resolves a query to where its first track's media is, and the key it is cached under.
fn locate(config: &PipelineConfig, query: &str, guild_id: Option<String>) -> Result<(Locator, Option<String>), String> {
    let Some(host) = config.plugins.as_ref() else {
        return Ok((Locator::Http { url: query.to_string(), headers: Vec::new() }, Some(direct_cache_key(query))));
    };
    let resolved = host.resolve(query, guild_id, None, 0).map_err(|e| format!("cannot resolve {query}: {e}"))?;
    let track = resolved.into_tracks().into_iter().next();
    let key = track.as_ref().map(cache_key);
    let locator = track.and_then(|t| t.locator).ok_or_else(|| format!("{query} resolved to nothing playable"))?;
    Ok((locator, key))
}

/// The cache key of a resolved track: its resolver, the source the resolver says it is from,
/// the host of its page, and the resolver's id for it. Two links share cached audio only when
/// all four agree, so a page elsewhere named like a YouTube id never stands in for the video.
/// (Keys of earlier versions, `plugin:identifier`, have no `/` after the plugin's name and
/// are never looked up again; their files expire.)
pub fn cache_key(track: &ResolvedTrack) -> String {
    let host = url::Url::parse(&track.uri).ok().and_then(|u| {
        let host = u.host_str()?.to_ascii_lowercase();
        Some(u.port().map_or_else(|| host.clone(), |port| format!("{host}:{port}")))
    });
    let part = |s: &str| utf8_percent_encode(s, KEY_PART).to_string();
    format!("{}/{}/{}/{}", track.plugin, part(&track.source_name), host.unwrap_or_default(), track.identifier)
}

/// What a key part may not hold as is: its separator and the escape itself.
const KEY_PART: &AsciiSet = &CONTROLS.add(b'/').add(b'%');

/// The cache key of a direct link played without resolvers: the link is its identity.
pub fn direct_cache_key(url: &str) -> String {
    format!("http:{url}")
}

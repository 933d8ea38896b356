//! Fills the audio cache with a track no player is playing (on-demand listening needs the
//! track's packets before anyone hears it): the track's usual work, read as fast as it is
//! made instead of on the packet clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{KnownSource, Registry};
use crate::audio::frames::Taken;
use crate::audio::{Controls, TrackRequest, TrackSource, pipeline};
use crate::model::Track;
use crate::plugins::resolver::Locator;

/// How often the fill's frames are collected (each time, as many as are ready).
const COLLECT_EVERY: Duration = Duration::from_millis(10);
const NOT_CACHED: &str = "the track cannot be cached (a stream without a known end never is)";
/// How long the cache's writer may take to check and put a finished fill in place.
const FILL_PUBLISHED_WITHIN: Duration = Duration::from_secs(30);
/// Frames asked for beyond those collected (1 s of audio).
const ASK_AHEAD: u64 = 50;

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("the audio cache is off (AUDIO_CACHE_MAX_BYTES=0 or an unusable directory)")]
    CacheOff,
    #[error("{0}")]
    Failed(String),
}

impl Registry {
    /// The cache id of `track`, once its whole audio is cached (filled now when it is not).
    pub async fn prepare(&self, track: &Track, known: Option<KnownSource>) -> Result<String, PrepareError> {
        let cache = self.ctx.pipeline.cache.clone().ok_or(PrepareError::CacheOff)?;
        let (source, key) = match known {
            Some(known) => (TrackSource::Located(known.locator), known.cache_key),
            None => (
                TrackSource::Located(Locator::Http { url: track.stream_url.clone(), headers: Vec::new() }),
                pipeline::direct_cache_key(&track.stream_url),
            ),
        };
        let id = crate::cache::store::AudioCache::id_of(&key);
        let probe = cache.clone();
        let probe_id = id.clone();
        let cached = tokio::task::spawn_blocking(move || probe.open_by_id(&probe_id).is_some())
            .await
            .map_err(|e| PrepareError::Failed(e.to_string()))?;
        if cached {
            return Ok(id);
        }
        let request = TrackRequest {
            source,
            cache_key: Some(key.clone()),
            duration_hint_ms: Some(track.metadata.duration_ms).filter(|ms| *ms > 0),
            start_ms: 0,
            span: tracing::info_span!("prepare", track_id = %track.id, url = %track.source_url),
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let frames = pipeline::spawn(request, self.ctx.pipeline.clone(), Controls::unchanged(), cancel.clone(), |_| {});
        // Stops the work if the caller goes away before the fill ends.
        let _stop = StopOnDrop(cancel);
        let mut taken = 0u64;
        let mut interval = tokio::time::interval(COLLECT_EVERY);
        loop {
            frames.ring.ask_up_to(taken + ASK_AHEAD);
            match frames.ring.take() {
                Taken::Audio(packet) => {
                    frames.ring.recycle(packet);
                    taken += 1;
                    if taken == 1 && !cache.knows(&key) {
                        // Opened, and neither cached nor being cached: it never will be.
                        return Err(PrepareError::Failed(NOT_CACHED.into()));
                    }
                }
                Taken::End(Ok(())) if taken > 0 => break,
                Taken::End(Ok(())) => return Err(PrepareError::Failed("the track has no audio".into())),
                Taken::End(Err(e)) => return Err(PrepareError::Failed(e)),
                Taken::Empty => {
                    interval.tick().await;
                }
            }
        }
        drop(frames);
        // The fill is put in place by the cache's writer just after the track's end.
        let filled = tokio::task::spawn_blocking(move || cache.wait_filled(&key, FILL_PUBLISHED_WITHIN))
            .await
            .map_err(|e| PrepareError::Failed(e.to_string()))?;
        if filled { Ok(id) } else { Err(PrepareError::Failed(NOT_CACHED.into())) }
    }
}

struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

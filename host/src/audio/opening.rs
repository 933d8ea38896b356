//! Opening a track's media: connecting to it (or starting the program that writes it),
//! probing its format and seeking, on the blocking pool: it may wait on the network.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use prometheus_client::metrics::counter::Counter;
use symphonia::core::io::MediaSource;

use super::decode::SourceDecoder;
use super::encode::EncoderSettings;
use super::fetch::{FetchOptions, HttpSource};
use super::inflow::Readiness;
use super::process_stream;
use super::workers::Workers;
use crate::cache::store::{AudioCache, FillWriter};
use crate::plugins::PluginHost;
use crate::plugins::resolver::Locator;

/// Settings shared by every track.
#[derive(Clone)]
pub struct PipelineConfig {
    pub fetch: FetchOptions,
    pub encoder: EncoderSettings,
    /// Decoded 20 ms blocks kept ready ahead of the encoder.
    pub frames_ahead: usize,
    /// Where filters come from; none runs every chain empty.
    pub plugins: Option<Arc<PluginHost>>,
    /// Where played tracks are kept; none streams every time.
    pub cache: Option<Arc<AudioCache>>,
    /// Where every track's decoding, filtering and encoding runs.
    pub workers: Arc<Workers>,
    /// Counts Opus packets decoded (an Opus source re-encoded, a follower filtered).
    pub decodes: Counter,
}

/// Facts learned when the source opens.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackInfo {
    pub duration_ms: Option<u64>,
}

/// A source opened and probed, ready to decode; `fill` is the cache fill it writes, if any.
pub struct OpenedStream {
    pub decoder: SourceDecoder,
    pub readiness: Arc<Readiness>,
    pub fill: Option<FillWriter>,
}

/// Connects to the media (or starts the program), probes its format and seeks to `start_ms`.
pub fn open_stream(
    locator: &Locator,
    duration_hint_ms: Option<u64>,
    start_ms: u64,
    mut fill: Option<FillWriter>,
    config: &PipelineConfig,
    cancel: &Arc<AtomicBool>,
    on_open: impl FnOnce(TrackInfo) + 'static,
) -> Result<OpenedStream, String> {
    // Whether the source says where it ends: a length, or (for a program's output) a
    // duration its resolver gave. Without one it may be live and never end.
    let (media, readiness, content_type, sized): (Box<dyn MediaSource>, _, Option<String>, bool) = match locator {
        Locator::Process { plugin, program, args } => {
            let host = config.plugins.as_ref().ok_or("process streams need the plugin host")?;
            let run = host.stream_command(plugin, program, args)?;
            let stream = process_stream::spawn(
                run.command,
                run.workdir,
                &config.fetch.runtime,
                cancel.clone(),
                config.fetch.stalls.clone(),
            )
            .map_err(|e| format!("cannot start {program}: {e}"))?;
            let readiness = stream.readiness();
            (Box::new(stream), readiness, None, duration_hint_ms.is_some())
        }
        Locator::Http { url, headers } => {
            let http = HttpSource::open(url, headers.clone(), config.fetch.clone(), cancel.clone())
                .map_err(|e| e.to_string())?;
            let content_type = http.content_type().map(str::to_string);
            let sized = http.byte_len().is_some();
            let readiness = http.readiness();
            (Box::new(http), readiness, content_type, sized)
        }
    };
    let mut decoder = SourceDecoder::open(media, content_type.as_deref()).map_err(|e| e.to_string())?;
    on_open(TrackInfo { duration_ms: decoder.duration_ms() });
    if fill.is_some() && !sized && decoder.duration_ms().is_none() {
        // A live or endless stream is played, not cached: a fill would grow without end in
        // memory and on disk. Dropping it keeps nothing; anyone following streams for itself.
        tracing::info!("the source has no known end; it is not cached");
        fill = None;
    }
    if start_ms > 0 {
        decoder.seek_ms(start_ms);
    }
    Ok(OpenedStream { decoder, readiness, fill })
}

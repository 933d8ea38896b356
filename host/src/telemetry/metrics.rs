//! Prometheus metrics. Counters are shared handles bumped where things happen (the packet
//! clock, outputs, the event stream, the store); gauges of live state are read at scrape time.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProcessLabels {
    pub plugin: String,
    pub program: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginCallLabels {
    pub plugin: String,
    /// ok, error (the plugin answered with an error), timeout, memory or trap.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FilterLabels {
    pub plugin: String,
    pub filter: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HlsLabels {
    /// `playlist`, `init` or `segment`.
    pub kind: &'static str,
    /// `player` or `mount` (live), or `track` (on demand).
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenLabels {
    /// `ogg` or `mp3`.
    pub format: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: String,
}

fn request_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_5, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    /// Audio cache lookups by outcome: hit, miss, follow (joined a fill), corrupt, off.
    pub cache_lookups: Family<CacheLabels, Counter>,
    /// Fills that could not be kept (cut off, failed to write or verify).
    pub cache_fill_failures: Counter,
    pub cache_evictions: Counter,
    pub cache_bytes: Gauge,
    /// 1 while the cache directory cannot be used (tracks stream without it).
    pub cache_disabled: Gauge,
    pub players: Gauge,
    pub playing: Gauge,
    pub frames_sent: Counter,
    pub underruns: Counter,
    pub player_skipped_ticks: Counter,
    pub opus_encodes: Counter,
    pub opus_decodes: Counter,
    pub source_stalls: Counter,
    pub clock_ticks: Counter,
    pub clock_late_ticks: Counter,
    pub clock_skipped_ticks: Counter,
    pub events_dropped: Counter,
    pub store_errors: Counter,
    pub cluster: crate::cluster::ClusterCounters,
    pub requests: Family<RequestLabels, Histogram, fn() -> Histogram>,
    pub plugin_calls: Family<PluginCallLabels, Counter>,
    pub plugin_process_runs: Family<ProcessLabels, Counter>,
    pub plugin_process_refusals: Family<ProcessLabels, Counter>,
    pub filters_bypassed: Family<FilterLabels, Counter>,
    /// Filter instances replaced by fresh ones after running out of memory late in a run.
    pub filter_restarts: Family<FilterLabels, Counter>,
    /// Restarts whose fresh instance was not made ahead: the track waited while it was made.
    pub filter_restart_waits: Family<FilterLabels, Counter>,
    /// HTTP stream listeners connected now.
    pub listeners: Gauge,
    /// Listeners dropped because they fell too far behind.
    pub listener_drops: Counter,
    /// Bytes sent to stream listeners, by format.
    pub listener_bytes: Family<ListenLabels, Counter>,
    /// MP3 encoders running (one per player with live MP3 listeners, one per rewound one).
    pub mp3_encoders: Gauge,
    pub hls_requests: Family<HlsLabels, Counter>,
    /// Bytes of audio all players keep for rewind and live HLS (set at scrape time).
    pub rewind_bytes: Gauge,
    /// Live sources connected to mounts now.
    pub live_sources: Gauge,
    /// Bytes received from live sources.
    pub live_bytes_in: Counter,
    /// Live sources that went away, by reason.
    pub live_source_drops: Family<ReasonLabels, Counter>,
    /// Source connections refused, by reason.
    pub ingest_refused: Family<ReasonLabels, Counter>,
    /// Live frames a mount's source had not ready on its tick (recorded as silence).
    pub live_underruns: Counter,
    /// DJs waiting their turn, by stage.
    pub stage_waiting: Family<StageLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mesastream");
        let m = Self {
            registry: Registry::default(),
            cache_lookups: Family::default(),
            cache_fill_failures: Counter::default(),
            cache_evictions: Counter::default(),
            cache_bytes: Gauge::default(),
            cache_disabled: Gauge::default(),
            players: Gauge::default(),
            playing: Gauge::default(),
            frames_sent: Counter::default(),
            underruns: Counter::default(),
            player_skipped_ticks: Counter::default(),
            opus_encodes: Counter::default(),
            opus_decodes: Counter::default(),
            source_stalls: Counter::default(),
            clock_ticks: Counter::default(),
            clock_late_ticks: Counter::default(),
            clock_skipped_ticks: Counter::default(),
            events_dropped: Counter::default(),
            store_errors: Counter::default(),
            cluster: Default::default(),
            requests: Family::new_with_constructor(request_histogram as fn() -> Histogram),
            plugin_calls: Family::default(),
            plugin_process_runs: Family::default(),
            plugin_process_refusals: Family::default(),
            filters_bypassed: Family::default(),
            filter_restarts: Family::default(),
            filter_restart_waits: Family::default(),
            listeners: Gauge::default(),
            listener_drops: Counter::default(),
            listener_bytes: Family::default(),
            mp3_encoders: Gauge::default(),
            hls_requests: Family::default(),
            rewind_bytes: Gauge::default(),
            live_sources: Gauge::default(),
            live_bytes_in: Counter::default(),
            live_source_drops: Family::default(),
            ingest_refused: Family::default(),
            live_underruns: Counter::default(),
            stage_waiting: Family::default(),
        };
        registry.register("players", "Players in memory", m.players.clone());
        registry.register("players_playing", "Players whose status is playing", m.playing.clone());
        registry.register("frames_sent", "Opus frames sent to voice connections", m.frames_sent.clone());
        registry.register(
            "frame_underruns",
            "Clock ticks where a playing track had no frame ready",
            m.underruns.clone(),
        );
        registry.register(
            "player_skipped_ticks",
            "Ticks players skipped after falling more than 500 ms behind their schedule",
            m.player_skipped_ticks.clone(),
        );
        registry.register(
            "opus_encodes",
            "20 ms frames encoded to Opus (cache fills included)",
            m.opus_encodes.clone(),
        );
        registry.register(
            "opus_decodes",
            "Opus packets decoded (an Opus source re-encoded for a filter or a volume)",
            m.opus_decodes.clone(),
        );
        registry.register(
            "source_stalls",
            "Decoder reads that found no media received yet and waited on a media worker",
            m.source_stalls.clone(),
        );
        registry.register("clock_ticks", "20 ms ticks run by the packet clock lanes", m.clock_ticks.clone());
        registry.register(
            "clock_late_ticks",
            "Ticks in which some streams were called more than 5 ms late",
            m.clock_late_ticks.clone(),
        );
        registry.register(
            "clock_skipped_ticks",
            "Ticks skipped after a stall of more than 300 ms",
            m.clock_skipped_ticks.clone(),
        );
        registry.register("events_dropped", "Events a slow WebSocket client missed", m.events_dropped.clone());
        registry.register("store_errors", "Failed state store operations (each retry counts)", m.store_errors.clone());
        let cluster = [
            ("cluster_adoptions", "Players this node adopted from a node that stopped", &m.cluster.adopted),
            ("cluster_players_lost", "Players another node took while this one was away", &m.cluster.lost),
            ("cluster_handovers", "Players this node moved to another (migrate, drain)", &m.cluster.handed_over),
            ("cluster_heartbeat_failures", "Heartbeat rounds Redis did not answer", &m.cluster.heartbeat_failures),
        ];
        for (name, help, counter) in cluster {
            registry.register(name, help, counter.clone());
        }
        registry.register("http_request_duration_seconds", "HTTP request latency", m.requests.clone());
        registry.register("plugin_calls", "Resolver plugin calls by outcome", m.plugin_calls.clone());
        registry.register(
            "plugin_process_runs",
            "Programs run by plugins through the process capability",
            m.plugin_process_runs.clone(),
        );
        registry.register(
            "plugin_process_refusals",
            "Program runs refused (program not granted, or an option its policy refuses)",
            m.plugin_process_refusals.clone(),
        );
        registry.register(
            "filters_bypassed",
            "Filters taken out of a player's chain after they failed",
            m.filters_bypassed.clone(),
        );
        registry.register(
            "filter_restarts",
            "Filter instances that ran out of memory after a long run and were replaced by fresh ones",
            m.filter_restarts.clone(),
        );
        registry.register(
            "filter_restart_waits",
            "Filter restarts whose fresh instance was not made ahead: the track waited while it was made",
            m.filter_restart_waits.clone(),
        );
        registry.register("listeners", "HTTP stream listeners connected", m.listeners.clone());
        registry.register(
            "listener_drops",
            "Stream listeners dropped after falling behind by more than LISTEN_MAX_LAG_SECONDS",
            m.listener_drops.clone(),
        );
        registry.register("listener_bytes", "Bytes sent to stream listeners", m.listener_bytes.clone());
        registry.register("mp3_encoders", "MP3 encoders running for listeners", m.mp3_encoders.clone());
        registry.register(
            "rewind_bytes",
            "Bytes of audio players keep for rewind and live HLS",
            m.rewind_bytes.clone(),
        );
        registry.register("live_sources", "Live sources connected to mounts", m.live_sources.clone());
        registry.register("live_bytes_in", "Bytes received from live sources", m.live_bytes_in.clone());
        registry.register("live_source_drops", "Live sources that went away, by reason", m.live_source_drops.clone());
        registry.register("ingest_refused", "Source connections refused, by reason", m.ingest_refused.clone());
        registry.register(
            "live_underruns",
            "Ticks a live mount's source had no frame ready (recorded as silence)",
            m.live_underruns.clone(),
        );
        registry.register("stage_waiting", "DJs waiting their turn on a stage", m.stage_waiting.clone());
        registry.register("hls_requests", "HLS requests served, by kind and source", m.hls_requests.clone());
        registry.register("audio_cache_lookups", "Audio cache lookups by outcome", m.cache_lookups.clone());
        registry.register(
            "audio_cache_fill_failures",
            "Cache fills discarded (cut off, not writable, not verified)",
            m.cache_fill_failures.clone(),
        );
        registry.register(
            "audio_cache_evictions",
            "Cached tracks removed to stay under the size cap",
            m.cache_evictions.clone(),
        );
        registry.register("audio_cache_bytes", "Bytes of complete cached tracks", m.cache_bytes.clone());
        registry.register("audio_cache_disabled", "1 while the cache directory is unusable", m.cache_disabled.clone());
        Self { registry, ..m }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

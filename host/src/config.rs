//! Configuration from the environment, with mesastream's variable names and defaults. Bad
//! values stop startup with a message naming the variable (no silent fallbacks).

mod listening;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub use listening::{ListenConfig, LiveConfig, MP3_BITRATES};

use crate::egress::AllowList;
use crate::plugins::grants::ProgramPolicy;
use listening::listen_secret;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("{name}={value:?} is invalid: {why}")]
    Invalid { name: &'static str, value: String, why: String },
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `AUTH_TOKEN`: the bearer token every route but `/ws` requires.
    pub auth_token: String,
    /// `PORT` (8080).
    pub port: u16,
    /// `BIND_ADDRESS` (0.0.0.0).
    pub bind: IpAddr,
    /// `ENCODING_BITRATE` in kbps (128), 6–510.
    pub bitrate_kbps: u32,
    /// `SOURCE_STREAM_CHANNEL_CAPACITY` (16): network chunks buffered per track.
    pub source_channel_capacity: usize,
    /// `SSL_CERT_FILE`: extra PEM roots trusted for `wss://` voice gateways.
    pub extra_ca_file: Option<PathBuf>,
    /// `VOICE_ENCRYPTION_MODE`: preferred transport mode when the server offers it.
    pub voice_mode: Option<String>,
    /// `MEDIA_WORKERS` (number of cores): threads that decode, filter and encode every
    /// track; the count does not grow with players.
    pub media_workers: usize,
    /// `ENCODING_COMPLEXITY` (10): libopus complexity 0–10; lower costs less CPU per frame.
    pub encoding_complexity: u8,
    /// `PACKET_CLOCK_THREADS` (number of cores): lanes of the shared 20 ms clock.
    pub clock_threads: usize,
    /// `PACKET_CLOCK_REALTIME` (false): lanes ask for a low real-time priority when allowed.
    pub clock_realtime: bool,
    /// `FRAME_BUFFER_MS` (300): audio encoded ahead of the clock per player.
    pub frame_buffer_ms: u64,
    /// `REDIS_URI`: keep guild state in Redis instead of the embedded store.
    pub redis_uri: Option<String>,
    /// `REDIS_PREFIX` (mesastream): key prefix, a `:` is appended.
    pub redis_prefix: String,
    /// `DATA_DIR` (data): where the embedded store (`state.redb`) lives.
    pub data_dir: PathBuf,
    /// `WS_AUTH` (false): require the bearer token on `/ws` too (header or `?token=`).
    pub ws_auth: bool,
    /// The Lavalink routes' password (`LAVALINK_PASSWORD`); they are off without one.
    pub lavalink_password: Option<String>,
    /// `OTLP_ENDPOINT`, `OTLP_AUTH`, `OTLP_ORGANIZATION` (and the standard `OTEL_*` ones).
    pub otlp: crate::telemetry::tracing::OtlpSettings,
    /// `PLUGINS_DIR`: folders of resolver and filter plugins. Unset: the first-party plugins
    /// installed beside the binary (`<bin>/../share/mesastream/plugins`), when there;
    /// `none`: no plugins.
    pub plugins_dir: Option<PathBuf>,
    /// `PLUGINS_CONFIG` (`<PLUGINS_DIR>/plugins.toml`): the operator's grants and limits.
    pub plugins_config: Option<PathBuf>,
    /// `PLUGINS_RELOAD_MS` (1000): how often the plugins directory is checked; 0 disables.
    pub plugins_reload_ms: u64,
    /// `PLUGIN_INSTANCES` (1000): the instance pool's size (filters in use at once plus
    /// resolver calls in flight).
    pub plugin_instances: u32,
    /// `AUDIO_CACHE_PATH` (`<DATA_DIR>/audio-cache`): where played tracks are kept as Ogg Opus.
    pub audio_cache_path: Option<PathBuf>,
    /// `AUDIO_CACHE_TTL_SECS` (604800): a cached track not played for this long is removed.
    pub audio_cache_ttl_secs: u64,
    /// `AUDIO_CACHE_MAX_BYTES` (2 GiB): above this the least recently played are removed; 0
    /// turns the cache off.
    pub audio_cache_max_bytes: u64,
    /// `CACHE_WRITER_BUFFER_BYTES` (196608, at least 12000).
    pub cache_writer_buffer_bytes: usize,
    /// `CACHE_READER_BUFFER_BYTES` (8192, at least 6000). The original's 65536 made the read
    /// buffer the largest part of a playing player's memory; a cached track is read 0.3–0.5 s
    /// at a time (5–8 KB at 128 kbit/s), so a larger buffer saves only syscalls.
    pub cache_reader_buffer_bytes: usize,
    /// `MEDIA_ALLOW_HOSTS`: hosts media may come from although they are not public.
    pub media_allow_hosts: AllowList,
    /// `MEDIA_DNS_SERVER` (`ip:port`): resolve media hosts with this server, not the system's.
    pub media_dns_server: Option<SocketAddr>,
    /// `MEDIA_MAX_BYTES` (2 GiB): the most one track may download.
    pub media_max_bytes: u64,
    /// `YT_DLP_PATH`: the yt-dlp that runs when a plugin is granted `yt-dlp`.
    pub yt_dlp_path: Option<PathBuf>,
    /// `YT_DLP_COOKIES`: a cookies file handed (as a copy) to every yt-dlp run.
    pub yt_dlp_cookies: Option<PathBuf>,
    pub limits: Limits,
    pub listen: ListenConfig,
    pub live: LiveConfig,
    /// `NODE_ID` (with `REDIS_URI`): this node's name in a cluster; unset, the node is alone.
    /// `CLUSTER_URL` (`http://<BIND_ADDRESS or 127.0.0.1>:<PORT>`): where the other nodes reach
    /// its API. `NODE_LEASE_MS` (3000): how long its record and its players' leases last.
    pub cluster: Option<crate::cluster::ClusterSettings>,
}

/// How much one node takes on; each bound answers a clear error when reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `MAX_PLAYERS` (5000): players on this node.
    pub players: usize,
    /// `MAX_QUEUE_TRACKS` (1000): tracks waiting in one player's queue.
    pub queue_tracks: usize,
    /// `MAX_PLAYLIST_TRACKS` (500): tracks one resolved or saved playlist may hold.
    pub playlist_tracks: usize,
    /// `MAX_EVENT_CLIENTS` (64): WebSocket event-stream clients at once.
    pub event_clients: usize,
    /// `RESOLVES_PER_GUILD` (2): enqueues being resolved at once for one guild.
    pub resolves_per_guild: usize,
    /// `RESOLVES_PER_NODE` (32): enqueues being resolved at once on this node.
    pub resolves_per_node: usize,
    /// `RATE_LIMIT_PER_MINUTE` (unset: off): requests per minute from one client address.
    pub requests_per_minute: Option<u32>,
    /// `MAX_CONNECTIONS_PER_ADDRESS` (256): open connections from one client address, on the
    /// API port and `INGEST_PORT` together (each further one gets `429` and is closed).
    pub connections_per_address: usize,
    /// `HTTP_HEADER_TIMEOUT_SECONDS` (10): a request head (and, on a kept-alive connection,
    /// the next one) must arrive within this, or the connection is closed.
    pub header_timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            players: 5000,
            queue_tracks: 1000,
            playlist_tracks: 500,
            event_clients: 64,
            resolves_per_guild: 2,
            resolves_per_node: 32,
            requests_per_minute: None,
            connections_per_address: 256,
            header_timeout_secs: 10,
        }
    }
}

fn at_least_one<T: PartialOrd + Default>(v: &T) -> Result<(), String> {
    (*v > T::default()).then_some(()).ok_or_else(|| "must be at least 1".to_string())
}

impl Config {
    /// How programs run when a grant does not say: yt-dlp from `YT_DLP_PATH`, with the
    /// cookies of `YT_DLP_COOKIES`.
    pub fn program_defaults(&self) -> BTreeMap<String, ProgramPolicy> {
        let yt_dlp = ProgramPolicy {
            path: self.yt_dlp_path.clone(),
            cookies: self.yt_dlp_cookies.clone(),
            ..Default::default()
        };
        BTreeMap::from([("yt-dlp".to_string(), yt_dlp)])
    }
}

/// Where `scripts/install.sh` (and the container image) put the first-party plugins:
/// `<prefix>/share/mesastream/plugins` beside `<prefix>/bin/mesastream`.
pub fn installed_plugins_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?.parent()?.join("share/mesastream/plugins");
    dir.is_dir().then_some(dir)
}

fn parse<T: std::str::FromStr>(
    name: &'static str,
    raw: Option<String>,
    default: T,
    check: impl Fn(&T) -> Result<(), String>,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    let Some(value) = raw.filter(|v| !v.trim().is_empty()) else { return Ok(default) };
    let parsed = value.trim().parse::<T>().map_err(|e| ConfigError::Invalid {
        name,
        value: value.clone(),
        why: e.to_string(),
    })?;
    check(&parsed).map_err(|why| ConfigError::Invalid { name, value, why })?;
    Ok(parsed)
}

fn ok<T>(_: &T) -> Result<(), String> {
    Ok(())
}

impl Config {
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let auth_token =
            get("AUTH_TOKEN").filter(|t| !t.trim().is_empty()).ok_or(ConfigError::Missing("AUTH_TOKEN"))?;
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let plugins_dir = match get("PLUGINS_DIR").filter(|v| !v.trim().is_empty()) {
            Some(v) if v.trim() == "none" => None,
            Some(v) => Some(PathBuf::from(v)),
            None => installed_plugins_dir(),
        };
        Ok(Self {
            auth_token: auth_token.trim().to_string(),
            port: parse("PORT", get("PORT"), 8080, ok)?,
            bind: parse("BIND_ADDRESS", get("BIND_ADDRESS"), IpAddr::from([0, 0, 0, 0]), ok)?,
            bitrate_kbps: parse("ENCODING_BITRATE", get("ENCODING_BITRATE"), 128, |v| {
                (6..=510).contains(v).then_some(()).ok_or_else(|| "Opus accepts 6 to 510 kbps".to_string())
            })?,
            source_channel_capacity: parse(
                "SOURCE_STREAM_CHANNEL_CAPACITY",
                get("SOURCE_STREAM_CHANNEL_CAPACITY"),
                16,
                at_least_one,
            )?,
            extra_ca_file: get("SSL_CERT_FILE").filter(|v| !v.trim().is_empty()).map(PathBuf::from),
            voice_mode: get("VOICE_ENCRYPTION_MODE").filter(|v| !v.trim().is_empty()),
            clock_threads: parse("PACKET_CLOCK_THREADS", get("PACKET_CLOCK_THREADS"), cores, at_least_one)?,
            clock_realtime: parse("PACKET_CLOCK_REALTIME", get("PACKET_CLOCK_REALTIME"), false, ok)?,
            media_workers: parse("MEDIA_WORKERS", get("MEDIA_WORKERS"), cores, at_least_one)?,
            encoding_complexity: parse("ENCODING_COMPLEXITY", get("ENCODING_COMPLEXITY"), 10, |v| {
                (0..=10).contains(v).then_some(()).ok_or_else(|| "libopus complexity is 0 to 10".to_string())
            })?,
            frame_buffer_ms: parse("FRAME_BUFFER_MS", get("FRAME_BUFFER_MS"), 300, |v| {
                (40..=5000).contains(v).then_some(()).ok_or_else(|| "must be between 40 and 5000".to_string())
            })?,
            redis_uri: get("REDIS_URI").filter(|v| !v.trim().is_empty()),
            redis_prefix: get("REDIS_PREFIX").filter(|v| !v.trim().is_empty()).unwrap_or_else(|| "mesastream".into()),
            ws_auth: parse("WS_AUTH", get("WS_AUTH"), false, ok)?,
            lavalink_password: get("LAVALINK_PASSWORD").filter(|v| !v.trim().is_empty()),
            otlp: crate::telemetry::tracing::OtlpSettings {
                endpoint: get("OTLP_ENDPOINT").filter(|v| !v.trim().is_empty()),
                auth: get("OTLP_AUTH").filter(|v| !v.trim().is_empty()),
                organization: get("OTLP_ORGANIZATION").filter(|v| !v.trim().is_empty()),
                standard_endpoint: ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
                    .iter()
                    .any(|k| get(k).is_some_and(|v| !v.trim().is_empty())),
            },
            data_dir: PathBuf::from(get("DATA_DIR").filter(|v| !v.trim().is_empty()).unwrap_or_else(|| "data".into())),
            plugins_dir: plugins_dir.clone(),
            plugins_config: get("PLUGINS_CONFIG")
                .filter(|v| !v.trim().is_empty())
                .map(PathBuf::from)
                .or_else(|| plugins_dir.map(|d| d.join("plugins.toml"))),
            plugins_reload_ms: parse("PLUGINS_RELOAD_MS", get("PLUGINS_RELOAD_MS"), 1000, ok)?,
            plugin_instances: parse("PLUGIN_INSTANCES", get("PLUGIN_INSTANCES"), 1000, |v| {
                (16..=100_000).contains(v).then_some(()).ok_or_else(|| "must be between 16 and 100000".to_string())
            })?,
            audio_cache_path: get("AUDIO_CACHE_PATH").filter(|v| !v.trim().is_empty()).map(PathBuf::from),
            audio_cache_ttl_secs: parse("AUDIO_CACHE_TTL_SECS", get("AUDIO_CACHE_TTL_SECS"), 604_800, ok)?,
            audio_cache_max_bytes: parse("AUDIO_CACHE_MAX_BYTES", get("AUDIO_CACHE_MAX_BYTES"), 2 << 30, ok)?,
            cache_writer_buffer_bytes: parse::<usize>(
                "CACHE_WRITER_BUFFER_BYTES",
                get("CACHE_WRITER_BUFFER_BYTES"),
                196_608,
                ok,
            )?
            .max(12_000),
            cache_reader_buffer_bytes: parse::<usize>(
                "CACHE_READER_BUFFER_BYTES",
                get("CACHE_READER_BUFFER_BYTES"),
                8_192,
                ok,
            )?
            .max(6_000),
            media_allow_hosts: {
                let value = get("MEDIA_ALLOW_HOSTS").unwrap_or_default();
                AllowList::parse(&value).map_err(|e| ConfigError::Invalid {
                    name: "MEDIA_ALLOW_HOSTS",
                    why: e.to_string(),
                    value,
                })?
            },
            media_dns_server: get("MEDIA_DNS_SERVER")
                .filter(|v| !v.trim().is_empty())
                .map(|v| parse("MEDIA_DNS_SERVER", Some(v), SocketAddr::from(([0, 0, 0, 0], 53)), ok))
                .transpose()?,
            yt_dlp_path: get("YT_DLP_PATH").filter(|v| !v.trim().is_empty()).map(PathBuf::from),
            yt_dlp_cookies: get("YT_DLP_COOKIES").filter(|v| !v.trim().is_empty()).map(PathBuf::from),
            limits: {
                let d = Limits::default();
                Limits {
                    players: parse("MAX_PLAYERS", get("MAX_PLAYERS"), d.players, at_least_one)?,
                    queue_tracks: parse("MAX_QUEUE_TRACKS", get("MAX_QUEUE_TRACKS"), d.queue_tracks, at_least_one)?,
                    playlist_tracks: parse(
                        "MAX_PLAYLIST_TRACKS",
                        get("MAX_PLAYLIST_TRACKS"),
                        d.playlist_tracks,
                        at_least_one,
                    )?,
                    event_clients: parse("MAX_EVENT_CLIENTS", get("MAX_EVENT_CLIENTS"), d.event_clients, at_least_one)?,
                    resolves_per_guild: parse(
                        "RESOLVES_PER_GUILD",
                        get("RESOLVES_PER_GUILD"),
                        d.resolves_per_guild,
                        at_least_one,
                    )?,
                    resolves_per_node: parse(
                        "RESOLVES_PER_NODE",
                        get("RESOLVES_PER_NODE"),
                        d.resolves_per_node,
                        at_least_one,
                    )?,
                    requests_per_minute: get("RATE_LIMIT_PER_MINUTE")
                        .filter(|v| !v.trim().is_empty())
                        .map(|v| parse("RATE_LIMIT_PER_MINUTE", Some(v), 0u32, at_least_one))
                        .transpose()?,
                    connections_per_address: parse(
                        "MAX_CONNECTIONS_PER_ADDRESS",
                        get("MAX_CONNECTIONS_PER_ADDRESS"),
                        d.connections_per_address,
                        at_least_one,
                    )?,
                    header_timeout_secs: parse(
                        "HTTP_HEADER_TIMEOUT_SECONDS",
                        get("HTTP_HEADER_TIMEOUT_SECONDS"),
                        d.header_timeout_secs,
                        at_least_one,
                    )?,
                }
            },
            listen: ListenConfig {
                public: parse("LISTEN_PUBLIC", get("LISTEN_PUBLIC"), false, ok)?,
                secret: listen_secret("LISTEN_SECRET", get("LISTEN_SECRET"))?,
                previous_secret: listen_secret("LISTEN_SECRET_PREVIOUS", get("LISTEN_SECRET_PREVIOUS"))?,
                rewind_seconds: parse("REWIND_SECONDS", get("REWIND_SECONDS"), 300, |v| {
                    (*v <= 4 * 3600).then_some(()).ok_or_else(|| "at most 14400 (4 hours)".to_string())
                })?,
                rewind_max_bytes: parse("REWIND_MAX_BYTES", get("REWIND_MAX_BYTES"), 512 << 20, ok)?,
                max_lag_seconds: parse("LISTEN_MAX_LAG_SECONDS", get("LISTEN_MAX_LAG_SECONDS"), 30, at_least_one)?,
                mp3_bitrate_kbps: parse("LISTEN_MP3_BITRATE", get("LISTEN_MP3_BITRATE"), 128, |v| {
                    MP3_BITRATES.contains(v).then_some(()).ok_or_else(|| format!("one of {MP3_BITRATES:?}"))
                })?,
                max_listeners: parse("MAX_LISTENERS", get("MAX_LISTENERS"), 10_000, at_least_one)?,
                max_listeners_per_token: parse(
                    "MAX_LISTENERS_PER_TOKEN",
                    get("MAX_LISTENERS_PER_TOKEN"),
                    100,
                    at_least_one,
                )?,
                max_listeners_per_address: parse(
                    "MAX_LISTENERS_PER_ADDRESS",
                    get("MAX_LISTENERS_PER_ADDRESS"),
                    20,
                    at_least_one,
                )?,
            },
            live: LiveConfig {
                ingest_port: get("INGEST_PORT")
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| parse("INGEST_PORT", Some(v), 0u16, ok))
                    .transpose()?,
                header_timeout_secs: parse(
                    "INGEST_HEADER_TIMEOUT_SECONDS",
                    get("INGEST_HEADER_TIMEOUT_SECONDS"),
                    5,
                    at_least_one,
                )?,
                idle_secs: parse("INGEST_IDLE_SECONDS", get("INGEST_IDLE_SECONDS"), 10, at_least_one)?,
                grace_secs: parse("LIVE_GRACE_SECONDS", get("LIVE_GRACE_SECONDS"), 15, ok)?,
                failures_per_minute: parse(
                    "INGEST_FAILURES_PER_MINUTE",
                    get("INGEST_FAILURES_PER_MINUTE"),
                    10,
                    at_least_one,
                )?,
            },
            media_max_bytes: parse("MEDIA_MAX_BYTES", get("MEDIA_MAX_BYTES"), 2 << 30, at_least_one)?,
            cluster: cluster_settings(&get)?,
        })
    }
}

/// The cluster settings, when `NODE_ID` is set.
fn cluster_settings(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Option<crate::cluster::ClusterSettings>, ConfigError> {
    let Some(node_id) = get("NODE_ID").map(|v| v.trim().to_string()).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let name_ok = node_id.len() <= 64 && node_id.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !name_ok {
        let why = "use up to 64 letters, digits, '.', '_' or '-'".to_string();
        return Err(ConfigError::Invalid { name: "NODE_ID", value: node_id, why });
    }
    if get("REDIS_URI").is_none_or(|v| v.trim().is_empty()) {
        let why = "a cluster is coordinated through Redis: set REDIS_URI too".to_string();
        return Err(ConfigError::Invalid { name: "NODE_ID", value: node_id, why });
    }
    let lease_ms: u64 = parse("NODE_LEASE_MS", get("NODE_LEASE_MS"), 3000, |v| {
        (500..=60_000).contains(v).then_some(()).ok_or_else(|| "must be between 500 and 60000".to_string())
    })?;
    let url = match get("CLUSTER_URL").map(|v| v.trim().trim_end_matches('/').to_string()).filter(|v| !v.is_empty()) {
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => url,
        Some(url) => {
            let why = "an http:// or https:// address of this node's API".to_string();
            return Err(ConfigError::Invalid { name: "CLUSTER_URL", value: url, why });
        }
        None => {
            let bind: IpAddr = parse("BIND_ADDRESS", get("BIND_ADDRESS"), IpAddr::from([0, 0, 0, 0]), ok)?;
            let host = if bind.is_unspecified() { IpAddr::from([127, 0, 0, 1]) } else { bind };
            let port: u16 = parse("PORT", get("PORT"), 8080, ok)?;
            format!("http://{}", SocketAddr::new(host, port))
        }
    };
    Ok(Some(crate::cluster::ClusterSettings { node_id, url, lease: Duration::from_millis(lease_ms) }))
}

#[cfg(test)]
mod tests;

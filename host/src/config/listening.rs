//! The settings of live sources and of listeners over HTTP.

use super::ConfigError;

/// Live sources: Icecast-style ingest into mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveConfig {
    /// `INGEST_PORT`: a second port for source clients (`/{mount}` as Icecast takes it, and
    /// `/admin/metadata`). Unset: sources use the API port's `/live/{mount}` only.
    pub ingest_port: Option<u16>,
    /// `INGEST_HEADER_TIMEOUT_SECONDS` (5): a source's request head must arrive within this.
    pub header_timeout_secs: u64,
    /// `INGEST_IDLE_SECONDS` (10): a source that sends nothing for this long is dropped.
    pub idle_secs: u64,
    /// `LIVE_GRACE_SECONDS` (15): how long a `live:` track waits for its source to come back.
    pub grace_secs: u64,
    /// `INGEST_FAILURES_PER_MINUTE` (10): failed source logins allowed per address a minute;
    /// one more, and the address is refused (429) until the allowance refills.
    pub failures_per_minute: u32,
}

/// Listening over HTTP: `/players/{id}/listen`, HLS, listen tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct ListenConfig {
    /// `LISTEN_PUBLIC` (false): listener routes need no token.
    pub public: bool,
    /// `LISTEN_SECRET`: the key listen tokens are signed with (at least 32 characters).
    /// Unset: a random key per start, so tokens end with the process.
    pub secret: Option<String>,
    /// `LISTEN_SECRET_PREVIOUS`: a key rotated out; tokens it signed are still accepted.
    pub previous_secret: Option<String>,
    /// `REWIND_SECONDS` (300): audio each player keeps for `?rewind=` and live HLS.
    pub rewind_seconds: u64,
    /// `REWIND_MAX_BYTES` (512 MiB): what all players' rewind buffers hold together.
    pub rewind_max_bytes: usize,
    /// `LISTEN_MAX_LAG_SECONDS` (30): a listener further behind than this is dropped.
    pub max_lag_seconds: u64,
    /// `LISTEN_MP3_BITRATE` (128): kbit/s of `?format=mp3` streams.
    pub mp3_bitrate_kbps: u32,
    /// `MAX_LISTENERS` (10000): HTTP stream listeners on this node at once.
    pub max_listeners: usize,
    /// `MAX_LISTENERS_PER_TOKEN` (100): stream listeners one listen token may bring at once.
    pub max_listeners_per_token: usize,
    /// `MAX_LISTENERS_PER_ADDRESS` (20): stream listeners from one client address at once.
    pub max_listeners_per_address: usize,
}

impl std::fmt::Debug for ListenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenConfig")
            .field("public", &self.public)
            .field("secret", &self.secret.as_ref().map(|_| "<set>"))
            .field("previous_secret", &self.previous_secret.as_ref().map(|_| "<set>"))
            .field("rewind_seconds", &self.rewind_seconds)
            .field("rewind_max_bytes", &self.rewind_max_bytes)
            .field("max_lag_seconds", &self.max_lag_seconds)
            .field("mp3_bitrate_kbps", &self.mp3_bitrate_kbps)
            .field("max_listeners", &self.max_listeners)
            .field("max_listeners_per_token", &self.max_listeners_per_token)
            .field("max_listeners_per_address", &self.max_listeners_per_address)
            .finish()
    }
}

/// The MP3 bit rates LAME takes in MPEG-1 Layer III at 48 kHz.
pub const MP3_BITRATES: [u32; 13] = [32, 40, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320];

pub(super) fn listen_secret(name: &'static str, raw: Option<String>) -> Result<Option<String>, ConfigError> {
    match raw.filter(|v| !v.trim().is_empty()) {
        Some(v) if v.trim().len() < 32 => {
            Err(ConfigError::Invalid { name, value: "<hidden>".into(), why: "use at least 32 characters".into() })
        }
        other => Ok(other.map(|v| v.trim().to_string())),
    }
}

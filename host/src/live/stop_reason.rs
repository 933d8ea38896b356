//! Why a live source went off its mount: said in `LiveSourceDisconnected` and counted by kind
//! in the metrics.

/// Why a live source stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceStop {
    /// Its stream ended.
    Ended,
    /// Its stream could not be read on (why, as the decoder said).
    Failed(String),
    /// Another source of the mount took its place.
    Replaced,
    /// The mount was removed.
    Removed,
    /// It sent nothing for the idle timeout.
    Stalled,
    /// Its connection closed.
    Disconnected,
    /// It played for the mount's longest allowed time.
    MaxDuration,
    /// Its stage took it off air (`kicked`, `skipped`, `slot_over`, `gone`).
    OffAir(&'static str),
}

impl SourceStop {
    /// The kind alone, as the metrics count it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Ended => "ended",
            Self::Failed(_) => "failed",
            Self::Replaced => "replaced",
            Self::Removed => "removed",
            Self::Stalled => "stalled",
            Self::Disconnected => "disconnected",
            Self::MaxDuration => "max_duration",
            Self::OffAir(why) => why,
        }
    }
}

impl std::fmt::Display for SourceStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Failed(why) => write!(f, "failed: {why}"),
            other => f.write_str(other.kind()),
        }
    }
}

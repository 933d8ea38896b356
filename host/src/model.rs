//! The wire types of the mesastream contract: ids as strings (accepted as strings or integers),
//! lowercase enums, and field order as the original emits them.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest name (of a mount, and of anything else named by users) the node takes.
pub const MAX_NAME: usize = 64;

/// The one rule for every user-chosen name that ends up inside a token, a store key or a URL
/// path: 1 to [`MAX_NAME`] ASCII letters, digits, `-` or `_`. Nothing in such a name can be
/// read as a separator (`,` `/` `:` `|`), a query or an escape.
pub fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A Discord snowflake: written as a JSON string, read from a string or an unsigned integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub u64);

impl std::str::FromStr for Id {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim().parse().map(Id)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl Visitor<'_> for IdVisitor {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a snowflake id as a string or unsigned integer")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Id, E> {
                Ok(Id(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Id, E> {
                u64::try_from(v).map(Id).map_err(|_| E::custom("id must not be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Id, E> {
                v.parse().map(Id).map_err(|_| E::custom(format!("invalid id {v:?}")))
            }
        }
        d.deserialize_any(IdVisitor)
    }
}

/// What the bot sends to create a player or move its connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoiceBridgePayload {
    pub guild_id: Id,
    pub player_id: Id,
    pub channel_id: Id,
    pub user_id: Id,
    pub session_id: String,
    pub token: String,
    pub endpoint: String,
    pub gateway_url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlayerStatus {
    Idle,
    Playing,
    Paused,
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Equalizer {
    pub bass: f32,
    pub mid: f32,
    pub treble: f32,
}

impl Default for Equalizer {
    fn default() -> Self {
        Self { bass: 1.0, mid: 1.0, treble: 1.0 }
    }
}

impl Equalizer {
    /// The filter the equalizer route drives.
    pub const FILTER: &str = "threeBandEqualizer";

    pub fn is_flat(&self) -> bool {
        [self.bass, self.mid, self.treble].iter().all(|v| (v - 1.0).abs() < 1e-3)
    }

    pub fn entry(&self) -> FilterEntry {
        FilterEntry {
            name: Self::FILTER.to_string(),
            config: serde_json::json!({ "bass": self.bass, "mid": self.mid, "treble": self.treble }),
        }
    }
}

/// One filter of a player's chain: a filter name from a loaded plugin and its JSON config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterEntry {
    pub name: String,
    #[serde(default)]
    pub config: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackMetadata {
    pub artist: String,
    pub title: String,
    pub duration_ms: u64,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Track {
    pub id: String,
    /// `youtube`, `soundcloud`, or `http` for a direct media link.
    pub source: String,
    pub source_url: String,
    pub stream_url: String,
    pub metadata: TrackMetadata,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlayerSnapshot {
    pub player_id: Id,
    pub connection: VoiceBridgePayload,
    pub status: PlayerStatus,
    pub queue: Vec<Track>,
    pub current_track: Option<Track>,
    pub position_ms: u64,
    pub volume: f32,
    pub equalizer: Equalizer,
    pub voice_connected: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playback_session_id: Option<String>,
    /// The filter chain (`PUT /players/{id}/filters`), the equalizer's entry included; omitted
    /// when empty. Saved with the player so another node can take it over as it was.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<FilterEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnqueueRequest {
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurrentTrackResponse {
    pub track: Track,
    pub position_ms: u64,
    pub duration_ms: u64,
    pub position: String,
    pub duration: String,
    pub remaining: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeekRequest {
    pub position_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeRequest {
    pub volume: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlaylistSnapshot {
    pub player_id: Id,
    pub name: String,
    pub tracks: Vec<Track>,
}

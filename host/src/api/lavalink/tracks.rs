//! Tracks as Lavalink clients see them: `/v4/loadtracks` through the same lookup the
//! mesastream routes use, and the encoded track decoded back (`/v4/decodetrack(s)`).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::LavalinkState;
use super::encoded_track::EncodedTrack;
use super::error::{LavalinkError, LavalinkResult};
use super::extract::{JsonBody, Query};
use crate::player::lookup::DirectError;
use crate::plugins::resolver::{ResolveFailure, Resolved, ResolvedTrack};

/// lavaplayer's length of a stream ("unknown").
const STREAM_LENGTH: i64 = i64::MAX;
/// lavaplayer's author for a file that names none.
const UNKNOWN_AUTHOR: &str = "Unknown artist";

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Track {
    pub encoded: String,
    pub info: TrackInfo,
    pub plugin_info: Value,
    pub user_data: Value,
}

/// In the order Lavalink's serializer writes the fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackInfo {
    pub identifier: String,
    pub is_seekable: bool,
    pub author: String,
    pub length: i64,
    pub is_stream: bool,
    pub position: i64,
    pub title: String,
    pub uri: Option<String>,
    pub source_name: String,
    pub artwork_url: Option<String>,
    pub isrc: Option<String>,
}

impl Track {
    /// The JSON form of an encoded track, its blob written afresh.
    pub fn from_encoded(t: EncodedTrack) -> LavalinkResult<Self> {
        let encoded = t.encode().map_err(|e| LavalinkError::internal(e.to_string()))?;
        Ok(Self {
            encoded,
            info: TrackInfo {
                identifier: t.identifier,
                is_seekable: !t.is_stream,
                author: t.author,
                length: t.length_ms,
                is_stream: t.is_stream,
                position: t.position_ms,
                title: t.title,
                uri: t.uri,
                source_name: t.source_name,
                artwork_url: t.artwork_url,
                isrc: t.isrc,
            },
            plugin_info: json!({}),
            user_data: json!({}),
        })
    }
}

/// The `http` source's extra field: the container it was probed as, here the file's
/// extension (what lavaplayer's probe would name for the common ones).
fn http_probe(uri: &str) -> Vec<u8> {
    let path = uri.split(['?', '#']).next().unwrap_or(uri);
    let extension = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).filter(|e| e.len() <= 8);
    let probe = match extension.as_deref() {
        Some("mp3") => "mp3",
        Some("m4a" | "mp4" | "aac") => "mp4",
        Some("flac") => "flac",
        Some("ogg" | "opus" | "oga") => "ogg",
        Some("wav") => "wav",
        Some("webm" | "mkv") => "matroska/webm",
        _ => "mp3",
    };
    let mut extra = (probe.len() as u16).to_be_bytes().to_vec();
    extra.extend_from_slice(probe.as_bytes());
    extra
}

fn source_extra(source_name: &str, uri: &str) -> Vec<u8> {
    if source_name == "http" { http_probe(uri) } else { Vec::new() }
}

fn from_resolved(r: ResolvedTrack) -> EncodedTrack {
    let length = match (r.is_stream, r.duration_ms) {
        (true, _) => STREAM_LENGTH,
        (false, Some(ms)) => ms as i64,
        (false, None) => 0,
    };
    EncodedTrack {
        title: r.title,
        author: if r.author.trim().is_empty() { UNKNOWN_AUTHOR.into() } else { r.author },
        length_ms: length,
        source_extra: source_extra(&r.source_name, &r.uri),
        identifier: r.identifier,
        is_stream: r.is_stream,
        uri: Some(r.uri),
        artwork_url: r.artwork_url,
        isrc: None,
        source_name: r.source_name,
        position_ms: 0,
    }
}

fn from_live(t: crate::model::Track) -> EncodedTrack {
    EncodedTrack {
        title: t.metadata.title,
        author: t.metadata.artist,
        length_ms: STREAM_LENGTH,
        source_extra: Vec::new(),
        identifier: t.source_url.clone(),
        is_stream: true,
        uri: Some(t.source_url),
        artwork_url: None,
        isrc: None,
        source_name: t.source,
        position_ms: 0,
    }
}

fn from_direct(t: crate::model::Track) -> EncodedTrack {
    EncodedTrack {
        title: t.metadata.title,
        author: UNKNOWN_AUTHOR.into(),
        // Not probed before it plays: the length is learned when the file opens.
        length_ms: t.metadata.duration_ms as i64,
        source_extra: source_extra(&t.source, &t.source_url),
        identifier: t.source_url.clone(),
        is_stream: false,
        uri: Some(t.source_url),
        artwork_url: None,
        isrc: None,
        source_name: t.source,
        position_ms: 0,
    }
}

fn tracks(found: Vec<ResolvedTrack>) -> LavalinkResult<Vec<Track>> {
    found.into_iter().map(|r| Track::from_encoded(from_resolved(r))).collect()
}

/// A load that failed: the real reason, not Lavalink's one generic sentence.
fn load_error(message: String, severity: &str) -> Value {
    json!({
        "loadType": "error",
        "data": { "message": message, "severity": severity, "cause": message, "causeStackTrace": "" },
    })
}

#[derive(Deserialize)]
pub struct LoadQuery {
    identifier: Option<String>,
}

/// `GET /v4/loadtracks?identifier=`: always 200 with a load result, as Lavalink answers.
pub async fn load(State(state): State<LavalinkState>, Query(query): Query<LoadQuery>) -> LavalinkResult<Json<Value>> {
    let identifier = query.identifier.map(|i| i.trim().to_string()).filter(|i| !i.is_empty());
    let Some(identifier) = identifier else {
        return Err(LavalinkError::bad_request("The identifier query parameter is required"));
    };
    load_result(&state, &identifier).await.map(Json)
}

/// What `identifier` loads as: through the resolver plugins when one takes it, else as a
/// direct link.
pub async fn load_result(state: &LavalinkState, identifier: &str) -> LavalinkResult<Value> {
    let registry = &state.app.registry;
    if let Some(name) = crate::player::track::live_mount(identifier) {
        // A live mount: a stream, played by following the mount (see `live`).
        return Ok(match registry.ctx.live.get(name) {
            Some(mount) => {
                let track = crate::player::track::live_track(name, mount.title().as_deref());
                json!({"loadType": "track", "data": Track::from_encoded(from_live(track))?})
            }
            None => json!({"loadType": "empty", "data": null}),
        });
    }
    if let Some(host) = registry.resolvers_for(identifier) {
        let resolved =
            registry.resolve(host, identifier, None).await.map_err(|e| LavalinkError::internal(e.to_string()))?;
        return Ok(match resolved {
            Ok(Resolved::Track(t)) => json!({"loadType": "track", "data": Track::from_encoded(from_resolved(*t))?}),
            Ok(Resolved::Playlist { name, tracks: found, selected }) => json!({
                "loadType": "playlist",
                "data": {
                    "info": { "name": name, "selectedTrack": selected.map_or(-1, i64::from) },
                    "pluginInfo": {},
                    "tracks": tracks(found)?,
                },
            }),
            Ok(Resolved::Search(found)) => json!({"loadType": "search", "data": tracks(found)?}),
            Ok(Resolved::Empty) | Err(ResolveFailure::Unsupported) => json!({"loadType": "empty", "data": null}),
            Err(e @ (ResolveFailure::Unavailable(_) | ResolveFailure::Parse(_))) => load_error(e.to_string(), "common"),
            Err(e @ ResolveFailure::Busy(_)) => load_error(e.to_string(), "suspicious"),
            Err(e @ ResolveFailure::Failed { .. }) => load_error(e.to_string(), "fault"),
        });
    }
    Ok(match registry.direct_track(identifier).await {
        Ok(track) => json!({"loadType": "track", "data": Track::from_encoded(from_direct(track))?}),
        // Not a link, and no resolver takes it: nothing matches, as Lavalink says.
        Err(DirectError::Url(_)) => json!({"loadType": "empty", "data": null}),
        Err(e @ DirectError::Unavailable { .. }) => load_error(e.to_string(), "common"),
        Err(e @ DirectError::Internal(_)) => load_error(e.to_string(), "fault"),
    })
}

/// The engine's track for an encoded one: played from its link (resolved again when it
/// starts, as tracks restored after a restart are).
pub fn engine_track(t: &EncodedTrack) -> crate::model::Track {
    let link = t.uri.clone().unwrap_or_else(|| t.identifier.clone());
    crate::model::Track {
        id: String::new(),
        source: t.source_name.clone(),
        source_url: link.clone(),
        stream_url: link.clone(),
        metadata: crate::model::TrackMetadata {
            artist: t.author.clone(),
            title: t.title.clone(),
            duration_ms: if t.is_stream { 0 } else { u64::try_from(t.length_ms).unwrap_or(0) },
            url: link,
        },
        error: None,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecodeQuery {
    encoded_track: Option<String>,
    track: Option<String>,
}

fn decode(encoded: &str) -> LavalinkResult<Track> {
    // Lavalink answers a blob it cannot read with 500; the message says what is wrong.
    let track =
        EncodedTrack::decode(encoded).map_err(|e| LavalinkError::internal(format!("Failed to decode track: {e}")))?;
    Track::from_encoded(track)
}

/// `GET /v4/decodetrack?encodedTrack=` (or `track=`).
pub async fn decode_one(Query(query): Query<DecodeQuery>) -> LavalinkResult<Json<Track>> {
    let encoded = query.encoded_track.or(query.track).filter(|t| !t.trim().is_empty());
    let encoded = encoded.ok_or_else(|| LavalinkError::bad_request("No track to decode provided"))?;
    decode(&encoded).map(Json)
}

/// `POST /v4/decodetracks` with a JSON array of encoded tracks.
pub async fn decode_many(JsonBody(encoded): JsonBody<Vec<String>>) -> LavalinkResult<Json<Vec<Track>>> {
    if encoded.is_empty() {
        return Err(LavalinkError::bad_request("No tracks to decode provided"));
    }
    encoded.iter().map(|e| decode(e)).collect::<LavalinkResult<Vec<_>>>().map(Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_track_loads_as_a_stream_and_plays_as_the_mount() {
        let loaded = from_live(crate::player::track::live_track("studio", Some("Night Shift")));
        assert!(loaded.is_stream && loaded.length_ms == STREAM_LENGTH);
        let decoded = EncodedTrack::decode(&loaded.encode().unwrap()).unwrap();
        // What a player is given back for it: the mount, as `live:studio` from the queue.
        let played = engine_track(&decoded);
        assert_eq!((played.source.as_str(), played.source_url.as_str()), ("live", "live:studio"));
        assert_eq!(crate::player::track::live_mount(&played.source_url), Some("studio"));
    }

    #[test]
    fn http_tracks_carry_their_container_as_lavaplayer_writes_it() {
        assert_eq!(http_probe("http://h/a.MP3?x=1"), b"\x00\x03mp3");
        assert_eq!(http_probe("http://h/a.webm"), b"\x00\x0dmatroska/webm");
        assert!(source_extra("youtube", "https://youtu.be/x").is_empty());
    }
}

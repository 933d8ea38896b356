//! Playlists: `playlist:<name>` reads the guild's saved playlist through `library`; any
//! other query this plugin is routed (remote playlists) is expanded once through the
//! other resolvers (`delegate`) and the result kept in `kv` for [`EXPANSION_TTL_SECS`], so
//! enqueueing the same playlist again does not run yt-dlp again.

wit_bindgen::generate!({
    world: "resolver",
    path: "../../wit/deps/plugin-0.1.0",
    additional_derives: [serde::Serialize, serde::Deserialize],
});

use exports::mesastream::plugin::resolve::Guest;
use mesastream::plugin::log::{Level, log};
use mesastream::plugin::types::{Context, Playlist, Resolution, ResolveError, Track};
use mesastream::plugin::{delegate, kv, library};
use serde::Deserialize;

/// How long a remote playlist's expansion is reused.
const EXPANSION_TTL_SECS: u32 = 3600;
const SAVED_PREFIX: &str = "playlist:";

/// What this plugin reads of a saved track (the contract's `Track`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SavedTrack {
    id: String,
    source: String,
    source_url: String,
    metadata: SavedMetadata,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SavedMetadata {
    artist: String,
    title: String,
    duration_ms: u64,
}

struct Playlists;

impl Guest for Playlists {
    fn resolve(query: String, context: Context) -> Result<Resolution, ResolveError> {
        let query = query.trim();
        match query.strip_prefix(SAVED_PREFIX) {
            Some(name) => saved(name.trim(), &context),
            None => remote(query, &context),
        }
    }
}

fn saved(name: &str, context: &Context) -> Result<Resolution, ResolveError> {
    let guild = context
        .guild_id
        .as_deref()
        .ok_or_else(|| ResolveError::Unavailable("saved playlists belong to a guild; this query has none".into()))?;
    let entries = library::playlist(guild, name).map_err(|e| match e {
        library::Error::Denied(why) => ResolveError::Busy(format!("saved playlists are not available: {why}")),
        library::Error::Failed(why) => ResolveError::Busy(format!("cannot read playlist {name}: {why}")),
    })?;
    let entries = entries.ok_or_else(|| ResolveError::Unavailable(format!("playlist {name} not found")))?;
    let tracks = entries
        .iter()
        .map(|json| serde_json::from_str::<SavedTrack>(json).map(saved_track))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ResolveError::Parse(format!("playlist {name} holds an unreadable track: {e}")))?;
    Ok(Resolution::Playlist(Playlist { name: name.to_string(), tracks, selected: None }))
}

/// A saved track is played again from its source URL, resolved when it starts.
fn saved_track(t: SavedTrack) -> Track {
    Track {
        identifier: t.id,
        title: t.metadata.title,
        author: t.metadata.artist,
        duration_ms: Some(t.metadata.duration_ms).filter(|ms| *ms > 0),
        artwork_url: None,
        is_stream: false,
        source_name: t.source,
        uri: t.source_url,
        locator: None,
    }
}

fn remote(query: &str, context: &Context) -> Result<Resolution, ResolveError> {
    let key = format!("expansion:{query}");
    match kv::get(&key) {
        Ok(Some(bytes)) => match serde_json::from_slice::<Playlist>(&bytes) {
            Ok(playlist) => {
                log(Level::Debug, &format!("{query}: {} tracks from the cache", playlist.tracks.len()));
                return Ok(Resolution::Playlist(playlist));
            }
            Err(e) => log(Level::Warn, &format!("{query}: dropping an unreadable cache entry ({e})")),
        },
        Ok(None) => {}
        Err(e) => log(Level::Warn, &format!("{query}: cache unavailable ({e:?}); resolving")),
    }
    let mut resolution = delegate::resolve(query, context)?;
    if let Resolution::Playlist(playlist) = &mut resolution {
        // Stream URLs expire: entries are resolved again when they play, whether they came
        // from the cache or not.
        playlist.tracks.iter_mut().for_each(|t| t.locator = None);
        match serde_json::to_vec(&playlist) {
            Ok(bytes) => {
                if let Err(e) = kv::set(&key, &bytes, Some(EXPANSION_TTL_SECS)) {
                    log(Level::Warn, &format!("{query}: not cached ({e:?})"));
                }
            }
            Err(e) => log(Level::Warn, &format!("{query}: not cached ({e})")),
        }
    }
    Ok(resolution)
}

export!(Playlists);

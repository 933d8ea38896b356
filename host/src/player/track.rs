//! Turning an enqueued URL into a track: validation and the metadata the contract carries.

use url::Url;
use uuid::Uuid;

use crate::model::{Track, TrackMetadata};
use crate::plugins::resolver::{Locator, ResolvedTrack};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TrackUrlError {
    #[error("invalid URL: {0}")]
    Invalid(String),
}

/// Parses an enqueued URL; only absolute http(s) URLs are playable.
pub fn parse_url(raw: &str) -> Result<Url, TrackUrlError> {
    let trimmed = raw.trim();
    let url = Url::parse(trimmed).map_err(|e| TrackUrlError::Invalid(format!("{trimmed:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(TrackUrlError::Invalid(format!("{trimmed:?}: only http and https URLs can be played")));
    }
    Ok(url)
}

/// The contract's source kind for a URL.
pub fn source_kind(url: &Url) -> &'static str {
    match url.domain() {
        Some("youtube.com" | "www.youtube.com" | "youtu.be" | "music.youtube.com") => "youtube",
        Some("soundcloud.com" | "www.soundcloud.com" | "on.soundcloud.com") => "soundcloud",
        _ => "http",
    }
}

/// A track for a direct media link; the title is the file name until the source says more.
pub fn direct_track(url: &Url, raw: &str) -> Track {
    let title = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .unwrap_or_else(|| url.host_str().unwrap_or("stream").to_string());
    let raw = raw.trim().to_string();
    Track {
        id: Uuid::new_v4().to_string(),
        source: source_kind(url).to_string(),
        source_url: raw.clone(),
        stream_url: raw.clone(),
        metadata: TrackMetadata { artist: "Unknown".into(), title, duration_ms: 0, url: raw },
        error: None,
    }
}

/// The `source` of a track that follows a live mount.
pub const LIVE_SOURCE: &str = "live";

/// The mount a `live:{mount}` query names.
pub fn live_mount(query: &str) -> Option<&str> {
    query.trim().strip_prefix("live:")
}

/// A track following live mount `mount`: a stream with no duration, titled as the mount is
/// now (or by its name).
pub fn live_track(mount: &str, title: Option<&str>) -> Track {
    let url = format!("live:{mount}");
    Track {
        id: Uuid::new_v4().to_string(),
        source: LIVE_SOURCE.to_string(),
        source_url: url.clone(),
        stream_url: url.clone(),
        metadata: TrackMetadata {
            artist: "Live".into(),
            title: title.unwrap_or(mount).to_string(),
            duration_ms: 0,
            url,
        },
        error: None,
    }
}

/// The contract's track for what a resolver found; `source_url` is what was enqueued (or
/// the entry's own link for playlist entries).
pub fn resolved_track(r: ResolvedTrack, source_url: String) -> Track {
    let stream_url = match &r.locator {
        Some(Locator::Http { url, .. }) => url.clone(),
        _ => source_url.clone(),
    };
    Track {
        id: Uuid::new_v4().to_string(),
        source: r.source_name,
        source_url,
        stream_url,
        metadata: TrackMetadata {
            artist: if r.author.trim().is_empty() { "Unknown".into() } else { r.author },
            title: r.title,
            duration_ms: r.duration_ms.unwrap_or(0),
            url: r.uri,
        },
        error: None,
    }
}

/// A path segment as text: `%XX` escapes decoded; `+` stays a plus (it means a space only
/// in form data, not in a path).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_cannot_be_played() {
        for bad in ["", "true", "false", "ftp://x/y.mp3", "file:///etc/passwd", "not a url", "http://"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        assert!(parse_url(" https://example.com/a.mp3 ").is_ok());
    }

    #[test]
    fn names_the_source_and_title() {
        let url = parse_url("https://youtu.be/abc").unwrap();
        assert_eq!(source_kind(&url), "youtube");
        let url = parse_url("http://127.0.0.1:8000/my%20song.mp3").unwrap();
        let track = direct_track(&url, "http://127.0.0.1:8000/my%20song.mp3");
        assert_eq!(track.source, "http");
        assert_eq!(track.metadata.title, "my song.mp3");
        assert_eq!(track.stream_url, track.source_url);
        let url = parse_url("http://127.0.0.1:8000/AC+DC%20-%20T.N.T%C3%A9.mp3").unwrap();
        assert_eq!(direct_track(&url, url.as_str()).metadata.title, "AC+DC - T.N.Té.mp3", "a plus is a plus");
    }
}

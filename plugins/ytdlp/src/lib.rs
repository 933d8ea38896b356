//! Resolves through the real `yt-dlp` (run via the `process` capability): one JSON
//! document per query, with the chosen audio format's URL and headers for single videos
//! and flat entries (resolved again when they play) for playlists and searches.

wit_bindgen::generate!({ world: "resolver", path: "../../wit/deps/plugin-0.1.0" });

use std::collections::BTreeMap;

use exports::mesastream::plugin::resolve::Guest;
use mesastream::plugin::process;
use mesastream::plugin::types::{
    Context, HttpStream, Playlist, ProcessStream, Resolution, ResolveError, StreamLocator, Track,
};
use serde::Deserialize;

const PROGRAM: &str = "yt-dlp";

/// What this plugin reads of yt-dlp's `--dump-single-json` output.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Info {
    #[serde(rename = "_type")]
    kind: Option<String>,
    id: Option<String>,
    /// The extractor that read the page (`Youtube`, `Generic`…); `ie_key` on flat entries.
    extractor_key: Option<String>,
    ie_key: Option<String>,
    title: Option<String>,
    uploader: Option<String>,
    channel: Option<String>,
    duration: Option<f64>,
    thumbnail: Option<String>,
    is_live: Option<bool>,
    webpage_url: Option<String>,
    url: Option<String>,
    /// How the chosen format is downloaded: `http`/`https`, or a protocol (HLS, DASH…)
    /// only yt-dlp itself can follow.
    protocol: Option<String>,
    format_id: Option<String>,
    http_headers: BTreeMap<String, String>,
    entries: Vec<Info>,
}

struct Ytdlp;

impl Guest for Ytdlp {
    fn resolve(query: String, _context: Context) -> Result<Resolution, ResolveError> {
        let query = query.trim().to_string();
        let args = vec![
            "--ignore-config".into(),
            "--no-warnings".into(),
            "--no-cache-dir".into(),
            "--dump-single-json".into(),
            "--flat-playlist".into(),
            "--format".into(),
            "bestaudio/best".into(),
            "--socket-timeout".into(),
            "15".into(),
            "--".into(),
            query.clone(),
        ];
        let output = process::run(PROGRAM, &args, None).map_err(|e| match e {
            process::Error::Denied(why) => ResolveError::Busy(format!("yt-dlp cannot run here: {why}")),
            process::Error::Timeout => ResolveError::Busy("yt-dlp took too long".into()),
            process::Error::Failed(why) => ResolveError::Busy(format!("yt-dlp could not start: {why}")),
        })?;
        if output.status != Some(0) {
            return Err(failure(&String::from_utf8_lossy(&output.stderr)));
        }
        let info: Info = serde_json::from_slice(&output.stdout)
            .map_err(|e| ResolveError::Parse(format!("invalid yt-dlp json: {e}")))?;
        let source = source_name(&query);
        let is_search = query.contains("search") && query.contains(':') && !query.contains("://");
        Ok(match info.kind.as_deref() {
            Some("playlist") if is_search => {
                Resolution::Search(info.entries.into_iter().map(|e| track(e, source)).collect())
            }
            Some("playlist") => Resolution::Playlist(Playlist {
                name: info.title.clone().unwrap_or_else(|| "playlist".into()),
                tracks: info.entries.into_iter().map(|e| track(e, source)).collect(),
                selected: None,
            }),
            _ => Resolution::Track(track(info, source)),
        })
    }
}

fn track(info: Info, source: &str) -> Track {
    let uri = info.webpage_url.clone().or_else(|| info.url.clone()).map(unsmuggled).unwrap_or_default();
    // Flat entries carry a page URL, not media: they are resolved again when they play.
    let flat = matches!(info.kind.as_deref(), Some("url" | "url_transparent"));
    let locator = match (&info.url, flat) {
        (Some(_), false) if !plain_http(info.protocol.as_deref()) => Some(StreamLocator::Process(ProcessStream {
            program: PROGRAM.into(),
            args: stream_args(info.format_id.as_deref(), &uri),
        })),
        (Some(url), false) => {
            Some(StreamLocator::Http(HttpStream { url: url.clone(), headers: info.http_headers.into_iter().collect() }))
        }
        _ => None,
    };
    // The generic extractor names a page after its URL's last segment, which any page can
    // share with a real video's id: such a page is known by its URL.
    let extractor = info.extractor_key.as_deref().or(info.ie_key.as_deref());
    let identifier = match info.id {
        Some(id) if extractor.is_some_and(|e| e != "Generic") => id,
        _ => uri.clone(),
    };
    Track {
        identifier,
        title: info.title.unwrap_or_else(|| uri.clone()),
        author: info.uploader.or(info.channel).unwrap_or_else(|| "Unknown".into()),
        duration_ms: info.duration.filter(|d| d.is_finite() && *d >= 0.0).map(|d| (d * 1000.0).round() as u64),
        artwork_url: info.thumbnail,
        is_stream: info.is_live.unwrap_or(false),
        source_name: source.into(),
        uri,
        locator,
    }
}

/// A URL without the data yt-dlp smuggles to itself in its fragment (`#__youtubedl_smuggle=`,
/// on a playlist's entries): users see the link, and yt-dlp finds the same media without it.
fn unsmuggled(url: String) -> String {
    match url.find("#__youtubedl_smuggle=") {
        Some(at) => url[..at].to_string(),
        None => url,
    }
}

fn plain_http(protocol: Option<&str>) -> bool {
    matches!(protocol, None | Some("http" | "https"))
}

/// yt-dlp downloading the chosen format to stdout, for protocols the host cannot fetch.
fn stream_args(format_id: Option<&str>, page: &str) -> Vec<String> {
    let format = format_id.unwrap_or("bestaudio/best");
    [
        "--ignore-config",
        "--no-warnings",
        "--quiet",
        "--no-cache-dir",
        "--no-part",
        "--format",
        format,
        "-o",
        "-",
        "--",
        page,
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// The contract's source kind: by the query's host, exactly as the original matches it.
fn source_name(query: &str) -> &'static str {
    let host = query.split("://").nth(1).and_then(|rest| rest.split(['/', '?', '#']).next()).unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or(host).split(':').next().unwrap_or(host);
    match host {
        "youtube.com" | "www.youtube.com" | "youtu.be" | "music.youtube.com" => "youtube",
        "soundcloud.com" | "www.soundcloud.com" | "on.soundcloud.com" => "soundcloud",
        _ if query.starts_with("ytsearch") || query.starts_with("ytmsearch") => "youtube",
        _ if query.starts_with("scsearch") => "soundcloud",
        _ => "http",
    }
}

/// Maps yt-dlp's complaint to the contract's errors, with its last error line.
fn failure(stderr: &str) -> ResolveError {
    let line = stderr.lines().rev().find(|l| l.contains("ERROR")).or(stderr.lines().last()).unwrap_or("").trim();
    let line: String = line.chars().take(300).collect();
    if line.contains("Unsupported URL") {
        ResolveError::Unsupported
    } else if line.contains("HTTP Error 429") || line.contains("timed out") {
        ResolveError::Busy(format!("yt-dlp: {line}"))
    } else {
        ResolveError::Unavailable(format!("yt-dlp: {line}"))
    }
}

export!(Ytdlp);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sources_as_the_contract_does() {
        assert_eq!(source_name("https://www.youtube.com/watch?v=x"), "youtube");
        assert_eq!(source_name("https://youtu.be/x"), "youtube");
        assert_eq!(source_name("https://m.youtube.com/watch?v=x"), "http");
        assert_eq!(source_name("https://soundcloud.com/a/b"), "soundcloud");
        assert_eq!(source_name("ytsearch:cats"), "youtube");
        assert_eq!(source_name("http://127.0.0.1:8000/a.mp3"), "http");
    }

    #[test]
    fn streams_hls_through_ytdlp_and_fetches_plain_http_directly() {
        let info = |protocol: &str| Info {
            url: Some("http://h/x".into()),
            protocol: Some(protocol.into()),
            format_id: Some("hls-1".into()),
            webpage_url: Some("http://h/page".into()),
            ..Info::default()
        };
        let hls = track(info("m3u8_native"), "http");
        let Some(StreamLocator::Process(p)) = hls.locator else { panic!("HLS must stream through yt-dlp") };
        assert_eq!(p.program, "yt-dlp");
        assert_eq!(p.args[p.args.len() - 6..], ["--format", "hls-1", "-o", "-", "--", "http://h/page"]);
        assert!(matches!(track(info("https"), "http").locator, Some(StreamLocator::Http(_))));
    }

    #[test]
    fn a_playlist_entry_shows_its_link_without_what_ytdlp_smuggles() {
        let entry = Info {
            url: Some("http://h/a.flac#__youtubedl_smuggle=%7B%22force_videoid%22%3A+%22a%22%7D".into()),
            kind: Some("url".into()),
            ..Info::default()
        };
        let t = track(entry, "http");
        assert_eq!((t.uri.as_str(), t.identifier.as_str()), ("http://h/a.flac", "http://h/a.flac"));
    }

    #[test]
    fn a_generic_page_is_known_by_its_url_and_a_site_video_by_its_id() {
        let info = |extractor: &str| Info {
            id: Some("dQw4w9WgXcQ".into()),
            extractor_key: Some(extractor.into()),
            webpage_url: Some("https://elsewhere.example/dQw4w9WgXcQ".into()),
            ..Info::default()
        };
        assert_eq!(track(info("Generic"), "http").identifier, "https://elsewhere.example/dQw4w9WgXcQ");
        assert_eq!(track(info("Youtube"), "youtube").identifier, "dQw4w9WgXcQ");
        let unnamed = Info { id: Some("x".into()), webpage_url: Some("http://h/x".into()), ..Info::default() };
        assert_eq!(track(unnamed, "http").identifier, "http://h/x", "no extractor named: the URL");
    }
}

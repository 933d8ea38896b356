//! Resolves direct HTTP(S) media links. The link must answer, and with audio: by its
//! Content-Type, or when that says nothing useful, by the file's first bytes. A web page is
//! declined (`unsupported`), so a resolver that reads pages can take it.

wit_bindgen::generate!({ world: "resolver", path: "../../wit/deps/plugin-0.1.0" });

use exports::mesastream::plugin::resolve::Guest;
use mesastream::plugin::http::{self, Request};
use mesastream::plugin::types::{Context, HttpStream, Resolution, ResolveError, StreamLocator, Track};

struct Direct;

impl Guest for Direct {
    fn resolve(query: String, _context: Context) -> Result<Resolution, ResolveError> {
        let url = query.trim().to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ResolveError::Unsupported);
        }
        let head = fetch("HEAD", &url, None)?;
        let content_type = header(&head, "content-type").unwrap_or_default();
        let audio = match media_kind(&content_type) {
            Some(known) => known,
            // Unknown or generic type: look at the first bytes.
            None => {
                let start = fetch("GET", &url, Some("bytes=0-63"))?;
                sniff(&start.body)
            }
        };
        if !audio && content_type.to_ascii_lowercase().starts_with("text/html") {
            // A page, not a file: a resolver that reads pages (yt-dlp) may find its media.
            return Err(ResolveError::Unsupported);
        }
        if !audio {
            return Err(ResolveError::Unavailable(format!("{url} is not audio (the server says {content_type})")));
        }
        let without_fragment = url.split('#').next().unwrap_or(&url).to_string();
        Ok(Resolution::Track(Track {
            identifier: without_fragment.clone(),
            title: title_of(&without_fragment),
            author: "Unknown".into(),
            duration_ms: None,
            artwork_url: None,
            is_stream: false,
            source_name: "http".into(),
            uri: without_fragment,
            locator: Some(StreamLocator::Http(HttpStream { url, headers: Vec::new() })),
        }))
    }
}

fn fetch(method: &str, url: &str, range: Option<&str>) -> Result<http::Response, ResolveError> {
    let headers = range.map(|r| vec![("range".to_string(), r.to_string())]).unwrap_or_default();
    let request = Request { method: method.into(), url: url.into(), headers, body: None, timeout_ms: Some(10_000) };
    let response = http::send(&request).map_err(|e| match e {
        http::Error::Denied(why) => ResolveError::Unavailable(format!("refused: {why}")),
        http::Error::Timeout => ResolveError::Busy(format!("{url} did not answer in time")),
        http::Error::TooLarge => ResolveError::Unavailable(format!("{url} sent too much")),
        http::Error::Failed(why) => ResolveError::Unavailable(format!("{url}: {why}")),
    })?;
    if !(200..300).contains(&response.status) {
        return Err(ResolveError::Unavailable(format!("{url}: server answered HTTP {}", response.status)));
    }
    Ok(response)
}

fn header(response: &http::Response, name: &str) -> Option<String> {
    response.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.to_ascii_lowercase())
}

/// Some(true) for media types, Some(false) for types that are certainly not media, None
/// when the type does not say.
fn media_kind(content_type: &str) -> Option<bool> {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.starts_with("audio/") || essence.starts_with("video/") || essence == "application/ogg" {
        Some(true)
    } else if essence.starts_with("text/") || essence.ends_with("json") || essence.starts_with("image/") {
        Some(false)
    } else {
        None
    }
}

/// Recognises the containers the host decodes by their magic bytes.
fn sniff(bytes: &[u8]) -> bool {
    let starts = |magic: &[u8]| bytes.starts_with(magic);
    starts(b"ID3")
        || starts(b"fLaC")
        || starts(b"OggS")
        || starts(b"RIFF")
        || starts(&[0x1A, 0x45, 0xDF, 0xA3])
        || bytes.get(4..8) == Some(b"ftyp")
        || (bytes.len() > 1 && bytes[0] == 0xFF && bytes[1] & 0xE0 == 0xE0)
}

/// The file name, decoded, or the host when the path has none.
fn title_of(url: &str) -> String {
    let path = url.split(['?']).next().unwrap_or(url);
    let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or(path);
    let decoded = percent_decode(last);
    if decoded.is_empty() || decoded.contains(':') { url.to_string() } else { decoded }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).and_then(|b| hex(*b)), bytes.get(i + 2).and_then(|b| hex(*b))) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

export!(Direct);

//! {{id}}: a resolver plugin for mesastream. `{{id}}:<name>` becomes the track
//! `<base-url>/<name>`, where `base-url` is the operator's setting for this plugin (WIT
//! 0.2.0 `settings`); replace `track_for` with what your source needs (the `http`
//! capability reads pages and APIs once the operator grants it).

// The bindings of the `resolver` world of mesastream:plugin@0.2.0 (in `wit/`). 0.2.0
// includes 0.1.0, so the generated modules carry the version of the package each interface is in.
wit_bindgen::generate!({ world: "resolver", path: "wit", generate_all });

use exports::mesastream::plugin0_1_0::resolve::Guest;
use mesastream::plugin0_1_0::types::{Context, HttpStream, Resolution, ResolveError, StreamLocator, Track};
use mesastream::plugin0_2_0::settings;

const PREFIX: &str = "{{id}}:";

/// The track `query` names under `base_url`, or why there is none.
pub fn track_for(query: &str, base_url: Option<&str>) -> Result<Track, ResolveError> {
    let name = query.strip_prefix(PREFIX).map(str::trim).filter(|n| !n.is_empty()).ok_or(ResolveError::Unsupported)?;
    let base = base_url.ok_or_else(|| ResolveError::Unavailable("the operator has not set base-url".into()))?;
    let url = format!("{}/{name}", base.trim_end_matches('/'));
    Ok(Track {
        identifier: url.clone(),
        title: name.to_string(),
        author: "{{id}}".into(),
        duration_ms: None,
        artwork_url: None,
        is_stream: false,
        source_name: "{{id}}".into(),
        uri: format!("{PREFIX}{name}"),
        locator: Some(StreamLocator::Http(HttpStream { url, headers: Vec::new() })),
    })
}

struct Component;

impl Guest for Component {
    fn resolve(query: String, _context: Context) -> Result<Resolution, ResolveError> {
        let base = settings::get("base-url");
        track_for(&query, base.as_deref()).map(Resolution::Track)
    }
}

export!(Component);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_becomes_a_track_under_the_base_url() {
        let track = track_for("{{id}}:song.mp3", Some("https://music.example/")).expect("a track");
        assert!(matches!(track.locator, Some(StreamLocator::Http(h)) if h.url == "https://music.example/song.mp3"));
        assert!(matches!(track_for("other:song.mp3", Some("x")), Err(ResolveError::Unsupported)));
        assert!(matches!(track_for("{{id}}:song.mp3", None), Err(ResolveError::Unavailable(_))));
    }
}

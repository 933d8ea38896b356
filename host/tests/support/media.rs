//! Test media: tone files generated with ffmpeg at test time, served by a local HTTP server
//! that honours byte ranges and can misbehave on purpose (404, HTML, truncated bodies,
//! redirects set while a test runs).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use axum::routing::get;
use tower_http::services::ServeDir;

/// One generated fixture.
#[derive(Debug, Clone, Copy)]
pub struct Tone {
    pub file: &'static str,
    pub freq_hz: f64,
    pub rate: u32,
    pub channels: u32,
    pub seconds: f64,
    pub codec_args: &'static [&'static str],
    /// Only the left channel carries the tone.
    pub left_only: bool,
}

/// Every container/codec the first-sound issue lists; different tones, rates and layouts.
pub const TONES: &[Tone] = &[
    // The frames of an internet radio: no ID3 tag, no Xing/Info frame announcing a length.
    Tone {
        file: "tone-440-raw.mp3",
        freq_hz: 440.0,
        rate: 44_100,
        channels: 2,
        seconds: 2.0,
        codec_args: &["-c:a", "libmp3lame", "-b:a", "192k", "-write_xing", "0", "-id3v2_version", "0"],
        left_only: false,
    },
    Tone {
        file: "tone-440.mp3",
        freq_hz: 440.0,
        rate: 44_100,
        channels: 2,
        seconds: 2.0,
        codec_args: &["-c:a", "libmp3lame", "-b:a", "192k"],
        left_only: false,
    },
    Tone {
        file: "tone-550.m4a",
        freq_hz: 550.0,
        rate: 48_000,
        channels: 2,
        seconds: 2.0,
        codec_args: &["-c:a", "aac", "-b:a", "192k"],
        left_only: false,
    },
    Tone {
        file: "tone-660.flac",
        freq_hz: 660.0,
        rate: 44_100,
        channels: 2,
        seconds: 2.0,
        codec_args: &["-c:a", "flac"],
        left_only: false,
    },
    // AAC in its bare ADTS framing, as internet radios send it.
    Tone {
        file: "tone-660.aac",
        freq_hz: 660.0,
        rate: 44_100,
        channels: 2,
        seconds: 2.0,
        codec_args: &["-c:a", "aac", "-b:a", "128k", "-f", "adts"],
        left_only: false,
    },
    Tone {
        file: "tone-770.ogg",
        freq_hz: 770.0,
        rate: 32_000,
        channels: 2,
        seconds: 2.0,
        codec_args: &["-c:a", "libvorbis", "-q:a", "6"],
        left_only: false,
    },
    Tone {
        file: "tone-880.opus",
        freq_hz: 880.0,
        rate: 48_000,
        channels: 2,
        seconds: 2.0,
        codec_args: &["-c:a", "libopus", "-b:a", "128k"],
        left_only: false,
    },
    Tone {
        file: "tone-990.webm",
        freq_hz: 990.0,
        rate: 48_000,
        channels: 2,
        seconds: 2.0,
        codec_args: &["-c:a", "libopus", "-b:a", "128k"],
        left_only: false,
    },
    Tone {
        file: "tone-330-mono.wav",
        freq_hz: 330.0,
        rate: 22_050,
        channels: 1,
        seconds: 2.0,
        codec_args: &["-c:a", "pcm_s16le"],
        left_only: false,
    },
    Tone {
        file: "tone-100.wav",
        freq_hz: 100.0,
        rate: 48_000,
        channels: 2,
        seconds: 4.0,
        codec_args: &["-c:a", "pcm_s16le"],
        left_only: false,
    },
    Tone {
        file: "tone-600-long.opus",
        freq_hz: 600.0,
        rate: 48_000,
        channels: 2,
        seconds: 6.0,
        codec_args: &["-c:a", "libopus", "-b:a", "128k", "-frame_duration", "20"],
        left_only: false,
    },
    // Long enough for a live HLS window of several segments, and for a rewind test.
    Tone {
        file: "tone-450-20s.opus",
        freq_hz: 450.0,
        rate: 48_000,
        channels: 2,
        seconds: 20.0,
        codec_args: &["-c:a", "libopus", "-b:a", "96k", "-frame_duration", "20"],
        left_only: false,
    },
    Tone {
        file: "tone-523-long.mp3",
        freq_hz: 523.0,
        rate: 48_000,
        channels: 2,
        seconds: 6.0,
        codec_args: &["-c:a", "libmp3lame", "-b:a", "192k"],
        left_only: false,
    },
    Tone {
        file: "tone-8000.wav",
        freq_hz: 8_000.0,
        rate: 48_000,
        channels: 2,
        seconds: 2.0,
        codec_args: &["-c:a", "pcm_s16le"],
        left_only: false,
    },
    Tone {
        file: "tone-1000-left.wav",
        freq_hz: 1_000.0,
        rate: 48_000,
        channels: 2,
        seconds: 2.0,
        codec_args: &["-c:a", "pcm_s16le"],
        left_only: true,
    },
];

pub fn tone(file: &str) -> Tone {
    *TONES.iter().find(|t| t.file == file).unwrap_or_else(|| panic!("no fixture {file}"))
}

fn generate(dir: &Path, tone: &Tone) {
    let out = dir.join(tone.file);
    if out.exists() {
        return;
    }
    // Written under a private name and renamed, so parallel test processes share the result.
    let partial = dir.join(format!(
        "{}.{}.partial.{}",
        tone.file,
        std::process::id(),
        tone.file.rsplit('.').next().unwrap_or("bin")
    ));
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("sine=frequency={}:sample_rate={}:duration={}", tone.freq_hz, tone.rate, tone.seconds))
        .arg("-af")
        .arg(if tone.left_only { "volume=0.5,pan=stereo|c0=c0|c1=0*c0" } else { "volume=0.5" })
        .arg("-ac")
        .arg(tone.channels.to_string())
        .args(tone.codec_args)
        .args(["-movflags", "+faststart"])
        .arg(&partial)
        .status()
        .expect("ffmpeg runs (scripts/setup.sh installs it)");
    assert!(status.success(), "ffmpeg failed for {}", tone.file);
    std::fs::rename(&partial, &out).expect("publish fixture");
}

/// The fixture directory, generated once per test binary.
pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fixtures-v2");
        std::fs::create_dir_all(&dir).expect("fixture dir");
        std::thread::scope(|s| {
            for t in TONES {
                let dir = &dir;
                s.spawn(move || generate(dir, t));
            }
        });
        write_hls(&dir, "tone-440.mp3");
        publish(&dir.join("page.html"), b"<html><body>not audio</body></html>");
        publish(
            &dir.join("noise.bin"),
            &(0..50_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect::<Vec<u8>>(),
        );
        dir
    })
}

/// `hls/<stem>.m3u8`: an HLS media playlist whose three segments are consecutive byte
/// ranges of `file` (packed audio), so only a client that follows HLS gets the whole file.
fn write_hls(dir: &Path, file: &str) {
    let bytes = std::fs::read(dir.join(file)).expect("tone for HLS");
    let stem = file.rsplit_once('.').map_or(file, |(s, _)| s);
    let hls = dir.join("hls");
    std::fs::create_dir_all(&hls).expect("hls dir");
    let mut playlist = String::from("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n");
    let third = bytes.len().div_ceil(3);
    for (i, part) in bytes.chunks(third).enumerate() {
        let name = format!("{stem}-{i}.mp3");
        publish(&hls.join(&name), part);
        playlist.push_str(&format!("#EXTINF:0.7,\n{name}\n"));
    }
    playlist.push_str("#EXT-X-ENDLIST\n");
    publish(&hls.join(format!("{stem}.m3u8")), playlist.as_bytes());
}

/// Adds a file made by the test to what the media server serves, as `name`.
pub fn publish_fixture(name: &str, bytes: &[u8]) {
    publish(&fixtures().join(name), bytes);
}

/// Writes under a private name and renames, so test processes sharing the directory
/// never read a half-written file.
fn publish(path: &Path, bytes: &[u8]) {
    let partial = path.with_extension(format!("partial.{}", std::process::id()));
    std::fs::write(&partial, bytes).expect("write fixture");
    std::fs::rename(&partial, path).expect("publish fixture");
}

/// A local HTTP server for the fixtures, counting the requests for each path.
pub struct MediaServer {
    pub addr: SocketAddr,
    truncating: SocketAddr,
    requests: Arc<Mutex<HashMap<String, u64>>>,
    /// Bytes of `/live.mp3` handed out so far.
    live_sent: Arc<AtomicU64>,
    /// Paths answered with a redirect instead of their file.
    redirects: Arc<Mutex<HashMap<String, String>>>,
    /// The last `Cookie` header sent for each path.
    cookies: Arc<Mutex<HashMap<String, String>>>,
}

/// `/live.mp3`: an endless MP3 stream without a length, as an internet radio sends it (the
/// 440 Hz frames over and over, as fast as the reader takes them). `sent` counts the bytes
/// handed to the connection.
async fn live_stream(sent: Arc<AtomicU64>) -> impl IntoResponse {
    let frames = bytes::Bytes::from(std::fs::read(fixtures().join("tone-440-raw.mp3")).expect("fixture"));
    let chunks = futures_util::stream::iter(std::iter::repeat(frames).map(move |chunk| {
        sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        Ok::<_, std::convert::Infallible>(chunk)
    }));
    ([(axum::http::header::CONTENT_TYPE, "audio/mpeg")], axum::body::Body::from_stream(chunks))
}

/// `/stalling.mp3`: 2 s of a 440 Hz tone, then nothing more and no end, as a source whose
/// server hangs mid-stream.
async fn stalling_stream() -> impl IntoResponse {
    let frames = bytes::Bytes::from(std::fs::read(fixtures().join("tone-440-raw.mp3")).expect("fixture"));
    let first = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(frames)]);
    let body = axum::body::Body::from_stream(futures_util::StreamExt::chain(first, futures_util::stream::pending()));
    ([(axum::http::header::CONTENT_TYPE, "audio/mpeg")], body)
}

/// `/player.html`: a web page with the 440 Hz tone in an HTML5 audio element, as a site
/// embeds its media (yt-dlp's generic extractor finds it).
async fn player_page() -> impl IntoResponse {
    axum::response::Html(
        "<!DOCTYPE html><html><head><title>Fixture page</title></head>\
         <body><h1>Listen</h1><audio controls src=\"/tone-440.mp3\"></audio></body></html>",
    )
}

/// `/feed.rss`: a podcast feed whose two episodes are tone-660.flac and tone-770.ogg on
/// this server (a remote playlist yt-dlp expands).
async fn feed(State(addr): State<SocketAddr>) -> impl IntoResponse {
    let item = |title: &str, file: &str| {
        format!(
            "<item><title>{title}</title><guid>{file}</guid><enclosure url=\"http://{addr}/{file}\" type=\"audio/mpeg\" length=\"1\"/></item>"
        )
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><rss version=\"2.0\"><channel><title>Fixture feed</title><link>http://{addr}/</link><description>tones</description>{}{}</channel></rss>",
        item("Episode 660", "tone-660.flac"),
        item("Episode 770", "tone-770.ogg"),
    );
    ([(axum::http::header::CONTENT_TYPE, "application/rss+xml")], body)
}

/// `/search?q=…`: the fixtures whose name holds every word of the query, as a site's search
/// lists its videos (what `ytsearch:` reaches through yt-dlp in the tests; see
/// `tests/clients/ytdlp-plugins`).
async fn search(
    State(addr): State<SocketAddr>,
    axum::extract::Query(params): axum::extract::Query<HashMap<String, String>>,
) -> impl IntoResponse {
    let query = params.get("q").map(|q| q.to_lowercase()).unwrap_or_default();
    let found: Vec<serde_json::Value> = TONES
        .iter()
        .filter(|t| query.split_whitespace().all(|word| t.file.contains(word)))
        .map(|t| {
            let stem = t.file.rsplit_once('.').map_or(t.file, |(stem, _)| stem);
            serde_json::json!({ "id": stem, "title": stem, "url": format!("http://{addr}/{}", t.file), "duration": t.seconds })
        })
        .collect();
    axum::Json(found)
}

/// The stations of the radio directory below: (uuid, name, the fixture it streams).
const STATIONS: [(&str, &str, &str); 2] =
    [("5a1e-440", "Tone FM 440", "live.mp3"), ("5a1e-660", "Tone Classics 660", "tone-660.flac")];

/// A station as a Radio Browser directory lists it.
fn station(addr: SocketAddr, (uuid, name, file): (&str, &str, &str)) -> serde_json::Value {
    serde_json::json!({
        "stationuuid": uuid, "name": name, "url": format!("http://{addr}/{file}"),
        "url_resolved": format!("http://{addr}/{file}"), "country": "Fixtureland", "tags": "tones",
        "favicon": "", "codec": "MP3", "bitrate": 192, "lastcheckok": 1,
    })
}

/// `/json/stations/search?name=…`: the stations whose name holds `name` (any case), as the
/// Radio Browser API answers (what the Python radio example resolves through).
async fn radio_search(
    State(addr): State<SocketAddr>,
    axum::extract::Query(params): axum::extract::Query<HashMap<String, String>>,
) -> impl IntoResponse {
    let name = params.get("name").map(|n| n.to_lowercase()).unwrap_or_default();
    let found: Vec<serde_json::Value> =
        STATIONS.into_iter().filter(|s| s.1.to_lowercase().contains(&name)).map(|s| station(addr, s)).collect();
    axum::Json(found)
}

/// `/json/stations/byuuid/{uuid}`: that station, in a list of one (or none).
async fn radio_station(
    State(addr): State<SocketAddr>,
    axum::extract::Path(uuid): axum::extract::Path<String>,
) -> impl IntoResponse {
    let found: Vec<serde_json::Value> =
        STATIONS.into_iter().filter(|s| s.0 == uuid).map(|s| station(addr, s)).collect();
    axum::Json(found)
}

/// Serves `/<name>` by announcing the whole length, sending half, and closing the socket:
/// a download cut off mid-way. Raw TCP, because an HTTP framework would refuse to do this.
async fn serve_truncated(listener: tokio::net::TcpListener, dir: PathBuf) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    while let Ok((mut socket, _)) = listener.accept().await {
        let dir = dir.clone();
        tokio::spawn(async move {
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&request);
            let path = text.split_whitespace().nth(1).unwrap_or("/").trim_start_matches('/').to_string();
            let Ok(bytes) = std::fs::read(dir.join(&path)) else { return };
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: audio/mpeg\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                bytes.len()
            );
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(&bytes[..bytes.len() / 2]).await;
            let _ = socket.shutdown().await;
        });
    }
}

impl MediaServer {
    pub async fn start() -> Self {
        let dir = fixtures().to_path_buf();
        let truncating = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind truncating server");
        let truncating_addr = truncating.local_addr().expect("truncating addr");
        tokio::spawn(serve_truncated(truncating, dir.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind media server");
        let addr = listener.local_addr().expect("media addr");
        let requests = Arc::new(Mutex::new(HashMap::new()));
        let counted = requests.clone();
        let redirects: Arc<Mutex<HashMap<String, String>>> = Arc::new(Mutex::new(HashMap::new()));
        let redirecting = redirects.clone();
        let cookies: Arc<Mutex<HashMap<String, String>>> = Arc::new(Mutex::new(HashMap::new()));
        let tasting = cookies.clone();
        let live_sent = Arc::new(AtomicU64::new(0));
        let live = live_sent.clone();
        let app = Router::new()
            .route("/feed.rss", get(feed))
            .route("/search", get(search))
            .route("/json/stations/search", get(radio_search))
            .route("/json/stations/byuuid/{uuid}", get(radio_station))
            .route("/player.html", get(player_page))
            .route("/live.mp3", get(move || live_stream(live.clone())))
            .route("/stalling.mp3", get(stalling_stream))
            .with_state(addr)
            .fallback_service(ServeDir::new(dir))
            .layer(middleware::from_fn(move |request: Request, next: Next| {
                let counted = counted.clone();
                let redirect = redirecting.lock().expect("redirects").get(request.uri().path()).cloned();
                if let Some(cookie) = request.headers().get(axum::http::header::COOKIE).and_then(|c| c.to_str().ok()) {
                    tasting.lock().expect("cookies").insert(request.uri().path().to_string(), cookie.to_string());
                }
                async move {
                    *counted.lock().expect("request counts").entry(request.uri().path().to_string()).or_insert(0) += 1;
                    match redirect {
                        Some(to) => axum::response::Redirect::temporary(&to).into_response(),
                        None => next.run(request).await,
                    }
                }
            }));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, truncating: truncating_addr, requests, live_sent, redirects, cookies }
    }

    /// Opens this server's ports (and nothing else on loopback) in an allow-list.
    pub fn allow_in(&self, list: &mut mesastream::egress::AllowList) {
        list.add(&self.addr.ip().to_string(), Some(self.addr.port()));
        list.add(&self.truncating.ip().to_string(), Some(self.truncating.port()));
    }

    /// The same, as the `MEDIA_ALLOW_HOSTS` value for a server started as a process.
    pub fn allow_hosts(&self) -> String {
        format!("{},{}", self.addr, self.truncating)
    }

    /// From now on, `path` answers `307 Location: to`.
    pub fn redirect(&self, path: &str, to: &str) {
        self.redirects.lock().expect("redirects").insert(format!("/{}", path.trim_start_matches('/')), to.to_string());
    }

    /// The `Cookie` header last sent for `path`.
    pub fn cookie(&self, path: &str) -> Option<String> {
        self.cookies.lock().expect("cookies").get(path).cloned()
    }

    /// How many requests asked for `path` so far.
    pub fn requests(&self, path: &str) -> u64 {
        self.requests.lock().expect("request counts").get(path).copied().unwrap_or(0)
    }

    /// Bytes of the endless `/live.mp3` handed to readers so far.
    pub fn live_bytes_sent(&self) -> u64 {
        self.live_sent.load(Ordering::Relaxed)
    }

    /// A URL whose download stops half-way.
    pub fn truncated_url(&self, file: &str) -> String {
        format!("http://{}/{file}", self.truncating)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }
}

//! Test media: tone files generated with ffmpeg at test time, served by a local HTTP server
//! that honours byte ranges and can misbehave on purpose (404, HTML, truncated bodies).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
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
}

/// Every container/codec the first-sound issue lists; different tones, rates and layouts.
pub const TONES: &[Tone] = &[
    Tone { file: "tone-440.mp3", freq_hz: 440.0, rate: 44_100, channels: 2, seconds: 2.0, codec_args: &["-c:a", "libmp3lame", "-b:a", "192k"] },
    Tone { file: "tone-550.m4a", freq_hz: 550.0, rate: 48_000, channels: 2, seconds: 2.0, codec_args: &["-c:a", "aac", "-b:a", "192k"] },
    Tone { file: "tone-660.flac", freq_hz: 660.0, rate: 44_100, channels: 2, seconds: 2.0, codec_args: &["-c:a", "flac"] },
    Tone { file: "tone-770.ogg", freq_hz: 770.0, rate: 32_000, channels: 2, seconds: 2.0, codec_args: &["-c:a", "libvorbis", "-q:a", "6"] },
    Tone { file: "tone-880.opus", freq_hz: 880.0, rate: 48_000, channels: 2, seconds: 2.0, codec_args: &["-c:a", "libopus", "-b:a", "128k"] },
    Tone { file: "tone-990.webm", freq_hz: 990.0, rate: 48_000, channels: 2, seconds: 2.0, codec_args: &["-c:a", "libopus", "-b:a", "128k"] },
    Tone { file: "tone-330-mono.wav", freq_hz: 330.0, rate: 22_050, channels: 1, seconds: 2.0, codec_args: &["-c:a", "pcm_s16le"] },
    Tone { file: "tone-523-long.mp3", freq_hz: 523.0, rate: 48_000, channels: 2, seconds: 6.0, codec_args: &["-c:a", "libmp3lame", "-b:a", "192k"] },
];

pub fn tone(file: &str) -> Tone {
    *TONES.iter().find(|t| t.file == file).unwrap_or_else(|| panic!("no fixture {file}"))
}

fn generate(dir: &Path, tone: &Tone) {
    let out = dir.join(tone.file);
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("sine=frequency={}:sample_rate={}:duration={}", tone.freq_hz, tone.rate, tone.seconds))
        .args(["-af", "volume=0.5", "-ac"])
        .arg(tone.channels.to_string())
        .args(tone.codec_args)
        .args(["-movflags", "+faststart"])
        .arg(&out)
        .status()
        .expect("ffmpeg runs (scripts/setup.sh installs it)");
    assert!(status.success(), "ffmpeg failed for {}", tone.file);
}

/// The fixture directory, generated once per test binary.
pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("mesastream-fixtures-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("fixture dir");
        std::thread::scope(|s| {
            for t in TONES {
                let dir = &dir;
                s.spawn(move || generate(dir, t));
            }
        });
        std::fs::write(dir.join("page.html"), "<html><body>not audio</body></html>").expect("html fixture");
        std::fs::write(dir.join("noise.bin"), (0..50_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect::<Vec<u8>>())
            .expect("binary fixture");
        dir
    })
}

/// A local HTTP server for the fixtures.
pub struct MediaServer {
    pub addr: SocketAddr,
}

async fn truncated(State(dir): State<PathBuf>, UrlPath(name): UrlPath<String>) -> Response {
    let Ok(bytes) = std::fs::read(dir.join(&name)) else { return StatusCode::NOT_FOUND.into_response() };
    let full = bytes.len();
    let half = bytes[..full / 2].to_vec();
    // Announce the whole length, send half, then end the body: a download cut off mid-way.
    let stream = futures_util::stream::iter(vec![
        Ok::<_, std::io::Error>(axum::body::Bytes::from(half)),
        Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "cut")),
    ]);
    Response::builder()
        .header(header::CONTENT_LENGTH, full)
        .header(header::CONTENT_TYPE, "audio/mpeg")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

impl MediaServer {
    pub async fn start() -> Self {
        let dir = fixtures().to_path_buf();
        let app = Router::new()
            .route("/truncated/{name}", get(truncated))
            .with_state(dir.clone())
            .fallback_service(ServeDir::new(dir));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind media server");
        let addr = listener.local_addr().expect("media addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }
}

//! Listening over HTTP: a player's stream Icecast-style (`/players/{id}/listen`, Ogg Opus or
//! MP3 with ICY titles, `?rewind=`), the same for live mounts, live HLS of a player, on-demand HLS of any track, the
//! listen tokens that open them, and the operator page. Everything here reads what players
//! already made (their recordings, the audio cache); nothing changes a player.

pub mod fmp4;
mod hls;
mod hls_routes;
pub mod hub;
mod live;
pub mod ogg_pages;
mod stream;
mod token_routes;
pub mod tokens;
pub mod ui;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use tokio::sync::watch;

use super::extract::PlayerId;
use super::{ApiError, AppState};
use crate::audio::mp3::Mp3Encoder;
use crate::audio::recording::Recording;
use crate::config::ListenConfig;
use crate::events::EventBus;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::HlsLabels;
use crate::voice::Scheduler;
use hls_routes::{
    player_init, player_playlist, player_segment, query_playlist, track_init, track_playlist, track_segment,
};
use hub::{Audience, Hub, LIVE_DELAY_TICKS, ListenerCaps, Who};
use stream::{BURST_TICKS, Encoding, Icy, Listener, Mp3Feed};
pub use token_routes::TokenItem;
use token_routes::{issue, unlock};
use tokens::{Format, Grant, Signer, Subject};

type ApiResult<T> = Result<T, ApiError>;

/// The most items one batch may name.
const MAX_BATCH_ITEMS: usize = 100;
/// A token's life when the request does not say (1 hour), and the most it may ask (1 week).
const DEFAULT_TTL_SECS: u64 = 3600;
const MAX_TTL_SECS: u64 = 7 * 24 * 3600;
/// How long an on-demand playlist waits for its track to be cached.
const PREPARE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Listening's shared state.
pub struct Listening {
    pub signer: Signer,
    pub public: bool,
    pub hub: Arc<Hub>,
    pulse: watch::Receiver<u64>,
    scheduler: Arc<Scheduler>,
    metrics: Arc<Metrics>,
    mp3_bitrate: u32,
    /// Each player's shared MP3 encoders while they have listeners, by the player's recording
    /// (a player made again under the same id gets feeds of its own) and the rewind in ticks.
    mp3_feeds: parking_lot::Mutex<std::collections::HashMap<(usize, u64), std::sync::Weak<Mp3Feed>>>,
}

impl Listening {
    /// Starts the listeners' pulse on the current runtime. Without `LISTEN_SECRET` the key is
    /// random: tokens end with the process.
    pub fn start(config: &ListenConfig, scheduler: Arc<Scheduler>, events: EventBus, metrics: Arc<Metrics>) -> Self {
        let secret = match &config.secret {
            Some(secret) => secret.as_bytes().to_vec(),
            None => {
                tracing::info!("LISTEN_SECRET is not set: listen tokens are signed with a key made for this run");
                rand::random::<[u8; 32]>().to_vec()
            }
        };
        let signer = Signer::new(&secret, config.previous_secret.as_deref().map(str::as_bytes));
        let caps = ListenerCaps {
            node: config.max_listeners,
            per_token: config.max_listeners_per_token,
            per_address: config.max_listeners_per_address,
        };
        let hub = Arc::new(Hub::new(events, metrics.clone(), config.max_lag_seconds * 50, caps));
        let pulse = hub::start_pulse(hub.clone(), scheduler.clone());
        Self {
            signer,
            public: config.public,
            hub,
            pulse,
            scheduler,
            metrics,
            mp3_bitrate: config.mp3_bitrate_kbps,
            mp3_feeds: Default::default(),
        }
    }

    /// Whether the request may listen to `subject` in `format`: open routes, the bearer
    /// token, or a listen token for it.
    fn admit(
        &self,
        app: &AppState,
        headers: &HeaderMap,
        token: Option<&str>,
        subject: &Subject,
        format: Format,
    ) -> ApiResult<Option<Grant>> {
        if self.public || super::bearer_ok(headers, &app.auth_token) {
            return Ok(None);
        }
        let token = token
            .ok_or_else(|| ApiError::unauthorized_with("a listen token (?token=) or the bearer token is required"))?;
        self.signer
            .check(token, crate::wall_clock::unix_secs(), subject, format)
            .map(Some)
            .map_err(ApiError::forbidden_with)
    }

    /// The MP3 feed of `recording` `delay_ticks` behind live, shared by every listener there.
    fn mp3_feed(&self, recording: &Arc<Recording>, delay_ticks: u64) -> ApiResult<Arc<Mp3Feed>> {
        // The feed holds the recording: its address is not reused while the feed lives.
        let key = (Arc::as_ptr(recording) as usize, delay_ticks);
        let mut feeds = self.mp3_feeds.lock();
        if let Some(feed) = feeds.get(&key).and_then(std::sync::Weak::upgrade) {
            return Ok(feed);
        }
        let encoder = Mp3Encoder::new(self.mp3_bitrate).map_err(ApiError::internal)?;
        let now = self.scheduler.now_tick();
        let from = recording.oldest(now).max(now.saturating_sub(LIVE_DELAY_TICKS + delay_ticks + BURST_TICKS));
        let keep = BURST_TICKS + self.hub.max_lag_ticks;
        let (pulse, metrics) = (self.pulse.clone(), self.metrics.clone());
        let feed = Mp3Feed::start(recording.clone(), pulse, encoder, from, delay_ticks, keep, metrics);
        feeds.retain(|_, f| f.strong_count() > 0);
        feeds.insert(key, Arc::downgrade(&feed));
        Ok(feed)
    }
}

/// The listening routes: listener routes check tokens themselves; token issuing and the
/// operator page's data need the bearer token (or the page's session).
pub fn router(state: AppState) -> Router {
    let bearer = Router::new()
        .route("/listen-tokens", post(issue))
        .route("/listen-tokens/unlock", post(unlock))
        .layer(axum::middleware::from_fn_with_state(state.clone(), super::require_token));
    Router::new()
        .route("/players/{id}/listen", get(listen))
        .route("/players/{id}/hls/index.m3u8", get(player_playlist))
        .route("/players/{id}/hls/init.mp4", get(player_init))
        .route("/players/{id}/hls/{segment}", get(player_segment))
        .route("/tracks/hls/index.m3u8", get(query_playlist))
        .route("/tracks/{track}/hls/index.m3u8", get(track_playlist))
        .route("/tracks/{track}/hls/init.mp4", get(track_init))
        .route("/tracks/{track}/hls/{segment}", get(track_segment))
        .route("/live/{mount}/listen", get(live::listen))
        .route("/live/{mount}/hls/index.m3u8", get(live::playlist))
        .route("/live/{mount}/hls/init.mp4", get(live::init))
        .route("/live/{mount}/hls/{segment}", get(live::segment))
        .merge(ui::router())
        .merge(bearer)
        .with_state(state)
}

#[derive(Deserialize)]
struct ListenQuery {
    token: Option<String>,
    format: Option<String>,
    rewind: Option<String>,
}

/// The format and rewind (seconds) a listen request asks for.
fn listen_params(query: &ListenQuery) -> ApiResult<(Format, u64)> {
    let format = match query.format.as_deref().unwrap_or("ogg") {
        "ogg" | "opus" => Format::Ogg,
        "mp3" => Format::Mp3,
        other => return Err(ApiError::bad_request(format!("format {other:?}: use ogg or mp3"))),
    };
    let rewind_secs = match query.rewind.as_deref() {
        None | Some("") => 0,
        Some(raw) => {
            raw.parse().map_err(|_| ApiError::bad_request(format!("rewind {raw:?}: a whole number of seconds")))?
        }
    };
    Ok((format, rewind_secs))
}

async fn listen(
    State(app): State<AppState>,
    PlayerId(id): PlayerId,
    Query(query): Query<ListenQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (format, rewind_secs) = listen_params(&query)?;
    app.listening.admit(&app, &headers, query.token.as_deref(), &Subject::Player(id), format)?;
    let player = app.registry.get(id)?;
    let audience = Audience::Player { guild_id: player.guild_id, player_id: id };
    let recording = player.output.recording().clone();
    app.listening.open_stream(
        &app,
        recording,
        audience,
        format,
        rewind_secs,
        Who::new(query.token.as_deref(), Some(peer.ip())),
        &headers,
        &format!("mesastream player {id}"),
    )
}

impl Listening {
    /// An endless Icecast-style stream of `recording` for one more listener of `audience`:
    /// a burst, then the clock's pace, `rewind_secs` behind live when asked.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn open_stream(
        &self,
        app: &AppState,
        recording: Arc<Recording>,
        audience: Audience,
        format: Format,
        rewind_secs: u64,
        who: Who,
        headers: &HeaderMap,
        name: &str,
    ) -> ApiResult<Response> {
        let now = self.scheduler.now_tick();
        let live = now.saturating_sub(LIVE_DELAY_TICKS);
        let asked = live.saturating_sub(rewind_secs.saturating_mul(50).max(BURST_TICKS)).max(recording.oldest(now));
        // A rewound listener stays where it started, less the burst, in whole seconds: every
        // listener at one rewind then shares one MP3 encoder.
        let delay = live.saturating_sub(asked).saturating_sub(BURST_TICKS) / 50 * 50;
        let start = live.saturating_sub(delay + BURST_TICKS).max(recording.oldest(now));
        let membership = self.hub.join(audience, who, start, delay).map_err(ApiError::limit)?;
        let wants_icy = headers.get("icy-metadata").and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim() == "1");
        let icy = (format == Format::Mp3 && wants_icy).then(Icy::new);
        let encoding = match format {
            Format::Mp3 => Encoding::Mp3(self.mp3_feed(&recording, delay)?, icy),
            _ => Encoding::Ogg(ogg_pages::OggStream::new(rand::random())),
        };
        let has_icy = matches!(encoding, Encoding::Mp3(_, Some(_)));
        let listener =
            Listener::new(recording, self.pulse.clone(), membership, encoding, start, app.registry.ctx.metrics.clone());
        let body = futures_util::stream::unfold(listener, |mut listener| async move {
            listener.next().await.map(|bytes| (Ok::<_, std::io::Error>(bytes), listener))
        });
        let mut response = Response::new(Body::from_stream(body));
        let h = response.headers_mut();
        let content_type = if format == Format::Mp3 { "audio/mpeg" } else { "audio/ogg" };
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store"));
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        if let Ok(name) = HeaderValue::from_str(name) {
            h.insert("icy-name", name);
        }
        if has_icy {
            h.insert("icy-metaint", HeaderValue::from(stream::ICY_METAINT));
        }
        Ok(response)
    }
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

fn playlist_response(text: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/vnd.apple.mpegurl"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        text,
    )
        .into_response()
}

fn mp4_response(bytes: Vec<u8>, cache: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "video/mp4"),
            (header::CACHE_CONTROL, cache),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        bytes,
    )
        .into_response()
}

fn count(app: &AppState, kind: &'static str, source: &'static str) {
    app.registry.ctx.metrics.hls_requests.get_or_create(&HlsLabels { kind, source }).inc();
}

/// `?token=…` for URIs in a playlist reached with one, else nothing. The token is the
/// request's own text (unchecked when listening is public): percent-encoded, it can only
/// ever be one query value, never a new playlist line or attribute.
fn token_suffix(token: Option<&str>) -> String {
    const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    token.map(|t| format!("?token={}", utf8_percent_encode(t, QUERY_VALUE))).unwrap_or_default()
}

fn segment_number(raw: &str) -> ApiResult<u64> {
    raw.strip_suffix(".m4s")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| ApiError::not_found(format!("no segment {raw}")))
}

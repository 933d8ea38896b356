//! Listening over HTTP: a player's stream Icecast-style (`/players/{id}/listen`, Ogg Opus or
//! MP3 with ICY titles, `?rewind=`), the same for live mounts, live HLS of a player, on-demand HLS of any track, the
//! listen tokens that open them, and the operator page. Everything here reads what players
//! already made (their recordings, the audio cache); nothing changes a player.

pub mod fmp4;
mod hls;
pub mod hub;
mod live;
pub mod ogg_pages;
mod stream;
pub mod tokens;
pub mod ui;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::extract::{JsonBody, PlayerId};
use super::{ApiError, AppState};
use crate::audio::mp3::Mp3Encoder;
use crate::audio::recording::Recording;
use crate::config::ListenConfig;
use crate::events::EventBus;
use crate::model::Id;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::HlsLabels;
use crate::voice::Scheduler;
use hub::{Audience, Hub, LIVE_DELAY_TICKS, ListenerCaps, Who};
use stream::{BURST_TICKS, Encoding, Icy, Listener, Mp3Feed};
use tokens::{Batch, Format, Grant, Signer, Subject, TokenError};

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

/// An HLS request for a player, let in: the player, and the token it came with (carried into
/// a playlist's URIs).
struct PlayerHls {
    id: Id,
    token: Option<String>,
}

/// The same for a cached track, by its id.
struct TrackHls {
    id: String,
    token: Option<String>,
}

/// Lets an HLS request for `subject` in (see [`Listening::admit`]); the token it came with.
async fn admit_hls(parts: &mut Parts, app: &AppState, subject: &Subject) -> ApiResult<Option<String>> {
    let Query(query) =
        Query::<TokenQuery>::from_request_parts(parts, app).await.map_err(|e| ApiError::bad_request(e.body_text()))?;
    app.listening.admit(app, &parts.headers, query.token.as_deref(), subject, Format::Hls)?;
    Ok(query.token)
}

impl FromRequestParts<AppState> for PlayerHls {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> ApiResult<Self> {
        let PlayerId(id) = PlayerId::from_request_parts(parts, app).await?;
        Ok(Self { id, token: admit_hls(parts, app, &Subject::Player(id)).await? })
    }
}

impl FromRequestParts<AppState> for TrackHls {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> ApiResult<Self> {
        let Path(params) = Path::<std::collections::HashMap<String, String>>::from_request_parts(parts, app)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        let id = params.get("track").cloned().unwrap_or_default();
        let token = admit_hls(parts, app, &Subject::Track(id.clone())).await?;
        Ok(Self { id, token })
    }
}

/// The segment a path names (`<n>.m4s`).
fn segment_of(parts: &Path<std::collections::HashMap<String, String>>) -> ApiResult<u64> {
    segment_number(parts.get("segment").map_or("", String::as_str))
}

async fn player_playlist(State(app): State<AppState>, hls: PlayerHls) -> ApiResult<Response> {
    let player = app.registry.get(hls.id)?;
    count(&app, "playlist", "player");
    let now = app.listening.scheduler.now_tick();
    let text = hls::live_playlist(player.output.recording(), now, &token_suffix(hls.token.as_deref()));
    Ok(playlist_response(text))
}

async fn player_init(State(app): State<AppState>, hls: PlayerHls) -> ApiResult<Response> {
    app.registry.get(hls.id)?;
    init_response(&app, "player")
}

/// The init segment: the same for every player and track (stereo Opus at 48 kHz).
fn init_response(app: &AppState, source: &'static str) -> ApiResult<Response> {
    count(app, "init", source);
    Ok(mp4_response(fmp4::init_segment().map_err(ApiError::internal)?, "max-age=3600"))
}

fn segment_error(e: hls::HlsError) -> ApiError {
    match e {
        hls::HlsError::Gone(_) => ApiError::not_found(e),
        other => ApiError::internal(other),
    }
}

async fn player_segment(
    State(app): State<AppState>,
    hls: PlayerHls,
    path: Path<std::collections::HashMap<String, String>>,
) -> ApiResult<Response> {
    let n = segment_of(&path)?;
    let player = app.registry.get(hls.id)?;
    count(&app, "segment", "player");
    let now = app.listening.scheduler.now_tick();
    let bytes = hls::live_segment(player.output.recording(), now, n).map_err(segment_error)?;
    Ok(mp4_response(bytes, "max-age=600"))
}

#[derive(Deserialize)]
struct TrackQuery {
    query: Option<String>,
    token: Option<String>,
}

/// On-demand HLS by query: the track is found as an enqueue finds it, cached (filled now if
/// it is not), and its playlist points at the track's id form with a token for that id.
async fn query_playlist(
    State(app): State<AppState>,
    Query(query): Query<TrackQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let text = query.query.as_deref().map(str::trim).filter(|q| !q.is_empty());
    let text = text.ok_or_else(|| ApiError::bad_request("query is required (a link or a search)"))?;
    let grant = app.listening.admit(&app, &headers, query.token.as_deref(), &Subject::query(text), Format::Hls)?;
    let (tracks, mut known) = super::players::find(&app, text).await?;
    let track =
        tracks.into_iter().next().ok_or_else(|| ApiError::source_unavailable(format!("{text} names no track")))?;
    let source = known.iter().position(|(id, _)| *id == track.id).map(|at| known.swap_remove(at).1);
    // The fill goes on if this request gives up waiting: asking again finds it further on.
    let registry = app.registry.clone();
    let preparing = tokio::spawn(async move { registry.prepare(&track, source).await });
    let id = match tokio::time::timeout(PREPARE_TIMEOUT, preparing).await {
        Ok(Ok(Ok(id))) => id,
        Ok(Ok(Err(e))) => return Err(ApiError::source_unavailable(e)),
        Ok(Err(e)) => return Err(ApiError::internal(e)),
        Err(_) => return Err(ApiError::service_unavailable("the track is still being cached; ask again")),
    };
    // Segments are reached by the track's id, with a token for it that ends with this one
    // (or in an hour, for a request let in by the bearer token).
    let suffix = if app.listening.public {
        String::new()
    } else {
        let expires = grant.map_or_else(|| crate::wall_clock::unix_secs() + DEFAULT_TTL_SECS, |g| g.expires);
        let token =
            app.listening.signer.sign(&Grant { subject: Subject::Track(id.clone()), format: Format::Hls, expires });
        token_suffix(Some(&token))
    };
    track_playlist_text(&app, &id, &format!("/tracks/{id}/hls/"), &suffix).await
}

async fn track_playlist_text(app: &AppState, id: &str, prefix: &str, suffix: &str) -> ApiResult<Response> {
    let cached = open_cached(app, id).await?;
    count(app, "playlist", "track");
    Ok(playlist_response(hls::track_playlist(&cached.index, prefix, suffix)))
}

async fn open_cached(app: &AppState, id: &str) -> ApiResult<crate::cache::store::CachedTrack> {
    let cache = app.registry.ctx.pipeline.cache.clone().ok_or_else(|| ApiError::not_found("the audio cache is off"))?;
    let owned = id.to_string();
    tokio::task::spawn_blocking(move || cache.open_by_id(&owned))
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("track {id} is not cached")))
}

async fn track_playlist(State(app): State<AppState>, hls: TrackHls) -> ApiResult<Response> {
    track_playlist_text(&app, &hls.id, "", &token_suffix(hls.token.as_deref())).await
}

async fn track_init(State(app): State<AppState>, hls: TrackHls) -> ApiResult<Response> {
    open_cached(&app, &hls.id).await?;
    init_response(&app, "track")
}

async fn track_segment(
    State(app): State<AppState>,
    hls: TrackHls,
    path: Path<std::collections::HashMap<String, String>>,
) -> ApiResult<Response> {
    let n = segment_of(&path)?;
    let mut cached = open_cached(&app, &hls.id).await?;
    count(&app, "segment", "track");
    let bytes = tokio::task::spawn_blocking(move || hls::track_segment(&cached.index, &mut cached.reader, n))
        .await
        .map_err(ApiError::internal)?
        .map_err(segment_error)?;
    Ok(mp4_response(bytes, "max-age=86400"))
}

/// What a token is for, as requests name it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub player_id: Option<Id>,
    /// A cached track's id (from an on-demand playlist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_id: Option<String>,
    /// A link or search, as `/tracks/hls/index.m3u8?query=` takes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<String>,
    /// A live mount's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    #[serde(default = "any_format")]
    pub format: Format,
}

fn any_format() -> Format {
    Format::Any
}

impl TokenItem {
    fn subject(&self) -> ApiResult<Subject> {
        let for_track = self.track_id.is_some() || self.track.is_some();
        if for_track && !matches!(self.format, Format::Hls | Format::Any) {
            return Err(ApiError::bad_request("a track is listened to as hls"));
        }
        match (&self.player_id, &self.track_id, &self.track, &self.mount) {
            (Some(id), None, None, None) => Ok(Subject::Player(*id)),
            (None, Some(id), None, None) if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Ok(Subject::Track(id.to_ascii_lowercase()))
            }
            (None, Some(id), None, None) => Err(ApiError::bad_request(format!("track_id {id:?} is not a track id"))),
            (None, None, Some(query), None) if !query.trim().is_empty() => Ok(Subject::query(query.trim())),
            (None, None, None, Some(name)) => match crate::live::check_name(name) {
                Ok(()) => Ok(Subject::Mount(name.clone())),
                Err(e) => Err(ApiError::bad_request(e.to_string())),
            },
            _ => Err(ApiError::bad_request("name exactly one of player_id, track_id, track or mount")),
        }
    }

    /// Where the token is used, with the token in place.
    fn url(&self, token: &str) -> String {
        let enc = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
        let stream = |base: String| match self.format {
            Format::Hls => format!("{base}/hls/index.m3u8?token={token}"),
            Format::Mp3 => format!("{base}/listen?format=mp3&token={token}"),
            _ => format!("{base}/listen?token={token}"),
        };
        match (&self.player_id, &self.track_id, &self.track, &self.mount) {
            (Some(id), _, _, _) => stream(format!("/players/{id}")),
            (_, Some(id), _, _) => format!("/tracks/{id}/hls/index.m3u8?token={token}"),
            (_, _, Some(query), _) => format!("/tracks/hls/index.m3u8?query={}&token={token}", enc(query.trim())),
            (_, _, _, Some(name)) => stream(format!("/live/{}", enc(name))),
            _ => String::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueRequest {
    player_id: Option<Id>,
    track_id: Option<String>,
    track: Option<String>,
    mount: Option<String>,
    format: Option<Format>,
    items: Option<Vec<TokenItem>>,
    /// Each token's life in seconds.
    expires_in: Option<u64>,
    /// A batch's life: its tokens, issued now or unlocked later, never outlive it.
    batch_expires_in: Option<u64>,
}

#[derive(Debug, Serialize)]
struct IssuedToken {
    token: String,
    expires_at: u64,
    url: String,
    #[serde(flatten)]
    item: TokenItem,
}

fn ttl(raw: Option<u64>, what: &str) -> ApiResult<u64> {
    match raw.unwrap_or(DEFAULT_TTL_SECS) {
        0 => Err(ApiError::bad_request(format!("{what} must be at least 1 second"))),
        s if s > MAX_TTL_SECS => Err(ApiError::bad_request(format!("{what} is at most {MAX_TTL_SECS} seconds"))),
        s => Ok(s),
    }
}

fn issue_one(signer: &Signer, item: TokenItem, expires: u64) -> ApiResult<IssuedToken> {
    let token = signer.sign(&Grant { subject: item.subject()?, format: item.format, expires });
    Ok(IssuedToken { url: item.url(&token), token, expires_at: expires, item })
}

/// `POST /listen-tokens`: one item (`player_id`, `track_id`, `track` or `mount`, and `format`), or a
/// batch (`items`, `batch_expires_in`).
async fn issue(State(app): State<AppState>, body: axum::body::Bytes) -> ApiResult<Response> {
    let request: IssueRequest = serde_json::from_slice(&body).map_err(ApiError::bad_request)?;
    let now = crate::wall_clock::unix_secs();
    let token_ttl = ttl(request.expires_in, "expires_in")?;
    let signer = &app.listening.signer;
    let named =
        request.player_id.is_some() || request.track_id.is_some() || request.track.is_some() || request.mount.is_some();
    let item = named.then(|| TokenItem {
        player_id: request.player_id,
        track_id: request.track_id,
        track: request.track,
        mount: request.mount,
        format: request.format.unwrap_or(Format::Any),
    });
    if request.format.is_some() && !named {
        return Err(ApiError::bad_request("format goes with player_id, track_id, track or mount (or inside items)"));
    }
    match (item, request.items) {
        (Some(item), None) => {
            if request.batch_expires_in.is_some() {
                return Err(ApiError::bad_request("batch_expires_in goes with items"));
            }
            let issued = issue_one(signer, item, now + token_ttl)?;
            Ok((StatusCode::CREATED, axum::Json(issued)).into_response())
        }
        (None, Some(items)) => {
            if items.is_empty() || items.len() > MAX_BATCH_ITEMS {
                return Err(ApiError::bad_request(format!("a batch names 1 to {MAX_BATCH_ITEMS} items")));
            }
            let batch_expires = now + ttl(request.batch_expires_in, "batch_expires_in")?;
            let subjects = items.iter().map(|i| Ok((i.subject()?, i.format))).collect::<ApiResult<Vec<_>>>()?;
            let batch = signer.sign_batch(&Batch { items: subjects, expires: batch_expires, ttl: token_ttl });
            let expires = (now + token_ttl).min(batch_expires);
            let issued = items.into_iter().map(|i| issue_one(signer, i, expires)).collect::<ApiResult<Vec<_>>>()?;
            let body = serde_json::json!({ "batch": batch, "batch_expires_at": batch_expires, "items": issued });
            Ok((StatusCode::CREATED, axum::Json(body)).into_response())
        }
        _ => Err(ApiError::bad_request("give one item (player_id, track_id, track or mount) or items")),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnlockRequest {
    batch: String,
    /// The item's position in the batch.
    item: usize,
}

/// `POST /listen-tokens/unlock`: a fresh token for one item of a batch while the batch lives
/// (it never outlives the batch); 410 once the batch expired.
async fn unlock(State(app): State<AppState>, JsonBody(request): JsonBody<UnlockRequest>) -> ApiResult<Response> {
    let now = crate::wall_clock::unix_secs();
    let batch = match app.listening.signer.verify_batch(&request.batch, now) {
        Ok(batch) => batch,
        Err(TokenError::Expired) => return Err(ApiError::gone("the batch expired")),
        Err(e) => return Err(ApiError::forbidden_with(e)),
    };
    let (subject, format) = batch
        .items
        .get(request.item)
        .cloned()
        .ok_or_else(|| ApiError::bad_request(format!("the batch has {} items", batch.items.len())))?;
    let expires = (now + batch.ttl).min(batch.expires);
    let token = app.listening.signer.sign(&Grant { subject, format, expires });
    Ok((StatusCode::CREATED, axum::Json(serde_json::json!({ "token": token, "expires_at": expires }))).into_response())
}

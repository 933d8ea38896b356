//! Source clients, as Icecast takes them: `PUT` (with `Expect: 100-continue`) or the legacy
//! `SOURCE`, Basic auth (user `source`, password the mount's key), then the stream as the
//! rest of the connection. Each source connection is one task: it reads the upload and queues
//! it for the mount's decoder. A source that sends nothing for `INGEST_IDLE_SECONDS` is
//! dropped; failed logins from one address are limited per minute.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use base64::Engine;
use bytes::{Bytes, BytesMut};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::connection::Connection;
use crate::api::ApiError;
use crate::audio::pushed::PushedStream;
use crate::config::LiveConfig;
use crate::events::{Event, EventBus};
use crate::live::{Mount, Mounts, SourceStop, Stage, StageError, format_of, keys};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::ReasonLabels;

/// The most a request head may take.
const MAX_HEAD: usize = 16 * 1024;
/// Bytes asked of the socket at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Received chunks queued ahead of the mount's decoder.
const CHUNKS_AHEAD: usize = 64;
/// How long, and how much, a refused client's unread upload is read before closing.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;
/// The user name Icecast sources log in with.
const SOURCE_USER: &str = "source";

/// What lets sources in and feeds their mounts.
pub struct Ingest {
    mounts: Arc<Mounts>,
    events: EventBus,
    metrics: Arc<Metrics>,
    media: tokio::runtime::Handle,
    settings: LiveConfig,
    failures: DefaultKeyedRateLimiter<IpAddr>,
    /// Addresses that used up their failed logins, until when.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
}

/// Who a source logged in as.
pub enum Login {
    /// A mount's own source.
    Source(Arc<Mount>),
    /// A DJ of a stage.
    Dj(Arc<Stage>, String),
}

impl Login {
    pub fn mount(&self) -> Arc<Mount> {
        match self {
            Login::Source(mount) => mount.clone(),
            Login::Dj(stage, _) => stage.mount().clone(),
        }
    }
}

/// A request head, parsed.
struct Head {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    /// Bytes read past the head: the start of the stream.
    rest: Bytes,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A source that may stream.
struct Admitted {
    login: Login,
    content_type: Option<String>,
    stream_name: Option<String>,
    expects_continue: bool,
}

impl Ingest {
    pub fn new(
        mounts: Arc<Mounts>,
        events: EventBus,
        metrics: Arc<Metrics>,
        media: tokio::runtime::Handle,
        settings: LiveConfig,
    ) -> Self {
        let per_minute = NonZeroU32::new(settings.failures_per_minute).unwrap_or(NonZeroU32::MIN);
        Self {
            mounts,
            events,
            metrics,
            media,
            settings,
            failures: RateLimiter::keyed(Quota::per_minute(per_minute)),
            blocked: Mutex::default(),
        }
    }

    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.settings.header_timeout_secs)
    }

    fn refused(&self, reason: &str) {
        self.metrics.ingest_refused.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }

    /// 429 while `ip` has used up its failed logins.
    pub fn check_blocked(&self, ip: IpAddr) -> Result<(), ApiError> {
        let mut blocked = self.blocked.lock();
        let now = Instant::now();
        blocked.retain(|_, until| *until > now);
        match blocked.get(&ip) {
            Some(until) => Err(ApiError::limit(format!(
                "too many failed source logins from this address; try again in {} s (INGEST_FAILURES_PER_MINUTE)",
                until.duration_since(now).as_secs() + 1
            ))),
            None => Ok(()),
        }
    }

    /// Counts a failed login from `ip`; past the limit the address is refused for a while.
    pub fn failed_login(&self, ip: IpAddr) {
        if self.failures.check_key(&ip).is_err() {
            let wait = Duration::from_secs(60) / self.settings.failures_per_minute.max(1);
            self.blocked.lock().insert(ip, Instant::now() + wait.max(Duration::from_secs(1)));
        }
    }

    /// Who `authorization` (a Basic header) logs in as on mount `name`: its source, or one of
    /// its DJs when the mount is a stage.
    pub fn login(&self, name: &str, authorization: Option<&str>, ip: IpAddr) -> Result<Login, ApiError> {
        self.check_blocked(ip)?;
        // An unknown mount is refused exactly as a wrong key is: logins never tell a stranger
        // which mounts exist.
        let Some(mount) = self.mounts.get(name) else {
            self.failed_login(ip);
            self.refused("unknown_mount");
            return Err(wrong_login(name));
        };
        let presented = authorization.and_then(basic_credentials);
        if let Some(stage) = self.mounts.stage(name) {
            let (user, key) = presented.unwrap_or_default();
            return match stage.login(&user, &key) {
                Ok(dj) => Ok(Login::Dj(stage, dj)),
                Err(e @ StageError::Blocked { .. }) => {
                    self.refused("blocked");
                    Err(ApiError::forbidden_with(e))
                }
                Err(e) => {
                    self.failed_login(ip);
                    self.refused("auth");
                    Err(ApiError::unauthorized_with(format!("{e} (HTTP Basic, user source or the DJ's name)")))
                }
            };
        }
        let ok = presented
            .as_ref()
            .is_some_and(|(user, key)| user == SOURCE_USER && keys::matches(key, &mount.settings().key_digest));
        if !ok {
            self.failed_login(ip);
            self.refused("auth");
            return Err(wrong_login(name));
        }
        Ok(Login::Source(mount))
    }

    /// Serves one source connection to its end.
    pub async fn serve(self: Arc<Self>, mut stream: Connection, peer: SocketAddr) {
        let head = match tokio::time::timeout(self.header_timeout(), read_head(&mut stream)).await {
            Ok(Ok(head)) => head,
            Ok(Err(e)) => {
                self.refused("bad_request");
                return reply(&mut stream, &ApiError::bad_request(e)).await;
            }
            Err(_) => {
                self.refused("header_timeout");
                let late = ApiError { status: StatusCode::REQUEST_TIMEOUT, ..ApiError::bad_request("") };
                let late = ApiError { message: "bad request: the request head took too long".into(), ..late };
                return reply(&mut stream, &late).await;
            }
        };
        match self.admit(&head, peer.ip()) {
            Ok(admitted) => self.stream(stream, head.rest, admitted, peer).await,
            Err(e) => reply(&mut stream, &e).await,
        }
    }

    fn admit(&self, head: &Head, ip: IpAddr) -> Result<Admitted, ApiError> {
        if head.method != "PUT" && head.method != "SOURCE" {
            self.refused("bad_request");
            return Err(ApiError::bad_request(format!("{}: a source sends PUT or SOURCE", head.method)));
        }
        let path = head.path.split('?').next().unwrap_or("");
        let name = path.strip_prefix("/live/").or_else(|| path.strip_prefix('/')).unwrap_or("");
        let login = self.login(name, head.header("authorization"), ip)?;
        let mount = login.mount();
        if head.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            self.refused("bad_request");
            return Err(ApiError::bad_request(
                "send the stream as the raw request body (not chunked), as Icecast takes it",
            ));
        }
        let content_type = head.header("content-type").map(str::to_string);
        let allowed = mount.settings().formats;
        if !allowed.is_empty() {
            let format = content_type.as_deref().and_then(format_of);
            if !format.is_some_and(|f| allowed.iter().any(|a| a == f)) {
                self.refused("format");
                let detail = format!(
                    "content type {:?}: mount {name:?} takes {allowed:?}",
                    content_type.as_deref().unwrap_or("(none)")
                );
                return Err(ApiError { status: StatusCode::UNSUPPORTED_MEDIA_TYPE, ..ApiError::bad_request(detail) });
            }
        }
        let stream_name = head.header("ice-name").or_else(|| head.header("icy-name")).map(str::to_string);
        let expects_continue = head.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        Ok(Admitted { login, content_type, stream_name, expects_continue })
    }

    /// Puts the source on air and feeds its upload to the mount until it ends.
    async fn stream(&self, mut stream: Connection, rest: Bytes, admitted: Admitted, peer: SocketAddr) {
        let Admitted { login, content_type, stream_name, expects_continue } = admitted;
        let mount = login.mount();
        let accept: &[u8] =
            if expects_continue { b"HTTP/1.1 100 Continue\r\n\r\n" } else { b"HTTP/1.0 200 OK\r\n\r\n" };
        if stream.write_all(accept).await.is_err() {
            return;
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let stalls = self.metrics.source_stalls.clone();
        let (tx, pushed) = PushedStream::channel(CHUNKS_AHEAD, &self.media, cancel.clone(), stalls);
        let exclusive = matches!(login, Login::Source(_));
        let (session, replaced) =
            self.mounts.start_source(&mount, pushed, content_type.clone(), stream_name, cancel.clone(), exclusive);
        // A DJ waits their turn while connected.
        let _presence = match &login {
            Login::Dj(stage, dj) => Some(stage.joined(dj, session.id())),
            Login::Source(_) => None,
        };
        let name = mount.name.to_string();
        tracing::info!(mount = %name, %peer, content_type = content_type.as_deref().unwrap_or(""), replaced, "live source connected");
        self.metrics.live_sources.inc();
        self.events.emit(Event::LiveSourceConnected { mount: name.clone(), content_type, replaced });
        let idle = Duration::from_secs(self.settings.idle_secs);
        let max_duration = mount.settings().max_duration_secs.map_or(Duration::MAX, Duration::from_secs);
        let cut_off = tokio::time::sleep(max_duration.min(Duration::from_secs(100 * 365 * 86_400)));
        tokio::pin!(cut_off);
        let mut first = (!rest.is_empty()).then_some(rest);
        let reason = loop {
            if let Some(bytes) = first.take() {
                mount.bytes_in.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                self.metrics.live_bytes_in.inc_by(bytes.len() as u64);
                if !tx.send(bytes).await {
                    break session.reason().unwrap_or_else(|| failed(&mount));
                }
            }
            let mut buf = BytesMut::with_capacity(READ_CHUNK);
            tokio::select! {
                read = tokio::time::timeout(idle, stream.read_buf(&mut buf)) => match read {
                    Err(_) => break SourceStop::Stalled,
                    Ok(Ok(0)) | Ok(Err(_)) => break SourceStop::Disconnected,
                    Ok(Ok(_)) => first = Some(buf.freeze()),
                },
                () = session.stop.notified() => break session.reason().unwrap_or(SourceStop::Replaced),
                () = &mut cut_off => break SourceStop::MaxDuration,
            }
        };
        cancel.store(true, Ordering::Release);
        drop(session);
        drop(tx);
        tracing::info!(mount = %name, %peer, %reason, "live source gone");
        self.metrics.live_sources.dec();
        self.metrics.live_source_drops.get_or_create(&ReasonLabels { reason: reason.kind().to_string() }).inc();
        self.events.emit(Event::LiveSourceDisconnected { mount: name, reason: reason.to_string() });
    }
}

/// Why a source's stream stopped being read, when nobody told it to go.
fn failed(mount: &Mount) -> SourceStop {
    match mount.last_failure() {
        Some(e) => SourceStop::Failed(e),
        None => SourceStop::Ended,
    }
}

/// `(user, password)` from a Basic authorization header.
pub fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Reads up to the end of the request head.
async fn read_head(stream: &mut Connection) -> Result<Head, String> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4).freeze();
            return parse_head(&buf, rest);
        }
        if buf.len() > MAX_HEAD {
            return Err(format!("the request head is over {MAX_HEAD} bytes"));
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) => return Err("the connection closed before the request head ended".into()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn parse_head(raw: &[u8], rest: Bytes) -> Result<Head, String> {
    // Old Icecast sources say `ICE/1.0` where HTTP says `HTTP/1.0`.
    let text = String::from_utf8_lossy(raw);
    let text = match text.split_once("\r\n") {
        Some((line, after)) if line.ends_with(" ICE/1.0") => {
            format!("{} HTTP/1.0\r\n{after}", line.trim_end_matches(" ICE/1.0"))
        }
        _ => text.into_owned(),
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(text.as_bytes()) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("an incomplete request head".into()),
        Err(e) => return Err(format!("an unreadable request head ({e})")),
    }
    Ok(Head {
        method: request.method.unwrap_or("").to_string(),
        path: request.path.unwrap_or("").to_string(),
        headers: request
            .headers
            .iter()
            .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
            .collect(),
        rest,
    })
}

/// Answers a refused connection with the contract's error body and closes.
pub(super) async fn reply(stream: &mut Connection, error: &ApiError) {
    let body = serde_json::json!({ "code": error.code, "message": error.message }).to_string();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        error.status.as_u16(),
        error.status.canonical_reason().unwrap_or(""),
        body.len()
    );
    if error.status == StatusCode::UNAUTHORIZED {
        head.push_str("WWW-Authenticate: Basic realm=\"mesastream\"\r\n");
    }
    head.push_str("\r\n");
    head.push_str(&body);
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.shutdown().await;
    // Closing with unread input would reset the connection before the client reads the
    // answer: what it still sends is read and dropped for a moment first.
    let mut sink = [0u8; 4096];
    let drain = async {
        let mut left = LINGER_BYTES;
        while let Ok(n @ 1..) = stream.read(&mut sink).await {
            left = left.saturating_sub(n);
            if left == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// The answer to a login that does not open `name`, whether or not the mount exists.
fn wrong_login(name: &str) -> ApiError {
    ApiError::unauthorized_with(format!("log in as user {SOURCE_USER:?} with mount {name:?}'s key (HTTP Basic)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse_with_icecast_and_http_versions() {
        let head = parse_head(
            b"SOURCE /studio ICE/1.0\r\nAuthorization: Basic c291cmNlOmtleQ==\r\nContent-Type: audio/mpeg\r\n\r\n",
            Bytes::from_static(b"ID3"),
        )
        .unwrap();
        assert_eq!((head.method.as_str(), head.path.as_str()), ("SOURCE", "/studio"));
        assert_eq!(head.header("content-type"), Some("audio/mpeg"));
        assert_eq!(basic_credentials(head.header("authorization").unwrap()), Some(("source".into(), "key".into())));
        assert_eq!(&head.rest[..], b"ID3");
        assert!(parse_head(b"PUT /studio HTTP/1.1\r\nHost x\r\n\r\n", Bytes::new()).is_err());
    }
}

//! Shared test harness: the real server, the fake voice server, a media server and a client.
#![allow(dead_code)]

pub mod baseline;
pub mod dns;
pub mod hostile;
pub mod media;
pub mod plugins;
pub mod process;
pub mod redis;
pub mod stalls;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fake_voice::{FakeVoiceConfig, FakeVoiceServer, Session};
use futures_util::StreamExt;
use mesastream::Server;
use mesastream::config::Config;
use serde_json::{Value, json};
use tokio::sync::mpsc;

pub use media::MediaServer;

pub const TOKEN: &str = "test-token";
pub const BOT_USER: u64 = 700_000_000_000_000_001;
pub const LIMIT: Duration = Duration::from_secs(30);

static NEXT_GUILD: AtomicU64 = AtomicU64::new(100_000_000_000_000_001);

/// The server under test: in this process, or the installed binary as its own process.
pub enum Serving {
    InProcess(Server),
    Installed(process::Process, tempfile::TempDir),
}

pub struct Harness {
    /// Where the server listens.
    pub addr: std::net::SocketAddr,
    pub serving: Serving,
    pub fake: FakeVoiceServer,
    pub media: MediaServer,
    pub http: reqwest::Client,
    /// The plugins directory, when the server runs with plugins.
    pub plugins: Option<tempfile::TempDir>,
    _ca_file: Option<tempfile::NamedTempFile>,
    _data: tempfile::TempDir,
}

/// A JSON response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Harness {
    pub async fn start(voice: FakeVoiceConfig) -> Self {
        Self::start_with(voice, |_| {}).await
    }

    /// Starts with the plugins `names` installed (see `plugins::install`).
    pub async fn with_plugins(voice: FakeVoiceConfig, names: &[&str], tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = plugins::install(names);
        let path = dir.path().to_path_buf();
        let mut h = Self::start_with(voice, |c| {
            c.plugins_dir = Some(path.clone());
            c.plugins_config = Some(path.join("plugins.toml"));
            tweak(c);
        })
        .await;
        h.plugins = Some(dir);
        h
    }

    pub async fn start_with(voice: FakeVoiceConfig, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_with_media(voice, |config, _| tweak(config)).await
    }

    /// As `start_with`, for a configuration that names the media server (its address is
    /// known only once it runs).
    pub async fn start_with_media(voice: FakeVoiceConfig, tweak: impl FnOnce(&mut Config, &MediaServer)) -> Self {
        stalls::watch();
        let fake = FakeVoiceServer::start(voice).await.expect("fake voice server");
        let ca_file = ca_file_of(&fake);
        let mut config = Config::from_lookup(|k| match k {
            "AUTH_TOKEN" => Some(TOKEN.to_string()),
            "PORT" => Some("0".to_string()),
            "BIND_ADDRESS" => Some("127.0.0.1".to_string()),
            _ => None,
        })
        .expect("config");
        config.extra_ca_file = ca_file.as_ref().map(|f| f.path().to_path_buf());
        let data = tempfile::tempdir().expect("data dir");
        config.data_dir = data.path().to_path_buf();
        // The media server is on loopback: the operator's allow-list opens its ports only.
        let media = MediaServer::start().await;
        media.allow_in(&mut config.media_allow_hosts);
        tweak(&mut config, &media);
        let server = Server::start(config).await.expect("server starts");
        Self::around(server.addr, Serving::InProcess(server), fake, media, ca_file, data)
    }

    fn around(
        addr: std::net::SocketAddr,
        serving: Serving,
        fake: FakeVoiceServer,
        media: MediaServer,
        ca_file: Option<tempfile::NamedTempFile>,
        data: tempfile::TempDir,
    ) -> Self {
        Self { addr, serving, fake, media, http: reqwest::Client::new(), plugins: None, _ca_file: ca_file, _data: data }
    }

    /// The binary installed by `scripts/install.sh` into a fresh prefix (the container
    /// image's layout: its plugins beside it, found without PLUGINS_DIR), started as its own
    /// process with the token, a private data directory, the media server listed in
    /// `MEDIA_ALLOW_HOSTS`, and `env`.
    pub async fn installed(voice: FakeVoiceConfig, env: &[(&str, String)]) -> Self {
        stalls::watch();
        let fake = FakeVoiceServer::start(voice).await.expect("fake voice server");
        let media = MediaServer::start().await;
        let prefix = tempfile::tempdir().expect("install prefix");
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let status = std::process::Command::new("bash")
            .arg(root.join("scripts/install.sh"))
            .arg(prefix.path())
            .arg(env!("CARGO_BIN_EXE_mesastream"))
            .env("PLUGINS_TARGET_DIR", std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("../plugins"))
            .status()
            .expect("run scripts/install.sh");
        assert!(status.success(), "scripts/install.sh failed");
        let exe = prefix.path().join("bin/mesastream");
        Self::as_process(fake, media, &exe, prefix, env).await
    }

    /// The built binary (not installed: no plugins) as its own process, with the same
    /// settings as [`Self::installed`]: for measuring the server apart from this process.
    /// `MESASTREAM_BIN` names another build to run instead (benchmarks compare two builds
    /// back to back with it).
    pub async fn binary(voice: FakeVoiceConfig, env: &[(&str, String)]) -> Self {
        stalls::watch();
        let fake = FakeVoiceServer::start(voice).await.expect("fake voice server");
        let media = MediaServer::start().await;
        let home = tempfile::tempdir().expect("server home");
        let exe = std::env::var_os("MESASTREAM_BIN")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_mesastream").into());
        Self::as_process(fake, media, &exe, home, env).await
    }

    async fn as_process(
        fake: FakeVoiceServer,
        media: MediaServer,
        exe: &std::path::Path,
        home: tempfile::TempDir,
        env: &[(&str, String)],
    ) -> Self {
        let ca_file = ca_file_of(&fake);
        let mut all = vec![("MEDIA_ALLOW_HOSTS", media.allow_hosts())];
        if let Some(f) = &ca_file {
            all.push(("SSL_CERT_FILE", f.path().display().to_string()));
        }
        all.extend(env.iter().map(|(k, v)| (*k, v.clone())));
        let process = process::spawn_at(exe, &all).await;
        let addr = ([127, 0, 0, 1], process.port).into();
        let data = tempfile::tempdir().expect("data dir");
        Self::around(addr, Serving::Installed(process, home), fake, media, ca_file, data)
    }

    /// The server's process id, when it runs as its own process.
    pub fn server_pid(&self) -> String {
        match &self.serving {
            Serving::Installed(process, _) => process.pid(),
            Serving::InProcess(_) => panic!("the server runs in this process"),
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url(), path)
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Reply {
        call_at(&self.http, &self.url(path), method, body).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// The `/metrics` exposition text.
    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.body.as_str().unwrap_or_default().to_string()
    }

    /// A POST without a body, as the client sends play, skip and the playlist calls.
    pub async fn post_bare(&self, path: &str) -> Reply {
        self.call(reqwest::Method::POST, path, None).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// A fresh guild whose call the fake knows, and the bot's payload for it.
    pub fn new_call(&self) -> (u64, Value) {
        new_call_on(&self.fake)
    }

    /// Creates a player for a new call and returns its guild and fake session.
    pub async fn new_player(&self) -> (u64, Arc<Session>) {
        let (guild, payload) = self.new_call();
        let reply = self.post("/players", payload).await;
        assert_eq!(reply.status, 201, "{reply:?}");
        assert_eq!(reply.body["voice_connected"], true, "{reply:?}");
        let session = self.fake.session(&guild.to_string()).expect("session identified");
        (guild, session)
    }

    pub async fn enqueue(&self, guild: u64, url: &str) -> Reply {
        self.post(&format!("/players/{guild}/queue"), json!({ "url": url })).await
    }

    pub async fn events(&self) -> Events {
        events_at(&self.base_url()).await
    }
}

/// A fresh guild whose call `fake` knows, and the bot's payload for it.
pub fn new_call_on(fake: &FakeVoiceServer) -> (u64, Value) {
    let guild = NEXT_GUILD.fetch_add(1, Ordering::Relaxed);
    let channel = guild + 1_000;
    fake.register_call(&guild.to_string(), channel);
    let payload = json!({
        "guild_id": guild.to_string(),
        "player_id": guild.to_string(),
        "channel_id": channel.to_string(),
        "user_id": BOT_USER.to_string(),
        "session_id": format!("session-{guild}"),
        "token": format!("token-{guild}"),
        "endpoint": fake.endpoint(),
        "gateway_url": fake.gateway_url(),
    });
    (guild, payload)
}

/// A request to `url` with the test token; the answer's JSON (or its text as a string).
pub async fn call_at(http: &reqwest::Client, url: &str, method: reqwest::Method, body: Option<Value>) -> Reply {
    let mut request = http.request(method, url).bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    Reply { status, body }
}

/// The event stream of the server at `base` (`http://host:port`).
pub async fn events_at(base: &str) -> Events {
    let url = format!("{}/ws", base.replacen("http://", "ws://", 1));
    let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws connects");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (_, mut read) = ws.split();
        while let Some(Ok(msg)) = read.next().await {
            if let Ok(text) = msg.to_text()
                && let Ok(v) = serde_json::from_str::<Value>(text)
            {
                let _ = tx.send(v);
            }
        }
    });
    Events { rx, seen: Vec::new() }
}

/// The fake's CA as a PEM file, when it serves TLS (`SSL_CERT_FILE` for the server).
fn ca_file_of(fake: &FakeVoiceServer) -> Option<tempfile::NamedTempFile> {
    fake.ca_pem().map(|pem| {
        let mut f = tempfile::NamedTempFile::new().expect("ca file");
        std::io::Write::write_all(&mut f, pem.as_bytes()).expect("write ca");
        f
    })
}

/// A loopback listener that only counts who connects: a request that must never leave the
/// server is pointed here, and the count proves it did not.
pub struct Tripwire {
    pub addr: std::net::SocketAddr,
    connections: Arc<AtomicU64>,
}

impl Tripwire {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind tripwire");
        let addr = listener.local_addr().expect("tripwire addr");
        let connections = Arc::new(AtomicU64::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                drop(socket);
            }
        });
        Self { addr, connections }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}

/// The event stream as a client sees it.
pub struct Events {
    rx: mpsc::UnboundedReceiver<Value>,
    pub seen: Vec<Value>,
}

/// The first message (already `seen`, or arriving within `limit`, kept in `seen` either way)
/// that matches `pred`; panics naming `what` and everything seen when none comes.
pub async fn first_matching(
    rx: &mut mpsc::UnboundedReceiver<Value>,
    seen: &mut Vec<Value>,
    limit: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    if let Some(v) = seen.iter().find(|v| pred(v)) {
        return v.clone();
    }
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(v)) => {
                seen.push(v.clone());
                if pred(&v) {
                    return v;
                }
            }
            _ => panic!("no {what}; saw {seen:#?}"),
        }
    }
}

impl Events {
    /// Waits for the first event (seen or new) matching `pred`.
    pub async fn wait(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_within(LIMIT, what, pred).await
    }

    /// The same, for something that takes longer than [`LIMIT`] (compiling a large plugin).
    pub async fn wait_within(&mut self, limit: Duration, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        first_matching(&mut self.rx, &mut self.seen, limit, &format!("{what} event"), pred).await
    }

    pub async fn track_ended(&mut self, guild: u64, track_id: &str) -> Value {
        let (g, t) = (guild.to_string(), track_id.to_string());
        self.wait("TrackEnded", move |v| {
            v["type"] == "TrackEnded" && v["data"]["player_id"] == g && v["data"]["track_id"] == t
        })
        .await
    }
}

/// The id of the track a snapshot shows as current (or last in the queue).
pub fn enqueued_track_id(snapshot: &Value) -> String {
    let queue = snapshot["queue"].as_array().cloned().unwrap_or_default();
    queue
        .last()
        .or(snapshot.get("current_track").filter(|c| !c.is_null()))
        .and_then(|t| t["id"].as_str())
        .unwrap_or_else(|| panic!("a track id in {snapshot}"))
        .to_string()
}

/// A track playing on a new player, with the event stream that follows it.
pub struct Playing {
    pub events: Events,
    pub guild: u64,
    pub session: Arc<Session>,
    pub track_id: String,
}

impl Playing {
    /// Waits for the track's end and the silence tail; returns what the listener heard.
    pub async fn finish(&mut self) -> fake_voice::Report {
        self.events.track_ended(self.guild, &self.track_id).await;
        self.session.wait(LIMIT, |c| c.silence_packets >= 5).await.expect("silence tail after the track");
        self.session.report()
    }

    /// Waits until the listener has received `n` packets.
    pub async fn heard(&self, n: u64) {
        self.session.wait(LIMIT, |c| c.packets >= n).await.expect("audio flowing");
    }
}

/// Creates a player and starts `file` on it.
pub async fn start_track(h: &Harness, file: &str) -> Playing {
    let events = h.events().await;
    let (guild, session) = h.new_player().await;
    let reply = h.enqueue(guild, &h.media.url(file)).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    Playing { events, guild, session, track_id: enqueued_track_id(&reply.body) }
}

/// Plays what `query` resolves to on a new player; returns the enqueued track and the report.
pub async fn play_query(h: &Harness, query: &str) -> (Value, fake_voice::Report) {
    let mut events = h.events().await;
    let (guild, session) = h.new_player().await;
    let reply = h.enqueue(guild, query).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let track = reply.body["current_track"].clone();
    let ended = events.track_ended(guild, &enqueued_track_id(&reply.body)).await;
    assert!(ended["data"].get("error").is_none(), "{ended}");
    session.wait(LIMIT, |c| c.silence_packets >= 5).await.expect("silence tail");
    (track, session.report())
}

/// Plays `file` to its end on a new player whose filter chain is `chain`, and returns what the
/// listener heard: with nothing lost or undecryptable, no gap, and no filter failed on the way
/// (a filter taken out of the chain would leave the rest of the track unfiltered).
pub async fn play_filtered(h: &Harness, file: &str, chain: Value) -> fake_voice::Report {
    play_query_filtered(h, &h.media.url(file), chain).await
}

/// The same for what `query` resolves to.
pub async fn play_query_filtered(h: &Harness, query: &str, chain: Value) -> fake_voice::Report {
    let mut events = h.events().await;
    let (guild, session) = h.new_player().await;
    let set = h.call(reqwest::Method::PUT, &format!("/players/{guild}/filters"), Some(chain.clone())).await;
    assert_eq!((set.status, &set.body), (200, &chain), "{set:?}");
    let reply = h.enqueue(guild, query).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let ended = events.track_ended(guild, &enqueued_track_id(&reply.body)).await;
    assert!(ended["data"].get("error").is_none(), "{ended}");
    let failed: Vec<&Value> = events.seen.iter().filter(|e| e["type"] == "FilterFailed").collect();
    assert!(failed.is_empty(), "a filter failed mid-track: {failed:?}");
    session.wait(LIMIT, |c| c.silence_packets >= 5).await.expect("silence tail");
    let report = session.report();
    assert_eq!((report.lost_packets, report.undecryptable), (0, 0), "{report:?}");
    assert_no_gaps(&report);
    report
}

/// Plays one fixture to the end on a new player and returns what the listener heard.
pub async fn play_to_end(h: &Harness, file: &str) -> (u64, Arc<Session>, fake_voice::Report) {
    let mut playing = start_track(h, file).await;
    let ended = playing.events.track_ended(playing.guild, &playing.track_id).await;
    assert!(ended["data"].get("error").is_none(), "{ended}");
    let report = playing.finish().await;
    (playing.guild, playing.session, report)
}

/// Checks the listener heard `tone` whole: right pitch in every window, nothing lost,
/// nothing undecryptable or in clear.
pub fn assert_heard(report: &fake_voice::Report, freq_hz: f64, seconds: f64) {
    assert_eq!(report.undecryptable, 0, "undecryptable frames: {report:?}");
    assert_eq!(report.plaintext, 0, "plaintext frames: {report:?}");
    assert_eq!(report.transport_failures, 0, "{report:?}");
    assert_eq!(report.lost_packets, 0, "{report:?}");
    assert_no_gaps(report);
    assert!(!report.windows.is_empty(), "no audio heard: {report:?}");
    let off = report.windows_off_frequency(freq_hz, 2.0);
    assert!(off.is_empty(), "windows off {freq_hz} Hz: {off:?}");
    let expected_ms = (seconds * 1000.0) as i64;
    assert!((report.audible_ms as i64 - expected_ms).abs() <= 60, "heard {} ms of {expected_ms} ms", report.audible_ms);
}

/// Checks the listener heard no gap of the server's making. A gap heard while the machine
/// itself stalled (see `stalls`) is the machine's: it is printed, not failed.
pub fn assert_no_gaps(report: &fake_voice::Report) {
    let describe = |gap: &fake_voice::Gap| {
        format!(
            "a {} ms gap while the machine stalled for {} ms",
            gap.ticks * 20,
            stalls::stalled_around(gap).as_millis()
        )
    };
    let (machine, server): (Vec<&fake_voice::Gap>, Vec<_>) = report.gaps.iter().partition(|gap| stalls::explains(gap));
    for gap in machine {
        eprintln!("{}", describe(gap));
    }
    let server: Vec<String> = server.into_iter().map(describe).collect();
    assert!(server.is_empty(), "gaps in the audio the machine does not explain: {server:?}; {}", report.timing_line());
}

/// The first sample of `name` that carries every one of `labels` (0 when there is none).
pub fn counter(metrics: &str, name: &str, labels: &[&str]) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The Opus payloads a listener heard, without the silence frames around the track.
pub fn heard_packets(session: &Session) -> Vec<Vec<u8>> {
    session.payloads().into_iter().filter(|p| p.as_slice() != fake_voice::analysis::OPUS_SILENCE).collect()
}

/// Asks `check` every 25 ms until it answers something, for at most `limit`; panics naming
/// `what` otherwise. For state that only polling can see (another process's records).
pub async fn until<T, F: std::future::Future<Output = Option<T>>>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

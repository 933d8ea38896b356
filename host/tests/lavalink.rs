//! The Lavalink v4 routes as a Lavalink client meets them: the password, the version header,
//! the error body, the node's info and stats, track lookup and the encoded track, and the
//! session WebSocket with resuming.

mod support;

use fake_voice::FakeVoiceConfig;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::Duration;

use support::{Harness, Serving};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const PASSWORD: &str = "youshallnotpass";
const BOT: &str = "170000000000000001";
/// Lavalink's documented sample track (a version 2 message).
const DOCS_SAMPLE: &str = "QAAAjQIAJVJpY2sgQXN0bGV5IC0gTmV2ZXIgR29ubmEgR2l2ZSBZb3UgVXAADlJpY2tBc3RsZXlWRVZPAAAAAAADPCAAC2RRdzR3OVdnWGNRAAEAK2h0dHBzOi8vd3d3LnlvdXR1YmUuY29tL3dhdGNoP3Y9ZFF3NHc5V2dYY1EAB3lvdXR1YmUAAAAAAAAAAA==";

/// A node with the Lavalink routes on, and a fake voice server that speaks TLS as Discord's
/// does (Lavalink clients send an endpoint without a scheme; it is dialled with wss).
async fn node() -> Harness {
    let voice = FakeVoiceConfig { tls: true, ..Default::default() };
    Harness::start_with(voice, |c| c.lavalink_password = Some(PASSWORD.into())).await
}

struct Answer {
    status: u16,
    version_header: Option<String>,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }
}

async fn call(h: &Harness, method: reqwest::Method, path: &str, password: Option<&str>, body: Option<Value>) -> Answer {
    let mut request = h.http.request(method, h.url(path));
    if let Some(p) = password {
        request = request.header("Authorization", p);
    }
    if let Some(b) = body {
        request = request.json(&b);
    }
    let response = request.send().await.expect("request");
    let version_header =
        response.headers().get("Lavalink-Api-Version").and_then(|v| v.to_str().ok()).map(str::to_string);
    Answer { status: response.status().as_u16(), version_header, text: response.text().await.expect("body") }
}

async fn get(h: &Harness, path: &str) -> Answer {
    call(h, reqwest::Method::GET, path, Some(PASSWORD), None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_guards_every_route_and_every_answer_names_the_api_version() {
    let h = node().await;
    let missing = call(&h, reqwest::Method::GET, "/v4/info", None, None).await;
    assert_eq!((missing.status, missing.text.as_str()), (401, ""));
    let wrong = call(&h, reqwest::Method::GET, "/v4/info", Some("Bearer youshallnotpass"), None).await;
    assert_eq!((wrong.status, wrong.text.as_str()), (403, ""));
    assert_eq!(wrong.version_header.as_deref(), Some("4"));
    let version = get(&h, "/version").await;
    assert_eq!(version.status, 200);
    assert!(version.text.starts_with("4."), "{}", version.text);
    assert_eq!(version.version_header.as_deref(), Some("4"));
    for path in ["/", "/v3/websocket"] {
        let empty = get(&h, path).await;
        assert_eq!(
            (empty.status, empty.text.as_str()),
            (200, ""),
            "{path}: as Lavalink, so a v3 client fails to upgrade"
        );
    }
    // The mesastream routes keep their own bearer token.
    assert_eq!(h.get("/players").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lavalink_routes_are_off_without_a_password() {
    let h = Harness::start(FakeVoiceConfig::default()).await;
    let answer = call(&h, reqwest::Method::GET, "/v4/info", Some(PASSWORD), None).await;
    assert_ne!(answer.status, 200);
    assert_eq!(answer.version_header, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_use_lavalinks_body_with_a_trace_only_when_asked() {
    let h = node().await;
    let plain = call(&h, reqwest::Method::PATCH, "/v4/sessions/nosuchsession", Some(PASSWORD), Some(json!({}))).await;
    assert_eq!(plain.status, 404);
    let body = plain.json();
    assert_eq!(body["status"], 404);
    assert_eq!(body["error"], "Not Found");
    assert_eq!(body["message"], "Session not found");
    assert_eq!(body["path"], "/v4/sessions/nosuchsession");
    assert!(body["timestamp"].as_u64().is_some_and(|t| t > 1_700_000_000_000), "{body}");
    assert!(body.get("trace").is_none(), "no trace unless asked: {body}");
    let traced =
        call(&h, reqwest::Method::PATCH, "/v4/sessions/nosuchsession?trace=true", Some(PASSWORD), Some(json!({})))
            .await;
    let body = traced.json();
    assert!(body["trace"].as_str().is_some_and(|t| !t.is_empty()), "{body}");
    assert_eq!(body["path"], "/v4/sessions/nosuchsession", "the path has no query");
    let unknown = get(&h, "/v4/nothing/here").await;
    assert_eq!((unknown.status, unknown.json()["status"].clone()), (404, json!(404)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_lists_the_filters_the_loaded_plugins_provide_and_stats_count_players() {
    let h = Harness::with_plugins(FakeVoiceConfig::default(), &["lavalink-filters"], |c| {
        c.lavalink_password = Some(PASSWORD.into())
    })
    .await;
    let info = get(&h, "/v4/info").await.json();
    assert_eq!(info["version"]["major"], 4);
    assert_eq!(info["version"]["preRelease"], Value::Null);
    let filters: Vec<&str> = info["filters"].as_array().expect("filters").iter().filter_map(Value::as_str).collect();
    for name in ["volume", "equalizer", "timescale", "lowPass", "channelMix"] {
        assert!(filters.contains(&name), "{name} missing from {filters:?}");
    }
    assert!(info["sourceManagers"].as_array().is_some_and(|s| s.contains(&json!("http"))), "{info}");
    assert!(info["plugins"].as_array().is_some_and(|p| p.iter().any(|p| p["name"] == "lavalink-filters")));

    let (_guild, _session) = h.new_player().await;
    let stats = get(&h, "/v4/stats").await.json();
    assert_eq!(stats["players"], 1);
    assert_eq!(stats["playingPlayers"], 0);
    assert!(stats.get("frameStats").is_none(), "the REST answer has no frameStats: {stats}");
    assert!(stats["memory"]["used"].as_u64().is_some_and(|m| m > 0), "{stats}");
    assert!(stats["memory"]["reservable"].as_u64() >= stats["memory"]["used"].as_u64(), "{stats}");
    assert!(stats["cpu"]["cores"].as_u64().is_some_and(|c| c >= 1));
    assert_eq!(get(&h, "/v4/routeplanner/status").await.status, 204);
    let free = call(&h, reqwest::Method::POST, "/v4/routeplanner/free/all", Some(PASSWORD), None).await;
    assert_eq!((free.status, free.json()["message"].clone()), (500, json!("Can't access disabled route planner")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracks_load_and_their_encoded_form_decodes_back() {
    let h = node().await;
    let url = h.media.url("tone-440.mp3");
    let loaded = get(&h, &format!("/v4/loadtracks?identifier={}", urlencode(&url))).await;
    assert_eq!(loaded.status, 200);
    let loaded = loaded.json();
    assert_eq!(loaded["loadType"], "track", "{loaded}");
    let track = &loaded["data"];
    assert_eq!(track["info"]["uri"], url.as_str());
    assert_eq!(track["info"]["identifier"], url.as_str());
    assert_eq!(track["info"]["sourceName"], "http");
    assert_eq!(track["info"]["title"], "tone-440.mp3");
    assert_eq!(track["pluginInfo"], json!({}));
    assert_eq!(track["userData"], json!({}));
    let encoded = track["encoded"].as_str().expect("encoded");
    assert!(encoded.starts_with("QAAA"), "a versioned message: {encoded}");
    let decoded = get(&h, &format!("/v4/decodetrack?encodedTrack={}", urlencode(encoded))).await.json();
    assert_eq!(decoded["info"], track["info"]);
    assert_eq!(decoded["encoded"], track["encoded"]);

    let many = call(&h, reqwest::Method::POST, "/v4/decodetracks", Some(PASSWORD), Some(json!([DOCS_SAMPLE, encoded])))
        .await
        .json();
    assert_eq!(many[0]["info"]["title"], "Rick Astley - Never Gonna Give You Up");
    assert_eq!(many[0]["info"]["length"], 212_000);
    assert_eq!(many[0]["info"]["artworkUrl"], Value::Null);
    assert_eq!(many[1]["info"]["uri"], url.as_str());

    let nothing = get(&h, "/v4/loadtracks?identifier=not%20a%20link").await.json();
    assert_eq!(nothing, json!({"loadType": "empty", "data": null}));
    let missing = get(&h, &format!("/v4/loadtracks?identifier={}", urlencode(&h.media.url("no-such-file.mp3")))).await;
    assert_eq!(missing.status, 200, "a failed load is still a 200");
    let missing = missing.json();
    assert_eq!(missing["loadType"], "error");
    assert_eq!(missing["data"]["severity"], "common");
    assert!(missing["data"]["message"].as_str().is_some_and(|m| m.contains("no-such-file.mp3")), "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_track_requests_are_clear_errors() {
    let h = node().await;
    let no_identifier = get(&h, "/v4/loadtracks").await;
    assert_eq!(no_identifier.status, 400);
    let no_track = get(&h, "/v4/decodetrack").await;
    assert_eq!((no_track.status, no_track.json()["message"].clone()), (400, json!("No track to decode provided")));
    let broken = get(&h, "/v4/decodetrack?track=QAAAjQIA").await;
    assert_eq!(broken.status, 500);
    assert!(broken.json()["message"].as_str().is_some_and(|m| m.contains("141 bytes")), "{}", broken.text);
    let empty = call(&h, reqwest::Method::POST, "/v4/decodetracks", Some(PASSWORD), Some(json!([]))).await;
    assert_eq!((empty.status, empty.json()["message"].clone()), (400, json!("No tracks to decode provided")));
    let not_a_list = call(&h, reqwest::Method::POST, "/v4/decodetracks", Some(PASSWORD), Some(json!({"a": 1}))).await;
    assert_eq!(not_a_list.status, 400);
    assert_eq!(not_a_list.json()["status"], 400);
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(h: &Harness, headers: &[(&str, &str)]) -> Result<(Socket, Option<String>), u16> {
    let mut request = format!("ws://{}/v4/websocket", h.addr).into_client_request().expect("request");
    for (k, v) in headers {
        let name = tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).expect("header name");
        request.headers_mut().insert(name, v.parse().expect("header value"));
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, response)) => {
            let resumed = response.headers().get("Session-Resumed").and_then(|v| v.to_str().ok()).map(str::to_string);
            Ok((socket, resumed))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("websocket: {e}"),
    }
}

async fn next_json(socket: &mut Socket) -> Value {
    loop {
        match tokio::time::timeout(support::LIMIT, socket.next()).await.expect("a frame in time") {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).expect("JSON frame"),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_starts_ready_then_stats_and_resumes_with_its_id() {
    let h = node().await;
    let auth = [("Authorization", PASSWORD), ("User-Id", BOT), ("Client-Name", "tests/1.0")];
    assert_eq!(connect(&h, &[("Authorization", PASSWORD)]).await.err(), Some(400), "no User-Id");
    assert_eq!(connect(&h, &[("Authorization", PASSWORD), ("User-Id", "0")]).await.err(), Some(400));
    assert_eq!(connect(&h, &[("Authorization", "wrong"), ("User-Id", BOT)]).await.err(), Some(403));

    let (mut socket, resumed) = connect(&h, &auth).await.expect("connects");
    assert_eq!(resumed.as_deref(), Some("false"));
    let ready = next_json(&mut socket).await;
    assert_eq!(ready["op"], "ready", "ready comes first: {ready}");
    assert_eq!(ready["resumed"], false);
    let id = ready["sessionId"].as_str().expect("session id").to_string();
    assert!(id.len() == 16 && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()), "{id}");
    let stats = next_json(&mut socket).await;
    assert_eq!(stats["op"], "stats", "{stats}");
    assert_eq!(stats["frameStats"], Value::Null, "the key is there on the socket: {stats}");
    assert!(stats["uptime"].as_u64().is_some());
    // Clients ping (lavalink-client closes a socket that does not answer).
    futures_util::SinkExt::send(&mut socket, Message::Ping(b"are you there".to_vec().into())).await.expect("ping");
    loop {
        match tokio::time::timeout(support::LIMIT, socket.next()).await.expect("a pong in time") {
            Some(Ok(Message::Pong(payload))) => {
                assert_eq!(&payload[..], b"are you there");
                break;
            }
            Some(Ok(_)) => continue,
            other => panic!("expected a pong, got {other:?}"),
        }
    }

    // A timeout past the node's cap (an hour) is held to it, and the answer says so.
    let update = call(
        &h,
        reqwest::Method::PATCH,
        &format!("/v4/sessions/{id}"),
        Some(PASSWORD),
        Some(json!({"resuming": true, "timeout": 4_000_000_000u64})),
    )
    .await;
    assert_eq!(update.json(), json!({"resuming": true, "timeout": 3600}));
    let update = call(
        &h,
        reqwest::Method::PATCH,
        &format!("/v4/sessions/{id}"),
        Some(PASSWORD),
        Some(json!({"resuming": true, "timeout": 30})),
    )
    .await;
    assert_eq!(update.json(), json!({"resuming": true, "timeout": 30}));
    socket.close(None).await.expect("close");
    drop(socket);

    let mut again = [("Session-Id", id.as_str())].to_vec();
    again.extend(auth);
    // The server notices the close on its own time: until then the session is still held
    // by the old socket and a new one gets a session of its own.
    let deadline = tokio::time::Instant::now() + support::LIMIT;
    let (mut socket, ready) = loop {
        let (mut socket, resumed) = connect(&h, &again).await.expect("connects");
        let ready = next_json(&mut socket).await;
        if resumed.as_deref() == Some("true") {
            break (socket, ready);
        }
        assert!(tokio::time::Instant::now() < deadline, "the session was never resumed");
        socket.close(None).await.expect("close");
        tokio::task::yield_now().await;
    };
    assert_eq!(ready["resumed"], true);
    assert_eq!(ready["sessionId"], id.as_str());

    let Harness { serving: Serving::InProcess(server), .. } = h else { panic!("in process") };
    server.shut_down().await;
    loop {
        match tokio::time::timeout(support::LIMIT, socket.next()).await.expect("closed in time") {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(u16::from(frame.code), 1001, "going away");
                break;
            }
            Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// A Lavalink client's session: its id and every frame the node sent, in order.
struct Client {
    id: String,
    frames: tokio::sync::mpsc::UnboundedReceiver<Value>,
    seen: Vec<Value>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    /// The socket goes with the client (the reader task holds it).
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Client {
    async fn connect(h: &Harness) -> Self {
        Self::open(h, None).await.0
    }

    /// Connects, resuming the session `resume` names when given; says whether it was.
    async fn open(h: &Harness, resume: Option<&str>) -> (Self, bool) {
        let bot = support::BOT_USER.to_string();
        let mut headers = vec![("Authorization", PASSWORD), ("User-Id", bot.as_str()), ("Client-Name", "tests/1.0")];
        headers.extend(resume.map(|id| ("Session-Id", id)));
        let (mut socket, resumed) = connect(h, &headers).await.expect("connects");
        let ready = next_json(&mut socket).await;
        let id = ready["sessionId"].as_str().expect("session id").to_string();
        let (tx, frames) = tokio::sync::mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            while let Some(Ok(message)) = socket.next().await {
                if let Message::Text(text) = message
                    && let Ok(frame) = serde_json::from_str::<Value>(&text)
                    && tx.send(frame).is_err()
                {
                    return;
                }
            }
        });
        (Self { id, frames, seen: Vec::new(), reader }, resumed.as_deref() == Some("true"))
    }

    /// The first frame (seen or new) that matches.
    async fn wait(&mut self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        self.wait_within(support::LIMIT, what, matches).await
    }

    async fn wait_within(&mut self, limit: Duration, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        support::first_matching(&mut self.frames, &mut self.seen, limit, what, matches).await
    }

    /// The `n`th event of type `kind` (from 1).
    async fn nth(&mut self, kind: &str, n: usize) -> Value {
        loop {
            if let Some(frame) = self.seen.iter().filter(|f| f["type"] == kind).nth(n - 1) {
                return frame.clone();
            }
            match tokio::time::timeout(support::LIMIT, self.frames.recv()).await {
                Ok(Some(frame)) => self.seen.push(frame),
                _ => panic!("no {kind} number {n}; saw {:#?}", self.seen),
            }
        }
    }

    async fn event(&mut self, kind: &str, guild: u64) -> Value {
        let guild = guild.to_string();
        self.wait(kind, |f| f["op"] == "event" && f["type"] == kind && f["guildId"] == guild.as_str()).await
    }

    fn player_path(&self, guild: u64) -> String {
        format!("/v4/sessions/{}/players/{guild}", self.id)
    }

    /// A player of this session in a new guild, handed its call's voice state: its guild
    /// and path.
    async fn player_in_call(&self, h: &Harness) -> (u64, String) {
        let guild = new_guild();
        let path = self.player_path(guild);
        assert_eq!(patch(h, &path, json!({"voice": voice(h, guild)})).await.status, 200);
        (guild, path)
    }
}

async fn patch(h: &Harness, path: &str, body: Value) -> Answer {
    call(h, reqwest::Method::PATCH, path, Some(PASSWORD), Some(body)).await
}

/// The voice state a bot forwards from Discord, for a call the fake voice server knows.
fn voice(h: &Harness, guild: u64) -> Value {
    let channel = guild + 1_000;
    h.fake.register_call(&guild.to_string(), channel);
    json!({
        "token": format!("token-{guild}"),
        "endpoint": h.fake.endpoint(),
        "sessionId": format!("session-{guild}"),
        "channelId": channel.to_string(),
    })
}

async fn loaded(h: &Harness, file: &str) -> Value {
    let url = urlencode(&h.media.url(file));
    let result = get(h, &format!("/v4/loadtracks?identifier={url}")).await.json();
    assert_eq!(result["loadType"], "track", "{result}");
    result["data"].clone()
}

fn new_guild() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(300_000_000_000_000_001);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_connects_plays_pauses_seeks_replaces_and_stops_as_a_lavalink_client_drives_it() {
    let h = node().await;
    let mut client = Client::connect(&h).await;
    let guild = new_guild();
    let path = client.player_path(guild);

    let created = patch(&h, &path, json!({"voice": voice(&h, guild)})).await;
    assert_eq!(created.status, 200, "{}", created.text);
    let created = created.json();
    assert_eq!(created["guildId"], guild.to_string());
    assert_eq!(created["track"], Value::Null);
    assert_eq!(created["volume"], 100);
    assert_eq!(created["state"]["connected"], true, "{created}");
    assert_eq!(created["voice"]["channelId"], (guild + 1_000).to_string());
    let heard = h.fake.session(&guild.to_string()).expect("the call has a session");

    let first = loaded(&h, "tone-523-long.mp3").await;
    let playing =
        patch(&h, &path, json!({"track": {"encoded": first["encoded"], "userData": {"requester": 42}}})).await;
    assert_eq!(playing.status, 200, "{}", playing.text);
    assert_eq!(playing.json()["track"]["userData"], json!({"requester": 42}));
    let started = client.event("TrackStartEvent", guild).await;
    assert_eq!(started["track"]["encoded"], first["encoded"]);
    assert_eq!(started["track"]["userData"], json!({"requester": 42}));
    heard.wait(support::LIMIT, |c| c.packets >= 25).await.expect("the listener hears it");

    let paused = patch(&h, &path, json!({"paused": true, "volume": 2000})).await.json();
    assert_eq!((paused["paused"].clone(), paused["volume"].clone()), (json!(true), json!(1000)), "volume is clamped");
    let resumed = patch(&h, &path, json!({"paused": false, "volume": 100, "position": 3000})).await.json();
    assert_eq!(resumed["paused"], false);
    assert!(resumed["track"]["info"]["position"].as_u64().is_some_and(|p| p >= 3000), "seeked: {resumed}");
    let update = client
        .wait("playerUpdate", |f| f["op"] == "playerUpdate" && f["state"]["position"].as_u64() >= Some(3000))
        .await;
    assert_eq!(update["state"]["connected"], true);

    // Kept: a track is playing and the client asked not to replace it.
    let second = loaded(&h, "tone-440.mp3").await;
    let kept = patch(&h, &format!("{path}?noReplace=true"), json!({"track": {"encoded": second["encoded"]}})).await;
    assert_eq!(kept.json()["track"]["encoded"], first["encoded"]);
    let replaced = patch(&h, &path, json!({"track": {"encoded": second["encoded"]}})).await.json();
    assert_eq!(replaced["track"]["encoded"], second["encoded"]);
    let ended = client.event("TrackEndEvent", guild).await;
    assert_eq!(
        (ended["reason"].clone(), ended["track"]["encoded"].clone()),
        (json!("replaced"), first["encoded"].clone())
    );
    let finished = client
        .wait("the second track's end", |f| f["type"] == "TrackEndEvent" && f["track"]["encoded"] == second["encoded"])
        .await;
    assert_eq!(finished["reason"], "finished");
    let idle = get(&h, &path).await.json();
    assert_eq!(idle["track"], Value::Null, "the player stays, idle: {idle}");

    patch(&h, &path, json!({"track": {"encoded": first["encoded"]}})).await;
    client.nth("TrackStartEvent", 3).await;
    let stopped = patch(&h, &path, json!({"track": {"encoded": null}})).await.json();
    assert_eq!(stopped["track"], Value::Null);
    assert_eq!(client.nth("TrackEndEvent", 3).await["reason"], "stopped");

    let listed = get(&h, &format!("/v4/sessions/{}/players", client.id)).await.json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    let gone = call(&h, reqwest::Method::DELETE, &path, Some(PASSWORD), None).await;
    assert_eq!(gone.status, 204);
    let missing = get(&h, &path).await;
    assert_eq!((missing.status, missing.json()["message"].clone()), (404, json!("Player not found")));
    heard.wait(support::LIMIT, |c| !c.connected).await.expect("its voice connection closes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_update_changes_nothing_and_says_which_field_is_wrong() {
    let h = node().await;
    let client = Client::connect(&h).await;
    let guild = new_guild();
    let path = client.player_path(guild);
    let mut no_channel = voice(&h, guild);
    no_channel.as_object_mut().expect("object").remove("channelId");
    let cases = [
        (json!({"voice": no_channel}), "voice.channelId is missing"),
        (json!({"voice": {"token": "", "endpoint": "e", "sessionId": "s", "channelId": "1"}}), "must be provided"),
        (json!({"track": {"encoded": DOCS_SAMPLE}, "encodedTrack": DOCS_SAMPLE}), "Cannot specify both track"),
        (
            json!({"track": {"encoded": DOCS_SAMPLE, "identifier": "x"}}),
            "Cannot specify both encodedTrack and identifier",
        ),
        (json!({"endTime": 0}), "End time must be greater than 0"),
        (json!({"track": {"encoded": "QAAAjQIA"}}), "Failed to decode track"),
        (json!({"track": {"identifier": "not a link"}}), "No matches found for identifier"),
        (json!({"filters": {"volume": 9.0}}), "filters.volume"),
        (json!({"volume": "loud"}), "volume"),
    ];
    for (body, message) in cases {
        let answer = patch(&h, &path, body.clone()).await;
        let error = answer.json();
        assert_eq!(answer.status, 400, "{body} -> {}", answer.text);
        assert!(error["message"].as_str().is_some_and(|m| m.contains(message)), "{body} -> {error}");
    }
    let none = get(&h, &path).await;
    assert_eq!(none.status, 404, "no update above made the player: {}", none.text);
    let bad_guild = patch(&h, &format!("/v4/sessions/{}/players/general", client.id), json!({})).await;
    assert_eq!(bad_guild.status, 400);
    let no_session = patch(&h, &format!("/v4/sessions/nosuchsession/players/{guild}"), json!({})).await;
    assert_eq!((no_session.status, no_session.json()["message"].clone()), (404, json!("Session not found")));
    assert_eq!(get(&h, "/v4/sessions/nosuchsession/players").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_replace_the_whole_set_and_are_checked_by_their_plugin() {
    let voice_server = FakeVoiceConfig { tls: true, ..Default::default() };
    let h = Harness::with_plugins(voice_server, &["lavalink-filters"], |c| c.lavalink_password = Some(PASSWORD.into()))
        .await;
    let client = Client::connect(&h).await;
    let guild = new_guild();
    let path = client.player_path(guild);
    let set = patch(&h, &path, json!({"filters": {"lowPass": {"smoothing": 20.0}, "volume": 0.5, "unknownFilter": 1}}))
        .await
        .json();
    assert_eq!(set["filters"], json!({"lowPass": {"smoothing": 20.0}, "volume": 0.5}), "unknown keys are ignored");
    let replaced = patch(&h, &path, json!({"filters": {"timescale": {"speed": 1.2}}})).await.json();
    assert_eq!(replaced["filters"], json!({"timescale": {"speed": 1.2}}), "the whole set is replaced");
    let refused = patch(&h, &path, json!({"filters": {"vibrato": {"frequency": 99.0}}})).await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert!(refused.json()["message"].as_str().is_some_and(|m| m.contains("vibrato")), "{}", refused.text);
    assert_eq!(get(&h, &path).await.json()["filters"], json!({"timescale": {"speed": 1.2}}), "nothing changed");
    let cleared = patch(&h, &path, json!({"filters": {}})).await.json();
    assert_eq!(cleared["filters"], json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_a_closed_voice_session_and_a_closed_socket_reach_the_client() {
    let h = node().await;
    let mut client = Client::connect(&h).await;
    let (guild, path) = client.player_in_call(&h).await;
    let heard = h.fake.session(&guild.to_string()).expect("session");

    let url = h.media.url("noise.bin");
    let played = patch(&h, &path, json!({"track": {"identifier": url}})).await;
    assert_eq!(played.status, 200, "{}", played.text);
    let exception = client.event("TrackExceptionEvent", guild).await;
    assert_eq!(exception["exception"]["severity"], "common");
    assert!(exception["exception"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{exception}");
    assert_eq!(client.event("TrackEndEvent", guild).await["reason"], "loadFailed");

    heard.close(4014);
    let closed = client.event("WebSocketClosedEvent", guild).await;
    assert_eq!((closed["code"].clone(), closed["byRemote"].clone()), (json!(4014), json!(true)), "{closed}");

    // A second player on a fresh call, then the client goes away without resuming: its
    // players stop and leave their calls.
    let other = new_guild();
    assert_eq!(patch(&h, &client.player_path(other), json!({"voice": voice(&h, other)})).await.status, 200);
    let other_heard = h.fake.session(&other.to_string()).expect("session");
    let id = client.id.clone();
    drop(client);
    other_heard.wait(support::LIMIT, |c| !c.connected).await.expect("the player left its call");
    assert_eq!(get(&h, &format!("/v4/sessions/{id}/players")).await.status, 404, "the session ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_time_ends_the_track_as_finished_and_the_ping_is_the_gateways_round_trip() {
    // Heartbeats every 100 ms, so a round trip is measured soon.
    let voice_server = FakeVoiceConfig { tls: true, heartbeat_interval_ms: 100, ..Default::default() };
    let h = Harness::start_with(voice_server, |c| c.lavalink_password = Some(PASSWORD.into())).await;
    let mut client = Client::connect(&h).await;
    let (guild, path) = client.player_in_call(&h).await;
    let heard = h.fake.session(&guild.to_string()).expect("session");

    let track = loaded(&h, "tone-523-long.mp3").await;
    let played = patch(&h, &path, json!({"track": {"encoded": track["encoded"]}, "endTime": 1_000})).await;
    assert_eq!(played.status, 200, "{}", played.text);
    let ended = client.event("TrackEndEvent", guild).await;
    assert_eq!(ended["reason"], "finished", "an end marker ends the track as finished: {ended}");
    heard.wait(support::LIMIT, |c| c.silence_packets >= 5).await.expect("silence after the end");
    let report = heard.report();
    assert!(report.audible_ms.abs_diff(1_000) <= 100, "heard {} ms of a 1 s marker", report.audible_ms);

    let deadline = tokio::time::Instant::now() + support::LIMIT;
    let ping = loop {
        let ping = get(&h, &path).await.json()["state"]["ping"].as_i64().expect("ping");
        if ping >= 0 {
            break ping;
        }
        assert!(tokio::time::Instant::now() < deadline, "no heartbeat round trip measured");
        tokio::task::yield_now().await;
    };
    assert!(ping < 1_000, "a loopback round trip: {ping} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_filters_reach_any_loaded_filter_by_name() {
    let voice_server = FakeVoiceConfig { tls: true, ..Default::default() };
    let h = Harness::with_plugins(voice_server, &["lavalink-filters"], |c| c.lavalink_password = Some(PASSWORD.into()))
        .await;
    let client = Client::connect(&h).await;
    let path = client.player_path(new_guild());
    let normalized = json!({"pluginFilters": {"normalization": {"targetDb": -18.0}}});
    let set = patch(&h, &path, json!({"filters": normalized})).await;
    assert_eq!(set.status, 200, "{}", set.text);
    assert_eq!(set.json()["filters"], normalized);
    let unknown = patch(&h, &path, json!({"filters": {"pluginFilters": {"noSuchFilter": {}}}})).await;
    assert_eq!(unknown.status, 400);
    assert!(unknown.json()["message"].as_str().is_some_and(|m| m.contains("noSuchFilter")), "{}", unknown.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_track_whose_source_hangs_is_reported_stuck() {
    let h = node().await;
    let mut client = Client::connect(&h).await;
    let (guild, path) = client.player_in_call(&h).await;
    let played = patch(&h, &path, json!({"track": {"identifier": h.media.url("stalling.mp3")}})).await;
    assert_eq!(played.status, 200, "{}", played.text);
    client.event("TrackStartEvent", guild).await;
    // 2 s of audio, then 10 s without a frame (Lavalink's threshold), noticed within 5 s.
    let stuck = client.event("TrackStuckEvent", guild).await;
    assert_eq!(stuck["thresholdMs"], 10_000);
    assert!(stuck["track"]["info"]["uri"].as_str().is_some_and(|u| u.ends_with("stalling.mp3")), "{stuck}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resuming_session_plays_on_while_its_client_is_away_and_gets_what_it_missed() {
    let h = node().await;
    let mut client = Client::connect(&h).await;
    let id = client.id.clone();
    let on = patch(&h, &format!("/v4/sessions/{id}"), json!({"resuming": true, "timeout": 60})).await;
    assert_eq!(on.json(), json!({"resuming": true, "timeout": 60}));
    let (guild, path) = client.player_in_call(&h).await;
    let heard = h.fake.session(&guild.to_string()).expect("session");
    let track = loaded(&h, "tone-523-long.mp3").await;
    patch(&h, &path, json!({"track": {"encoded": track["encoded"]}})).await;
    client.event("TrackStartEvent", guild).await;
    heard.wait(support::LIMIT, |c| c.packets >= 25).await.expect("playing");

    drop(client);
    // The track plays to its end with nobody connected: its end event waits for the client.
    heard.wait(support::LIMIT, |c| c.silence_packets >= 5).await.expect("the track played on");
    let (mut client, resumed) = Client::open(&h, Some(&id)).await;
    assert!(resumed, "Session-Resumed: true");
    assert_eq!(client.id, id);
    let ended = client.event("TrackEndEvent", guild).await;
    assert_eq!(ended["reason"], "finished");
    support::assert_heard(&heard.report(), 523.0, 6.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_playlist_loads_through_the_resolvers_and_an_entry_plays_from_its_encoded_form() {
    let grants = "[plugins.ytdlp]\nprocess = [\"yt-dlp\"]\npatterns = [\"http://127.0.0.1:*/**\"]\n";
    let voice_server = FakeVoiceConfig { tls: true, ..Default::default() };
    let h = Harness::with_plugins(voice_server, &["ytdlp"], |c| {
        support::plugins::grant(c.plugins_dir.as_deref().expect("plugins dir"), grants);
        c.lavalink_password = Some(PASSWORD.into());
    })
    .await;
    let feed = get(&h, &format!("/v4/loadtracks?identifier={}", urlencode(&h.media.url("feed.rss")))).await.json();
    assert_eq!(feed["loadType"], "playlist", "{feed}");
    assert_eq!(feed["data"]["info"]["selectedTrack"], -1);
    assert_eq!(feed["data"]["pluginInfo"], json!({}));
    let entries = feed["data"]["tracks"].as_array().expect("tracks");
    assert_eq!(entries.len(), 2, "{feed}");
    let first = &entries[0];
    assert_eq!(first["info"]["uri"], h.media.url("tone-660.flac").as_str(), "{first}");
    assert_eq!(first["info"]["title"], "Episode 660");

    let mut client = Client::connect(&h).await;
    let (guild, path) = client.player_in_call(&h).await;
    // Only the encoded form goes back: the track is found again through the resolvers.
    let played = patch(&h, &path, json!({"track": {"encoded": first["encoded"]}})).await;
    assert_eq!(played.status, 200, "{}", played.text);
    assert_eq!(client.event("TrackEndEvent", guild).await["reason"], "finished");
    let heard = h.fake.session(&guild.to_string()).expect("session");
    heard.wait(support::LIMIT, |c| c.silence_packets >= 5).await.expect("silence after the track");
    support::assert_heard(&heard.report(), 660.0, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_track_nobody_takes_frames_from_is_cleaned_up_after_a_minute() {
    let h = node().await;
    let mut client = Client::connect(&h).await;
    let guild = new_guild();
    let path = client.player_path(guild);
    // No voice: nothing plays the track. The node cannot start counting before it is asked.
    let started = std::time::Instant::now();
    let played = patch(&h, &path, json!({"track": {"identifier": h.media.url("tone-440.mp3")}})).await;
    assert_eq!(played.status, 200, "{}", played.text);
    assert_eq!(played.json()["state"]["connected"], false);
    let guild_id = guild.to_string();
    let ended = client
        .wait_within(Duration::from_secs(90), "TrackEndEvent", |f| {
            f["type"] == "TrackEndEvent" && f["guildId"] == guild_id.as_str()
        })
        .await;
    assert_eq!(ended["reason"], "cleanup");
    assert!(started.elapsed() >= Duration::from_secs(60), "after a minute, as Lavalink: {:?}", started.elapsed());
    assert_eq!(get(&h, &path).await.json()["track"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_loads_as_search_results_and_is_not_played_by_identifier() {
    // A resolver's search, offline: the prober fixture answers `probe:search:` with the links.
    let voice_server = FakeVoiceConfig { tls: true, ..Default::default() };
    let h = Harness::with_plugins(voice_server, &["prober"], |c| c.lavalink_password = Some(PASSWORD.into())).await;
    let (a, b) = (h.media.url("tone-440.mp3"), h.media.url("tone-523-long.mp3"));
    let query = format!("probe:search:{a}|{b}");
    let found = get(&h, &format!("/v4/loadtracks?identifier={}", urlencode(&query))).await.json();
    assert_eq!(found["loadType"], "search", "{found}");
    let results = found["data"].as_array().expect("results");
    assert_eq!(results.iter().map(|t| t["info"]["uri"].clone()).collect::<Vec<_>>(), [json!(a), json!(b)]);

    let mut client = Client::connect(&h).await;
    let (guild, path) = client.player_in_call(&h).await;
    let refused = patch(&h, &path, json!({"track": {"identifier": query}})).await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.json()["message"], "Cannot play a playlist or search result");
    // A result plays from its encoded form.
    patch(&h, &path, json!({"track": {"encoded": results[0]["encoded"]}})).await;
    assert_eq!(client.event("TrackEndEvent", guild).await["reason"], "finished");
    let heard = h.fake.session(&guild.to_string()).expect("session");
    heard.wait(support::LIMIT, |c| c.silence_packets >= 5).await.expect("silence after the track");
    support::assert_heard(&heard.report(), 440.0, 2.0);
}

//! The contract as Black Mesa uses it, with guild state kept in the embedded store and in a
//! real Redis: the bot's command sequences, stale-session retry, the original Redis layout,
//! and a restart after SIGKILL.

mod support;

use fake_voice::{FakeVoiceConfig, FakeVoiceServer};
use serde::Deserialize;
use serde_json::{Value, json};
use support::process::spawn_server;
use support::redis::{RedisServer, free_port};
use support::{Harness, LIMIT, MediaServer, TOKEN, enqueued_track_id};

// ---- bm-lib's models, as strict as the client parses them ----

#[derive(Deserialize)]
#[allow(dead_code)]
struct Connection {
    guild_id: String,
    player_id: String,
    channel_id: String,
    user_id: String,
    session_id: String,
    token: String,
    endpoint: String,
    gateway_url: String,
}

#[derive(Deserialize, PartialEq, Debug)]
#[serde(rename_all = "lowercase")]
enum Status {
    Idle,
    Playing,
    Paused,
    Stopped,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Metadata {
    artist: String,
    title: String,
    duration_ms: u64,
    url: String,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct TrackModel {
    id: String,
    // bm-lib knows youtube|soundcloud; direct links (only reachable through this host) say http.
    source: String,
    source_url: String,
    stream_url: String,
    metadata: Metadata,
    error: Option<String>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Equalizer {
    bass: f32,
    mid: f32,
    treble: f32,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Snapshot {
    player_id: String,
    connection: Connection,
    status: Status,
    queue: Vec<TrackModel>,
    current_track: Option<TrackModel>,
    position_ms: u64,
    volume: f32,
    equalizer: Equalizer,
    voice_connected: bool,
    playback_session_id: Option<String>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Current {
    track: TrackModel,
    position_ms: u64,
    duration_ms: u64,
    position: String,
    duration: String,
    remaining: String,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Playlist {
    player_id: String,
    name: String,
    tracks: Vec<TrackModel>,
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, v: &Value) -> T {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{what} does not parse as bm-lib expects: {e}\n{v}"))
}

async fn black_mesa_session(h: &Harness) {
    let mut events = h.events().await;
    let (guild, payload) = h.new_call();
    let g = guild.to_string();
    let p = |path: &str| format!("/players/{guild}{path}");

    // ensure_player: GET → 404 → POST /players.
    assert_eq!(h.get(&p("")).await.status, 404);
    let created = h.post("/players", payload.clone()).await;
    assert_eq!(created.status, 201, "{created:?}");
    let snap: Snapshot = parse("create", &created.body);
    assert_eq!((snap.player_id.as_str(), snap.status, snap.voice_connected), (g.as_str(), Status::Idle, true));
    events.wait("PlayerCreated", |v| v["type"] == "PlayerCreated" && v["data"]["guild_id"] == g.as_str()).await;

    // !play url → queue + play; !enqueue another.
    let first = h.enqueue(guild, &h.media.url("tone-523-long.mp3")).await;
    let first_id = enqueued_track_id(&first.body);
    parse::<Snapshot>("enqueue", &first.body);
    let started = events.wait("TrackStarted", |v| v["type"] == "TrackStarted").await;
    parse::<TrackModel>("TrackStarted.track", &started["data"]["track"]);
    let played: Snapshot = parse("play", &h.post(&p("/play"), Value::Null).await.body);
    assert_eq!(played.status, Status::Playing);
    let second = h.enqueue(guild, &h.media.url("tone-440.mp3")).await;
    let second_id = enqueued_track_id(&second.body);
    let queue: Vec<TrackModel> = parse("queue", &h.get(&p("/queue")).await.body);
    assert_eq!(queue.len(), 1);

    let current: Current = parse("current", &h.get(&p("/current")).await.body);
    assert_eq!(current.track.id, first_id);
    assert_eq!(parse::<Snapshot>("pause", &h.post(&p("/pause"), Value::Null).await.body).status, Status::Paused);
    assert_eq!(parse::<Snapshot>("resume", &h.post(&p("/resume"), Value::Null).await.body).status, Status::Playing);
    parse::<Snapshot>("seek", &h.post(&p("/seek"), json!({"position_ms": 3000})).await.body);
    let v: Snapshot = parse("volume", &h.post(&p("/volume"), json!({"volume": 0.5})).await.body);
    assert_eq!(v.volume, 0.5);

    // !playlistsave p1 (queue without the current track), then skip through to auto-destroy.
    let saved: Playlist = parse("playlist", &h.post(&p("/playlists/p1"), Value::Null).await.body);
    assert_eq!((saved.name.as_str(), saved.tracks.len()), ("p1", 1));
    parse::<Snapshot>("skip", &h.post(&p("/skip"), Value::Null).await.body);
    events.track_ended(guild, &first_id).await;
    parse::<Snapshot>("skip", &h.post(&p("/skip"), Value::Null).await.body);
    events.track_ended(guild, &second_id).await;
    events
        .wait("PlayerDestroyed", |v| {
            v["type"] == "PlayerDestroyed" && v["data"]["guild_id"] == g.as_str() && v["data"]["was_stopped"] == false
        })
        .await;
    let gone = h.get(&p("")).await;
    assert_eq!((gone.status, gone.body["code"].clone()), (404, json!("not_found")));

    // ensure_player again, then !playlistenqueue p1 (wakes the idle player), !stop, rotation, leave.
    let again = h.post("/players", payload.clone()).await;
    assert_eq!(again.status, 201);
    let created = events
        .wait("second PlayerCreated", |v| v["type"] == "PlayerCreated" && v["data"]["restored_queue_len"] == 0)
        .await;
    assert_eq!(created["data"]["restored_position_ms"], 0);
    let missing = h.post(&p("/playlists/nope/enqueue"), Value::Null).await;
    assert_eq!(missing.body["message"], "not found: playlist nope not found");
    let from_playlist: Snapshot =
        parse("playlist enqueue", &h.post(&p("/playlists/p1/enqueue"), Value::Null).await.body);
    assert_eq!(from_playlist.status, Status::Playing, "a playlist enqueue starts an idle player");
    assert_eq!(from_playlist.current_track.map(|t| t.id), Some(second_id.clone()), "same track ids as saved");
    assert_eq!(parse::<Snapshot>("stop", &h.post(&p("/stop"), Value::Null).await.body).status, Status::Stopped);
    let mut rotated = payload.clone();
    rotated["session_id"] = json!(format!("rotated-{guild}"));
    let moved = h.call(reqwest::Method::PUT, &p("/connection"), Some(rotated)).await;
    assert_eq!(parse::<Snapshot>("connection", &moved.body).connection.session_id, format!("rotated-{guild}"));
    assert_eq!(h.call(reqwest::Method::DELETE, &p(""), None).await.status, 204);
    events
        .wait("PlayerDestroyed(stopped)", |v| v["type"] == "PlayerDestroyed" && v["data"]["was_stopped"] == true)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_mesa_commands_with_the_embedded_store() {
    let h = Harness::start(FakeVoiceConfig::default()).await;
    black_mesa_session(&h).await;
    assert_eq!(h.get("/ready").await.body, json!({"status": "ready"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_mesa_commands_with_redis() {
    let redis = RedisServer::start().await;
    let uri = redis.uri();
    let h = Harness::start_with(FakeVoiceConfig::default(), |c| c.redis_uri = Some(uri)).await;
    black_mesa_session(&h).await;
    assert_eq!(h.get("/ready").await.body, json!({"status": "ready"}));
    let mut conn = redis.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS").arg("mesastream:*").query_async(&mut conn).await.expect("keys");
    assert!(keys.iter().any(|k| k.ends_with(":playlist:p1")), "{keys:?}");
    drop(redis);
    let degraded = h.get("/ready").await;
    assert_eq!((degraded.status, degraded.body.clone()), (503, json!({"status": "degraded"})));
}

/// Drop-in: the binary as installed (its first-party plugins beside it) with nothing but the
/// original's variables (and the local media server listed) serves Black Mesa's sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_mesa_commands_against_the_installed_server_with_the_originals_environment() {
    let h = Harness::installed(FakeVoiceConfig::default(), &[]).await;
    black_mesa_session(&h).await;
    let plugins = h.get("/plugins").await;
    let ids: Vec<&str> = plugins.body.as_array().unwrap().iter().filter_map(|p| p["id"].as_str()).collect();
    assert!(
        ids.contains(&"ytdlp") && ids.contains(&"direct"),
        "first-party plugins found without PLUGINS_DIR: {ids:?}"
    );

    let redis = RedisServer::start().await;
    let h = Harness::installed(FakeVoiceConfig::default(), &[("REDIS_URI", redis.uri())]).await;
    black_mesa_session(&h).await;
    let mut conn = redis.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS").arg("mesastream:*").query_async(&mut conn).await.expect("keys");
    assert!(keys.iter().any(|k| k.ends_with(":playlist:p1")), "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_session_answers_503_and_the_bot_retry_path_works() {
    let h = Harness::start(FakeVoiceConfig::default()).await;
    let mut events = h.events().await;
    let (guild, payload) = h.new_call();
    assert_eq!(h.post("/players", payload.clone()).await.status, 201);
    let session = h.fake.session(&guild.to_string()).expect("session");
    h.fake.reject_token(payload["token"].as_str().unwrap_or_default());
    session.close(4006);
    events.wait("VoiceDisconnected", |v| v["type"] == "VoiceDisconnected").await;
    h.enqueue(guild, &h.media.url("tone-440.mp3")).await;
    let play = h.post(&format!("/players/{guild}/play"), Value::Null).await;
    assert_eq!(play.status, 503, "{play:?}");
    let message = play.body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("4006")
            && message.contains("session no longer valid")
            && message.contains("stale voice token"),
        "{message}"
    );
    // The bot rejoins voice and sends fresh credentials, then plays again.
    let mut fresh = payload.clone();
    fresh["token"] = json!("fresh-token");
    fresh["session_id"] = json!("fresh-session");
    assert_eq!(h.call(reqwest::Method::PUT, &format!("/players/{guild}/connection"), Some(fresh)).await.status, 200);
    let play = h.post(&format!("/players/{guild}/play"), Value::Null).await;
    assert_eq!((play.status, play.body["voice_connected"].clone()), (200, json!(true)), "{play:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_in_the_original_redis_layout_is_restored() {
    let redis = RedisServer::start().await;
    let uri = redis.uri();
    let h = Harness::start_with(FakeVoiceConfig::default(), |c| {
        c.redis_uri = Some(uri);
        c.redis_prefix = "bm".into();
    })
    .await;
    let (guild, payload) = h.new_call();
    // What the original mesastream wrote: a JSON queue of its Track shape and a position.
    let url = h.media.url("tone-523-long.mp3");
    let track = json!({"id": "3f1c2d9e-0000-4000-8000-000000000001", "source": "youtube", "source_url": url,
        "stream_url": url, "metadata": {"artist": "Someone", "title": "Old song", "duration_ms": 6000, "url": url}});
    let mut conn = redis.connection().await;
    let _: () = redis::cmd("SET")
        .arg(format!("bm:guild:{guild}:queue"))
        .arg(json!([track]).to_string())
        .query_async(&mut conn)
        .await
        .expect("set");
    let _: () = redis::cmd("SETEX")
        .arg(format!("bm:guild:{guild}:position"))
        .arg(3600)
        .arg("2000")
        .query_async(&mut conn)
        .await
        .expect("setex");
    let mut events = h.events().await;
    let created = h.post("/players", payload).await;
    assert_eq!(created.status, 201);
    let event = events.wait("PlayerCreated", |v| v["type"] == "PlayerCreated").await;
    assert_eq!(
        (event["data"]["restored_queue_len"].clone(), event["data"]["restored_position_ms"].clone()),
        (json!(1), json!(2000))
    );
    let snap: Snapshot = parse("restored", &created.body);
    let current = snap.current_track.expect("the restored track plays");
    assert_eq!(
        (current.id.as_str(), current.metadata.title.as_str()),
        ("3f1c2d9e-0000-4000-8000-000000000001", "Old song")
    );
    assert!(snap.position_ms >= 2000, "resumes at the saved position: {}", snap.position_ms);
}

// ---- store outages ----

/// Waits until `/ready` answers 200 (the store is back).
async fn wait_ready(h: &Harness) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    while h.get("/ready").await.status != 200 {
        assert!(tokio::time::Instant::now() < deadline, "the server never came ready");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The track ids of the guild's queue as saved in Redis.
async fn saved_queue(redis: &RedisServer, guild: u64) -> Vec<String> {
    let mut conn = redis.connection().await;
    let raw: Option<String> =
        redis::cmd("GET").arg(format!("mesastream:guild:{guild}:queue")).query_async(&mut conn).await.expect("get");
    let tracks: Vec<Value> = raw.map(|r| serde_json::from_str(&r).expect("queue json")).unwrap_or_default();
    tracks.iter().map(|t| t["id"].as_str().unwrap_or_default().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_during_create_fails_the_call_and_keeps_the_saved_queue() {
    let mut redis = RedisServer::start().await;
    let uri = redis.uri();
    let h = Harness::start_with(FakeVoiceConfig::default(), |c| c.redis_uri = Some(uri)).await;
    let (guild, payload) = h.new_call();
    assert_eq!(h.post("/players", payload.clone()).await.status, 201);
    for file in ["tone-523-long.mp3", "tone-440.mp3", "tone-660.flac"] {
        assert_eq!(h.enqueue(guild, &h.media.url(file)).await.status, 200);
    }
    assert_eq!(h.call(reqwest::Method::DELETE, &format!("/players/{guild}"), None).await.status, 204);
    let deadline = tokio::time::Instant::now() + LIMIT;
    while saved_queue(&redis, guild).await.len() != 3 {
        assert!(tokio::time::Instant::now() < deadline, "the queue was never saved");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let saved = saved_queue(&redis, guild).await;

    // Redis goes away: the bot's create fails with the contract's 503, and changes nothing.
    redis.stop();
    let failed = h.post("/players", payload.clone()).await;
    assert_eq!((failed.status, failed.body["code"].as_str()), (503, Some("service_unavailable")), "{failed:?}");
    let message = failed.body["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("service unavailable: state store: ") && message.contains("nothing was changed"));
    assert_eq!(h.get(&format!("/players/{guild}")).await.status, 404, "no player was made");

    // Redis returns with the queue as it was, and the retried create restores it.
    redis.start_again().await;
    assert_eq!(saved_queue(&redis, guild).await, saved, "the saved queue is intact");
    wait_ready(&h).await;
    let created = h.post("/players", payload).await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.body["current_track"]["id"], saved[0].as_str(), "{created:?}");
    let queued: Vec<&str> = created.body["queue"].as_array().unwrap().iter().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(queued, saved[1..].iter().map(String::as_str).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_starts_with_redis_down_and_comes_ready_when_it_appears() {
    let port = free_port();
    let uri = format!("redis://127.0.0.1:{port}/");
    let h = Harness::start_with(FakeVoiceConfig::default(), |c| c.redis_uri = Some(uri)).await;
    assert_eq!(h.get("/health").await.status, 200);
    let ready = h.get("/ready").await;
    assert_eq!((ready.status, ready.body.clone()), (503, json!({"status": "degraded"})));
    assert_eq!(h.get("/players").await.status, 200, "what needs no store is served");
    let (_guild, payload) = h.new_call();
    let refused = h.post("/players", payload.clone()).await;
    assert_eq!((refused.status, refused.body["code"].as_str()), (503, Some("service_unavailable")), "{refused:?}");
    // Live mounts are not loaded yet: none may be made (and the stored set written over).
    let mount = h.post("/live/mounts", json!({"name": "studio"})).await;
    assert_eq!((mount.status, mount.body["code"].as_str()), (503, Some("service_unavailable")), "{mount:?}");

    let _redis = RedisServer::start_on(port).await;
    wait_ready(&h).await;
    assert_eq!(h.post("/players", payload).await.status, 201);
    // The mounts load within a second of the store answering.
    let deadline = tokio::time::Instant::now() + LIMIT;
    while h.post("/live/mounts", json!({"name": "studio"})).await.status != 201 {
        assert!(tokio::time::Instant::now() < deadline, "live mounts never loaded");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

// ---- restart after SIGKILL ----

async fn restart_resumes_the_track(mut env: Vec<(&str, String)>) {
    let fake = FakeVoiceServer::start(FakeVoiceConfig { keep_pcm: false, ..Default::default() }).await.expect("fake");
    let media = MediaServer::start().await;
    env.push(("MEDIA_ALLOW_HOSTS", media.allow_hosts()));
    let guild = 555_000_000_000_000_001u64;
    fake.register_call(&guild.to_string(), 42);
    let payload = |n: u32| {
        json!({"guild_id": guild.to_string(), "player_id": guild.to_string(), "channel_id": "42", "user_id": "7",
            "session_id": format!("s{n}"), "token": format!("t{n}"), "endpoint": fake.endpoint(), "gateway_url": fake.gateway_url()})
    };
    let client = reqwest::Client::new();
    let post = |base: &str, path: &str, body: Value| {
        client.post(format!("{base}{path}")).bearer_auth(TOKEN).json(&body).send()
    };

    let first = spawn_server(&env).await;
    let base = first.base.clone();
    assert_eq!(post(&base, "/players", payload(1)).await.expect("create").status(), 201);
    let url = media.url("tone-523-long.mp3");
    assert_eq!(
        post(&base, &format!("/players/{guild}/queue"), json!({"url": url})).await.expect("enqueue").status(),
        200
    );
    let session = fake.session(&guild.to_string()).expect("session");
    session.wait(LIMIT, |c| c.packets >= 125).await.expect("2.5 s played");
    let snap: Value = client
        .get(format!("{base}/players/{guild}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let before = snap["position_ms"].as_u64().unwrap_or(0);
    let track_id = snap["current_track"]["id"].clone();
    // SIGKILL. Positions are saved every 500 ms, inside the ±1 s the restore must meet.
    drop(first);

    let second = spawn_server(&env).await;
    let base = second.base.clone();
    let created: Value = post(&base, "/players", payload(2)).await.expect("create").json().await.expect("json");
    assert_eq!(created["current_track"]["id"], track_id, "{created}");
    let restored = created["position_ms"].as_u64().unwrap_or(0);
    assert!(restored.abs_diff(before) <= 1000, "before kill {before} ms, restored at {restored} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_sigkill_resumes_with_the_embedded_store() {
    let data = tempfile::tempdir().expect("dir");
    restart_resumes_the_track(vec![("DATA_DIR", data.path().display().to_string())]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_sigkill_resumes_with_redis() {
    let redis = RedisServer::start().await;
    restart_resumes_the_track(vec![("REDIS_URI", redis.uri())]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_redis_mid_track_degrades_ready_but_not_playback() {
    let redis = RedisServer::start().await;
    let uri = redis.uri();
    let h = Harness::start_with(FakeVoiceConfig::default(), |c| c.redis_uri = Some(uri)).await;
    let mut events = h.events().await;
    let (guild, session) = h.new_player().await;
    let track_id = enqueued_track_id(&h.enqueue(guild, &h.media.url("tone-523-long.mp3")).await.body);
    session.wait(LIMIT, |c| c.packets >= 50).await.expect("playing");
    drop(redis);
    let ready = h.get("/ready").await;
    assert_eq!((ready.status, ready.body.clone()), (503, json!({"status": "degraded"})));
    // Controls keep working while the store is gone.
    assert_eq!(h.post(&format!("/players/{guild}/volume"), json!({"volume": 0.8})).await.status, 200);
    events.track_ended(guild, &track_id).await;
    session.wait(LIMIT, |c| c.silence_packets >= 5).await.expect("silence tail");
    let report = session.report();
    assert_eq!(report.lost_packets + report.undecryptable + report.plaintext, 0, "{report:?}");
    assert!(report.packets - report.silence_packets >= 299, "the whole track played: {report:?}");
    let metrics = h.get("/metrics").await.body.as_str().unwrap_or_default().to_string();
    let errors = metrics
        .lines()
        .find(|l| l.starts_with("mesastream_store_errors_total "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(errors > 0.0, "store errors are counted:\n{metrics}");
}

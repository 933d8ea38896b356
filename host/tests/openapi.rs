//! `openapi.yaml` describes what is served: every documented route exists, and real responses
//! validate against the documented schemas.

mod support;

use fake_voice::FakeVoiceConfig;
use futures_util::StreamExt;
use serde_json::{Value, json};
use support::{BOT_USER, Harness, LIMIT, Reply, TOKEN, enqueued_track_id};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn spec() -> Value {
    serde_yaml::from_str(include_str!("../../openapi.yaml")).expect("openapi.yaml parses")
}

fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/")) {
        Some(path) => path.split('/').fold(doc, |node, key| &node[key]),
        None => v,
    }
}

/// Validates a response against the spec's entry for `method template status`.
fn check(doc: &Value, method: &str, template: &str, reply: &Reply) {
    let op = &doc["paths"][template][method];
    assert!(op.is_object(), "{method} {template} is not documented");
    let documented = resolve(doc, &op["responses"][reply.status.to_string()]);
    assert!(
        documented.is_object(),
        "{method} {template} answered {} which is not documented: {:?}",
        reply.status,
        reply.body
    );
    let Some(schema) = documented.pointer("/content/application~1json/schema") else {
        // A body in another documented type (a playlist, HTML) is not JSON to validate.
        if documented.get("content").and_then(Value::as_object).is_none_or(|c| c.is_empty()) {
            assert_eq!(reply.body, Value::Null, "{method} {template} {} documents no body", reply.status);
        }
        return;
    };
    let mut root = schema.clone();
    if let Some(obj) = root.as_object_mut() {
        obj.insert("components".into(), doc["components"].clone());
    }
    let validator = jsonschema::validator_for(&root).expect("schema compiles");
    let errors: Vec<String> =
        validator.iter_errors(&reply.body).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{method} {template} {}: {errors:?}\n{}", reply.status, reply.body);
}

/// The Lavalink password these tests set: the same header as the bearer token, so one
/// client reaches both APIs.
fn lavalink_password() -> String {
    format!("Bearer {TOKEN}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_is_served() {
    let doc = spec();
    let h = Harness::start_with(FakeVoiceConfig::default(), |c| c.lavalink_password = Some(lavalink_password())).await;
    for (template, ops) in doc["paths"].as_object().expect("paths") {
        let path = template
            .replace("{id}", "1")
            .replace("{name}", "p")
            .replace("{session}", "s")
            .replace("{guild}", "1")
            .replace("{mount}", "m")
            .replace("{track}", "0123456789abcdef0123456789abcdef")
            .replace("{segment}", "0.m4s");
        for method in ops.as_object().expect("ops").keys().filter(|k| *k != "parameters") {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let body = if matches!(method.as_str(), "post" | "put") { Some(json!({})) } else { None };
            let reply = h.call(m, &path, body).await;
            let unrouted = reply.body["message"].as_str().is_some_and(|m| m.contains("no route"));
            assert!(!unrouted, "{method} {template} is documented but not served");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_match_the_documented_schemas() {
    let doc = spec();
    let h = Harness::with_plugins(FakeVoiceConfig::default(), &["equalizer", "lavalink-filters"], |_| {}).await;
    let mut events = h.events().await;
    check(&doc, "get", "/health", &h.get("/health").await);
    check(&doc, "get", "/ready", &h.get("/ready").await);
    check(&doc, "get", "/players/{id}", &h.get("/players/1").await);
    check(&doc, "post", "/players/{id}/volume", &h.post("/players/1/volume", json!({"volume": 9})).await);

    let (guild, payload) = h.new_call();
    let p = |s: &str| format!("/players/{guild}{s}");
    check(&doc, "post", "/players", &h.post("/players", payload.clone()).await);
    check(&doc, "get", "/players", &h.get("/players").await);
    let session = h.fake.session(&guild.to_string()).expect("session");
    let first = h.enqueue(guild, &h.media.url("tone-523-long.mp3")).await;
    check(&doc, "post", "/players/{id}/queue", &first);
    h.enqueue(guild, &h.media.url("tone-440.mp3")).await;
    check(&doc, "post", "/players/{id}/queue", &h.enqueue(guild, "ftp://nope").await);
    session.wait(LIMIT, |c| c.packets >= 5).await.expect("playing");
    check(&doc, "get", "/players/{id}/queue", &h.get(&p("/queue")).await);
    check(&doc, "get", "/players/{id}/current", &h.get(&p("/current")).await);
    check(&doc, "get", "/players/{id}/status", &h.get(&p("/status")).await);
    check(&doc, "post", "/players/{id}/pause", &h.post(&p("/pause"), Value::Null).await);
    check(&doc, "post", "/players/{id}/resume", &h.post(&p("/resume"), Value::Null).await);
    check(&doc, "post", "/players/{id}/seek", &h.post(&p("/seek"), json!({"position_ms": 1000})).await);
    check(&doc, "post", "/players/{id}/seek", &h.post(&p("/seek"), json!({"position_ms": 99_000})).await);
    check(&doc, "post", "/players/{id}/volume", &h.post(&p("/volume"), json!({"volume": 1.5})).await);
    check(
        &doc,
        "post",
        "/players/{id}/equalizer",
        &h.post(&p("/equalizer"), json!({"bass": 1, "mid": 1, "treble": 0.5})).await,
    );
    check(&doc, "get", "/plugins", &h.get("/plugins").await);
    let chain = json!([{"name": "lowPass", "config": {"smoothing": 2}}, {"name": "rotation"}]);
    check(&doc, "put", "/players/{id}/filters", &h.call(reqwest::Method::PUT, &p("/filters"), Some(chain)).await);
    let refused = json!([{"name": "lowPass", "config": {"smoothing": "x"}}]);
    check(&doc, "put", "/players/{id}/filters", &h.call(reqwest::Method::PUT, &p("/filters"), Some(refused)).await);
    check(&doc, "get", "/players/{id}/filters", &h.get(&p("/filters")).await);
    check(&doc, "post", "/players/{id}/playlists/{name}", &h.post(&p("/playlists/mix"), Value::Null).await);
    check(
        &doc,
        "post",
        "/players/{id}/playlists/{name}/enqueue",
        &h.post(&p("/playlists/none/enqueue"), Value::Null).await,
    );
    check(&doc, "post", "/players/{id}/skip", &h.post(&p("/skip"), Value::Null).await);
    events.track_ended(guild, &enqueued_track_id(&first.body)).await;
    check(
        &doc,
        "post",
        "/players/{id}/playlists/{name}/enqueue",
        &h.post(&p("/playlists/mix/enqueue"), Value::Null).await,
    );
    check(&doc, "delete", "/players/{id}/queue", &h.call(reqwest::Method::DELETE, &p("/queue"), None).await);
    check(&doc, "post", "/players/{id}/stop", &h.post(&p("/stop"), Value::Null).await);
    check(&doc, "get", "/players/{id}/current", &h.get(&p("/current")).await);
    check(&doc, "post", "/players/{id}/play", &h.post(&p("/play"), Value::Null).await);
    check(
        &doc,
        "put",
        "/players/{id}/connection",
        &h.call(reqwest::Method::PUT, &p("/connection"), Some(payload)).await,
    );
    let single = h.post("/listen-tokens", json!({"player_id": guild.to_string(), "format": "hls"})).await;
    check(&doc, "post", "/listen-tokens", &single);
    let batch =
        h.post("/listen-tokens", json!({"items": [{"player_id": "1"}, {"track": "x"}], "batch_expires_in": 60})).await;
    check(&doc, "post", "/listen-tokens", &batch);
    check(&doc, "post", "/listen-tokens", &h.post("/listen-tokens", json!({"track_id": "nope"})).await);
    let unlocked = h.post("/listen-tokens/unlock", json!({"batch": batch.body["batch"], "item": 1})).await;
    check(&doc, "post", "/listen-tokens/unlock", &unlocked);
    check(
        &doc,
        "post",
        "/listen-tokens/unlock",
        &h.post("/listen-tokens/unlock", json!({"batch": "x.y", "item": 0})).await,
    );
    check(&doc, "get", "/ui/state", &h.get("/ui/state").await);
    check(&doc, "get", "/players/{id}/hls/index.m3u8", &h.get(&p("/hls/index.m3u8")).await);
    check(&doc, "get", "/players/{id}/hls/{segment}", &h.get(&p("/hls/1.m4s")).await);
    check(&doc, "get", "/players/{id}/listen", &h.get(&p("/listen?format=flac")).await);
    check(
        &doc,
        "get",
        "/tracks/{track}/hls/index.m3u8",
        &h.get("/tracks/0123456789abcdef0123456789abcdef/hls/index.m3u8").await,
    );
    check(&doc, "get", "/tracks/hls/index.m3u8", &h.get("/tracks/hls/index.m3u8").await);
    check(&doc, "delete", "/players/{id}", &h.call(reqwest::Method::DELETE, &p(""), None).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_mount_responses_match_the_documented_schemas() {
    let doc = spec();
    let h = Harness::start(FakeVoiceConfig::default()).await;
    let created = h.post("/live/mounts", json!({"name": "studio", "formats": ["mp3"]})).await;
    check(&doc, "post", "/live/mounts", &created);
    check(&doc, "post", "/live/mounts", &h.post("/live/mounts", json!({"name": "studio"})).await);
    check(&doc, "post", "/live/mounts", &h.post("/live/mounts", json!({"name": "a/b"})).await);
    check(&doc, "get", "/live/mounts", &h.get("/live/mounts").await);
    check(&doc, "get", "/live/mounts/{name}", &h.get("/live/mounts/studio").await);
    check(&doc, "get", "/live/mounts/{name}", &h.get("/live/mounts/none").await);
    check(&doc, "post", "/live/mounts/{name}/key", &h.post("/live/mounts/studio/key", Value::Null).await);
    let titled = h.post("/live/mounts/studio/metadata", json!({"title": "Morning"})).await;
    check(&doc, "post", "/live/mounts/{name}/metadata", &titled);
    let title = "/admin/metadata?mount=/studio&mode=updinfo&song=x";
    check(&doc, "get", "/admin/metadata", &h.call(reqwest::Method::GET, title, None).await);
    check(&doc, "get", "/live/{mount}/listen", &h.get("/live/none/listen").await);
    check(&doc, "get", "/live/{mount}/hls/index.m3u8", &h.get("/live/studio/hls/index.m3u8").await);
    check(&doc, "delete", "/live/mounts/{name}", &h.call(reqwest::Method::DELETE, "/live/mounts/studio", None).await);
    check(&doc, "delete", "/live/mounts/{name}", &h.call(reqwest::Method::DELETE, "/live/mounts/studio", None).await);
    check(&doc, "post", "/stages", &h.post("/stages", json!({"name": "party", "slot_secs": 5, "block": true})).await);
    check(&doc, "post", "/stages", &h.post("/stages", json!({"name": "party"})).await);
    check(&doc, "post", "/stages/{name}/djs", &h.post("/stages/party/djs", json!({"name": "ana"})).await);
    check(&doc, "post", "/stages/{name}/djs", &h.post("/stages/party/djs", json!({"name": "ana"})).await);
    check(&doc, "post", "/stages/{name}/timer", &h.post("/stages/party/timer", json!({"slot_secs": 60})).await);
    check(&doc, "post", "/stages/{name}/skip", &h.post("/stages/party/skip", Value::Null).await);
    check(&doc, "post", "/stages/{name}/kick", &h.post("/stages/party/kick", json!({"dj": "ana"})).await);
    check(&doc, "post", "/stages/{name}/block", &h.post("/stages/party/block", json!({"enabled": false})).await);
    check(&doc, "get", "/stages/{name}", &h.get("/stages/party").await);
    check(&doc, "delete", "/stages/{name}", &h.call(reqwest::Method::DELETE, "/stages/party", None).await);
    check(&doc, "get", "/stages/{name}", &h.get("/stages/party").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lavalink_responses_match_the_documented_schemas() {
    let doc = spec();
    let h = Harness::with_plugins(FakeVoiceConfig::default(), &["lavalink-filters"], |c| {
        c.lavalink_password = Some(lavalink_password())
    })
    .await;
    let query = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    check(&doc, "get", "/v4/info", &h.get("/v4/info").await);
    check(&doc, "get", "/v4/stats", &h.get("/v4/stats").await);
    let loaded = h.get(&format!("/v4/loadtracks?identifier={}", query(&h.media.url("tone-440.mp3")))).await;
    check(&doc, "get", "/v4/loadtracks", &loaded);
    check(&doc, "get", "/v4/loadtracks", &h.get("/v4/loadtracks?identifier=nothing").await);
    let missing = h.get(&format!("/v4/loadtracks?identifier={}", query(&h.media.url("missing.mp3")))).await;
    check(&doc, "get", "/v4/loadtracks", &missing);
    check(&doc, "get", "/v4/loadtracks", &h.get("/v4/loadtracks").await);
    let encoded = loaded.body["data"]["encoded"].as_str().expect("encoded").to_string();
    check(&doc, "get", "/v4/decodetrack", &h.get(&format!("/v4/decodetrack?encodedTrack={}", query(&encoded))).await);
    check(&doc, "get", "/v4/decodetrack", &h.get("/v4/decodetrack?track=QAAA").await);
    check(&doc, "get", "/v4/decodetrack", &h.get("/v4/decodetrack").await);
    check(&doc, "post", "/v4/decodetracks", &h.post("/v4/decodetracks", json!([encoded])).await);
    check(&doc, "post", "/v4/decodetracks", &h.post("/v4/decodetracks", json!([])).await);
    check(&doc, "get", "/v4/routeplanner/status", &h.get("/v4/routeplanner/status").await);
    check(&doc, "post", "/v4/routeplanner/free/all", &h.post("/v4/routeplanner/free/all", Value::Null).await);

    let mut request = format!("ws://{}/v4/websocket", h.addr).into_client_request().expect("request");
    request.headers_mut().insert("Authorization", lavalink_password().parse().expect("header"));
    request.headers_mut().insert("User-Id", BOT_USER.to_string().parse().expect("header"));
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.expect("session");
    let ready = socket.next().await.expect("ready").expect("frame");
    let ready: Value = serde_json::from_str(ready.to_text().expect("text")).expect("json");
    let session = ready["sessionId"].as_str().expect("session id").to_string();
    let s = |rest: &str| format!("/v4/sessions/{session}{rest}");
    let node = &h;
    let patch = |path: String, body: Value| async move { node.call(reqwest::Method::PATCH, &path, Some(body)).await };
    check(&doc, "patch", "/v4/sessions/{session}", &patch(s(""), json!({"resuming": true})).await);
    check(&doc, "patch", "/v4/sessions/{session}", &patch("/v4/sessions/none".into(), json!({})).await);
    let made = patch(s("/players/42"), json!({"volume": 50, "filters": {"lowPass": {"smoothing": 20.0}}})).await;
    check(&doc, "patch", "/v4/sessions/{session}/players/{guild}", &made);
    check(
        &doc,
        "patch",
        "/v4/sessions/{session}/players/{guild}",
        &patch(s("/players/42"), json!({"endTime": 0})).await,
    );
    check(&doc, "get", "/v4/sessions/{session}/players", &h.get(&s("/players")).await);
    check(&doc, "get", "/v4/sessions/{session}/players/{guild}", &h.get(&s("/players/42")).await);
    check(&doc, "get", "/v4/sessions/{session}/players/{guild}", &h.get(&s("/players/7")).await);
    let deleted = h.call(reqwest::Method::DELETE, &s("/players/42"), None).await;
    check(&doc, "delete", "/v4/sessions/{session}/players/{guild}", &deleted);
}

#[test]
#[should_panic(expected = "voice_connected")]
fn the_checker_rejects_a_snapshot_the_spec_forbids() {
    let doc = spec();
    let body = json!({"player_id": "1", "connection": {}, "status": "idle", "queue": [], "current_track": null,
        "position_ms": 0, "volume": 1.0, "equalizer": {"bass": 1, "mid": 1, "treble": 1}});
    check(&doc, "get", "/players/{id}", &Reply { status: 200, body });
}
